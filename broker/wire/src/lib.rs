//! The Lattice wire protocol, shared by the fleet and the node supervisor.
//!
//! This crate does no I/O and does not link the broker: `latticed` depends on it alone.
//!
//! * [`topic`] — the per-node MQTT topic scheme (`lattice/v1/nodes/{node}/{channel}`).
//! * [`msg`] — the message types (serde, encoded with postcard).
//! * [`envelope`] — the versioned envelope: every message is signed by its sender (Ed25519),
//!   and anything secret (targets, credentials) is sealed to the recipient's X25519 key with
//!   HPKE (RFC 9180). Decoding never panics: any byte string gives a value or a typed error.
//! * [`replay`] — the per-sender (epoch, counter) window that refuses replayed envelopes.
//! * [`keys`] — key types and their text encodings.
//! * [`rotation`] — fleet key rotation statements and the walk from a pinned key to the current one.
//! * [`wifi`] — the config partition's Wi-Fi file and the `wpa_supplicant` configuration made from it.
//!
//! The broker is not trusted (rumqttd has no topic ACLs, and an operator may run any broker):
//! a receiver accepts a message only when its signature verifies under the key registered for
//! the sender the topic names, and its (epoch, counter) has not been seen before.

pub mod broker_url;
pub mod envelope;
pub mod keys;
pub mod msg;
#[cfg(feature = "pin")]
pub mod pin;
pub mod register;
pub mod replay;
pub mod rotation;
pub mod topic;
pub mod wifi;

pub use envelope::{Envelope, Opened, Sender, WireError};
pub use keys::{EncryptionKey, EncryptionPublic, IdentityKey, IdentityPublic, KeyError};
pub use msg::{Message, MessageKind};
pub use replay::{ReplayError, ReplayWindow};

/// The protocol version this build speaks. 2: `WorkloadSpec::upstreams` (targets only; every
/// node-to-fleet message is as in 1).
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest envelope (encoded bytes) anyone should send or accept: 256 KiB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Whether a receiver accepts envelopes of protocol version `v`: the current and the previous
/// one (mixed fleets are normal while an OTA rollout is in progress).
pub fn version_supported(v: u16) -> bool {
    v == PROTOCOL_VERSION || (PROTOCOL_VERSION > 1 && v == PROTOCOL_VERSION - 1)
}

/// Milliseconds since the Unix epoch (wall clock), for envelope timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_current_and_previous_versions_are_supported() {
        assert!(version_supported(PROTOCOL_VERSION));
        assert!(!version_supported(PROTOCOL_VERSION + 1));
        assert!(!version_supported(0));
    }
}
