//! The seam between the control loop and whatever makes the machine match a target.
//!
//! The agent hands every newer target to an [`Applier`]; only when it succeeds is the
//! revision recorded as applied (and acknowledged in the next status). The runtime issue
//! plugs its container reconciler in here; until then [`RecordingApplier`] just records it.

use lattice_wire::msg::{Target, WorkloadStatus};

/// Why a target could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// Makes the machine match a target.
pub trait Applier: Send {
    /// Brings the machine to `target`. Must be idempotent: the same target may come again.
    fn apply(&mut self, target: &Target) -> Result<(), ApplyError>;

    /// What each workload is doing, for the status message.
    fn workloads(&self) -> Vec<WorkloadStatus> {
        Vec::new()
    }

    /// Events that happened since the last call (kind, detail), for the fleet.
    fn take_events(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Accepts every target and remembers the last one; runs nothing.
#[derive(Debug, Default)]
pub struct RecordingApplier {
    last: Option<Target>,
}

impl RecordingApplier {
    /// The last target applied.
    pub fn last(&self) -> Option<&Target> {
        self.last.as_ref()
    }
}

impl Applier for RecordingApplier {
    fn apply(&mut self, target: &Target) -> Result<(), ApplyError> {
        tracing::info!(
            revision = target.revision,
            workloads = target.workloads.len(),
            "target recorded (no runtime yet)"
        );
        self.last = Some(target.clone());
        Ok(())
    }
}
