//! First-boot registration with the fleet over HTTPS (`POST {fleet}/api/v1/register`).
//!
//! The HTTPS client trusts only the fleet key from the provisioning string (see
//! [`crate::pin`]). The answer is a `Message::Registered` envelope signed by that same key and
//! sealed to our encryption key; it is accepted only if it echoes the keys we registered.
//! Network errors, 408/429 and 5xx are retried with exponential backoff and jitter (capped at
//! 30 s); any other 4xx is final and its `message` is reported (e.g. "token expired").

use crate::backoff::Backoff;
use crate::identity::{BrokerSecret, NodeKeys, Registration};
use crate::pin::{pinned_http_client_with, PinError};
use crate::shutdown::Shutdown;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lattice_wire::msg::{Inventory, Registered};
use lattice_wire::register::{Provisioning, RegisterRequest, RegisterResponse};
use lattice_wire::{IdentityPublic, KeyError, Message, Sender, WireError};
use std::time::Duration;

/// Heartbeat used when the fleet's answer leaves it at 0.
pub const DEFAULT_HEARTBEAT_SECS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("provisioning: fleet key: {0}")]
    FleetKey(#[source] KeyError),
    #[error("building the pinned HTTPS client: {0}")]
    Client(#[source] PinError),
    #[error("the fleet refused the registration (HTTP {status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the fleet's registration answer is malformed: {0}")]
    BadResponse(String),
    #[error("the fleet's registration envelope was rejected ({reason}): {0}", reason = .0.reason())]
    Envelope(#[source] WireError),
    #[error("the registration answer is from {0}, not the fleet")]
    WrongSender(Sender),
    #[error("the registration answer is addressed to {got:?}, not to node {node_id}")]
    WrongRecipient {
        got: Option<String>,
        node_id: String,
    },
    #[error("the registration answer carries a {0} message, not `registered`")]
    WrongKind(&'static str),
    #[error("the fleet registered different keys than ours ({0}); refusing the answer")]
    KeysSwapped(&'static str),
    #[error("gave up registering after {attempts} attempts; last error: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("registration cancelled by shutdown")]
    Cancelled,
}

/// How registration retries.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Bound on connecting and on each whole request.
    pub timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// `None`: retry retryable failures forever (a first boot may wait for the network).
    pub max_attempts: Option<u32>,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

/// A completed registration, ready for [`crate::identity::save_registration`].
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub registration: Registration,
    pub secret: BrokerSecret,
    pub attempts: u32,
    /// The fleet key pinned at the end: the provisioning string's, or the key its rotation
    /// chain led to (the fleet rotated after the string was made).
    pub fleet_pin: lattice_wire::rotation::FleetPin,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

enum Attempt {
    Retry(String),
    Fatal(RegisterError),
}

/// Registers with the fleet named in `prov`, retrying as described in the module docs.
pub async fn register(
    prov: &Provisioning,
    keys: &NodeKeys,
    inventory: Inventory,
    opts: &RegisterOptions,
    shutdown: &mut Shutdown,
) -> Result<Enrolled, RegisterError> {
    let fleet_key = prov.fleet_public().map_err(RegisterError::FleetKey)?;
    // In memory: registration.json keeps the provisioning string's key, and the daemon saves a
    // rotated pin (fleet-pin.json) before it.
    let pin = std::sync::Arc::new(lattice_wire::pin::MemoryPin::new(
        lattice_wire::rotation::FleetPin::provisioned(fleet_key),
    ));
    let client =
        pinned_http_client_with(pin.clone(), opts.timeout).map_err(RegisterError::Client)?;
    let url = format!("{}/api/v1/register", prov.url.trim_end_matches('/'));
    let request = RegisterRequest::new(
        &prov.token,
        &keys.identity,
        &keys.encryption.public(),
        inventory,
        env!("CARGO_PKG_VERSION"),
    );
    let mut backoff = Backoff::new(opts.backoff_base, opts.backoff_cap);
    let mut attempts = 0u32;
    loop {
        if shutdown.is_triggered() {
            return Err(RegisterError::Cancelled);
        }
        attempts += 1;
        let reason = match attempt(&client, &url, &request, pin.as_ref(), keys).await {
            Ok(r) => {
                return Ok(Enrolled {
                    registration: Registration {
                        node_id: r.node_id,
                        broker_urls: r.broker_urls,
                        heartbeat_secs: match r.heartbeat_secs {
                            0 => DEFAULT_HEARTBEAT_SECS,
                            h => h,
                        },
                        fleet_key: prov.fleet_key.clone(),
                        fleet_url: prov.url.clone(),
                        identity_key: keys.identity.public().to_string(),
                    },
                    secret: BrokerSecret::new(r.broker_password),
                    attempts,
                    fleet_pin: lattice_wire::pin::PinHolder::pin(pin.as_ref()),
                })
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(reason)) => reason,
        };
        if opts.max_attempts.is_some_and(|max| attempts >= max) {
            return Err(RegisterError::GaveUp {
                attempts,
                last: reason,
            });
        }
        let delay = backoff.next_delay();
        tracing::warn!(
            attempt = attempts,
            retry_in_ms = delay.as_millis() as u64,
            "registration with {url} failed: {reason}"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.wait() => return Err(RegisterError::Cancelled),
        }
    }
}

async fn attempt(
    client: &reqwest::Client,
    url: &str,
    request: &RegisterRequest,
    pin: &dyn lattice_wire::pin::PinHolder,
    keys: &NodeKeys,
) -> Result<Registered, Attempt> {
    let resp = client
        .post(url)
        .json(request)
        .send()
        .await
        .map_err(|e| Attempt::Retry(error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Attempt::Retry(format!("reading the answer: {}", error_chain(&e))))?;
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        return Err(Attempt::Retry(format!(
            "HTTP {status}: {}",
            describe(&body)
        )));
    }
    if !status.is_success() {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (b.error, b.message),
            Err(_) => ("unknown".to_string(), describe(&body)),
        };
        return Err(Attempt::Fatal(RegisterError::Refused {
            status: status.as_u16(),
            code,
            message,
        }));
    }
    // The key pinned after this answer's handshake (it followed a rotation, if any).
    open_response(&body, &pin.pin().key, keys).map_err(Attempt::Fatal)
}

/// Checks a `200` answer's body: a [`RegisterResponse`] whose envelope is signed by the pinned
/// fleet key, sealed to us, and echoes our keys.
pub fn open_response(
    body: &[u8],
    fleet_key: &IdentityPublic,
    keys: &NodeKeys,
) -> Result<Registered, RegisterError> {
    let resp: RegisterResponse =
        serde_json::from_slice(body).map_err(|e| RegisterError::BadResponse(e.to_string()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(resp.envelope.trim())
        .map_err(|e| RegisterError::BadResponse(format!("envelope is not base64url: {e}")))?;
    let opened = lattice_wire::envelope::decode(&bytes)
        .and_then(|u| u.open(fleet_key, Some(&keys.encryption)))
        .map_err(RegisterError::Envelope)?;
    if opened.header.sender != Sender::Fleet {
        return Err(RegisterError::WrongSender(opened.header.sender));
    }
    let Message::Registered(r) = opened.message else {
        return Err(RegisterError::WrongKind(opened.message.kind().as_str()));
    };
    if let Some(to) = &opened.header.recipient {
        if *to != r.node_id {
            return Err(RegisterError::WrongRecipient {
                got: opened.header.recipient,
                node_id: r.node_id,
            });
        }
    }
    if r.identity != keys.identity.public() {
        return Err(RegisterError::KeysSwapped("identity key"));
    }
    if r.encryption != keys.encryption.public() {
        return Err(RegisterError::KeysSwapped("encryption key"));
    }
    if !lattice_wire::topic::valid_node_id(&r.node_id) {
        return Err(RegisterError::BadResponse(format!(
            "invalid node id {:?}",
            r.node_id
        )));
    }
    if r.broker_urls.is_empty() {
        return Err(RegisterError::BadResponse("no broker URLs".into()));
    }
    Ok(r)
}

/// An error with its sources, so "connection refused" is not hidden behind "error sending
/// request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

fn describe(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
