//! Any byte string from the network decodes to an envelope or a typed error; opening it with
//! any key gives a message or a typed error. Never a panic, never unbounded allocation.
#![no_main]

use lattice_wire::{EncryptionKey, IdentityKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static KEYS: OnceLock<(IdentityKey, EncryptionKey)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (id, enc) = KEYS.get_or_init(|| (IdentityKey::generate(), EncryptionKey::generate()));
    if let Ok(u) = lattice_wire::envelope::decode(data) {
        let _ = u.open(&id.public(), Some(enc));
    }
    let _ = lattice_wire::topic::parse(&String::from_utf8_lossy(data));
});
