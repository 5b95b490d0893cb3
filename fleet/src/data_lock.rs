//! One fleet process per data directory: `fleet.lock`, an exclusive `flock` held for as long
//! as the fleet runs ([`crate::server::start`] takes it). The commands that rewrite the
//! directory offline (`lattice restore`, `lattice keys rotate`) take it too, so they refuse
//! while a fleet runs on it, and a fleet cannot start in the middle of them. The kernel drops
//! the lock when the process ends, however it ends: a killed fleet leaves no stale lock.
//!
//! `lattice gateway` runs beside the fleet on the same directory and does not take it.

use nix::fcntl::{Flock, FlockArg};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "fleet.lock";

/// Held while alive.
#[derive(Debug)]
pub struct DataLock {
    _lock: Flock<std::fs::File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is in use by a running fleet{pid}: stop it first",
        dir = .dir.display(),
        pid = .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("locking {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the lock of `dir` (which must exist) without waiting, and writes this process's id
/// into the file for the next one's error message.
pub fn acquire(dir: &Path) -> Result<DataLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(LockError::InUse {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err((_, e)) => return Err(io(e.into())),
    };
    lock.set_len(0).map_err(io)?;
    writeln!(*lock, "{}", std::process::id()).map_err(io)?;
    Ok(DataLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let e = acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&e, LockError::InUse { pid: Some(p), .. } if *p == std::process::id()),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("in use by a running fleet (pid "),
            "{e}"
        );
        drop(first);
        let _again = acquire(dir.path()).expect("free once the holder is gone");
    }
}
