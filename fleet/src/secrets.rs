//! The fleet's own secrets on disk: its Ed25519 identity key (what nodes pin) and the operator
//! credential. Files are created mode 0600 and never logged.

use lattice_wire::IdentityKey;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file and a rename.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // A temp file left by a crash keeps its old mode through open(): reset it before writing.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, SecretError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            return Err(SecretError::Invalid {
                path: path.to_path_buf(),
                problem: format!(
                    "mode is {:04o}, expected 0600 (others could read it)",
                    m.permissions().mode() & 0o777
                ),
            })
        }
        Ok(_) => {}
    }
    std::fs::read(path).map(Some).map_err(io(path))
}

/// Loads the fleet identity from `dir/fleet.key`, creating it on first start.
pub fn fleet_key(dir: &Path) -> Result<IdentityKey, SecretError> {
    let path = dir.join("fleet.key");
    match read_secret(&path)? {
        Some(bytes) => IdentityKey::from_bytes(&bytes).map_err(|e| SecretError::Invalid {
            path,
            problem: e.to_string(),
        }),
        None => {
            let key = IdentityKey::generate();
            write_secret(&path, &key.to_bytes())?;
            Ok(key)
        }
    }
}

/// Loads a text secret from `path` (mode must be 0600), creating it with `make` when absent.
pub fn load_or_create_text(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<String, SecretError> {
    if let Some(bytes) = read_secret(path)? {
        let text = String::from_utf8(bytes).map_err(|_| SecretError::Invalid {
            path: path.to_path_buf(),
            problem: "not UTF-8".into(),
        })?;
        return Ok(text.trim().to_string());
    }
    let text = make();
    write_secret(path, text.as_bytes())?;
    Ok(text)
}

/// Loads the operator credential from `dir/operator.token`, creating it on first start.
/// Returns the file's path and the credential.
pub fn operator_token(dir: &Path) -> Result<(PathBuf, String), SecretError> {
    let path = dir.join("operator.token");
    let token = load_or_create_text(&path, || format!("lop_{}", random_secret()))?;
    Ok((path, token))
}

/// 32 random bytes as unpadded base64url.
pub fn random_secret() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 of a high-entropy secret, hex. (Passwords chosen by people get argon2id; these
/// are 256-bit random values, for which a plain hash is the right tool.)
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in constant time.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = fleet_key(dir.path()).unwrap();
        let k2 = fleet_key(dir.path()).unwrap();
        assert_eq!(k1.public(), k2.public());
        let mode = std::fs::metadata(dir.path().join("fleet.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, t1) = operator_token(dir.path()).unwrap();
        let (_, t2) = operator_token(dir.path()).unwrap();
        assert_eq!(t1, t2);
    }

    #[test]
    fn world_readable_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fleet_key(dir.path()).unwrap();
        let p = dir.path().join("fleet.key");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = fleet_key(dir.path()).unwrap_err().to_string();
        assert!(e.contains("fleet.key") && e.contains("0644"), "{e}");
    }
}
