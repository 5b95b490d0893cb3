//! Passwords never reach the logs, even at TRACE level (rumqttd's and ours).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{assert_refused, connect, loopback_config, options, self_signed, start, Nodes};
use common::{tls_transport, WAIT};
use lattice_broker::BrokerConfig;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn passwords_are_not_logged() -> anyhow::Result<()> {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber)?;

    let cert = self_signed(&rcgen::PKCS_ED25519);
    let nodes = Nodes::with(&[("n-1", "Secret-Good-1"), ("fleet", "Secret-Fleet-2")]);
    let config = BrokerConfig {
        tls_listen: Some("127.0.0.1:0".parse()?),
        tls_cert_pem: Some(cert.cert_pem.clone()),
        tls_key_pem: Some(cert.key_pem.clone()),
        ..loopback_config()
    };
    let broker = start(config, nodes);
    let mut node_options = options(
        broker.tls_local_addr().expect("tls"),
        "n-1",
        "n-1",
        "Secret-Good-1",
    );
    node_options.set_transport(tls_transport(&cert));
    let mut node = connect(node_options).await?;
    node.subscribe("lattice/v1/nodes/n-1/target").await?;
    let fleet = connect(options(
        broker.local_addr(),
        "fleet",
        "fleet",
        "Secret-Fleet-2",
    ))
    .await?;
    fleet
        .publish("lattice/v1/nodes/n-1/target", b"x".to_vec())
        .await?;
    node.next_publish(WAIT).await?;
    assert_refused(options(broker.local_addr(), "n-1", "n-1", "Secret-Bad-3")).await;
    drop(broker);

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("log lock")).to_string();
    assert!(logs.contains("n-1"), "nothing was logged at all");
    for secret in ["Secret-Good-1", "Secret-Fleet-2", "Secret-Bad-3"] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
    Ok(())
}
