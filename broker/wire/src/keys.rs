//! Key types: Ed25519 identity keys (signing) and X25519 keys (HPKE encryption).
//!
//! Secret keys are 32 random bytes; they are persisted by their owners (mode 0600) and never
//! printed: their `Debug` shows only the public half. Public keys travel as raw bytes on the
//! wire and as unpadded base64url in text (provisioning strings, the HTTP API).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, Verifier};
use hpke::{Deserializable, Kem as _, Serializable};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The HPKE KEM used for sealing: DHKEM(X25519, HKDF-SHA256).
pub type Kem = hpke::kem::X25519HkdfSha256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{what}: not valid base64url: {reason}")]
    Base64 { what: &'static str, reason: String },
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what}: not a valid key")]
    Invalid { what: &'static str },
}

fn decode_fixed<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|e| KeyError::Base64 {
            what,
            reason: e.to_string(),
        })?;
    fixed(what, &bytes)
}

fn fixed<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], KeyError> {
    bytes.try_into().map_err(|_| KeyError::Length {
        what,
        expected: N,
        got: bytes.len(),
    })
}

fn random_32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    b
}

/// An Ed25519 signing key: a node's or the fleet's identity.
#[derive(Clone)]
pub struct IdentityKey(ed25519_dalek::SigningKey);

impl IdentityKey {
    pub fn generate() -> Self {
        IdentityKey(ed25519_dalek::SigningKey::from_bytes(&random_32()))
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        Ok(IdentityKey(ed25519_dalek::SigningKey::from_bytes(&fixed(
            "identity secret key",
            bytes,
        )?)))
    }
    /// The 32 secret bytes, for persisting. Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// The key in PKCS#8 DER, for making a TLS certificate with it.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        // RFC 8410 PKCS#8 v1 for Ed25519: fixed 16-byte prefix + 32-byte seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&self.0.to_bytes());
        der
    }
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(self.0.verifying_key())
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey(public={})", self.public())
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdentityPublic(ed25519_dalek::VerifyingKey);

impl IdentityPublic {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let b: [u8; 32] = fixed("identity public key", bytes)?;
        ed25519_dalek::VerifyingKey::from_bytes(&b)
            .map(IdentityPublic)
            .map_err(|_| KeyError::Invalid {
                what: "identity public key",
            })
    }
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_fixed::<32>("identity public key", text)?)
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// Strict verification (rejects small-order keys and non-canonical signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.0.verify_strict(msg, &sig).is_ok() && self.0.verify(msg, &sig).is_ok()
    }
}

impl fmt::Display for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({self})")
    }
}

/// An X25519 secret key used to open HPKE-sealed messages.
#[derive(Clone)]
pub struct EncryptionKey {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: <Kem as hpke::Kem>::PublicKey,
    seed: [u8; 32],
}

impl EncryptionKey {
    pub fn generate() -> Self {
        Self::from_seed(random_32())
    }
    /// Rebuilds the key from the 32 bytes returned by [`EncryptionKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        Ok(Self::from_seed(fixed("encryption secret key", bytes)?))
    }
    fn from_seed(seed: [u8; 32]) -> Self {
        let (secret, public) = Kem::derive_keypair(&seed);
        EncryptionKey {
            secret,
            public,
            seed,
        }
    }
    /// The 32 seed bytes the key is derived from, for persisting.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.seed
    }
    pub fn public(&self) -> EncryptionPublic {
        EncryptionPublic(self.public.clone())
    }
    pub(crate) fn secret(&self) -> &<Kem as hpke::Kem>::PrivateKey {
        &self.secret
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(public={})", self.public())
    }
}

/// An X25519 public key that messages are sealed to.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionPublic(pub(crate) <Kem as hpke::Kem>::PublicKey);

impl EncryptionPublic {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(bytes)
            .map(EncryptionPublic)
            .map_err(|_| KeyError::Invalid {
                what: "encryption public key",
            })
    }
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_fixed::<32>("encryption public key", text)?)
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes().to_vec()
    }
}

impl fmt::Display for EncryptionPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl fmt::Debug for EncryptionPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionPublic({self})")
    }
}

macro_rules! serde_as_bytes {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.to_bytes())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes: serde_bytes_vec::Bytes = Deserialize::deserialize(d)?;
                <$t>::from_bytes(&bytes.0).map_err(serde::de::Error::custom)
            }
        }
    };
}

mod serde_bytes_vec {
    //! Deserializes a byte string (or a sequence of u8) into a Vec<u8>.
    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
    use std::fmt;

    pub struct Bytes(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element::<u8>()? {
                        if out.len() >= 64 {
                            return Err(serde::de::Error::custom("key too long"));
                        }
                        out.push(b);
                    }
                    Ok(Bytes(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

serde_as_bytes!(IdentityPublic);
serde_as_bytes!(EncryptionPublic);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_keys_sign_and_verify_and_round_trip() {
        let k = IdentityKey::generate();
        let sig = k.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hellO", &sig));
        let k2 = IdentityKey::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(k2.public(), k.public());
        assert_eq!(
            IdentityPublic::parse(&k.public().to_string()).unwrap(),
            k.public()
        );
    }

    #[test]
    fn encryption_keys_round_trip() {
        let k = EncryptionKey::generate();
        let k2 = EncryptionKey::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(k.public(), k2.public());
        assert_eq!(
            EncryptionPublic::parse(&k.public().to_string()).unwrap(),
            k.public()
        );
    }

    #[test]
    fn debug_never_shows_secret_bytes() {
        let k = IdentityKey::generate();
        let shown = format!("{k:?}");
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(k.to_bytes())));
    }

    #[test]
    fn bad_text_names_the_problem() {
        let e = IdentityPublic::parse("abc").unwrap_err();
        assert!(matches!(e, KeyError::Length { expected: 32, .. }), "{e}");
        let e = IdentityPublic::parse("!!!").unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
    }
}
