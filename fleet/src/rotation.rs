//! Fleet key rotation on disk (`lattice keys rotate`, offline against the data directory).
//!
//! `DATA/fleet.key` is the current key; `DATA/fleet-rotations` holds every rotation statement
//! the fleet ever made (a postcard [`RotationChain`], oldest first; public, but written 0600
//! like the key beside it). The chain goes into every TLS certificate the fleet serves (HTTPS,
//! MQTT, the tunnel; `lattice_wire::pin::ROTATION_EXTENSION_OID`), so a node that pinned any
//! earlier key follows it at its next handshake, however many rotations it missed.
//!
//! A rotation writes the new secret to `fleet.key.next`, then the longer chain, then renames
//! `fleet.key.next` over `fleet.key`: a crash in between leaves a chain ending at the key in
//! `fleet.key.next`, and [`load`] finishes the rename at the next start.

use crate::secrets::write_secret;
use anyhow::{bail, Context};
use lattice_wire::rotation::{FleetPin, RotationChain};
use lattice_wire::{IdentityKey, IdentityPublic};
use std::path::Path;

/// The chain's file in the data directory.
pub const CHAIN_FILE: &str = "fleet-rotations";
/// The new key while a rotation is being written.
pub const NEXT_KEY_FILE: &str = "fleet.key.next";

