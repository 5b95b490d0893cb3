//! The agent's MQTT link against a real mosquitto: signed hello/status, targets, outbox
//! delivery, reconnection after a broker crash, the last will, refused credentials, and
//! pinned TLS. Skipped (with a printed reason) when mosquitto is not installed.

mod common;

use common::{kind_is, Broker, Node, Observer};
use lattice_wire::msg::Event;
use lattice_wire::{IdentityKey, Message, MessageKind};
use latticed::shutdown;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn status_rev(o: &lattice_wire::Opened) -> Option<u64> {
    match &o.message {
        Message::Status(s) => Some(s.applied_revision),
        _ => None,
    }
}

fn event_kind(o: &lattice_wire::Opened) -> Option<&str> {
    match &o.message {
        Message::Event(Event { kind, .. }) => Some(kind),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_greets_takes_a_target_and_comes_back_after_a_broker_crash() {
    let Some(bin) = common::mosquitto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut broker = Broker::start(&bin, dir.path(), "n-link1", None);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut node = Node::register(&data, "n-link1", url, IdentityKey::generate());
    let mut obs = Observer::connect(broker.port).await;

    let mut agent = node.agent();
    agent.queue_event("registered", "n-link1");
    let (stop, shutdown) = shutdown::channel();
    let run = tokio::spawn(agent.run(shutdown));

    // Hello (counter 1, after the will's 0), then a status, then the queued event.
    let hello = obs
        .expect(&node, "hello", |o| kind_is(o, MessageKind::Hello))
        .await;
    let epoch1 = hello.header.epoch;
    assert_eq!(hello.header.counter, 1);
    assert_eq!(epoch1, node.epoch_file());
    let Message::Hello(h) = &hello.message else {
        unreachable!()
    };
    assert!(h.inventory.cpu_count > 0 && !h.inventory.kernel.is_empty());
    let status = obs
        .expect(&node, "status", |o| status_rev(o).is_some())
        .await;
    assert_eq!((status.header.epoch, status.header.counter), (epoch1, 2));
    assert_eq!(status_rev(&status), Some(0));
    obs.expect(&node, "registered event", |o| {
        event_kind(o) == Some("registered")
    })
    .await;

    // A target: applied, persisted (0600), acknowledged at once.
    let target = node.target(5);
    obs.client
        .publish(
            lattice_wire::topic::topic("n-link1", lattice_wire::topic::Channel::Target),
            rumqttc::QoS::AtLeastOnce,
            false,
            target.clone(),
        )
        .await
        .unwrap();
    obs.expect(&node, "status acking revision 5", |o| {
        status_rev(o) == Some(5)
    })
    .await;
    let target_file = data.join("target.json");
    let mode = std::fs::metadata(&target_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(data.join("fleet-replay.json").exists());

    // The broker crashes; the node queues telemetry meanwhile and comes back by itself
    // under a higher epoch, delivering the queue after its hello.
    // (Let mosquitto autosave first, so the observer's persistent session and subscription
    // survive the crash and it cannot miss the node's hello after the restart. It saves every
    // second from its main loop; 1.5 s was once not enough on a loaded CI machine.)
    tokio::time::sleep(Duration::from_millis(3500)).await;
    broker.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    broker.restart();
    let hello2 = obs
        .expect(&node, "hello after restart", |o| {
            kind_is(o, MessageKind::Hello) && o.header.epoch > epoch1
        })
        .await;
    let Message::Hello(h2) = &hello2.message else {
        unreachable!()
    };
    assert_eq!(h2.applied_revision, 5);
    let telemetry = obs
        .expect(&node, "queued telemetry", |o| {
            kind_is(o, MessageKind::Telemetry)
        })
        .await;
    assert_eq!(telemetry.header.epoch, hello2.header.epoch);
    assert!(telemetry.header.counter > hello2.header.counter);

    stop.trigger();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("agent stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_sends_no_will_but_a_dropped_connection_does() {
    let Some(bin) = common::mosquitto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let broker = Broker::start(&bin, dir.path(), "n-will", None);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let node = Node::register(&data, "n-will", url, IdentityKey::generate());
    let mut obs = Observer::connect(broker.port).await;

    let (stop, shutdown) = shutdown::channel();
    let run = tokio::spawn(node.agent().run(shutdown));
    let hello = obs
        .expect(&node, "hello", |o| kind_is(o, MessageKind::Hello))
        .await;
    stop.trigger();
    run.await.unwrap().unwrap();
    let after = obs.collect(&node, Duration::from_millis(1500)).await;
    assert!(
        !after.iter().any(|o| kind_is(o, MessageKind::Will)),
        "a clean shutdown must not fire the will"
    );

    // Restarted (same keys, new epoch); then the process "dies" without a DISCONNECT.
    let run = tokio::spawn(node.agent().run(shutdown::Shutdown::never()));
    let hello2 = obs
        .expect(&node, "hello after restart", |o| {
            kind_is(o, MessageKind::Hello) && o.header.epoch > hello.header.epoch
        })
        .await;
    run.abort();
    let will = obs
        .expect(&node, "will", |o| kind_is(o, MessageKind::Will))
        .await;
    assert_eq!(will.header.epoch, hello2.header.epoch);
    assert_eq!(will.header.counter, 0);
    assert!(matches!(&will.message, Message::Will(w) if w.reason == "connection lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_is_retried_slowly_an_absent_broker_quickly() {
    let Some(bin) = common::mosquitto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&bin, dir.path(), "n-someone-else", None);
    let refused = Node::register(
        &dir.path().join("refused"),
        "n-refused",
        format!("mqtt://127.0.0.1:{}", broker.port),
        IdentityKey::generate(),
    );
    let absent = Node::register(
        &dir.path().join("absent"),
        "n-absent",
        format!("mqtt://127.0.0.1:{}", common::free_port()),
        IdentityKey::generate(),
    );
    let a = tokio::spawn(refused.agent_with(|_| ()).run(shutdown::Shutdown::never()));
    let b = tokio::spawn(absent.agent_with(|_| ()).run(shutdown::Shutdown::never()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.abort();
    b.abort();
    // Default backoff (1 s doubling, cap 30 s): an absent broker is retried after 0.5..1 s,
    // then 1..2 s, 2..4 s; a refused credential jumps to the cap (15..30 s with jitter).
    let (r, n) = (refused.epoch_file(), absent.epoch_file());
    assert_eq!(r, 1, "refused credential retried within 5 s");
    assert!(n >= 3, "absent broker retried only {n} times in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_link_pins_the_fleet_key() {
    let Some(bin) = common::mosquitto() else {
        return;
    };
    let fleet = IdentityKey::generate();
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &fleet.to_pkcs8_der().into(),
        &rcgen::PKCS_ED25519,
    )
    .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["fleet.invalid".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls_port = common::free_port();
    let broker = Broker::start(
        &bin,
        dir.path(),
        "n-tls",
        Some((tls_port, cert.pem(), key.serialize_pem())),
    );
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let node = Node::register(&dir.path().join("node"), "n-tls", url, fleet);
    let mut obs = Observer::connect(broker.port).await;
    let run = tokio::spawn(node.agent().run(shutdown::Shutdown::never()));
    obs.expect(&node, "hello over TLS", |o| kind_is(o, MessageKind::Hello))
        .await;
    run.abort();

    // The same broker, but the node pinned another fleet key: it never connects.
    let impostor = Node::register(
        &dir.path().join("other"),
        "n-tls-other",
        format!("mqtts://127.0.0.1:{tls_port}"),
        IdentityKey::generate(),
    );
    let run = tokio::spawn(impostor.agent().run(shutdown::Shutdown::never()));
    let seen = obs.collect(&impostor, Duration::from_secs(3)).await;
    run.abort();
    assert!(seen.is_empty(), "connected despite the wrong pinned key");
    assert!(impostor.epoch_file() >= 1, "it did try");
}

/// An applier whose workloads' states the test sets.
#[derive(Clone, Default)]
struct StatesApplier(std::sync::Arc<std::sync::Mutex<Vec<lattice_wire::msg::WorkloadStatus>>>);

impl latticed::agent::Applier for StatesApplier {
    fn apply(
        &mut self,
        _target: &lattice_wire::msg::Target,
    ) -> Result<(), latticed::agent::ApplyError> {
        Ok(())
    }

    fn workloads(&self) -> Vec<lattice_wire::msg::WorkloadStatus> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_state_change_is_reported_at_once_not_at_the_next_heartbeat() {
    let Some(bin) = common::mosquitto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let broker = Broker::start(&bin, dir.path(), "n-states", None);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let node = Node::register(&data, "n-states", url, IdentityKey::generate());
    let mut obs = Observer::connect(broker.port).await;
    let states = StatesApplier::default();
    // A heartbeat far away: any status soon after the change is the change's.
    let agent = node.agent_applying(states.clone(), |c| c.heartbeat_override = Some(60));
    let (stop, shutdown) = shutdown::channel();
    let run = tokio::spawn(agent.run(shutdown));
    obs.expect(&node, "first status", |o| status_rev(o).is_some())
        .await;

    let running = lattice_wire::msg::WorkloadStatus {
        id: "w-1".into(),
        state: lattice_wire::msg::WorkloadState::Running,
        restarts: 0,
    };
    let changed = std::time::Instant::now();
    *states.0.lock().unwrap() = vec![running.clone()];
    let status = obs
        .expect(&node, "status with w-1 running", |o| match &o.message {
            Message::Status(s) => s.workloads == vec![running.clone()],
            _ => false,
        })
        .await;
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the change waited {took:?} (heartbeat 60 s)"
    );
    assert!(status_rev(&status).is_some());
    // Unchanged states send nothing more until the heartbeat.
    let quiet = tokio::time::timeout(
        Duration::from_secs(2),
        obs.expect(&node, "another status", |o| status_rev(o).is_some()),
    )
    .await;
    assert!(quiet.is_err(), "a status without a change");

    stop.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
}
