//! Fleet key rotation: a new fleet key is trusted when the old one signed it.
//!
//! A [`RotationStatement`] says "from epoch `epoch` on, the fleet's key is `new_key`", signed by
//! `old_key`. The fleet keeps every statement it ever made, oldest first, as a
//! [`RotationChain`], and serves it with its TLS certificate (see `pin`), so a node that pinned
//! any earlier key walks the chain from its pin to the current key, however many rotations it
//! missed. A node's [`FleetPin`] is the key it trusts and the epoch of the statement that gave
//! it that key (0 for a key pinned at provisioning).
//!
//! Rules ([`advance`]): only a statement whose `old_key` is the pinned key, whose epoch is
//! above the pin's, and whose signature verifies under that key moves the pin. A statement
//! signed by any other key, a tampered one and a replayed older one never do. No I/O here:
//! persisting the pin is the node's business.

use crate::keys::{IdentityKey, IdentityPublic};
use serde::{Deserialize, Serialize};

/// Version of the statement layout this build makes and accepts.
pub const ROTATION_VERSION: u16 = 1;

/// Domain tag of the signed bytes (distinct from envelopes and registration).
pub const ROTATION_DOMAIN: &[u8] = b"lattice/fleet-key-rotation/v1";

/// Most statements a chain may hold (far above any real history; bounds decoding work).
pub const MAX_CHAIN_STATEMENTS: usize = 1024;

/// Largest encoded chain accepted (1024 statements are about 150 KiB).
pub const MAX_CHAIN_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("rotation chain is malformed: {0}")]
    Malformed(String),
    #[error("rotation chain is larger than {MAX_CHAIN_BYTES} bytes or {MAX_CHAIN_STATEMENTS} statements")]
    TooLarge,
    #[error(
        "rotation statement version {0} is not supported (this build knows {ROTATION_VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error("rotation statement for epoch {epoch} is not signed by its old key {old_key}")]
    BadSignature { epoch: u64, old_key: String },
    #[error("rotation statement for epoch {epoch} rotates {key} to itself")]
    SameKey { epoch: u64, key: String },
    #[error("rotation statement for epoch {epoch} does not follow the previous one (expected old key {expected} at epoch {expected_epoch})")]
    Broken {
        epoch: u64,
        expected: String,
        expected_epoch: u64,
    },
    #[error("rotation statement for epoch {epoch} is not newer than the pinned epoch {pinned}")]
    Replayed { epoch: u64, pinned: u64 },
    #[error("rotation statement for epoch {epoch} rotates {old_key}, which is not the pinned key")]
    NotPinned { epoch: u64, old_key: String },
}

impl RotationError {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RotationError::Malformed(_) => "malformed",
            RotationError::TooLarge => "oversized",
            RotationError::UnsupportedVersion(_) => "unsupported_version",
            RotationError::BadSignature { .. } => "bad_signature",
            RotationError::SameKey { .. } => "same_key",
            RotationError::Broken { .. } => "broken_chain",
            RotationError::Replayed { .. } => "replayed",
            RotationError::NotPinned { .. } => "not_pinned_key",
        }
    }
}

/// "From `epoch` on the fleet's key is `new_key`", signed by `old_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationStatement {
    pub version: u16,
    /// 1 for the fleet's first rotation, one more for each later one.
    pub epoch: u64,
    pub old_key: IdentityPublic,
    pub new_key: IdentityPublic,
    /// The fleet's wall clock when it rotated; informational.
    pub issued_ms: u64,
    /// Ed25519 by `old_key` over [`RotationStatement::signed_bytes`].
    pub signature: Vec<u8>,
}

impl RotationStatement {
    /// The statement that moves the fleet from `old` to `new` at `epoch`.
    pub fn sign(old: &IdentityKey, new: &IdentityPublic, epoch: u64, issued_ms: u64) -> Self {
        let mut s = RotationStatement {
            version: ROTATION_VERSION,
            epoch,
            old_key: old.public(),
            new_key: *new,
            issued_ms,
            signature: Vec::new(),
        };
        s.signature = old.sign(&s.signed_bytes()).to_vec();
        s
    }

    /// `domain ‖ version (u16 LE) ‖ epoch (u64 LE) ‖ old key (32) ‖ new key (32) ‖ issued_ms
    /// (u64 LE)`: fixed-size fields, so no two statements share signed bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ROTATION_DOMAIN.len() + 2 + 8 + 64 + 8);
        b.extend_from_slice(ROTATION_DOMAIN);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(&self.old_key.to_bytes());
        b.extend_from_slice(&self.new_key.to_bytes());
        b.extend_from_slice(&self.issued_ms.to_le_bytes());
        b
    }

    /// Checks the version, that the key changes, and the signature by `old_key`.
    pub fn verify(&self) -> Result<(), RotationError> {
        if self.version != ROTATION_VERSION {
            return Err(RotationError::UnsupportedVersion(self.version));
        }
        if self.old_key == self.new_key {
            return Err(RotationError::SameKey {
                epoch: self.epoch,
                key: self.old_key.to_string(),
            });
        }
        if !self.old_key.verify(&self.signed_bytes(), &self.signature) {
            return Err(RotationError::BadSignature {
                epoch: self.epoch,
                old_key: self.old_key.to_string(),
            });
        }
        Ok(())
    }
}

