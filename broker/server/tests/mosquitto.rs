//! Interoperability with the Mosquitto command-line clients (Debian `mosquitto-clients`).
//! Skipped, with a message, where the binaries are absent; CI installs them.

mod common;

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{loopback_config, self_signed, start, Nodes, TestCert};
use lattice_broker::BrokerConfig;
use tokio::process::{Child, Command};

const TOPIC: &str = "lattice/v1/nodes/n-1/target";

fn have_mosquitto() -> bool {
    let found = ["mosquitto_pub", "mosquitto_sub"].iter().all(|bin| {
        std::process::Command::new(bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !found {
        eprintln!(
            "SKIPPED: mosquitto_pub/mosquitto_sub not installed (apt install mosquitto-clients)"
        );
    }
    found
}

fn common_args(cmd: &mut Command, addr: SocketAddr, id: &str, password: &str) {
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-V", "mqttv311", "-i", id, "-u", id, "-P", password])
        .args(["-t", TOPIC, "-q", "1"]);
}

fn tls_args(cmd: &mut Command, cert: &TestCert) {
    cmd.arg("--cafile").arg(&cert.cert_pem);
}

fn subscriber(addr: SocketAddr, tls: Option<&TestCert>) -> Child {
    let mut cmd = Command::new("mosquitto_sub");
    common_args(&mut cmd, addr, "n-1", "pw-1");
    cmd.args(["-C", "1", "-W", "10"]);
    if let Some(cert) = tls {
        tls_args(&mut cmd, cert);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mosquitto_sub")
}

async fn publish(
    addr: SocketAddr,
    password: &str,
    message: &str,
    tls: Option<&TestCert>,
) -> Output {
    let mut cmd = Command::new("mosquitto_pub");
    common_args(&mut cmd, addr, "fleet", password);
    cmd.args(["-m", message]);
    if let Some(cert) = tls {
        tls_args(&mut cmd, cert);
    }
    cmd.kill_on_drop(true)
        .output()
        .await
        .expect("run mosquitto_pub")
}

/// Publishes until the subscriber (which exits after one message) has received something.
async fn deliver(addr: SocketAddr, tls: Option<&TestCert>) -> String {
    let mut sub = subscriber(addr, tls);
    for _ in 0..40 {
        let out = publish(addr, "pw-fleet", "hello from mosquitto", tls).await;
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if sub.try_wait().expect("poll mosquitto_sub").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = sub.wait_with_output().await.expect("mosquitto_sub output");
    assert!(
        out.status.success(),
        "mosquitto_sub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn nodes() -> std::sync::Arc<Nodes> {
    Nodes::with(&[("n-1", "pw-1"), ("fleet", "pw-fleet")])
}

#[tokio::test]
async fn mosquitto_clients_exchange_a_message() {
    if !have_mosquitto() {
        return;
    }
    let broker = start(loopback_config(), nodes());
    assert_eq!(
        deliver(broker.local_addr(), None).await,
        "hello from mosquitto"
    );
}

#[tokio::test]
async fn mosquitto_pub_with_a_wrong_password_is_refused() {
    if !have_mosquitto() {
        return;
    }
    let nodes = nodes();
    let broker = start(loopback_config(), nodes.clone());
    let out = publish(broker.local_addr(), "wrong", "should not pass", None).await;
    assert!(
        !out.status.success(),
        "mosquitto_pub with a wrong password succeeded"
    );
    eprintln!(
        "mosquitto_pub said: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(nodes
        .calls()
        .contains(&("fleet".into(), "fleet".into(), "wrong".into())));
}

async fn over_tls(alg: &'static rcgen::SignatureAlgorithm) {
    if !have_mosquitto() {
        return;
    }
    let cert = self_signed(alg);
    let config = BrokerConfig {
        tls_listen: Some("127.0.0.1:0".parse().expect("addr")),
        tls_cert_pem: Some(cert.cert_pem.clone()),
        tls_key_pem: Some(cert.key_pem.clone()),
        ..loopback_config()
    };
    let broker = start(config, nodes());
    let addr = broker.tls_local_addr().expect("tls");
    assert_eq!(deliver(addr, Some(&cert)).await, "hello from mosquitto");
}

#[tokio::test]
async fn mosquitto_clients_over_tls_with_ed25519() {
    over_tls(&rcgen::PKCS_ED25519).await;
}

#[tokio::test]
async fn mosquitto_clients_over_tls_with_ecdsa_p256() {
    over_tls(&rcgen::PKCS_ECDSA_P256_SHA256).await;
}
