//! The TLS listener: self-signed Ed25519 and ECDSA certificates, robustness, errors.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_refused, connect, loopback_config, options, self_signed, start, tls_transport, Nodes,
    TestCert, WAIT,
};
use lattice_broker::{BrokerConfig, BrokerError};

fn tls_config(cert: &TestCert) -> BrokerConfig {
    BrokerConfig {
        tls_listen: Some("127.0.0.1:0".parse().expect("addr")),
        tls_cert_pem: Some(cert.cert_pem.clone()),
        tls_key_pem: Some(cert.key_pem.clone()),
        ..loopback_config()
    }
}

async fn exchange_over_tls(alg: &'static rcgen::SignatureAlgorithm) -> anyhow::Result<()> {
    let cert = self_signed(alg);
    let nodes = Nodes::with(&[("n-1", "pw-1"), ("fleet", "pw-fleet")]);
    let broker = start(tls_config(&cert), nodes);
    let addr = broker.tls_local_addr().expect("TLS listener");

    let mut node_options = options(addr, "n-1", "n-1", "pw-1");
    node_options.set_transport(tls_transport(&cert));
    let mut node = connect(node_options).await?;
    node.subscribe("lattice/v1/nodes/n-1/target").await?;

    let mut fleet_options = options(addr, "fleet", "fleet", "pw-fleet");
    fleet_options.set_transport(tls_transport(&cert));
    let fleet = connect(fleet_options).await?;
    let payload = vec![7u8; 100 * 1024];
    fleet
        .publish("lattice/v1/nodes/n-1/target", payload.clone())
        .await?;
    assert_eq!(node.next_publish(WAIT).await?.payload.to_vec(), payload);
    Ok(())
}

#[tokio::test]
async fn ed25519_certificate_works() -> anyhow::Result<()> {
    exchange_over_tls(&rcgen::PKCS_ED25519).await
}

#[tokio::test]
async fn ecdsa_p256_certificate_works() -> anyhow::Result<()> {
    exchange_over_tls(&rcgen::PKCS_ECDSA_P256_SHA256).await
}

#[tokio::test]
async fn wrong_password_over_tls_is_refused() {
    let cert = self_signed(&rcgen::PKCS_ED25519);
    let broker = start(tls_config(&cert), Nodes::with(&[("n-1", "pw-1")]));
    let mut bad = options(broker.tls_local_addr().expect("tls"), "n-1", "n-1", "nope");
    bad.set_transport(tls_transport(&cert));
    assert_refused(bad).await;
}

#[tokio::test]
async fn client_not_trusting_the_certificate_fails() {
    let cert = self_signed(&rcgen::PKCS_ED25519);
    let other = self_signed(&rcgen::PKCS_ED25519);
    let broker = start(tls_config(&cert), Nodes::with(&[("n-1", "pw-1")]));
    let mut untrusting = options(broker.tls_local_addr().expect("tls"), "n-1", "n-1", "pw-1");
    untrusting.set_transport(tls_transport(&other));
    assert!(connect(untrusting).await.is_err());
}

#[tokio::test]
async fn silent_tcp_client_does_not_block_tls_handshakes() -> anyhow::Result<()> {
    // rumqttd's own TLS listener handshakes inside its accept loop: one such client stalls it.
    let cert = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let broker = start(tls_config(&cert), Nodes::with(&[("n-1", "pw-1")]));
    let addr = broker.tls_local_addr().expect("tls");
    let _silent = tokio::net::TcpStream::connect(addr).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let mut node = options(addr, "n-1", "n-1", "pw-1");
    node.set_transport(tls_transport(&cert));
    connect(node).await?;
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn silent_tls_client_is_dropped_after_the_connect_timeout() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let cert = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let config = BrokerConfig {
        connect_timeout_ms: 300,
        ..tls_config(&cert)
    };
    let broker = start(config, Nodes::with(&[]));
    let mut silent = tokio::net::TcpStream::connect(broker.tls_local_addr().expect("tls")).await?;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "connection kept open: {read:?}"
    );
    Ok(())
}

#[test]
fn missing_certificate_is_a_clear_error() {
    let cert = self_signed(&rcgen::PKCS_ED25519);
    let missing = cert.dir.path().join("missing.pem");
    let config = BrokerConfig {
        tls_cert_pem: Some(missing.clone()),
        ..tls_config(&cert)
    };
    match lattice_broker::start(config, Nodes::with(&[])) {
        Err(BrokerError::ReadPem { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected ReadPem, got {other:?}"),
    }
}

#[test]
fn garbage_key_is_a_clear_error() {
    let cert = self_signed(&rcgen::PKCS_ED25519);
    std::fs::write(&cert.key_pem, "not a key").expect("overwrite key");
    let err = lattice_broker::start(tls_config(&cert), Nodes::with(&[]))
        .expect_err("garbage key must fail");
    assert!(matches!(err, BrokerError::NoPrivateKey { .. }), "{err}");
    assert!(err.to_string().contains("key.pem"), "{err}");
}
