//! [`FakeRuntime`]: an in-memory [`ContainerRuntime`] for unit tests of the reconciler.
//!
//! It behaves like the Docker runtime where the reconciler can tell the difference, and lets
//! the test play the engine:
//!
//! - every trait call is recorded as a [`Call`] ([`FakeRuntime::calls`],
//!   [`FakeRuntime::take_calls`], [`FakeRuntime::count`]);
//! - [`FakeRuntime::fail_next`] makes the next call of a [`CallKind`] return a given error
//!   (queue several to fail several calls); [`FakeRuntime::set_unavailable`] makes every call
//!   fail with [`RuntimeError::Unavailable`] until cleared (the engine stopped);
//! - the test moves containers along: [`FakeRuntime::exit`], [`FakeRuntime::oom_kill`],
//!   [`FakeRuntime::set_health`], [`FakeRuntime::set_status`]; and seeds what "was already
//!   running" before latticed started ([`FakeRuntime::add_container`]), for adoption tests
//!   and for other nodes' containers on the same engine;
//! - images: [`FakeRuntime::ensure_image`] "pulls" any image unless
//!   [`FakeRuntime::set_image_missing`] says it cannot be had; `create` fails with
//!   [`RuntimeError::ImageMissing`] for an image that was never ensured (as Docker does).
//!
//! Semantics mirrored from the Docker runtime: specs are checked by the same
//! [`super::hardening`] rules (a `SYS_ADMIN` workload is `Rejected` and nothing is
//! created); a second container for the same node and workload is a name conflict;
//! `list_owned` returns only the given node's containers, sorted by workload id; `remove`
//! refuses another node's container and is a no-op for a missing one; `start` of a running
//! container, `stop` of a stopped one, `pause` of a paused one and `unpause` of an unpaused one
//! succeed without change; `start` of a paused container and `pause` of a stopped one fail.
//!
//! ```
//! use latticed::runtime::fake::{Call, CallKind, FakeRuntime};
//! use latticed::runtime::{ContainerRuntime, ContainerStatus, RuntimeError};
//! # use lattice_wire::msg::*;
//! # fn spec() -> WorkloadSpec { WorkloadSpec { id: "w-1".into(), name: "x".into(),
//! #   image: "img@sha256:1".into(), command: vec![], env: vec![], volumes: vec![],
//! #   cpu_millis: 100, memory_bytes: 64 << 20, pids_max: 64, health: None,
//! #   restart: RestartPolicy::Always, class: WorkloadClass::AlwaysOn, egress: false,
//! #   capabilities: vec![], ports: vec![], upstreams: vec![] } }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let rt = FakeRuntime::new();
//! rt.ensure_image("img@sha256:1").await.unwrap();
//! let id = rt.create("n-1", &spec(), "hash", "/lattice-n-1").await.unwrap();
//! rt.fail_next(CallKind::Start, RuntimeError::Unavailable("engine restarting".into()));
//! assert!(rt.start(&id).await.is_err());
//! rt.start(&id).await.unwrap();
//! rt.oom_kill(&id);
//! let seen = rt.list_owned("n-1").await.unwrap();
//! assert_eq!(seen[0].status, ContainerStatus::Exited { code: 137, oom_killed: true });
//! assert_eq!(rt.count(CallKind::Start), 2);
//! assert_eq!(rt.calls().last(), Some(&Call::ListOwned { node_id: "n-1".into() }));
//! # });
//! ```

use super::{
    hardening, object_name, ContainerRuntime, ContainerStatus, Health, Observed, RuntimeError,
};
use lattice_wire::msg::WorkloadSpec;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Docker's `StartedAt` for a container that never started.
pub const NEVER_STARTED: &str = "0001-01-01T00:00:00Z";

/// One recorded call, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ListOwned {
        node_id: String,
    },
    EnsureImage {
        image: String,
    },
    Create {
        node_id: String,
        workload_id: String,
        image: String,
        spec_hash: String,
        cgroup_parent: String,
    },
    Start {
        container_id: String,
    },
    Stop {
        container_id: String,
    },
    Remove {
        node_id: String,
        container_id: String,
        workload_id: String,
        /// The workload's network and volumes were to go too.
        purge: bool,
    },
    Pause {
        container_id: String,
    },
    Unpause {
        container_id: String,
    },
}

