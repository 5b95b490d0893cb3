//! The versioned, signed (and, for secrets, sealed) envelope around every message.
//!
//! Layout (all postcard):
//!
//! ```text
//! Outer { version: u16, header: Vec<u8>, body: Vec<u8>, signature: [u8; 64] }
//! Header { sender, recipient, epoch, counter, timestamp_ms, kind, sealed }
//! body = postcard(Message)                      when not sealed
//! body = postcard(Sealed { enc, ciphertext })   when sealed (HPKE base mode)
//! ```
//!
//! The signature (Ed25519, by the sender) covers a domain tag, the version, the header and the
//! body, so nothing can be swapped between envelopes. Sealing uses HPKE
//! (DHKEM-X25519-HKDF-SHA256, HKDF-SHA256, ChaCha20-Poly1305) to the recipient's encryption key
//! with the header as associated data.
//!
//! Receiving is two steps: [`decode`] checks size, version and structure and says who claims to
//! have sent it; [`Unverified::open`] checks the signature against that sender's registered key,
//! opens the body and checks that it is the kind the header says.

use crate::keys::{EncryptionKey, EncryptionPublic, IdentityKey, IdentityPublic, Kem};
use crate::msg::{Message, MessageKind};
use crate::{version_supported, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use hpke::{
    aead::ChaCha20Poly1305, kdf::HkdfSha256, Deserializable, OpModeR, OpModeS, Serializable,
};
use serde::{Deserialize, Serialize};

const SIGN_DOMAIN: &[u8] = b"lattice/envelope/v1";
const SEAL_INFO: &[u8] = b"lattice/seal/v1";

/// Who sent an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sender {
    Fleet,
    Node(String),
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sender::Fleet => f.write_str("fleet"),
            Sender::Node(id) => write!(f, "node {id}"),
        }
    }
}

/// The signed header: everything a receiver needs before it opens the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub sender: Sender,
    /// The node a downward message is for (`None` for upward messages).
    pub recipient: Option<String>,
    /// The sender's connection epoch: persisted and bumped before every connection, so
    /// (epoch, counter) never repeats.
    pub epoch: u64,
    pub counter: u64,
    pub timestamp_ms: u64,
    pub kind: MessageKind,
    pub sealed: bool,
}

#[derive(Serialize, Deserialize)]
struct Outer {
    version: u16,
    header: Vec<u8>,
    body: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    enc: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Why an envelope was refused. [`WireError::reason`] gives a short stable label for metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    #[error("signature does not verify for {0}")]
    BadSignature(Sender),
    #[error("{kind} must be sealed to its recipient but arrived in the clear")]
    NotSealed { kind: &'static str },
    #[error("sealed {kind} cannot be opened: {reason}")]
    Decrypt { kind: &'static str, reason: String },
    #[error("header says {header} but the body is {body}")]
    KindMismatch {
        header: &'static str,
        body: &'static str,
    },
    #[error("cannot seal: {0}")]
    Seal(String),
}

impl WireError {
    /// A short label for logs and the `rejected messages by reason` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::TooLarge { .. } => "oversized",
            WireError::Malformed(_) => "malformed",
            WireError::UnsupportedVersion(_) => "unsupported_version",
            WireError::BadSignature(_) => "bad_signature",
            WireError::NotSealed { .. } => "not_sealed",
            WireError::Decrypt { .. } => "decrypt_failed",
            WireError::KindMismatch { .. } => "kind_mismatch",
            WireError::Seal(_) => "seal_failed",
        }
    }
}

fn signed_bytes(version: u16, header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_DOMAIN.len() + 2 + 8 + header.len() + body.len());
    m.extend_from_slice(SIGN_DOMAIN);
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(&(header.len() as u32).to_le_bytes());
    m.extend_from_slice(header);
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// Encodes, signs and (when `seal_to` is given) seals `message`.
///
/// Kinds that carry secrets ([`MessageKind::requires_sealing`]) must be given a `seal_to` key.
pub fn encode(
    header: &Envelope,
    message: &Message,
    signer: &IdentityKey,
    seal_to: Option<&EncryptionPublic>,
) -> Result<Vec<u8>, WireError> {
    encode_version(PROTOCOL_VERSION, header, message, signer, seal_to)
}

