//! The provider envelope: one parent cgroup per node that holds all of the node's workloads
//! and carries the caps the provider donated (CPU as a percent of the whole machine, memory,
//! pids), and a low CPU weight ([`ENVELOPE_CPU_WEIGHT`]) so that, inside the CPU cap, the
//! host's own processes win whenever they compete with workloads for a CPU.
//!
//! # Shape
//!
//! As in youki's `libcgroups`: a [`CgroupManager`] trait, one implementation per hierarchy
//! ([`V1Manager`], [`V2Manager`], [`SystemdManager`]), a [`FakeManager`] that records calls for
//! the supervisor's unit tests, and the [`Envelope`] enum that dispatches. [`for_node`] picks
//! the implementation from what [`detect`] finds. Every file write and read goes through
//! [`fs`], whose errors name the path (and the value written).
//!
//! # Hierarchies
//!
//! * **v2** (unified): one tree, usually at `/sys/fs/cgroup`. The envelope is
//!   `<root>/lattice-{node}`; the root's `cgroup.subtree_control` gets `+cpu +memory +pids`, and
//!   so does the envelope's own (containers below it get their own limits). Because v2 forbids
//!   processes in a cgroup whose controllers are delegated to children, processes added with
//!   [`CgroupManager::add_process`] go into the leaf `lattice-{node}/direct`.
//! * **v1** (legacy): one tree per controller (`/sys/fs/cgroup/cpu`, `.../memory`, or co-mounted
//!   `cpu,cpuacct`). The envelope is `<mount>/lattice-{node}` in each of the cpu, cpuacct,
//!   memory and pids trees.
//! * **hybrid**: v1 controllers plus a cgroup2 mount beside them (`/sys/fs/cgroup/unified`,
//!   with no controllers: the CPU build machines). The controllers are on the v1 side, so the
//!   v1 manager is used.
//!
//! # Docker
//!
//! [`CgroupManager::docker_parent`] is what goes into the container's `HostConfig.CgroupParent`.
//! With Docker's `cgroupfs` driver it is `/lattice-{node}`, and Docker puts each container at
//! `<controller mount>/lattice-{node}/<container id>` (v1) or `<root>/lattice-{node}/<id>` (v2),
//! inside the envelope, with its own limits. Several nodes on one machine get one envelope each.
//!
//! # systemd hosts
//!
//! When systemd is PID 1 (the Lattice image) it owns the cgroup tree, and limits written to
//! the files behind its back are undone or ignored by it. There the envelope must be a slice
//! whose limits are set through systemd, or a subtree delegated to latticed's unit
//! (`Delegate=yes`). On systemd hosts with cgroup v2 [`for_node`] returns a
//! [`SystemdManager`], which drives a slice (`lattice-{escaped node}.slice`:
//! CPUQuotaPerSecUSec, CPUWeight, MemoryMax, MemorySwapMax, TasksMax) through the
//! [`SystemdSlice`] trait
//! (over D-Bus with zbus: [`systemd::dbus::DbusSystemd`]) and reads statistics from the slice's
//! v2 directory; on systemd hosts with v1 or hybrid trees it refuses
//! ([`CgroupError::SystemdOwnsHierarchy`]) rather than write behind systemd's back. The
//! `Delegate=yes` alternative is not implemented.

pub mod detect;
mod error;
pub mod fake;
pub mod fs;
mod limits;
pub mod systemd;
pub mod v1;
pub mod v2;

#[cfg(test)]
mod testfs;

use std::path::{Path, PathBuf};

pub use detect::Hierarchy;
pub use error::CgroupError;
pub use fake::{Call, FakeManager};
pub use limits::{
    cfs_quota_us, check_cpu_percent, cpu_mask, envelope_cpus, format_cpu_list, parse_cpu_list,
    EnvelopeLimits, EnvelopeStats, LimitProblem, LimitsError, CFS_PERIOD_US, DEFAULT_CPU_SHARES,
    DEFAULT_CPU_WEIGHT, ENVELOPE_CPU_SHARES, ENVELOPE_CPU_WEIGHT, MAX_PIDS, MIN_MEMORY_BYTES,
};
pub use systemd::{RecordingSystemd, SystemdManager, SystemdSlice};
pub use v1::V1Manager;
pub use v2::V2Manager;

/// One node's envelope, whatever the hierarchy. All methods are synchronous file or bus
/// operations that return quickly; call them from a blocking task in async code.
pub trait CgroupManager: Send + Sync {
    /// Creates the envelope if needed and sets all its limits (idempotent).
    fn ensure(&self, limits: &EnvelopeLimits) -> Result<(), CgroupError>;
    /// Changes only the CPU cap (the host owner needs the CPU, or has stopped needing it).
    /// On cgroup v1 the kernel refuses a cap below the CPU quota of any cgroup inside the
    /// envelope ([`CgroupError::CpuQuotaBelowChild`]): containers' `--cpus` must be lowered
    /// first (v2 takes the minimum instead).
    fn set_cpu_percent(&self, pct: u32) -> Result<(), CgroupError>;
    /// Current usage, from the kernel's accounting.
    fn stats(&self) -> Result<EnvelopeStats, CgroupError>;
    /// What to pass to Docker as `HostConfig.CgroupParent`.
    fn docker_parent(&self) -> String;
    /// Moves a process (and its future children) into the envelope.
    fn add_process(&self, pid: u32) -> Result<(), CgroupError>;
    /// Every process in the envelope, including those in cgroups below it (containers).
    fn procs(&self) -> Result<Vec<u32>, CgroupError>;
    /// Removes the envelope; it must hold no processes any more (idempotent).
    fn remove(&self) -> Result<(), CgroupError>;
}

