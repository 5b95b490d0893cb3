//! Payload limit and listener errors.

mod common;

use std::net::TcpListener;

use common::{connect, loopback_config, options, start, Nodes, WAIT};
use lattice_broker::{BrokerConfig, BrokerError};

const TOPIC: &str = "lattice/v1/nodes/n-1/status";

#[tokio::test]
async fn payload_over_the_limit_is_not_delivered() -> anyhow::Result<()> {
    let nodes = Nodes::with(&[("n-1", "pw-1"), ("fleet", "pw-fleet"), ("n-2", "pw-2")]);
    let config = BrokerConfig {
        max_payload_bytes: 8 * 1024,
        ..loopback_config()
    };
    let broker = start(config, nodes);
    let addr = broker.local_addr();
    let mut fleet = connect(options(addr, "fleet", "fleet", "pw-fleet")).await?;
    fleet.subscribe("lattice/v1/nodes/+/status").await?;

    // Just under the limit (payload + topic + 2-byte length + 2-byte packet id) goes through.
    let fits = vec![1u8; 8 * 1024 - TOPIC.len() - 4];
    let mut big = connect(options(addr, "n-1", "n-1", "pw-1")).await?;
    big.publish(TOPIC, fits.clone()).await?;
    assert_eq!(fleet.next_publish(WAIT).await?.payload.len(), fits.len());

    // Over the limit: the publisher is disconnected and nothing is delivered.
    big.publish(TOPIC, vec![2u8; 16 * 1024]).await?;
    assert!(big.closed_within(WAIT).await, "oversized publisher kept");
    let small = connect(options(addr, "n-2", "n-2", "pw-2")).await?;
    small.publish(TOPIC, b"small".to_vec()).await?;
    let next = fleet.next_publish(WAIT).await?;
    assert_eq!(
        &next.payload[..],
        b"small",
        "oversized message was delivered"
    );
    Ok(())
}

#[test]
fn port_in_use_is_a_bind_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let config = BrokerConfig {
        listen: addr,
        ..BrokerConfig::default()
    };
    match lattice_broker::start(config, Nodes::with(&[])) {
        Err(BrokerError::Bind {
            addr: failed,
            source,
        }) => {
            assert_eq!(failed, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[test]
fn v5_port_in_use_is_a_bind_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let config = BrokerConfig {
        v5_listen: Some(addr),
        ..loopback_config()
    };
    let err = lattice_broker::start(config, Nodes::with(&[])).expect_err("must fail");
    assert!(
        matches!(err, BrokerError::Bind { addr: a, .. } if a == addr),
        "{err}"
    );
    assert!(err.to_string().contains(&addr.to_string()));
}

#[test]
fn tls_port_in_use_is_a_bind_error_and_frees_the_plain_port() {
    let cert = common::self_signed(&rcgen::PKCS_ED25519);
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tls_addr = taken.local_addr().expect("addr");
    let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
    let plain_addr = plain.local_addr().expect("addr");
    drop(plain);
    let config = BrokerConfig {
        listen: plain_addr,
        tls_listen: Some(tls_addr),
        tls_cert_pem: Some(cert.cert_pem.clone()),
        tls_key_pem: Some(cert.key_pem.clone()),
        ..BrokerConfig::default()
    };
    let err = lattice_broker::start(config, Nodes::with(&[])).expect_err("must fail");
    assert!(
        matches!(err, BrokerError::Bind { addr, .. } if addr == tls_addr),
        "{err}"
    );
    // The plain listener started before the failure was stopped again.
    TcpListener::bind(plain_addr).expect("plain port released");
}

#[test]
fn invalid_config_is_refused_before_anything_starts() {
    let config = BrokerConfig {
        max_connections: 0,
        ..loopback_config()
    };
    let err = lattice_broker::start(config, Nodes::with(&[])).expect_err("must fail");
    assert!(matches!(err, BrokerError::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_broker() -> anyhow::Result<()> {
    let nodes = Nodes::with(&[("n-1", "pw-1")]);
    let broker = start(loopback_config(), nodes);
    let addr = broker.local_addr();
    let mut node = connect(options(addr, "n-1", "n-1", "pw-1")).await?;
    broker.shutdown();
    assert!(node.closed_within(WAIT).await, "client still connected");
    TcpListener::bind(addr).expect("port released");
    Ok(())
}
