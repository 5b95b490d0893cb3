//! The node's identity and registration, persisted in its data directory.
//!
//! | file                | contents                                         | mode |
//! |---------------------|--------------------------------------------------|------|
//! | `identity.key`      | Ed25519 secret key (32 raw bytes)                | 0600 |
//! | `encryption.key`    | X25519 secret seed (32 raw bytes)                | 0600 |
//! | `broker.secret`     | the broker password from registration            | 0600 |
//! | `registration.json` | node id, broker URLs, heartbeat, fleet key & URL | 0644 |
//!
//! Keys are made on first start and reused ever after. `broker.secret` is written before
//! `registration.json`, so the presence of `registration.json` means the registration is
//! complete: a restarted node with it never registers again (no second node appears).

use crate::state_dir::{read_secret_file, write_file_atomic, write_secret_file, StateError};
use lattice_wire::{EncryptionKey, IdentityKey, IdentityPublic, KeyError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub const IDENTITY_FILE: &str = "identity.key";
pub const ENCRYPTION_FILE: &str = "encryption.key";
pub const BROKER_SECRET_FILE: &str = "broker.secret";
pub const REGISTRATION_FILE: &str = "registration.json";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid registration: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path} exists but {secret} is missing: the registration is incomplete; \
         remove {path} and the key files, then register again with a new provisioning token"
    )]
    MissingSecret { path: PathBuf, secret: PathBuf },
    #[error(
        "{path} was registered with identity key {registered}, but {key_file} holds {current}; \
         the keys were replaced: restore the original keys, or remove {path} and register \
         this identity with a new provisioning token (the fleet refuses an identity registered twice)"
    )]
    KeyMismatch {
        path: PathBuf,
        key_file: PathBuf,
        registered: String,
        current: String,
    },
}

/// The node's own keys.
#[derive(Debug, Clone)]
pub struct NodeKeys {
    pub identity: IdentityKey,
    pub encryption: EncryptionKey,
}

/// What the fleet told the node at registration (the broker password is kept apart, in
/// [`BrokerSecret`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub node_id: String,
    pub broker_urls: Vec<String>,
    pub heartbeat_secs: u32,
    /// The fleet's Ed25519 key (base64url), pinned from provisioning.
    pub fleet_key: String,
    /// The fleet's HTTPS base URL.
    pub fleet_url: String,
    /// Our identity public key as registered (base64url), to detect swapped key files.
    pub identity_key: String,
}

impl Registration {
    pub fn fleet_public(&self) -> Result<IdentityPublic, KeyError> {
        IdentityPublic::parse(&self.fleet_key)
    }
}

/// The broker password. Never printed: `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerSecret(String);

impl BrokerSecret {
    pub fn new(s: impl Into<String>) -> Self {
        BrokerSecret(s.into())
    }
    /// The password itself, for the MQTT CONNECT.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BrokerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerSecret(<redacted>)")
    }
}

/// Creates the data directory (mode 0700) if it does not exist.
pub fn prepare_data_dir(data_dir: &Path) -> Result<(), IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| IdentityError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })
}

fn load_or_make<K>(
    path: &Path,
    from_bytes: impl Fn(&[u8]) -> Result<K, KeyError>,
    generate: impl Fn() -> K,
    to_bytes: impl Fn(&K) -> [u8; 32],
) -> Result<(K, bool), IdentityError> {
    if let Some(bytes) = read_secret_file(path)? {
        let key = from_bytes(&bytes).map_err(|source| IdentityError::Key {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok((key, false));
    }
    let key = generate();
    write_secret_file(path, &to_bytes(&key))?;
    Ok((key, true))
}

/// Loads the node's keys, making (and persisting, 0600) any that do not exist yet.
pub fn load_or_generate(data_dir: &Path) -> Result<NodeKeys, IdentityError> {
    prepare_data_dir(data_dir)?;
    let (identity, new_id) = load_or_make(
        &data_dir.join(IDENTITY_FILE),
        IdentityKey::from_bytes,
        IdentityKey::generate,
        IdentityKey::to_bytes,
    )?;
    let (encryption, new_enc) = load_or_make(
        &data_dir.join(ENCRYPTION_FILE),
        EncryptionKey::from_bytes,
        EncryptionKey::generate,
        EncryptionKey::to_bytes,
    )?;
    if new_id || new_enc {
        tracing::info!(identity = %identity.public(), "generated node keys");
    } else {
        tracing::debug!(identity = %identity.public(), "loaded node keys");
    }
    Ok(NodeKeys {
        identity,
        encryption,
    })
}

/// Persists a completed registration: the secret first, then `registration.json`.
pub fn save_registration(
    data_dir: &Path,
    registration: &Registration,
    secret: &BrokerSecret,
) -> Result<(), IdentityError> {
    write_secret_file(&data_dir.join(BROKER_SECRET_FILE), secret.0.as_bytes())?;
    let path = data_dir.join(REGISTRATION_FILE);
    let json = serde_json::to_vec_pretty(registration).map_err(|e| IdentityError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_file_atomic(&path, &json)?;
    Ok(())
}

/// The stored registration, if the node has registered. Checks it belongs to `keys`.
pub fn load_registration(
    data_dir: &Path,
    keys: &NodeKeys,
) -> Result<Option<(Registration, BrokerSecret)>, IdentityError> {
    let path = data_dir.join(REGISTRATION_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Read { path, source }),
    };
    let corrupt = |message: String| IdentityError::Corrupt {
        path: path.clone(),
        message,
    };
    let reg: Registration = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    reg.fleet_public().map_err(|e| corrupt(e.to_string()))?;
    if !lattice_wire::topic::valid_node_id(&reg.node_id) {
        return Err(corrupt(format!("invalid node id {:?}", reg.node_id)));
    }
    if reg.broker_urls.is_empty() {
        return Err(corrupt("no broker URLs".into()));
    }
    let current = keys.identity.public().to_string();
    if reg.identity_key != current {
        return Err(IdentityError::KeyMismatch {
            key_file: data_dir.join(IDENTITY_FILE),
            path,
            registered: reg.identity_key,
            current,
        });
    }
    let secret_path = data_dir.join(BROKER_SECRET_FILE);
    let Some(secret) = read_secret_file(&secret_path)? else {
        return Err(IdentityError::MissingSecret {
            path,
            secret: secret_path,
        });
    };
    let secret = String::from_utf8(secret).map_err(|_| IdentityError::Corrupt {
        path: secret_path,
        message: "broker secret is not UTF-8".into(),
    })?;
    Ok(Some((reg, BrokerSecret(secret))))
}

#[cfg(test)]
mod tests;
