//! The fleet key this node pins, persisted so that it follows the fleet's key rotations.
//!
//! At provisioning the node pins the key in its provisioning string (kept in
//! `registration.json`). When the fleet rotates its key (`lattice keys rotate`), its TLS
//! certificates carry the chain of rotation statements; `lattice_wire::pin` verifies the chain
//! from the pinned key and hands the new pin to [`PersistentPin::adopt`], which writes
//! `fleet-pin.json` crash-atomically **before** the handshake goes on. From then on every TLS
//! connection (HTTPS, MQTT, the tunnel) and every target's signature is checked against the new
//! key. A chain that does not verify is refused with a WARN line and the pin stays.
//!
//! `fleet-pin.json` records the provisioned key it started from: a file left from another
//! provisioning (another fleet) is ignored. A file that does not parse is an error, never a
//! silent reset to the provisioned key.

use crate::state_dir::{write_file_atomic, StateError};
use lattice_wire::pin::PinHolder;
use lattice_wire::rotation::FleetPin;
use lattice_wire::IdentityPublic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The pin's file in the node's data directory.
pub const PIN_FILE: &str = "fleet-pin.json";

#[derive(Debug, thiserror::Error)]
pub enum PinFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({reason}); refusing to fall back to the provisioned fleet key")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Write(#[from] StateError),
}

/// What `fleet-pin.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinFile {
    /// The pinned fleet key (base64url).
    key: String,
    /// The epoch of the rotation statement that gave it.
    epoch: u64,
    /// The key pinned at provisioning this pin descends from (base64url).
    provisioned: String,
}

/// The node's pin, shared by every TLS client and the agent.
#[derive(Debug)]
pub struct PersistentPin {
    path: PathBuf,
    provisioned: IdentityPublic,
    pin: Mutex<FleetPin>,
}

impl PersistentPin {
    /// Loads the pin of `data_dir`, starting from `provisioned` (the registration's key) when
    /// there is no pin file yet, or when it descends from another key.
    pub fn load(data_dir: &Path, provisioned: IdentityPublic) -> Result<Arc<Self>, PinFileError> {
        let path = data_dir.join(PIN_FILE);
        let pin = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                FleetPin::provisioned(provisioned)
            }
            Err(source) => return Err(PinFileError::Read { path, source }),
            Ok(bytes) => {
                let corrupt = |reason: String| PinFileError::Corrupt {
                    path: path.clone(),
                    reason,
                };
                let file: PinFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                let key = IdentityPublic::parse(&file.key).map_err(|e| corrupt(e.to_string()))?;
                let from =
                    IdentityPublic::parse(&file.provisioned).map_err(|e| corrupt(e.to_string()))?;
                if from == provisioned {
                    FleetPin {
                        key,
                        epoch: file.epoch,
                    }
                } else {
                    tracing::warn!(
                        path = %path.display(),
                        "fleet pin file descends from another provisioned key; starting from the registration's key"
                    );
                    FleetPin::provisioned(provisioned)
                }
            }
        };
        if pin.key != provisioned {
            tracing::info!(fleet_key = %pin.key, epoch = pin.epoch, "pinning the rotated fleet key");
        }
        Ok(Arc::new(PersistentPin {
            path,
            provisioned,
            pin: Mutex::new(pin),
        }))
    }

    /// Writes `pin` (crash-atomic: temp file, fsync, rename, fsync directory).
    pub fn save(&self, pin: FleetPin) -> Result<(), PinFileError> {
        let file = PinFile {
            key: pin.key.to_string(),
            epoch: pin.epoch,
            provisioned: self.provisioned.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| PinFileError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_file_atomic(&self.path, &bytes)?;
        Ok(())
    }

    /// The pinned key now.
    pub fn key(&self) -> IdentityPublic {
        self.pin().key
    }
}

impl PinHolder for PersistentPin {
    fn pin(&self) -> FleetPin {
        *self.pin.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn adopt(&self, from: FleetPin, to: FleetPin) -> Result<(), String> {
        // Held across the write, so two handshakes (MQTT and the tunnel) cannot interleave.
        let mut pin = self.pin.lock().unwrap_or_else(PoisonError::into_inner);
        if *pin == to {
            return Ok(());
        }
        if *pin != from {
            return Err(format!("the pin changed meanwhile (now {})", pin.key));
        }
        if let Err(e) = self.save(to) {
            tracing::error!(error = %e, new_key = %to.key, "cannot save the rotated fleet key; keeping the old pin and refusing the server");
            return Err(e.to_string());
        }
        tracing::info!(
            old_key = %from.key,
            new_key = %to.key,
            epoch = to.epoch,
            "fleet key rotated: the new key is signed by the pinned one; pinning it from now on"
        );
        *pin = to;
        Ok(())
    }

    fn refused(&self, presented: &IdentityPublic, reason: &str) {
        tracing::warn!(
            pinned = %self.pin().key,
            presented = %presented,
            %reason,
            "fleet key rotation refused: the server's rotation statements do not verify from the pinned key; keeping the old pin"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_wire::IdentityKey;

    #[test]
    fn a_new_pin_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let k0 = IdentityKey::generate().public();
        let k1 = IdentityKey::generate().public();
        let p = PersistentPin::load(dir.path(), k0).unwrap();
        assert_eq!(p.pin(), FleetPin::provisioned(k0));
        assert!(!dir.path().join(PIN_FILE).exists());
        let to = FleetPin { key: k1, epoch: 1 };
        p.adopt(FleetPin::provisioned(k0), to).unwrap();
        assert_eq!(p.key(), k1);
        let again = PersistentPin::load(dir.path(), k0).unwrap();
        assert_eq!(again.pin(), to);
        // A stale adopt (from a pin that is no longer current) is refused.
        assert!(again
            .adopt(FleetPin::provisioned(k0), FleetPin { key: k0, epoch: 9 })
            .is_err());
        assert_eq!(PersistentPin::load(dir.path(), k0).unwrap().pin(), to);
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_a_foreign_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let k0 = IdentityKey::generate().public();
        std::fs::write(dir.path().join(PIN_FILE), b"{not json").unwrap();
        let e = PersistentPin::load(dir.path(), k0).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");

        let other = IdentityKey::generate().public();
        let foreign = PersistentPin {
            path: dir.path().join(PIN_FILE),
            provisioned: other,
            pin: Mutex::new(FleetPin::provisioned(other)),
        };
        foreign
            .save(FleetPin {
                key: IdentityKey::generate().public(),
                epoch: 3,
            })
            .unwrap();
        assert_eq!(
            PersistentPin::load(dir.path(), k0).unwrap().pin(),
            FleetPin::provisioned(k0)
        );
    }

    #[test]
    fn a_pin_that_cannot_be_saved_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let k0 = IdentityKey::generate().public();
        let p = PersistentPin::load(&dir.path().join("missing-dir"), k0).unwrap();
        let to = FleetPin {
            key: IdentityKey::generate().public(),
            epoch: 1,
        };
        assert!(p.adopt(FleetPin::provisioned(k0), to).is_err());
        assert_eq!(p.pin(), FleetPin::provisioned(k0));
    }
}
