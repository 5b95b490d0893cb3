//! [`ReconcileApplier`]: the agent's [`Applier`] backed by a reconcile loop. `apply` checks the
//! target and hands it to the loop (the agent then records the revision as applied: the node
//! has accepted it and works toward it); `workloads` reports what the loop last saw.

use super::shell::{self, ReconcileHandle};
use super::validate;
use crate::agent::{Applier, ApplyError};
use crate::owner::EventSink;
use crate::runtime::docker::{DockerOptions, DockerRuntime};
use crate::runtime::ContainerRuntime;
use crate::shutdown::Shutdown;
use lattice_wire::msg::{Target, WorkloadStatus};
use std::sync::Arc;

/// Applies targets by reconciling containers toward them.
#[derive(Debug, Clone)]
pub struct ReconcileApplier {
    handle: ReconcileHandle,
    events: EventSink,
}

impl ReconcileApplier {
    /// An applier driving an existing loop.
    pub fn new(handle: ReconcileHandle) -> Self {
        ReconcileApplier {
            handle,
            events: EventSink::default(),
        }
    }

    /// Where background work queues events for the fleet (drained into the next status).
    pub fn events(&self) -> &EventSink {
        &self.events
    }

    /// Starts a reconcile loop on `runtime` (see [`shell::spawn`]) and wraps it. Must be
    /// called inside a tokio runtime.
    pub fn spawn<R: ContainerRuntime + 'static>(
        runtime: Arc<R>,
        node_id: String,
        cgroup_parent: String,
        shutdown: Shutdown,
    ) -> Self {
        ReconcileApplier::new(shell::spawn(runtime, node_id, cgroup_parent, shutdown))
    }

    /// The loop's handle (e.g. to set the batch window).
    pub fn handle(&self) -> &ReconcileHandle {
        &self.handle
    }
}

/// The production applier: a reconcile loop on the Docker engine described by `opts`, making
/// containers under `cgroup_parent` (the node's envelope). Nothing contacts the engine before
/// the first target, and an engine that is not up yet is waited for. Must be called inside a
/// tokio runtime.
pub fn docker_applier(
    opts: DockerOptions,
    node_id: String,
    cgroup_parent: String,
    shutdown: Shutdown,
) -> ReconcileApplier {
    let runtime = Arc::new(DockerRuntime::new(opts));
    ReconcileApplier::spawn(runtime, node_id, cgroup_parent, shutdown)
}

impl Applier for ReconcileApplier {
    fn apply(&mut self, target: &Target) -> Result<(), ApplyError> {
        let problems = validate::problems(target);
        if !problems.is_empty() {
            return Err(ApplyError(format!(
                "invalid target revision {}: {}",
                target.revision,
                problems.join("; ")
            )));
        }
        self.handle.set_target(target.clone());
        Ok(())
    }

    fn workloads(&self) -> Vec<WorkloadStatus> {
        self.handle.statuses()
    }

    fn take_events(&mut self) -> Vec<(String, String)> {
        self.events.drain()
    }
}