/// The stored chain (empty if the fleet never rotated), checked: every statement verifies and
/// they link up.
pub fn load_chain(dir: &Path) -> anyhow::Result<RotationChain> {
    let path = dir.join(CHAIN_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RotationChain::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let chain = RotationChain::decode(&bytes).with_context(|| format!("{}", path.display()))?;
    chain
        .verify()
        .with_context(|| format!("{} does not verify", path.display()))?;
    Ok(chain)
}

/// The fleet key and its rotation chain, checked against each other (the chain must end at the
/// key). Finishes a rotation that a crash interrupted. Makes the key on first start, like
/// `secrets::fleet_key`.
pub fn load(dir: &Path) -> anyhow::Result<(IdentityKey, RotationChain)> {
    let chain = load_chain(dir)?;
    let tip = chain.verify()?;
    let next_path = dir.join(NEXT_KEY_FILE);
    if let Some(tip) = tip {
        if !dir.join("fleet.key").exists() && !next_path.exists() {
            bail!(
                "{} holds a rotation chain but no fleet.key: restore the fleet's key (ending at {})",
                dir.display(),
                tip.key
            );
        }
        let current = crate::secrets::fleet_key(dir)?;
        if current.public() != tip.key {
            let next = read_next(dir)?;
            match next {
                Some(next) if next.public() == tip.key => {
                    finish(dir)?;
                    tracing::warn!(key = %tip.key, epoch = tip.epoch, "finished an interrupted fleet key rotation");
                    return Ok((next, chain));
                }
                _ => bail!(
                    "{}/fleet.key ({}) is not the key the rotation chain {} ends at ({}, epoch {}): \
                     restore the matching fleet.key",
                    dir.display(),
                    current.public(),
                    CHAIN_FILE,
                    tip.key,
                    tip.epoch
                ),
            }
        }
        if next_path.exists() {
            // A rotation that crashed before its chain was written: it never happened.
            std::fs::remove_file(&next_path)
                .with_context(|| format!("removing {}", next_path.display()))?;
        }
        return Ok((current, chain));
    }
    if next_path.exists() {
        std::fs::remove_file(&next_path)
            .with_context(|| format!("removing {}", next_path.display()))?;
    }
    Ok((crate::secrets::fleet_key(dir)?, chain))
}

fn read_next(dir: &Path) -> anyhow::Result<Option<IdentityKey>> {
    let path = dir.join(NEXT_KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(
            IdentityKey::from_bytes(&b).with_context(|| format!("{}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn finish(dir: &Path) -> anyhow::Result<()> {
    let from = dir.join(NEXT_KEY_FILE);
    let to = dir.join("fleet.key");
    std::fs::rename(&from, &to)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// What [`rotate`] did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub old: IdentityPublic,
    pub new: FleetPin,
    pub chain_len: usize,
}

/// Makes a new fleet key and the statement "new key, signed by the old one", appends it to the
/// chain and makes the new key the fleet's. The fleet must be restarted to serve it (a running
/// fleet keeps the old key in memory until then).
pub fn rotate(dir: &Path) -> anyhow::Result<Rotated> {
    if !dir.join("fleet.key").exists() {
        bail!(
            "{} holds no fleet (no fleet.key): pass the fleet's --data directory",
            dir.display()
        );
    }
    let (old, chain) = load(dir)?;
    let new = IdentityKey::generate();
    let next = chain.extend(&old, &new.public(), lattice_wire::now_ms());
    let tip = next
        .verify()?
        .context("a chain with a new statement has a tip")?;
    write_secret(&dir.join(NEXT_KEY_FILE), &new.to_bytes())?;
    write_secret(&dir.join(CHAIN_FILE), &next.encode())?;
    finish(dir)?;
    Ok(Rotated {
        old: old.public(),
        new: tip,
        chain_len: next.statements.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_chain_up_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (k0, chain) = load(dir.path()).unwrap();
        assert!(chain.statements.is_empty());
        let r1 = rotate(dir.path()).unwrap();
        assert_eq!(r1.old, k0.public());
        assert_eq!(r1.new.epoch, 1);
        let r2 = rotate(dir.path()).unwrap();
        assert_eq!(r2.old, r1.new.key);
        assert_eq!(r2.chain_len, 2);
        let (k, chain) = load(dir.path()).unwrap();
        assert_eq!(k.public(), r2.new.key);
        assert_eq!(chain.verify().unwrap(), Some(r2.new));
        // A node pinned at the first key walks to the current one.
        let pin =
            lattice_wire::rotation::advance(FleetPin::provisioned(k0.public()), &chain.statements)
                .unwrap();
        assert_eq!(pin, r2.new);
        use std::os::unix::fs::PermissionsExt;
        for f in ["fleet.key", CHAIN_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());
    }

    #[test]
    fn an_interrupted_rotation_is_finished_or_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (k0, chain) = load(dir.path()).unwrap();
        // Crash after the chain was written, before the rename: finished at load.
        let new = IdentityKey::generate();
        write_secret(&dir.path().join(NEXT_KEY_FILE), &new.to_bytes()).unwrap();
        let next = chain.extend(&k0, &new.public(), 1);
        write_secret(&dir.path().join(CHAIN_FILE), &next.encode()).unwrap();
        let (k, _) = load(dir.path()).unwrap();
        assert_eq!(k.public(), new.public());
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());
        assert_eq!(load(dir.path()).unwrap().0.public(), new.public());

        // Crash before the chain was written: the stray next key is dropped.
        write_secret(
            &dir.path().join(NEXT_KEY_FILE),
            &IdentityKey::generate().to_bytes(),
        )
        .unwrap();
        assert_eq!(load(dir.path()).unwrap().0.public(), new.public());
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());
    }

    #[test]
    fn a_key_that_does_not_match_the_chain_or_a_bad_chain_stops_the_fleet() {
        let dir = tempfile::tempdir().unwrap();
        load(dir.path()).unwrap();
        rotate(dir.path()).unwrap();
        // Someone put another fleet.key back.
        write_secret(
            &dir.path().join("fleet.key"),
            &IdentityKey::generate().to_bytes(),
        )
        .unwrap();
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("is not the key the rotation chain"), "{e}");

        // A chain file that does not verify.
        let dir = tempfile::tempdir().unwrap();
        load(dir.path()).unwrap();
        rotate(dir.path()).unwrap();
        let path = dir.path().join(CHAIN_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        write_secret(&path, &bytes).unwrap();
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(
            e.contains("does not verify") || e.contains("fleet-rotations"),
            "{e}"
        );
        assert!(rotate(dir.path()).is_err());

        // No fleet at all.
        let empty = tempfile::tempdir().unwrap();
        assert!(rotate(empty.path()).is_err());
    }
}