/// The kind of a [`Call`], to fail or count calls of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallKind {
    ListOwned,
    EnsureImage,
    Create,
    Start,
    Stop,
    Remove,
    Pause,
    Unpause,
}

impl Call {
    pub fn kind(&self) -> CallKind {
        match self {
            Call::ListOwned { .. } => CallKind::ListOwned,
            Call::EnsureImage { .. } => CallKind::EnsureImage,
            Call::Create { .. } => CallKind::Create,
            Call::Start { .. } => CallKind::Start,
            Call::Stop { .. } => CallKind::Stop,
            Call::Remove { .. } => CallKind::Remove,
            Call::Pause { .. } => CallKind::Pause,
            Call::Unpause { .. } => CallKind::Unpause,
        }
    }
}

/// A container as the fake engine holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    pub id: String,
    pub node_id: String,
    pub workload_id: String,
    pub spec_hash: String,
    pub cgroup_parent: String,
    /// The spec it was created from (read limits, image, capabilities off it in asserts).
    pub spec: WorkloadSpec,
    pub status: ContainerStatus,
    /// RFC 3339; [`NEVER_STARTED`] until the first start, then a fresh fake-clock time on
    /// every start (adoption tests compare it).
    pub started_at: String,
}

impl FakeContainer {
    pub fn observed(&self) -> Observed {
        Observed {
            container_id: self.id.clone(),
            workload_id: self.workload_id.clone(),
            spec_hash: self.spec_hash.clone(),
            status: self.status.clone(),
            started_at: self.started_at.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    fail_next: HashMap<CallKind, VecDeque<RuntimeError>>,
    unavailable: Option<String>,
    containers: BTreeMap<String, FakeContainer>,
    images: BTreeSet<String>,
    missing_images: BTreeMap<String, String>,
    next_id: u64,
    clock: u64,
}

impl State {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("fake-{:04}", self.next_id)
    }

    /// The next fake-clock instant, RFC 3339, strictly increasing.
    fn tick(&mut self) -> String {
        self.clock += 1;
        let t = self.clock;
        format!(
            "2024-01-{:02}T{:02}:{:02}:{:02}Z",
            1 + (t / 86_400) % 28,
            (t / 3600) % 24,
            (t / 60) % 60,
            t % 60
        )
    }

    fn get(&mut self, id: &str) -> Result<&mut FakeContainer, RuntimeError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::Container {
                container: id.to_string(),
                reason: "no such container".to_string(),
            })
    }
}

