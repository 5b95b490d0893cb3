//! The container runtime behind a trait: the real one talks to the Docker engine (bollard,
//! `docker.rs`), the fake records calls and can be told to fail (`fake.rs`). The reconciler
//! (`crate::reconcile`) decides; this module only does.
//!
//! Ownership: every object the runtime makes carries the node id and the workload id as labels
//! (`LABEL_NODE`, `LABEL_WORKLOAD`) and in its name (`lattice-{node}-{workload}`), and
//! [`ContainerRuntime::list_owned`] returns only objects labelled with the caller's node id, so
//! several nodes can share one engine without touching each other's things.

pub mod docker;
pub mod fake;
pub mod hardening;
pub mod subnets;

use lattice_wire::msg::WorkloadSpec;
use std::future::Future;

/// Label naming the node that owns an object.
pub const LABEL_NODE: &str = "io.lattice.node";
/// Label naming the workload an object belongs to.
pub const LABEL_WORKLOAD: &str = "io.lattice.workload";
/// Label holding the hash of the spec a container was created from (a changed spec means
/// "replace the container").
pub const LABEL_SPEC: &str = "io.lattice.spec";

/// Docker object name for a workload's container (and network): `lattice-{node}-{workload}`.
pub fn object_name(node_id: &str, workload_id: &str) -> String {
    format!("lattice-{node_id}-{workload_id}")
}

/// What the engine says about one of our containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub container_id: String,
    pub workload_id: String,
    /// [`LABEL_SPEC`] of the container.
    pub spec_hash: String,
    pub status: ContainerStatus,
    /// RFC 3339 start time as the engine reports it (adoption must leave it unchanged).
    pub started_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running {
        health: Health,
    },
    Paused,
    Exited {
        code: i64,
        oom_killed: bool,
    },
    /// Restarting, removing, dead: the engine is busy with it.
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No health check, or none has finished yet.
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("the container engine is unreachable: {0}")]
    Unavailable(String),
    #[error("image {image} cannot be had: {reason}")]
    ImageMissing { image: String, reason: String },
    #[error("workload {workload}: {reason}")]
    Rejected { workload: String, reason: String },
    #[error("container {container}: {reason}")]
    Container { container: String, reason: String },
}

/// The operations the reconciler needs. Implementations must be idempotent where the name
/// says "ensure", and must only ever touch objects labelled with `node_id`.
pub trait ContainerRuntime: Send + Sync {
    /// Containers labelled with `node_id`, running or not.
    fn list_owned(
        &self,
        node_id: &str,
    ) -> impl Future<Output = Result<Vec<Observed>, RuntimeError>> + Send;
    /// Makes sure the image is present locally (pulls it if not).
    fn ensure_image(&self, image: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates (not starts) the workload's container with all its protections, its own
    /// network and volumes, under `cgroup_parent`; returns the container id.
    fn create(
        &self,
        node_id: &str,
        spec: &WorkloadSpec,
        spec_hash: &str,
        cgroup_parent: &str,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start(&self, container_id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn stop(&self, container_id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes the container. With `purge` (the workload left the target) also the network
    /// and volumes made for it; without (a container replaced after a spec change, a
    /// duplicate) its volumes, i.e. its data, stay for the next container.
    fn remove(
        &self,
        node_id: &str,
        observed: &Observed,
        purge: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn pause(&self, container_id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn unpause(&self, container_id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
