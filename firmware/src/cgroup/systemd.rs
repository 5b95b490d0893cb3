//! The envelope on a host where systemd owns the cgroup tree (the Lattice image, cgroup v2):
//! a transient slice `lattice-{node}.slice` whose limits systemd applies, so they survive
//! systemd's own reconciliation of the tree.
//!
//! systemd is reached through the [`SystemdSlice`] trait, a thin mirror of the four
//! `org.freedesktop.systemd1.Manager` D-Bus methods used: [`dbus::DbusSystemd`] on the real
//! bus (zbus), [`RecordingSystemd`] as a fake. [`super::for_node`] uses the slice on systemd
//! hosts with cgroup v2 (the image) and refuses systemd hosts on v1 or hybrid hierarchies
//! rather than writing behind systemd's back.

pub mod dbus;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::limits::{check_cpu_percent, cpu_mask, envelope_cpus, ENVELOPE_CPU_WEIGHT};
use super::{fs, v2, CgroupError, CgroupManager, EnvelopeLimits, EnvelopeStats};

/// A value of a systemd unit property, typed as D-Bus wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// D-Bus `t`.
    U64(u64),
    /// D-Bus `s`.
    Str(String),
    /// D-Bus `au` (the `PIDs` of a scope).
    Pids(Vec<u32>),
    /// D-Bus `ay` (a CPU bit mask: `AllowedCPUs`).
    Bytes(Vec<u8>),
}

/// One `(name, value)` of `StartTransientUnit` / `SetUnitProperties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitProperty {
    pub name: &'static str,
    pub value: PropertyValue,
}

impl UnitProperty {
    fn u64(name: &'static str, value: u64) -> Self {
        Self {
            name,
            value: PropertyValue::U64(value),
        }
    }
    fn str(name: &'static str, value: impl Into<String>) -> Self {
        Self {
            name,
            value: PropertyValue::Str(value.into()),
        }
    }
}

/// The systemd manager methods the envelope needs.
pub trait SystemdSlice: Send + Sync + Debug {
    /// Whether `unit` is loaded (`GetUnit` succeeds).
    fn unit_loaded(&self, unit: &str) -> Result<bool, CgroupError>;
    /// `StartTransientUnit(unit, "fail", properties, [])`.
    fn start_transient_unit(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<(), CgroupError>;
    /// `SetUnitProperties(unit, runtime = true, properties)`.
    fn set_unit_properties(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<(), CgroupError>;
    /// `StopUnit(unit, "fail")`: stops the slice and everything in it.
    fn stop_unit(&self, unit: &str) -> Result<(), CgroupError>;
}

/// systemd's unit-name escaping for `node_id` (`[A-Za-z0-9_-]` after validation): `-` would
/// otherwise make a nested slice (`lattice-n-1.slice` is inside `lattice-n.slice`).
fn escape(node_id: &str) -> String {
    node_id.replace('-', "\\x2d")
}

/// `lattice-{escaped node id}.slice`, after validating the node id.
pub fn slice_name(node_id: &str) -> Result<String, CgroupError> {
    super::envelope_name(node_id)?;
    Ok(format!("lattice-{}.slice", escape(node_id)))
}

/// The limits as systemd resource-control properties. CPUQuotaPerSecUSec is CPU time per
/// wall-clock second: one CPU is 1 000 000 µs, so `pct` % of `ncpus` is `pct * ncpus * 10 000`.
/// CPUWeight (D-Bus `t`, 1..=10000, default 100) is [`ENVELOPE_CPU_WEIGHT`], so the host's
/// slices win under contention. AllowedCPUs (D-Bus `ay`, a bit mask) is what
/// [`envelope_cpus`] picks from `cpus` (the machine's), so the host keeps whole CPUs; empty
/// (no restriction) when the cap needs every CPU.
pub fn limit_properties(limits: &EnvelopeLimits, ncpus: u32, cpus: &[u32]) -> Vec<UnitProperty> {
    let allowed = envelope_cpus(limits.cpu_percent, cpus).unwrap_or_default();
    vec![
        cpu_property(limits.cpu_percent, ncpus),
        UnitProperty::u64("CPUWeight", ENVELOPE_CPU_WEIGHT),
        UnitProperty {
            name: "AllowedCPUs",
            value: PropertyValue::Bytes(cpu_mask(&allowed)),
        },
        UnitProperty::u64("MemoryMax", limits.memory_bytes),
        UnitProperty::u64("MemorySwapMax", 0),
        UnitProperty::u64("TasksMax", u64::from(limits.pids_max)),
    ]
}

/// The machine's CPUs as the root cgroup sees them (`cpuset.cpus.effective` under the v2
/// root), or `0..ncpus` where that file is missing (no cpuset controller).
fn machine_cpus(v2_root: &Path, ncpus: u32) -> Vec<u32> {
    std::fs::read_to_string(v2_root.join("cpuset.cpus.effective"))
        .ok()
        .and_then(|text| super::limits::parse_cpu_list(&text))
        .filter(|cpus| !cpus.is_empty())
        .unwrap_or_else(|| (0..ncpus).collect())
}

fn cpu_property(pct: u32, ncpus: u32) -> UnitProperty {
    UnitProperty::u64(
        "CPUQuotaPerSecUSec",
        u64::from(pct) * u64::from(ncpus) * 10_000,
    )
}

/// One node's envelope as a systemd slice on cgroup v2.
#[derive(Debug)]
pub struct SystemdManager {
    slice: String,
    escaped_node: String,
    dir: PathBuf,
    v2_root: PathBuf,
    ncpus: u32,
    systemd: Box<dyn SystemdSlice>,
}

impl SystemdManager {
    /// `v2_root` is the cgroup2 mount, used to read statistics from the slice's directory
    /// (`<root>/lattice.slice/lattice-{node}.slice`): reading behind systemd's back is fine.
    pub fn new(
        node_id: &str,
        v2_root: &Path,
        ncpus: u32,
        systemd: Box<dyn SystemdSlice>,
    ) -> Result<Self, CgroupError> {
        let slice = slice_name(node_id)?;
        Ok(Self {
            dir: v2_root.join("lattice.slice").join(&slice),
            v2_root: v2_root.to_path_buf(),
            slice,
            escaped_node: escape(node_id),
            ncpus: ncpus.max(1),
            systemd,
        })
    }

    /// The slice's cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl CgroupManager for SystemdManager {
    fn ensure(&self, limits: &EnvelopeLimits) -> Result<(), CgroupError> {
        limits.validate()?;
        let cpus = machine_cpus(&self.v2_root, self.ncpus);
        let mut properties = limit_properties(limits, self.ncpus, &cpus);
        if self.systemd.unit_loaded(&self.slice)? {
            self.systemd.set_unit_properties(&self.slice, &properties)?;
        } else {
            properties.insert(
                0,
                UnitProperty::str("Description", "Lattice provider envelope"),
            );
            self.systemd
                .start_transient_unit(&self.slice, &properties)?;
        }
        tracing::info!(slice = %self.slice, ?limits, "systemd envelope set");
        Ok(())
    }

    fn set_cpu_percent(&self, pct: u32) -> Result<(), CgroupError> {
        check_cpu_percent(pct)?;
        self.systemd
            .set_unit_properties(&self.slice, &[cpu_property(pct, self.ncpus)])
    }

    fn stats(&self) -> Result<EnvelopeStats, CgroupError> {
        v2::read_stats(&self.dir)
    }

    /// With Docker's systemd cgroup driver (the default on systemd + v2), `CgroupParent` is a
    /// slice name; Docker makes a `docker-<id>.scope` inside it.
    fn docker_parent(&self) -> String {
        self.slice.clone()
    }

    /// Slices hold no processes: the pid goes into a transient scope inside the slice.
    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let scope = format!("lattice-{}-pid{pid}.scope", self.escaped_node);
        self.systemd.start_transient_unit(
            &scope,
            &[
                UnitProperty::str("Slice", self.slice.clone()),
                UnitProperty {
                    name: "PIDs",
                    value: PropertyValue::Pids(vec![pid]),
                },
            ],
        )
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        fs::procs_under([self.dir.as_path()])
    }

    /// Stopping the slice stops whatever is still inside it.
    fn remove(&self) -> Result<(), CgroupError> {
        if self.systemd.unit_loaded(&self.slice)? {
            self.systemd.stop_unit(&self.slice)?;
        }
        Ok(())
    }
}

/// A call made to [`RecordingSystemd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemdCall {
    UnitLoaded(String),
    Start(String, Vec<UnitProperty>),
    Set(String, Vec<UnitProperty>),
    Stop(String),
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<SystemdCall>,
    loaded: BTreeSet<String>,
    fail_next: Option<String>,
}