/// The in-memory runtime. Clones share one fake engine, so a test can keep a handle while
/// the code under test owns another.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the state from others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the call, then applies an injected failure if there is one.
    fn enter(&self, call: Call) -> Result<MutexGuard<'_, State>, RuntimeError> {
        let mut s = self.lock();
        let kind = call.kind();
        s.calls.push(call);
        if let Some(reason) = &s.unavailable {
            return Err(RuntimeError::Unavailable(reason.clone()));
        }
        if let Some(err) = s.fail_next.get_mut(&kind).and_then(VecDeque::pop_front) {
            return Err(err);
        }
        Ok(s)
    }

    // --- scripting the engine -------------------------------------------------------------

    /// The next call of `kind` returns `err` (after being recorded). Queue several to fail
    /// several calls in a row.
    pub fn fail_next(&self, kind: CallKind, err: RuntimeError) {
        self.lock()
            .fail_next
            .entry(kind)
            .or_default()
            .push_back(err);
    }

    /// `Some(reason)`: every call fails with `Unavailable(reason)` until `None` is set.
    pub fn set_unavailable(&self, reason: Option<&str>) {
        self.lock().unavailable = reason.map(str::to_string);
    }

    /// `ensure_image(image)` will fail with `ImageMissing { image, reason }` (and the image is
    /// dropped from the local store, so `create` fails too).
    pub fn set_image_missing(&self, image: &str, reason: &str) {
        let mut s = self.lock();
        s.images.remove(image);
        s.missing_images
            .insert(image.to_string(), reason.to_string());
    }

    /// The image can be pulled again; it is present locally at once.
    pub fn add_image(&self, image: &str) {
        let mut s = self.lock();
        s.missing_images.remove(image);
        s.images.insert(image.to_string());
    }

    pub fn has_image(&self, image: &str) -> bool {
        self.lock().images.contains(image)
    }

    /// Seeds a container that exists before the code under test runs (adoption after a
    /// restart, or another node's container on a shared engine). No call is recorded.
    /// `Running`/`Paused`/`Exited` containers get a start time; returns the id.
    pub fn add_container(
        &self,
        node_id: &str,
        spec: &WorkloadSpec,
        spec_hash: &str,
        status: ContainerStatus,
    ) -> String {
        let mut s = self.lock();
        let id = s.new_id();
        let started_at = match status {
            ContainerStatus::Created => NEVER_STARTED.to_string(),
            _ => s.tick(),
        };
        s.images.insert(spec.image.clone());
        s.containers.insert(
            id.clone(),
            FakeContainer {
                id: id.clone(),
                node_id: node_id.to_string(),
                workload_id: spec.id.clone(),
                spec_hash: spec_hash.to_string(),
                cgroup_parent: format!("/lattice-{node_id}"),
                spec: spec.clone(),
                status,
                started_at,
            },
        );
        id
    }

    fn with_container(&self, id: &str, f: impl FnOnce(&mut FakeContainer)) {
        let mut s = self.lock();
        match s.containers.get_mut(id) {
            Some(c) => f(c),
            None => panic!("FakeRuntime: no container {id}"),
        }
    }

    /// Sets a container's status as the engine would report it. Panics on an unknown id.
    pub fn set_status(&self, id: &str, status: ContainerStatus) {
        self.with_container(id, |c| c.status = status);
    }

    /// The container's process exited with `code`. Panics on an unknown id.
    pub fn exit(&self, id: &str, code: i64) {
        self.set_status(
            id,
            ContainerStatus::Exited {
                code,
                oom_killed: false,
            },
        );
    }

    /// The kernel OOM-killed the container (exit 137, `OOMKilled`). Panics on an unknown id.
    pub fn oom_kill(&self, id: &str) {
        self.set_status(
            id,
            ContainerStatus::Exited {
                code: 137,
                oom_killed: true,
            },
        );
    }

    /// The health check result of a running container. Panics on an unknown id or when the
    /// container is not running (Docker only reports health while running).
    pub fn set_health(&self, id: &str, health: Health) {
        self.with_container(id, |c| match c.status {
            ContainerStatus::Running { .. } => c.status = ContainerStatus::Running { health },
            ref other => panic!("FakeRuntime: set_health on {id}, which is {other:?}"),
        });
    }

    // --- reading back -----------------------------------------------------------------------

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call so far, clearing the record (assert on what one step did).
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The calls of one kind, in order.
    pub fn calls_of(&self, kind: CallKind) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.kind() == kind)
            .cloned()
            .collect()
    }

    /// How many calls of `kind` were made.
    pub fn count(&self, kind: CallKind) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.kind() == kind)
            .count()
    }

    pub fn container(&self, id: &str) -> Option<FakeContainer> {
        self.lock().containers.get(id).cloned()
    }

    /// The container of `workload_id` on `node_id`, if any.
    pub fn container_of(&self, node_id: &str, workload_id: &str) -> Option<FakeContainer> {
        self.lock()
            .containers
            .values()
            .find(|c| c.node_id == node_id && c.workload_id == workload_id)
            .cloned()
    }

    /// All containers of all nodes, by id.
    pub fn containers(&self) -> Vec<FakeContainer> {
        self.lock().containers.values().cloned().collect()
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn list_owned(&self, node_id: &str) -> Result<Vec<Observed>, RuntimeError> {
        let s = self.enter(Call::ListOwned {
            node_id: node_id.to_string(),
        })?;
        let mut out: Vec<Observed> = s
            .containers
            .values()
            .filter(|c| c.node_id == node_id)
            .map(FakeContainer::observed)
            .collect();
        out.sort_by(|a, b| {
            (&a.workload_id, &a.container_id).cmp(&(&b.workload_id, &b.container_id))
        });
        Ok(out)
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let mut s = self.enter(Call::EnsureImage {
            image: image.to_string(),
        })?;
        if let Some(reason) = s.missing_images.get(image) {
            return Err(RuntimeError::ImageMissing {
                image: image.to_string(),
                reason: reason.clone(),
            });
        }
        s.images.insert(image.to_string());
        Ok(())
    }

    async fn create(
        &self,
        node_id: &str,
        spec: &WorkloadSpec,
        spec_hash: &str,
        cgroup_parent: &str,
    ) -> Result<String, RuntimeError> {
        let mut s = self.enter(Call::Create {
            node_id: node_id.to_string(),
            workload_id: spec.id.clone(),
            image: spec.image.clone(),
            spec_hash: spec_hash.to_string(),
            cgroup_parent: cgroup_parent.to_string(),
        })?;
        hardening::container_body(
            node_id,
            spec,
            spec_hash,
            cgroup_parent,
            "fake-network",
            &hardening::Bounds::default(),
        )?;
        if !s.images.contains(&spec.image) {
            return Err(RuntimeError::ImageMissing {
                image: spec.image.clone(),
                reason: format!("No such image: {}", spec.image),
            });
        }
        let name = object_name(node_id, &spec.id);
        if s.containers
            .values()
            .any(|c| c.node_id == node_id && c.workload_id == spec.id)
        {
            return Err(RuntimeError::Container {
                container: name.clone(),
                reason: format!("name already in use: {name}"),
            });
        }
        let id = s.new_id();
        s.containers.insert(
            id.clone(),
            FakeContainer {
                id: id.clone(),
                node_id: node_id.to_string(),
                workload_id: spec.id.clone(),
                spec_hash: spec_hash.to_string(),
                cgroup_parent: cgroup_parent.to_string(),
                spec: spec.clone(),
                status: ContainerStatus::Created,
                started_at: NEVER_STARTED.to_string(),
            },
        );
        Ok(id)
    }

    async fn start(&self, container_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.enter(Call::Start {
            container_id: container_id.to_string(),
        })?;
        let now = s.tick();
        let c = s.get(container_id)?;
        match c.status {
            ContainerStatus::Running { .. } => Ok(()),
            ContainerStatus::Paused => Err(RuntimeError::Container {
                container: container_id.to_string(),
                reason: "cannot start a paused container, try unpause instead".to_string(),
            }),
            _ => {
                c.status = ContainerStatus::Running {
                    health: Health::Unknown,
                };
                c.started_at = now;
                Ok(())
            }
        }
    }

    async fn stop(&self, container_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.enter(Call::Stop {
            container_id: container_id.to_string(),
        })?;
        let c = s.get(container_id)?;
        if matches!(
            c.status,
            ContainerStatus::Running { .. } | ContainerStatus::Paused
        ) {
            c.status = ContainerStatus::Exited {
                code: 0,
                oom_killed: false,
            };
        }
        Ok(())
    }

    async fn remove(
        &self,
        node_id: &str,
        observed: &Observed,
        purge: bool,
    ) -> Result<(), RuntimeError> {
        let mut s = self.enter(Call::Remove {
            node_id: node_id.to_string(),
            container_id: observed.container_id.clone(),
            workload_id: observed.workload_id.clone(),
            purge,
        })?;
        match s.containers.get(&observed.container_id) {
            None => Ok(()),
            Some(c) if c.node_id == node_id && c.workload_id == observed.workload_id => {
                s.containers.remove(&observed.container_id);
                Ok(())
            }
            Some(c) => Err(RuntimeError::Rejected {
                workload: observed.workload_id.clone(),
                reason: format!(
                    "container {} is not labelled for node {node_id}; not removing it",
                    c.id
                ),
            }),
        }
    }

    async fn pause(&self, container_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.enter(Call::Pause {
            container_id: container_id.to_string(),
        })?;
        let c = s.get(container_id)?;
        match c.status {
            ContainerStatus::Running { .. } => {
                c.status = ContainerStatus::Paused;
                Ok(())
            }
            ContainerStatus::Paused => Ok(()),
            _ => Err(RuntimeError::Container {
                container: container_id.to_string(),
                reason: "container is not running".to_string(),
            }),
        }
    }

    async fn unpause(&self, container_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.enter(Call::Unpause {
            container_id: container_id.to_string(),
        })?;
        let c = s.get(container_id)?;
        if c.status == ContainerStatus::Paused {
            c.status = ContainerStatus::Running {
                health: Health::Unknown,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
