//! Every connection authenticates at CONNECT through the fleet's `Authenticator`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_refused, connect, loopback_config, options, start, Nodes, Stuck, WAIT};

const TOPIC: &str = "lattice/v1/nodes/n-1/target";

#[tokio::test]
async fn authenticated_clients_exchange_messages() -> anyhow::Result<()> {
    let nodes = Nodes::with(&[("n-1", "pw-1"), ("fleet", "pw-fleet")]);
    let broker = start(loopback_config(), nodes.clone());
    let addr = broker.local_addr();

    let mut node = connect(options(addr, "n-1", "n-1", "pw-1")).await?;
    node.subscribe(TOPIC).await?;
    let fleet = connect(options(addr, "fleet", "fleet", "pw-fleet")).await?;
    fleet.publish(TOPIC, b"hello node".to_vec()).await?;

    let got = node.next_publish(WAIT).await?;
    assert_eq!(got.topic, TOPIC);
    assert_eq!(&got.payload[..], b"hello node");
    // The authenticator saw exactly what the clients sent.
    let calls = nodes.calls();
    assert!(calls.contains(&("n-1".into(), "n-1".into(), "pw-1".into())));
    assert!(calls.contains(&("fleet".into(), "fleet".into(), "pw-fleet".into())));
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let nodes = Nodes::with(&[("n-1", "pw-1")]);
    let broker = start(loopback_config(), nodes.clone());
    assert_refused(options(broker.local_addr(), "n-1", "n-1", "wrong")).await;
    assert_eq!(
        nodes.calls(),
        vec![("n-1".into(), "n-1".into(), "wrong".into())]
    );
}

#[tokio::test]
async fn unknown_client_is_refused() {
    let nodes = Nodes::with(&[("n-1", "pw-1")]);
    let broker = start(loopback_config(), nodes.clone());
    assert_refused(options(broker.local_addr(), "n-2", "n-2", "pw-1")).await;
}

#[tokio::test]
async fn client_id_must_match_user_name() {
    // Someone holding n-1's credential cannot connect as n-2.
    let nodes = Nodes::with(&[("n-1", "pw-1"), ("n-2", "pw-2")]);
    let broker = start(loopback_config(), nodes.clone());
    assert_refused(options(broker.local_addr(), "n-2", "n-1", "pw-1")).await;
    assert_eq!(
        nodes.calls(),
        vec![("n-2".into(), "n-1".into(), "pw-1".into())]
    );
}

#[tokio::test]
async fn connect_without_credentials_is_refused() {
    let nodes = Nodes::with(&[("n-1", "pw-1")]);
    let broker = start(loopback_config(), nodes.clone());
    let anonymous = rumqttc::MqttOptions::new(
        "n-1",
        broker.local_addr().ip().to_string(),
        broker.local_addr().port(),
    );
    assert_refused(anonymous).await;
    assert!(nodes.calls().is_empty(), "refused before the hook");
}

#[tokio::test]
async fn authenticator_that_never_answers_is_a_refusal() {
    let config = lattice_broker::BrokerConfig {
        connect_timeout_ms: 300,
        ..loopback_config()
    };
    let broker = start(config, Arc::new(Stuck));
    let started = std::time::Instant::now();
    assert_refused(options(broker.local_addr(), "n-1", "n-1", "pw-1")).await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn refused_client_does_not_disturb_connected_ones() -> anyhow::Result<()> {
    let nodes = Nodes::with(&[("n-1", "pw-1"), ("fleet", "pw-fleet")]);
    let broker = start(loopback_config(), nodes);
    let addr = broker.local_addr();
    let mut node = connect(options(addr, "n-1", "n-1", "pw-1")).await?;
    node.subscribe(TOPIC).await?;
    // An impostor using the node's client id with a bad password must not take over its session.
    assert_refused(options(addr, "n-1", "n-1", "guess")).await;
    let fleet = connect(options(addr, "fleet", "fleet", "pw-fleet")).await?;
    fleet.publish(TOPIC, b"still there".to_vec()).await?;
    assert_eq!(&node.next_publish(WAIT).await?.payload[..], b"still there");
    Ok(())
}

#[tokio::test]
async fn start_works_outside_a_tokio_runtime() -> anyhow::Result<()> {
    let nodes = Nodes::with(&[("n-1", "pw-1")]);
    // Authentication then runs on the broker's own runtime.
    let broker = std::thread::spawn(move || start(loopback_config(), nodes))
        .join()
        .expect("start thread");
    connect(options(broker.local_addr(), "n-1", "n-1", "pw-1")).await?;
    Ok(())
}
