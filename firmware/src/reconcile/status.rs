//! What each desired workload is doing, as reported to the fleet in every status: derived from
//! the observed containers and the reconciler's memory, without I/O.

use super::plan::{keeper, Desired, Memory, Reconciler};
use crate::runtime::{ContainerStatus, Health, Observed};
use lattice_wire::msg::{WorkloadClass, WorkloadState, WorkloadStatus};

impl Reconciler {
    /// One status per desired workload, in target order. A batch container held back by the
    /// availability windows (as of the last [`Reconciler::step`]) reports `Paused` even
    /// before it first started.
    pub fn statuses(&self, observed: &[Observed]) -> Vec<WorkloadStatus> {
        self.desired
            .iter()
            .map(|d| {
                let mem = self.memory.get(&d.spec.id);
                let held = d.spec.class == WorkloadClass::Batch && !self.batch_allowed;
                WorkloadStatus {
                    id: d.spec.id.clone(),
                    state: state(d, mem, observed, held),
                    restarts: mem.map_or(0, |m| m.restarts),
                }
            })
            .collect()
    }

    /// Statuses while the container engine cannot be reached: every workload `Failed` with
    /// `reason` (the engine error), since nothing is known about its containers (they may
    /// well have stopped with the engine).
    pub fn statuses_engine_down(&self, reason: &str) -> Vec<WorkloadStatus> {
        self.desired
            .iter()
            .map(|d| WorkloadStatus {
                id: d.spec.id.clone(),
                state: WorkloadState::Failed {
                    reason: reason.to_string(),
                },
                restarts: self.memory.get(&d.spec.id).map_or(0, |m| m.restarts),
            })
            .collect()
    }
}

fn state(d: &Desired, mem: Option<&Memory>, observed: &[Observed], held: bool) -> WorkloadState {
    let last_error = || mem.and_then(|m| m.last_error.clone());
    if let Some(reason) = mem.and_then(|m| m.rejected.clone()) {
        return WorkloadState::Failed { reason };
    }
    let mine: Vec<&Observed> = observed
        .iter()
        .filter(|o| o.workload_id == d.spec.id)
        .collect();
    let Some(c) = keeper(d, &mine) else {
        return match (
            mem.and_then(|m| m.image_missing.clone()),
            mem.and_then(|m| m.last_error.clone()),
        ) {
            (Some(reason), _) => WorkloadState::ImageMissing { reason },
            (None, Some(reason)) => WorkloadState::Failed { reason },
            (None, None) => WorkloadState::Creating,
        };
    };
    match &c.status {
        ContainerStatus::Running { health } => match health {
            Health::Healthy => WorkloadState::Healthy,
            Health::Unhealthy => WorkloadState::Unhealthy,
            Health::Unknown => WorkloadState::Running,
        },
        ContainerStatus::Paused => WorkloadState::Paused,
        ContainerStatus::Created if held => WorkloadState::Paused,
        // Made but not started: the last start's error, if it failed, is the reason the
        // owner needs (it is retried with backoff meanwhile).
        ContainerStatus::Created | ContainerStatus::Other(_) => match last_error() {
            Some(reason) => WorkloadState::Failed { reason },
            None => WorkloadState::Creating,
        },
        ContainerStatus::Exited {
            oom_killed: true, ..
        } => WorkloadState::OomKilled,
        ContainerStatus::Exited { code, .. } => WorkloadState::Exited { code: *code },
    }
}
