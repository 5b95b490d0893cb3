//! Registration over pinned HTTPS against a scripted fleet: retries, refusals, the pin, and
//! "a registered node never registers again".

mod common;

use common::fleet::{FakeFleet, Reply};
use lattice_wire::IdentityKey;
use latticed::config::{ProvisioningSource, Settings};
use latticed::daemon::{enroll, enroll_patiently, DaemonError, RefusalRetry};
use latticed::register::{RegisterError, RegisterOptions};
use latticed::shutdown::Shutdown;
use std::path::Path;
use std::time::{Duration, Instant};

fn settings(data_dir: &Path, fleet: &FakeFleet, token: &str) -> Settings {
    Settings {
        data_dir: data_dir.to_path_buf(),
        provisioning: Some(ProvisioningSource::Inline(Box::new(
            fleet.provisioning(token),
        ))),
        heartbeat_override: None,
        outbox_max_bytes: 1 << 20,
        log: "info".into(),
        runtime: latticed::config::RuntimeKind::None,
        envelope: latticed::cgroup::EnvelopeLimits::new(50, 1 << 30, 1024).unwrap(),
        disk_floor_bytes: 0,
        network_pool: Default::default(),
        owner: Default::default(),
        registry_proxy: None,
    }
}

fn fast(max_attempts: Option<u32>) -> RegisterOptions {
    RegisterOptions {
        timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        max_attempts,
    }
}