/// Every rotation of a fleet, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationChain {
    pub statements: Vec<RotationStatement>,
}

impl RotationChain {
    /// postcard bytes (what the fleet stores and puts in its certificate).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs and vectors into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parses `bytes` (no trailing bytes, bounded size). Does not check signatures.
    pub fn decode(bytes: &[u8]) -> Result<Self, RotationError> {
        if bytes.len() > MAX_CHAIN_BYTES {
            return Err(RotationError::TooLarge);
        }
        let (chain, rest): (RotationChain, _) = postcard::take_from_bytes(bytes)
            .map_err(|e| RotationError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RotationError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if chain.statements.len() > MAX_CHAIN_STATEMENTS {
            return Err(RotationError::TooLarge);
        }
        Ok(chain)
    }

    /// Checks every statement and that they link up: epochs 1, 2, 3, … and each old key the
    /// previous new key. Returns the key (and epoch) the chain ends at, `None` when empty.
    pub fn verify(&self) -> Result<Option<FleetPin>, RotationError> {
        let mut tip: Option<FleetPin> = None;
        for s in &self.statements {
            s.verify()?;
            let expected_epoch = tip.map_or(1, |t| t.epoch + 1);
            if let Some(t) = tip {
                if s.old_key != t.key || s.epoch != expected_epoch {
                    return Err(RotationError::Broken {
                        epoch: s.epoch,
                        expected: t.key.to_string(),
                        expected_epoch,
                    });
                }
            } else if s.epoch != 1 {
                return Err(RotationError::Broken {
                    epoch: s.epoch,
                    expected: s.old_key.to_string(),
                    expected_epoch,
                });
            }
            tip = Some(FleetPin {
                key: s.new_key,
                epoch: s.epoch,
            });
        }
        Ok(tip)
    }

    /// The chain with one more statement: `old` (the current tip, or the fleet's only key when
    /// the chain is empty) hands over to `new`.
    pub fn extend(&self, old: &IdentityKey, new: &IdentityPublic, issued_ms: u64) -> Self {
        let epoch = self.statements.last().map_or(1, |s| s.epoch + 1);
        let mut next = self.clone();
        next.statements
            .push(RotationStatement::sign(old, new, epoch, issued_ms));
        next
    }
}

/// The fleet key a node trusts, and the epoch of the statement that gave it (0: provisioned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetPin {
    pub key: IdentityPublic,
    pub epoch: u64,
}

impl FleetPin {
    /// A key pinned at provisioning.
    pub fn provisioned(key: IdentityPublic) -> Self {
        FleetPin { key, epoch: 0 }
    }
}

/// One step: `statement` moves `pin` if it rotates the pinned key, is newer than the pin and
/// verifies. The pure check a node makes before it persists a new pin.
pub fn accept(pin: FleetPin, statement: &RotationStatement) -> Result<FleetPin, RotationError> {
    if statement.old_key != pin.key {
        return Err(RotationError::NotPinned {
            epoch: statement.epoch,
            old_key: statement.old_key.to_string(),
        });
    }
    if statement.epoch <= pin.epoch {
        return Err(RotationError::Replayed {
            epoch: statement.epoch,
            pinned: pin.epoch,
        });
    }
    statement.verify()?;
    Ok(FleetPin {
        key: statement.new_key,
        epoch: statement.epoch,
    })
}

/// Walks `statements` from `pin`: repeatedly takes the oldest statement whose old key is the
/// pinned key and whose epoch is above the pinned epoch, checks it with [`accept`], and moves
/// the pin to its new key. Statements from other keys (the history before the pin was made)
/// and older ones (replays) are not followed. Returns the pin reached (`pin` itself when
/// nothing applies). A statement that claims to rotate the pinned key but does not verify
/// (forged, tampered, unknown version) refuses the whole walk.
pub fn advance(pin: FleetPin, statements: &[RotationStatement]) -> Result<FleetPin, RotationError> {
    let mut at = pin;
    // Each step strictly raises the epoch, so this ends after at most len steps.
    for _ in 0..statements.len() {
        let next = statements
            .iter()
            .filter(|s| s.old_key == at.key && s.epoch > at.epoch)
            .min_by_key(|s| s.epoch);
        match next {
            Some(s) => at = accept(at, s)?,
            None => break,
        }
    }
    Ok(at)
}

/// [`advance`] that must end at `presented` (the key a TLS server showed): the pin reached, or
/// why not.
pub fn advance_to(
    pin: FleetPin,
    statements: &[RotationStatement],
    presented: &IdentityPublic,
) -> Result<FleetPin, AdvanceError> {
    let reached = advance(pin, statements).map_err(AdvanceError::Refused)?;
    if reached.key == *presented {
        Ok(reached)
    } else {
        Err(AdvanceError::NoPath {
            reached_key: reached.key.to_string(),
            reached_epoch: reached.epoch,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvanceError {
    #[error("rotation refused: {0}")]
    Refused(RotationError),
    #[error("no rotation statement leads from the pinned key to the presented one (walked to {reached_key} at epoch {reached_epoch})")]
    NoPath {
        reached_key: String,
        reached_epoch: u64,
    },
}

#[cfg(test)]
mod tests;
