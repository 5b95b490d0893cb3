//! What the agent keeps on disk between runs, besides identity and outbox: the fleet's replay
//! window (`fleet-replay.json`), the last applied target (`target.json`, mode 0600 because
//! workload environments carry generated secrets) and the connection epoch (`epoch`).
//!
//! A corrupt replay window or target is not fatal: the node warns and starts from nothing.
//! That cannot re-apply an old target, because a target is only applied when its revision is
//! newer than the applied one, and the fleet re-sends what the node has not acknowledged.

use crate::state_dir::{
    next_epoch, read_secret_file, write_file_atomic, write_secret_file, StateError,
};
use lattice_wire::msg::Target;
use lattice_wire::ReplayWindow;
use std::path::{Path, PathBuf};

pub const REPLAY_FILE: &str = "fleet-replay.json";
pub const TARGET_FILE: &str = "target.json";
pub const EPOCH_FILE: &str = "epoch";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The agent's files in the data directory.
#[derive(Debug, Clone)]
pub struct AgentStore {
    dir: PathBuf,
}

impl AgentStore {
    pub fn new(data_dir: &Path) -> Self {
        AgentStore {
            dir: data_dir.to_path_buf(),
        }
    }

    /// Persists and returns the next connection epoch (strictly increasing, fsynced).
    pub fn next_epoch(&self) -> Result<u64, StoreError> {
        Ok(next_epoch(&self.dir.join(EPOCH_FILE))?)
    }

    pub fn load_replay(&self) -> ReplayWindow {
        let path = self.dir.join(REPLAY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "ignoring corrupt replay window: {e}");
                ReplayWindow::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ReplayWindow::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read replay window: {e}");
                ReplayWindow::default()
            }
        }
    }

    pub fn save_replay(&self, window: &ReplayWindow) -> Result<(), StoreError> {
        let json = serde_json::to_vec(window).map_err(|source| StoreError::Encode {
            what: "replay window",
            source,
        })?;
        Ok(write_file_atomic(&self.dir.join(REPLAY_FILE), &json)?)
    }

    /// The last applied target, if any.
    pub fn load_target(&self) -> Option<Target> {
        let path = self.dir.join(TARGET_FILE);
        match read_secret_file(&path) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring corrupt target: {e}");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("ignoring stored target: {e}");
                None
            }
        }
    }

    pub fn save_target(&self, target: &Target) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(target).map_err(|source| StoreError::Encode {
            what: "target",
            source,
        })?;
        Ok(write_secret_file(&self.dir.join(TARGET_FILE), &json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_and_target_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = AgentStore::new(dir.path());
        assert_eq!(s.load_replay(), ReplayWindow::default());
        assert_eq!(s.load_target(), None);
        let mut w = ReplayWindow::default();
        w.accept(4, 9).unwrap();
        s.save_replay(&w).unwrap();
        let t = Target {
            revision: 3,
            workloads: vec![],
            heartbeat_secs: 5,
        };
        s.save_target(&t).unwrap();
        let s = AgentStore::new(dir.path());
        assert_eq!(s.load_replay(), w);
        assert_eq!(s.load_target(), Some(t));
        let e1 = s.next_epoch().unwrap();
        assert!(AgentStore::new(dir.path()).next_epoch().unwrap() > e1);
    }

    #[test]
    fn corrupt_files_start_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REPLAY_FILE), "{").unwrap();
        write_secret_file(&dir.path().join(TARGET_FILE), b"nope").unwrap();
        let s = AgentStore::new(dir.path());
        assert_eq!(s.load_replay(), ReplayWindow::default());
        assert_eq!(s.load_target(), None);
    }
}