/// The envelope of one node on this machine's hierarchy.
#[derive(Debug)]
pub enum Envelope {
    V1(V1Manager),
    V2(V2Manager),
    Systemd(SystemdManager),
    Fake(FakeManager),
}

impl Envelope {
    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Self::V1(m) => m,
            Self::V2(m) => m,
            Self::Systemd(m) => m,
            Self::Fake(m) => m,
        }
    }
}

impl CgroupManager for Envelope {
    fn ensure(&self, limits: &EnvelopeLimits) -> Result<(), CgroupError> {
        self.inner().ensure(limits)
    }
    fn set_cpu_percent(&self, pct: u32) -> Result<(), CgroupError> {
        self.inner().set_cpu_percent(pct)
    }
    fn stats(&self) -> Result<EnvelopeStats, CgroupError> {
        self.inner().stats()
    }
    fn docker_parent(&self) -> String {
        self.inner().docker_parent()
    }
    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        self.inner().add_process(pid)
    }
    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        self.inner().procs()
    }
    fn remove(&self) -> Result<(), CgroupError> {
        self.inner().remove()
    }
}

/// The envelope's cgroup name: `lattice-{node_id}`, after checking that the node id is a
/// valid one (so it cannot contain `/` or `..`).
pub fn envelope_name(node_id: &str) -> Result<String, CgroupError> {
    if lattice_wire::topic::valid_node_id(node_id) {
        Ok(format!("lattice-{node_id}"))
    } else {
        Err(CgroupError::InvalidNodeId(node_id.to_owned()))
    }
}

/// The envelope of `node_id` on this machine. With `root_override`, the hierarchy is read from
/// the layout of that directory instead of `/proc/self/mountinfo` (tests; a hierarchy mounted
/// elsewhere), and the systemd check is skipped. Nothing is created until
/// [`CgroupManager::ensure`].
pub fn for_node(node_id: &str, root_override: Option<&Path>) -> Result<Envelope, CgroupError> {
    for_node_on(node_id, root_override, detect::systemd_booted())
}

fn for_node_on(
    node_id: &str,
    root_override: Option<&Path>,
    systemd_booted: bool,
) -> Result<Envelope, CgroupError> {
    let hierarchy = match root_override {
        Some(root) => detect::detect_layout(root)?,
        None => {
            let hierarchy = detect::detect()?;
            if systemd_booted {
                return on_systemd(node_id, &hierarchy, online_cpus(), || {
                    Box::new(systemd::dbus::DbusSystemd::system())
                });
            }
            hierarchy
        }
    };
    from_hierarchy(node_id, &hierarchy, online_cpus())
}

/// The envelope on a host where systemd is PID 1: a slice whose limits systemd sets, on
/// cgroup v2 only (on v1 or hybrid trees systemd's slices cannot hold these limits the same
/// way, and writing behind its back does not count).
pub fn on_systemd(
    node_id: &str,
    hierarchy: &Hierarchy,
    ncpus: u32,
    systemd: impl FnOnce() -> Box<dyn SystemdSlice>,
) -> Result<Envelope, CgroupError> {
    match hierarchy {
        Hierarchy::V2 { root } => Ok(Envelope::Systemd(SystemdManager::new(
            node_id,
            root,
            ncpus,
            systemd(),
        )?)),
        _ => Err(CgroupError::SystemdOwnsHierarchy {
            marker: PathBuf::from(detect::SYSTEMD_MARKER),
        }),
    }
}

/// The envelope of `node_id` on a known hierarchy, with the CPU count the percentages refer to.
pub fn from_hierarchy(
    node_id: &str,
    hierarchy: &Hierarchy,
    ncpus: u32,
) -> Result<Envelope, CgroupError> {
    Ok(match hierarchy {
        Hierarchy::V2 { root } => Envelope::V2(V2Manager::new(node_id, root, ncpus)?),
        Hierarchy::V1 { controllers } | Hierarchy::Hybrid { controllers, .. } => {
            Envelope::V1(V1Manager::new(node_id, controllers, ncpus)?)
        }
    })
}

/// CPUs online on the machine: "percent of the machine" refers to these. Not
/// `available_parallelism`, which shrinks with latticed's own affinity and cgroup quota.
pub fn online_cpus() -> u32 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        _ => std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
    }
}

#[cfg(test)]
mod tests;