#[tokio::test]
async fn registers_through_server_errors_and_never_again() {
    let fleet = FakeFleet::start(
        vec![
            Reply::Raw(503, "starting".into()),
            Reply::Raw(502, String::new()),
            Reply::Register {
                node_id: "n-https".into(),
                broker_url: "mqtt://127.0.0.1:1883".into(),
                password: "pw-123".into(),
            },
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fleet, "tok-1");
    let e = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap();
    assert!(e.new);
    assert_eq!(e.registration.node_id, "n-https");
    assert_eq!(e.secret.expose(), "pw-123");
    assert_eq!(e.registration.fleet_key, fleet.key.public().to_string());
    assert_eq!(fleet.request_count(), 3);
    {
        let reqs = fleet.requests.lock().unwrap();
        assert_eq!(reqs[0].token, "tok-1");
        assert_eq!(reqs[0].identity_key, e.keys.identity.public().to_string());
        assert!(reqs[0].inventory.memory_bytes > 0);
    }

    // Restarted: same identity, no second registration (not even a request).
    let again = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap();
    assert!(!again.new);
    assert_eq!(again.registration, e.registration);
    assert_eq!(again.keys.identity.public(), e.keys.identity.public());
    assert_eq!(fleet.request_count(), 3);
}

#[tokio::test]
async fn a_client_error_is_final_and_reports_the_fleets_message() {
    let fleet = FakeFleet::start(
        vec![Reply::Raw(
            401,
            r#"{"error":"token_expired","message":"token expired"}"#.into(),
        )],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fleet, "old-token");
    let err = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap_err();
    let DaemonError::Register(RegisterError::Refused {
        status,
        code,
        message,
    }) = &err
    else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(
        (*status, code.as_str(), message.as_str()),
        (401, "token_expired", "token expired")
    );
    assert!(err.to_string().contains("token expired"), "{err}");
    assert!(
        !err.to_string().contains("old-token"),
        "the token must not be shown: {err}"
    );
    assert_eq!(fleet.request_count(), 1);
    assert!(!dir.path().join("registration.json").exists());
}

/// The daemon's first boot with a bad token: the refusal is logged and shown in systemd's
/// status, retried with a growing delay (not at once, not by exiting), and a corrected
/// provisioning file is read on the next attempt.
#[tokio::test]
async fn a_refused_first_boot_retries_slowly_and_takes_a_corrected_provisioning() {
    let expired = || {
        Reply::Raw(
            403,
            r#"{"error":"token_expired","message":"token expired"}"#.into(),
        )
    };
    let fleet = FakeFleet::start(
        vec![
            expired(),
            expired(),
            Reply::Register {
                node_id: "n-patient".into(),
                broker_url: "mqtt://127.0.0.1:1883".into(),
                password: "pw-p".into(),
            },
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("provisioning");
    std::fs::write(&file, fleet.provisioning("old-token").encode()).unwrap();
    let mut s = settings(&dir.path().join("data"), &fleet, "unused");
    s.provisioning = Some(ProvisioningSource::File(file.clone()));
    // The provider writes a new string after the first refusal.
    let corrected = fleet.provisioning("new-token").encode();
    let requests = fleet.requests.clone();
    let fixer = tokio::spawn(async move {
        while requests.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::fs::write(&file, corrected).unwrap();
    });
    let recorded = latticed::watchdog::Recorded::default();
    let retry = RefusalRetry {
        base: Duration::from_millis(400),
        cap: Duration::from_millis(800),
    };
    let t0 = Instant::now();
    let e = enroll_patiently(
        &s,
        Instant::now(),
        &fast(None),
        &retry,
        &mut Shutdown::never(),
        &recorded,
    )
    .await
    .unwrap();
    fixer.await.unwrap();
    assert_eq!(e.registration.node_id, "n-patient");
    assert_eq!(fleet.request_count(), 3);
    let tokens: Vec<String> = fleet
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.token.clone())
        .collect();
    assert_eq!(tokens[0], "old-token");
    assert_eq!(
        tokens[2], "new-token",
        "the corrected file was not read: {tokens:?}"
    );
    // Two waits: at least half of 400 ms, then half of 800 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    let statuses: Vec<String> = recorded
        .take()
        .into_iter()
        .filter_map(|n| match n {
            latticed::watchdog::Notice::Status(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(
        statuses[0].starts_with("registration refused: ") && statuses[0].contains("token expired"),
        "{statuses:?}"
    );
    assert!(!statuses.iter().any(|t| t.contains("old-token")));
}

/// Shutdown during the wait after a refusal ends it at once.
#[tokio::test]
async fn shutdown_ends_the_wait_after_a_refusal() {
    let fleet = FakeFleet::start(
        vec![Reply::Raw(
            403,
            r#"{"error":"token_unknown","message":"unknown token"}"#.into(),
        )],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fleet, "bad");
    let (trigger, mut shutdown) = latticed::shutdown::channel();
    let retry = RefusalRetry {
        base: Duration::from_secs(600),
        cap: Duration::from_secs(600),
    };
    let recorded = latticed::watchdog::Recorded::default();
    let opts = fast(None);
    let waiting = enroll_patiently(&s, Instant::now(), &opts, &retry, &mut shutdown, &recorded);
    let stop = async {
        while fleet.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.trigger();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(waiting, stop)
    })
    .await
    .expect("still waiting after shutdown");
    assert!(matches!(
        result,
        Err(DaemonError::Register(RegisterError::Cancelled))
    ));
    assert_eq!(fleet.request_count(), 1);
}

/// The fleet is unreachable at first boot (nothing listens yet): the node keeps trying with
/// backoff and registers once the fleet comes up on the address it was given.
#[tokio::test]
async fn an_unreachable_fleet_at_first_boot_is_waited_for() {
    let key = IdentityKey::generate();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let prov = lattice_wire::register::Provisioning {
        url: format!("https://127.0.0.1:{port}/"),
        token: "tok-late".into(),
        fleet_key: key.public().to_string(),
    };
    let mut s = settings(dir.path(), &FakeFleet::start(vec![], None), "unused");
    s.provisioning = Some(ProvisioningSource::Inline(Box::new(prov)));
    let opts = fast(None);
    let enrolling =
        tokio::spawn(
            async move { enroll(&s, Instant::now(), &opts, &mut Shutdown::never()).await },
        );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!enrolling.is_finished(), "gave up while the fleet was down");
    assert!(!dir.path().join("registration.json").exists());
    let fleet = FakeFleet::start_at(
        vec![Reply::Register {
            node_id: "n-late".into(),
            broker_url: "mqtt://127.0.0.1:1883".into(),
            password: "pw-late".into(),
        }],
        key,
        None,
        &format!("127.0.0.1:{port}"),
    );
    let e = tokio::time::timeout(Duration::from_secs(10), enrolling)
        .await
        .expect("not registered 10 s after the fleet came up")
        .unwrap()
        .unwrap();
    assert_eq!(e.registration.node_id, "n-late");
    assert_eq!(fleet.request_count(), 1);
    assert!(dir.path().join("registration.json").exists());
}

#[tokio::test]
async fn a_server_without_the_pinned_key_gets_nothing() {
    let fleet = FakeFleet::start(vec![], Some(IdentityKey::generate()));
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fleet, "tok");
    let err = enroll(&s, Instant::now(), &fast(Some(2)), &mut Shutdown::never())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DaemonError::Register(RegisterError::GaveUp { attempts: 2, .. })
        ),
        "{msg}"
    );
    assert!(msg.contains("not the pinned fleet key"), "{msg}");
    assert_eq!(fleet.request_count(), 0, "no request may reach an impostor");
}

#[tokio::test]
async fn an_unprovisioned_node_says_what_to_configure() {
    let fleet = FakeFleet::start(vec![], None);
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &fleet, "tok");
    s.provisioning = None;
    let err = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--provisioning"), "{err}");
}
