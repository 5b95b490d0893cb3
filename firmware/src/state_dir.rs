//! Helpers for the node's persistent state directory (identity key, epoch counter, ...).
//!
//! A node can lose power at any instant (SD cards, USB sticks, QEMU killed by a hobbyist), so
//! every write here is crash-atomic: write a temp file in the same directory, fsync it, rename
//! it over the target, fsync the directory. A reader sees the old contents or the new ones,
//! never a mix or an empty file. Secrets are created 0600 from the start (never briefly
//! world-readable) and are refused on read if someone loosened their mode, so a misconfigured
//! image is loud instead of leaking the node identity. Symlinks are refused so a planted link
//! cannot redirect a secret write elsewhere.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Failures of the state-directory helpers; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing to use {path}: it is a symlink")]
    Symlink { path: PathBuf },
    #[error("{path} has mode {mode:04o}, expected 0600")]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("{path} is not a file path (no parent directory or file name)")]
    InvalidPath { path: PathBuf },
    #[error(
        "epoch file {path} is corrupt ({content:?}); refusing to reset it, that would reuse epochs"
    )]
    CorruptEpoch { path: PathBuf, content: String },
    #[error("epoch file {path} is at u64::MAX; cannot advance")]
    EpochOverflow { path: PathBuf },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

/// Atomically replace `path` with `bytes`, created with mode 0600. Refuses a symlink at `path`.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_atomic(path, bytes, 0o600)
}

/// Atomically replace `path` with `bytes`, mode 0644. Refuses a symlink at `path`.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_atomic(path, bytes, 0o644)
}

/// Read a secret written by [`write_secret_file`]. `None` if it does not exist; an error if it
/// is a symlink or readable by group/others.
pub fn read_secret_file(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(StateError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    // fstat the handle we read from, so the check and the read see the same inode.
    let mode = file
        .metadata()
        .map_err(io_err("stat", path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StateError::InsecureMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(io_err("read", path))?;
    Ok(Some(buf))
}

/// A persisted, strictly increasing `u64` (the node's boot/session epoch).
///
/// The file holds the last epoch handed out, as decimal text. [`EpochCounter::next_epoch`]
/// durably stores the new value *before* returning it, so no epoch is ever returned twice,
/// even across crashes (a crash may skip a value, which is harmless).
pub struct EpochCounter;

impl EpochCounter {
    /// Read the stored epoch (0 if the file is absent), persist `stored + 1`, return it.
    pub fn next_epoch(path: &Path) -> Result<u64, StateError> {
        let next =
            Self::current(path)?
                .checked_add(1)
                .ok_or_else(|| StateError::EpochOverflow {
                    path: path.to_path_buf(),
                })?;
        write_file_atomic(path, format!("{next}\n").as_bytes())?;
        Ok(next)
    }

    /// The last epoch handed out (0 if none). A corrupt file is an error, never a reset.
    pub fn current(path: &Path) -> Result<u64, StateError> {
        let text = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let text = String::from_utf8_lossy(&text);
        text.trim()
            .parse::<u64>()
            .map_err(|_| StateError::CorruptEpoch {
                path: path.to_path_buf(),
                content: text.chars().take(40).collect(),
            })
    }
}

/// Shorthand for [`EpochCounter::next_epoch`].
pub fn next_epoch(path: &Path) -> Result<u64, StateError> {
    EpochCounter::next_epoch(path)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let invalid = || StateError::InvalidPath {
        path: path.to_path_buf(),
    };
    let name = path.file_name().ok_or_else(invalid)?;
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(invalid()),
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(StateError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", path)(e)),
    }
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = write_tmp_and_rename(&tmp, path, dir, bytes, mode);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_tmp_and_rename(
    tmp: &Path,
    path: &Path,
    dir: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), StateError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    // The umask may have stripped bits from `mode` (e.g. 0644 -> 0600); set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("chmod", tmp))?;
    file.write_all(bytes).map_err(io_err("write", tmp))?;
    file.sync_all().map_err(io_err("fsync", tmp))?;
    drop(file);
    fs::rename(tmp, path).map_err(io_err("rename into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn secret_file_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.key");
        assert_eq!(read_secret_file(&p).unwrap(), None);
        write_secret_file(&p, b"k1").unwrap();
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(read_secret_file(&p).unwrap().as_deref(), Some(&b"k1"[..]));
    }

    #[test]
    fn atomic_replace_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_file_atomic(&p, b"old contents").unwrap();
        write_file_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode_of(&p), 0o644);
        write_secret_file(&p, b"secret now").unwrap();
        assert_eq!(mode_of(&p), 0o600, "replace must not inherit the old mode");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files left behind: {names:?}");
    }

    #[test]
    fn loose_mode_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.key");
        write_file_atomic(&p, b"k").unwrap();
        let err = read_secret_file(&p).unwrap_err();
        assert!(matches!(err, StateError::InsecureMode { mode: 0o644, .. }));
        let msg = err.to_string();
        assert!(
            msg.ends_with("identity.key has mode 0644, expected 0600"),
            "{msg}"
        );
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        write_secret_file(&target, b"x").unwrap();
        let link = dir.path().join("identity.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_secret_file(&link, b"evil").unwrap_err();
        assert!(matches!(err, StateError::Symlink { .. }), "{err}");
        assert!(matches!(
            read_secret_file(&link),
            Err(StateError::Symlink { .. })
        ));
        assert_eq!(fs::read(&target).unwrap(), b"x");
    }

    #[test]
    fn next_epoch_strictly_increases_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("epoch");
        assert_eq!(EpochCounter::current(&p).unwrap(), 0);
        let mut last = 0;
        for _ in 0..20 {
            let e = next_epoch(&p).unwrap();
            assert!(e > last);
            last = e;
        }
        assert_eq!(last, 20);
        assert_eq!(EpochCounter::current(&p).unwrap(), 20);
        assert_eq!(fs::read_to_string(&p).unwrap(), "20\n");
    }

    #[test]
    fn corrupt_epoch_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("epoch");
        for bad in [&b"12x\n"[..], b"", b"-3", b"\xff\xfe"] {
            fs::write(&p, bad).unwrap();
            let err = next_epoch(&p).unwrap_err();
            assert!(matches!(err, StateError::CorruptEpoch { .. }), "{err}");
            assert!(err.to_string().contains(&*p.to_string_lossy()));
            assert_eq!(
                fs::read(&p).unwrap(),
                bad,
                "corrupt file must be left alone"
            );
        }
        fs::write(&p, u64::MAX.to_string()).unwrap();
        assert!(matches!(
            next_epoch(&p),
            Err(StateError::EpochOverflow { .. })
        ));
    }
}
