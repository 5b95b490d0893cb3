//! Registration over HTTPS (`POST /api/v1/register`) and the provisioning string.
//!
//! A node proves it holds the identity key it registers (proof of possession) by signing the
//! request; the fleet answers with a [`crate::msg::Registered`] message inside an envelope that
//! is signed by the fleet key the node pinned and sealed to the node's encryption key, so the
//! broker credential is readable only by that node.

use crate::keys::{EncryptionPublic, IdentityKey, IdentityPublic, KeyError};
use crate::msg::Inventory;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

const REGISTER_DOMAIN: &[u8] = b"lattice/register/v1";
const PROVISIONING_PREFIX: &str = "lattice1:";

/// The body of `POST /api/v1/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    pub token: String,
    /// Ed25519 public key, base64url.
    pub identity_key: String,
    /// X25519 public key, base64url.
    pub encryption_key: String,
    pub inventory: Inventory,
    pub firmware_version: String,
    /// Ed25519 signature by `identity_key` over [`RegisterRequest::signed_bytes`], base64url.
    pub signature: String,
}

/// The answer: a signed, sealed envelope carrying `Message::Registered`, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    pub envelope: String,
}

impl RegisterRequest {
    /// Builds and signs a request.
    pub fn new(
        token: &str,
        identity: &IdentityKey,
        encryption: &EncryptionPublic,
        inventory: Inventory,
        firmware_version: &str,
    ) -> RegisterRequest {
        let mut req = RegisterRequest {
            token: token.to_string(),
            identity_key: identity.public().to_string(),
            encryption_key: encryption.to_string(),
            inventory,
            firmware_version: firmware_version.to_string(),
            signature: String::new(),
        };
        req.signature = URL_SAFE_NO_PAD.encode(identity.sign(&req.signed_bytes()));
        req
    }

    /// What the signature covers: the token and both keys.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = REGISTER_DOMAIN.to_vec();
        for part in [&self.token, &self.identity_key, &self.encryption_key] {
            m.extend_from_slice(&(part.len() as u32).to_le_bytes());
            m.extend_from_slice(part.as_bytes());
        }
        m
    }

    /// Parses the keys and checks the proof of possession.
    pub fn verify(&self) -> Result<(IdentityPublic, EncryptionPublic), KeyError> {
        let id = IdentityPublic::parse(&self.identity_key)?;
        let enc = EncryptionPublic::parse(&self.encryption_key)?;
        let sig = URL_SAFE_NO_PAD
            .decode(&self.signature)
            .map_err(|e| KeyError::Base64 {
                what: "registration signature",
                reason: e.to_string(),
            })?;
        if !id.verify(&self.signed_bytes(), &sig) {
            return Err(KeyError::Invalid {
                what: "registration signature",
            });
        }
        Ok((id, enc))
    }
}

/// Everything a node needs to join a fleet, as one string an operator can paste:
/// `lattice1:` + base64url(JSON {url, token, fleet_key}).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// The fleet's HTTPS base URL, e.g. `https://fleet.example:8443`.
    pub url: String,
    pub token: String,
    /// The fleet's Ed25519 public key, base64url: pinned, never learned on first use.
    pub fleet_key: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProvisioningError {
    #[error("provisioning string must start with `{PROVISIONING_PREFIX}`")]
    Prefix,
    #[error("provisioning string is not valid base64url: {0}")]
    Base64(String),
    #[error("provisioning string holds invalid JSON: {0}")]
    Json(String),
    #[error("provisioning string: fleet url must start with https://, got `{0}`")]
    Url(String),
    #[error("provisioning string: {0}")]
    Key(#[from] KeyError),
}

impl Provisioning {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PROVISIONING_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn parse(text: &str) -> Result<Provisioning, ProvisioningError> {
        let b64 = text
            .trim()
            .strip_prefix(PROVISIONING_PREFIX)
            .ok_or(ProvisioningError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| ProvisioningError::Base64(e.to_string()))?;
        let p: Provisioning =
            serde_json::from_slice(&json).map_err(|e| ProvisioningError::Json(e.to_string()))?;
        if !p.url.starts_with("https://") {
            return Err(ProvisioningError::Url(p.url));
        }
        p.fleet_public()?;
        Ok(p)
    }

    pub fn fleet_public(&self) -> Result<IdentityPublic, KeyError> {
        IdentityPublic::parse(&self.fleet_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::EncryptionKey;

    #[test]
    fn request_proves_possession_of_the_identity_key() {
        let id = IdentityKey::generate();
        let enc = EncryptionKey::generate();
        let req = RegisterRequest::new("tok", &id, &enc.public(), Inventory::default(), "0.1");
        let (got_id, got_enc) = req.verify().unwrap();
        assert_eq!(got_id, id.public());
        assert_eq!(got_enc, enc.public());
        // Someone who copies the request but swaps in their own key fails.
        let mut stolen = req.clone();
        stolen.identity_key = IdentityKey::generate().public().to_string();
        assert!(stolen.verify().is_err());
        let mut other_token = req;
        other_token.token = "other".into();
        assert!(other_token.verify().is_err());
    }

    #[test]
    fn provisioning_string_round_trips_and_names_errors() {
        let p = Provisioning {
            url: "https://127.0.0.1:8443".into(),
            token: "t-1.secret".into(),
            fleet_key: IdentityKey::generate().public().to_string(),
        };
        assert_eq!(Provisioning::parse(&p.encode()).unwrap(), p);
        assert_eq!(Provisioning::parse("nope"), Err(ProvisioningError::Prefix));
        let plain = Provisioning {
            url: "http://x".into(),
            ..p
        };
        assert!(matches!(
            Provisioning::parse(&plain.encode()),
            Err(ProvisioningError::Url(_))
        ));
    }
}
