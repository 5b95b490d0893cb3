//! Shared helpers: a recording authenticator, broker start-up, an MQTT 3.1.1 test client and
//! self-signed certificates.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use lattice_broker::{AuthFuture, Authenticator, BrokerConfig, BrokerHandle};
use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(5);

/// Accepts `client_id == username` with the password registered for that client, and
/// records every call (client id, user name, password) it gets.
#[derive(Default)]
pub struct Nodes {
    passwords: HashMap<String, String>,
    pub calls: Mutex<Vec<(String, String, String)>>,
}

impl Nodes {
    pub fn with(pairs: &[(&str, &str)]) -> Arc<Nodes> {
        Arc::new(Nodes {
            passwords: pairs
                .iter()
                .map(|(id, pw)| (id.to_string(), pw.to_string()))
                .collect(),
            calls: Mutex::default(),
        })
    }

    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.calls.lock().expect("calls lock").clone()
    }
}

impl Authenticator for Nodes {
    // Written with elided lifetimes, as an implementer might: must satisfy the trait.
    fn authenticate(
        &self,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        self.calls.lock().expect("calls lock").push((
            client_id.to_string(),
            username.to_string(),
            password.to_string(),
        ));
        let allowed = client_id == username
            && self.passwords.get(client_id).map(String::as_str) == Some(password);
        Box::pin(async move { allowed })
    }
}

/// An authenticator that never answers.
pub struct Stuck;

impl Authenticator for Stuck {
    fn authenticate<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> AuthFuture<'a> {
        Box::pin(std::future::pending())
    }
}

/// Loopback, port 0 everywhere: the broker picks free ports.
pub fn loopback_config() -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..BrokerConfig::default()
    }
}

pub fn start(config: BrokerConfig, auth: Arc<dyn Authenticator>) -> BrokerHandle {
    lattice_broker::start(config, auth).expect("broker starts")
}

/// Options for an MQTT 3.1.1 client with the given credentials.
pub fn options(addr: SocketAddr, client_id: &str, user: &str, password: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, password);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// A connected client whose event loop runs in a task; incoming packets arrive on `incoming`.
pub struct Client {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects and waits for a successful CONNACK; the error says how the connection failed.
pub async fn connect(options: MqttOptions) -> Result<Client, ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let connected = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::ConnAck(ack)) => return Ok(ack),
                _ => continue,
            }
        }
    })
    .await
    .unwrap_or(Err(ConnectionError::NetworkTimeout))?;
    assert_eq!(connected.code, rumqttc::ConnectReturnCode::Success);
    let (tx, incoming) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    let _ = tx.send(Ok(packet));
                }
                Ok(Event::Outgoing(_)) => {}
                Err(error) => {
                    let _ = tx.send(Err(error.to_string()));
                    return;
                }
            }
        }
    });
    Ok(Client {
        client,
        incoming,
        task,
    })
}

/// Asserts that the broker refuses the connection at CONNECT: the connection ends with an
/// error (rumqttd closes it without a CONNACK) and does not merely time out.
pub async fn assert_refused(options: MqttOptions) {
    match connect(options).await {
        Ok(_) => panic!("connection was accepted"),
        Err(ConnectionError::NetworkTimeout) => panic!("broker did not answer the CONNECT"),
        Err(error) => eprintln!("refused as expected: {error}"),
    }
}

impl Client {
    pub async fn subscribe(&mut self, filter: &str) -> anyhow::Result<()> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        loop {
            match self.next_packet(WAIT).await? {
                Packet::SubAck(ack) => {
                    let code = ack.return_codes.first().copied();
                    return match code {
                        Some(rumqttc::SubscribeReasonCode::Success(_)) => Ok(()),
                        other => Err(anyhow!("subscription to {filter} refused: {other:?}")),
                    };
                }
                _ => continue,
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .context("queue publish")
    }

    async fn next_packet(&mut self, wait: Duration) -> anyhow::Result<Packet> {
        match tokio::time::timeout(wait, self.incoming.recv()).await {
            Ok(Some(Ok(packet))) => Ok(packet),
            Ok(Some(Err(error))) => bail!("connection closed: {error}"),
            Ok(None) => bail!("connection closed"),
            Err(_) => bail!("nothing received within {wait:?}"),
        }
    }

    /// The next PUBLISH received within `wait`.
    pub async fn next_publish(&mut self, wait: Duration) -> anyhow::Result<Publish> {
        loop {
            if let Packet::Publish(publish) = self.next_packet(wait).await? {
                return Ok(publish);
            }
        }
    }

    /// Whether the event loop ended with a connection error within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, async {
            while let Some(Ok(_)) = self.incoming.recv().await {}
        })
        .await
        .is_ok()
    }
}

/// A self-signed server certificate for `localhost` / 127.0.0.1, written as PEM files.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
}

pub fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> TestCert {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("cert params");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.self_signed(&key).expect("self-signed cert");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).expect("write cert");
    std::fs::write(&key_pem, key.serialize_pem()).expect("write key");
    TestCert {
        dir,
        cert_pem,
        key_pem,
        cert_der: cert.der().clone(),
    }
}

/// A rumqttc TLS transport that trusts exactly `cert`.
pub fn tls_transport(cert: &TestCert) -> Transport {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone()).expect("trust cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
}