/// A fake systemd: records calls, tracks which units are loaded, fails the next call on demand.
#[derive(Debug, Default, Clone)]
pub struct RecordingSystemd {
    inner: std::sync::Arc<Mutex<Recorded>>,
}

impl RecordingSystemd {
    fn state(&self) -> MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<SystemdCall> {
        self.state().calls.clone()
    }
    /// The next call fails with [`CgroupError::Systemd`].
    pub fn fail_next(&self, message: impl Into<String>) {
        self.state().fail_next = Some(message.into());
    }
    fn record(
        &self,
        call: SystemdCall,
        operation: &'static str,
        unit: &str,
    ) -> Result<MutexGuard<'_, Recorded>, CgroupError> {
        let mut state = self.state();
        state.calls.push(call);
        match state.fail_next.take() {
            Some(message) => Err(CgroupError::Systemd {
                operation,
                unit: unit.to_owned(),
                message,
            }),
            None => Ok(state),
        }
    }
}

impl SystemdSlice for RecordingSystemd {
    fn unit_loaded(&self, unit: &str) -> Result<bool, CgroupError> {
        let state = self.record(SystemdCall::UnitLoaded(unit.into()), "GetUnit", unit)?;
        Ok(state.loaded.contains(unit))
    }
    fn start_transient_unit(&self, unit: &str, props: &[UnitProperty]) -> Result<(), CgroupError> {
        let call = SystemdCall::Start(unit.into(), props.to_vec());
        let mut state = self.record(call, "StartTransientUnit", unit)?;
        if !state.loaded.insert(unit.to_owned()) {
            return Err(CgroupError::Systemd {
                operation: "StartTransientUnit",
                unit: unit.to_owned(),
                message: "Unit already exists".into(),
            });
        }
        Ok(())
    }
    fn set_unit_properties(&self, unit: &str, props: &[UnitProperty]) -> Result<(), CgroupError> {
        let call = SystemdCall::Set(unit.into(), props.to_vec());
        self.record(call, "SetUnitProperties", unit).map(drop)
    }
    fn stop_unit(&self, unit: &str) -> Result<(), CgroupError> {
        let mut state = self.record(SystemdCall::Stop(unit.into()), "StopUnit", unit)?;
        state.loaded.remove(unit);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
