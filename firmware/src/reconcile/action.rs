//! [`Action`]: one thing the reconcile shell is to do with the container runtime, as decided
//! by [`super::plan::Reconciler::step`]. Every action names its workload (so its result can be
//! fed back) and, when it touches an existing container, that container as listed.

use crate::runtime::Observed;
use lattice_wire::msg::WorkloadSpec;

/// One thing for the shell to do with the container runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    EnsureImage {
        workload: String,
        image: String,
    },
    Create {
        spec: WorkloadSpec,
        spec_hash: String,
    },
    Start {
        workload: String,
        container_id: String,
    },
    Stop {
        workload: String,
        container_id: String,
    },
    /// Removes a container; `purge` (the workload left the target) also removes its network
    /// and volumes. A container replaced after a spec change keeps its volumes.
    Remove {
        observed: Observed,
        purge: bool,
    },
    Pause {
        workload: String,
        container_id: String,
    },
    Unpause {
        workload: String,
        container_id: String,
    },
}

impl Action {
    /// The workload the action is for.
    pub fn workload(&self) -> &str {
        match self {
            Action::EnsureImage { workload, .. }
            | Action::Start { workload, .. }
            | Action::Stop { workload, .. }
            | Action::Pause { workload, .. }
            | Action::Unpause { workload, .. } => workload,
            Action::Create { spec, .. } => &spec.id,
            Action::Remove { observed, .. } => &observed.workload_id,
        }
    }

    /// The container the action touches, if it touches an existing one.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Action::EnsureImage { .. } | Action::Create { .. } => None,
            Action::Start { container_id, .. }
            | Action::Stop { container_id, .. }
            | Action::Pause { container_id, .. }
            | Action::Unpause { container_id, .. } => Some(container_id),
            Action::Remove { observed, .. } => Some(&observed.container_id),
        }
    }

    /// A short name for logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::EnsureImage { .. } => "ensure-image",
            Action::Create { .. } => "create",
            Action::Start { .. } => "start",
            Action::Stop { .. } => "stop",
            Action::Remove { .. } => "remove",
            Action::Pause { .. } => "pause",
            Action::Unpause { .. } => "unpause",
        }
    }
}
