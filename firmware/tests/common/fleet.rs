//! A scripted stand-in for the fleet's registration endpoint: HTTPS with a certificate for the
//! fleet's Ed25519 key (what the node pins), answering each request with the next scripted
//! reply. Blocking, one thread, one request per connection.

use lattice_wire::envelope::{encode, Envelope};
use lattice_wire::msg::Registered;
use lattice_wire::register::{Provisioning, RegisterRequest, RegisterResponse};
use lattice_wire::{IdentityKey, Message, Sender};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// What the next request gets.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status and a raw body.
    Raw(u16, String),
    /// A successful registration.
    Register {
        node_id: String,
        broker_url: String,
        password: String,
    },
}

pub struct FakeFleet {
    pub port: u16,
    pub key: IdentityKey,
    pub requests: Arc<Mutex<Vec<RegisterRequest>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

/// A certificate for `key` (self-signed; the node checks only the key).
pub fn certificate(key: &IdentityKey) -> (CertificateDer<'static>, rcgen::KeyPair) {
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &key.to_pkcs8_der().into(),
        &rcgen::PKCS_ED25519,
    )
    .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["fleet.invalid".to_string()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    (cert.der().clone(), kp)
}

impl FakeFleet {
    /// Serves with a certificate for `cert_key` (normally the fleet key itself).
    pub fn start(script: Vec<Reply>, cert_key: Option<IdentityKey>) -> FakeFleet {
        FakeFleet::start_at(script, IdentityKey::generate(), cert_key, "127.0.0.1:0")
    }

    /// Serves as the fleet with `key`, listening on `addr` (a fleet that comes up late on an
    /// address its nodes were already given).
    pub fn start_at(
        script: Vec<Reply>,
        key: IdentityKey,
        cert_key: Option<IdentityKey>,
        addr: &str,
    ) -> FakeFleet {
        let served = cert_key.unwrap_or_else(|| key.clone());
        let (cert, _) = certificate(&served);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(served.to_pkcs8_der())),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind(addr).unwrap();
        let port = listener.local_addr().unwrap().port();
        let fleet = FakeFleet {
            port,
            key: key.clone(),
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
        };
        let (requests, script) = (fleet.requests.clone(), fleet.script.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let Some(body) = read_request(&mut tls) else {
                    continue;
                };
                let Ok(req) = serde_json::from_slice::<RegisterRequest>(&body) else {
                    respond(
                        &mut tls,
                        400,
                        r#"{"error":"bad_request","message":"bad json"}"#,
                    );
                    continue;
                };
                requests.lock().unwrap().push(req.clone());
                let reply = script.lock().unwrap().pop_front();
                match reply {
                    Some(Reply::Raw(code, body)) => respond(&mut tls, code, &body),
                    Some(Reply::Register {
                        node_id,
                        broker_url,
                        password,
                    }) => {
                        let body = registered(&key, &req, node_id, broker_url, password);
                        respond(&mut tls, 200, &body)
                    }
                    None => respond(&mut tls, 500, "script exhausted"),
                }
            }
        });
        fleet
    }

    pub fn provisioning(&self, token: &str) -> Provisioning {
        Provisioning {
            url: format!("https://127.0.0.1:{}/", self.port),
            token: token.into(),
            fleet_key: self.key.public().to_string(),
        }
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn registered(
    key: &IdentityKey,
    req: &RegisterRequest,
    node_id: String,
    broker_url: String,
    password: String,
) -> String {
    let (identity, encryption) = req.verify().expect("proof of possession");
    let msg = Message::Registered(Registered {
        node_id: node_id.clone(),
        broker_password: password,
        broker_urls: vec![broker_url],
        heartbeat_secs: 10,
        identity,
        encryption: encryption.clone(),
    });
    let header = Envelope {
        sender: Sender::Fleet,
        recipient: Some(node_id),
        epoch: 1,
        counter: 0,
        timestamp_ms: lattice_wire::now_ms(),
        kind: msg.kind(),
        sealed: true,
    };
    let env = encode(&header, &msg, key, Some(&encryption)).unwrap();
    use base64::Engine;
    serde_json::to_string(&RegisterResponse {
        envelope: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(env),
    })
    .unwrap()
}

fn read_request(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + len].to_vec())
}

fn respond(
    s: &mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    code: u16,
    body: &str,
) {
    let text = format!(
        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(text.as_bytes());
    s.conn.send_close_notify();
    let _ = s.flush();
}