/// [`encode`] under another protocol version (tests of mixed versions).
fn encode_version(
    version: u16,
    header: &Envelope,
    message: &Message,
    signer: &IdentityKey,
    seal_to: Option<&EncryptionPublic>,
) -> Result<Vec<u8>, WireError> {
    let kind = message.kind();
    if kind != header.kind {
        return Err(WireError::KindMismatch {
            header: header.kind.as_str(),
            body: kind.as_str(),
        });
    }
    if kind.requires_sealing() && seal_to.is_none() {
        return Err(WireError::NotSealed {
            kind: kind.as_str(),
        });
    }
    let mut header = header.clone();
    header.sealed = seal_to.is_some();
    let header_bytes =
        postcard::to_allocvec(&header).map_err(|e| WireError::Seal(e.to_string()))?;
    let plain = postcard::to_allocvec(message).map_err(|e| WireError::Seal(e.to_string()))?;
    let body = match seal_to {
        None => plain,
        Some(pk) => {
            let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
                &OpModeS::Base,
                &pk.0,
                SEAL_INFO,
                &plain,
                &header_bytes,
                &mut rand::rng(),
            )
            .map_err(|e| WireError::Seal(e.to_string()))?;
            postcard::to_allocvec(&Sealed {
                enc: enc.to_bytes().to_vec(),
                ciphertext,
            })
            .map_err(|e| WireError::Seal(e.to_string()))?
        }
    };
    let signature = signer
        .sign(&signed_bytes(version, &header_bytes, &body))
        .to_vec();
    let out = postcard::to_allocvec(&Outer {
        version,
        header: header_bytes,
        body,
        signature,
    })
    .map_err(|e| WireError::Seal(e.to_string()))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            len: out.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(out)
}

/// An envelope whose structure is valid but whose signature is not yet checked.
#[derive(Debug)]
pub struct Unverified {
    pub version: u16,
    /// The header as claimed by the sender. Do not act on it before [`Unverified::open`].
    pub header: Envelope,
    header_bytes: Vec<u8>,
    body: Vec<u8>,
    signature: Vec<u8>,
}

/// A verified, opened message.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub version: u16,
    pub header: Envelope,
    pub message: Message,
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

/// Checks size, version and structure. Never panics, for any input.
pub fn decode(bytes: &[u8]) -> Result<Unverified, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    // The version is the first field: read it alone first, so a future layout is reported as
    // an unsupported version rather than as garbage.
    let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(malformed)?;
    if !version_supported(version) {
        return Err(WireError::UnsupportedVersion(version));
    }
    let (outer, rest) = postcard::take_from_bytes::<Outer>(bytes).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes after the envelope",
            rest.len()
        )));
    }
    let header: Envelope = postcard::from_bytes(&outer.header).map_err(malformed)?;
    if let Sender::Node(id) = &header.sender {
        if !crate::topic::valid_node_id(id) {
            return Err(WireError::Malformed("sender is not a valid node id".into()));
        }
    }
    if outer.signature.len() != 64 {
        return Err(WireError::Malformed(format!(
            "signature is {} bytes, expected 64",
            outer.signature.len()
        )));
    }
    Ok(Unverified {
        version: outer.version,
        header,
        header_bytes: outer.header,
        body: outer.body,
        signature: outer.signature,
    })
}

impl Unverified {
    /// Verifies the signature with the sender's registered key, then opens the body (with
    /// `recipient_key` when it is sealed) and checks it is the kind the header names.
    pub fn open(
        self,
        sender_key: &IdentityPublic,
        recipient_key: Option<&EncryptionKey>,
    ) -> Result<Opened, WireError> {
        let signed = signed_bytes(self.version, &self.header_bytes, &self.body);
        if !sender_key.verify(&signed, &self.signature) {
            return Err(WireError::BadSignature(self.header.sender));
        }
        let kind = self.header.kind;
        // Version 2 added `WorkloadSpec::upstreams`: a version-1 target would be read with
        // the fields shifted, so it is refused rather than misread (other kinds are unchanged).
        if self.version < PROTOCOL_VERSION && kind == crate::msg::MessageKind::Target {
            return Err(WireError::UnsupportedVersion(self.version));
        }
        if kind.requires_sealing() && !self.header.sealed {
            return Err(WireError::NotSealed {
                kind: kind.as_str(),
            });
        }
        let plain = if self.header.sealed {
            let key = recipient_key.ok_or_else(|| WireError::Decrypt {
                kind: kind.as_str(),
                reason: "no key to open it with".into(),
            })?;
            let sealed: Sealed = postcard::from_bytes(&self.body).map_err(malformed)?;
            let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc).map_err(|e| {
                WireError::Decrypt {
                    kind: kind.as_str(),
                    reason: e.to_string(),
                }
            })?;
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeR::Base,
                key.secret(),
                &enc,
                SEAL_INFO,
                &sealed.ciphertext,
                &self.header_bytes,
            )
            .map_err(|e| WireError::Decrypt {
                kind: kind.as_str(),
                reason: e.to_string(),
            })?
        } else {
            self.body
        };
        let message: Message = postcard::from_bytes(&plain).map_err(malformed)?;
        if message.kind() != kind {
            return Err(WireError::KindMismatch {
                header: kind.as_str(),
                body: message.kind().as_str(),
            });
        }
        Ok(Opened {
            version: self.version,
            header: self.header,
            message,
        })
    }
}

#[cfg(test)]
mod tests;
