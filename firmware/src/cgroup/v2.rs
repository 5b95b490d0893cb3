//! The envelope on cgroup v2: `<root>/lattice-{node}`, with the cpu, memory and pids
//! controllers enabled in the root's and in the envelope's `cgroup.subtree_control`.

use std::path::{Path, PathBuf};

use super::limits::{
    cfs_quota_us, check_cpu_percent, envelope_cpus, format_cpu_list, CFS_PERIOD_US,
    ENVELOPE_CPU_WEIGHT,
};
use super::{envelope_name, fs, CgroupError, CgroupManager, EnvelopeLimits, EnvelopeStats};

/// The controllers the envelope needs, as named in `cgroup.controllers`.
pub const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];
/// What is written to `cgroup.subtree_control` to enable [`REQUIRED`].
pub const ENABLE: &str = "+cpu +memory +pids";
/// The leaf that holds processes added with [`CgroupManager::add_process`]: v2 allows no
/// processes in a cgroup that passes controllers on to children (the containers).
pub const DIRECT_LEAF: &str = "direct";

/// One node's envelope on cgroup v2.
#[derive(Debug, Clone)]
pub struct V2Manager {
    name: String,
    root: PathBuf,
    dir: PathBuf,
    ncpus: u32,
}

impl V2Manager {
    /// `root` is the cgroup2 mount point; `ncpus` is what 100 % of the machine means.
    pub fn new(node_id: &str, root: &Path, ncpus: u32) -> Result<Self, CgroupError> {
        let name = envelope_name(node_id)?;
        Ok(Self {
            dir: root.join(&name),
            root: root.to_path_buf(),
            name,
            ncpus: ncpus.max(1),
        })
    }

    /// The envelope's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks that the root offers [`REQUIRED`]; tells whether it also offers `cpuset`.
    fn check_controllers(&self) -> Result<bool, CgroupError> {
        let path = self.root.join("cgroup.controllers");
        let available = fs::read(&path)?;
        let available: Vec<&str> = available.split_whitespace().collect();
        for controller in REQUIRED {
            if !available.contains(&controller) {
                return Err(CgroupError::MissingController {
                    controller,
                    place: path,
                });
            }
        }
        Ok(available.contains(&"cpuset"))
    }

    /// Puts the envelope on the CPUs [`envelope_cpus`] picks (an empty `cpuset.cpus`, all of
    /// its parent's, when the cap needs every CPU), when the root offers the cpuset
    /// controller; without it the envelope is capped by quota and weight only. v2 narrows the
    /// cgroups below on its own (their effective CPUs are within the parent's).
    /// `cpuset` tells whether the root offers the controller (and [`CgroupManager::ensure`]
    /// enabled it there).
    fn write_cpuset(&self, pct: u32, cpuset: bool) -> Result<(), CgroupError> {
        if !cpuset {
            return Ok(());
        }
        let available = fs::read_cpu_list(&self.root.join("cpuset.cpus.effective"))?;
        let cpus = envelope_cpus(pct, &available)
            .map(|c| format_cpu_list(&c))
            .unwrap_or_default();
        fs::write(&self.dir.join("cpuset.cpus"), &cpus)
    }

    fn write_cpu(&self, pct: u32) -> Result<(), CgroupError> {
        let quota = cfs_quota_us(pct, self.ncpus);
        fs::write(
            &self.dir.join("cpu.max"),
            &format!("{quota} {CFS_PERIOD_US}"),
        )
    }
}

/// Reads v2 statistics from a cgroup directory (also used for systemd slices).
pub fn read_stats(dir: &Path) -> Result<EnvelopeStats, CgroupError> {
    let stat = dir.join("cpu.stat");
    let usage_usec = fs::read_keyed(&stat, "usage_usec")?.ok_or_else(|| CgroupError::Parse {
        path: stat.clone(),
        content: String::new(),
        expected: "a usage_usec line",
    })?;
    Ok(EnvelopeStats {
        cpu_usage_ns: usage_usec.saturating_mul(1000),
        memory_current_bytes: fs::read_u64(&dir.join("memory.current"))?,
        pids_current: fs::read_u64(&dir.join("pids.current"))?,
        oom_kills: fs::read_keyed_if_present(&dir.join("memory.events"), "oom_kill")?,
        pids_limit_hits: fs::read_keyed_if_present(&dir.join("pids.events"), "max")?,
    })
}

impl CgroupManager for V2Manager {
    fn ensure(&self, limits: &EnvelopeLimits) -> Result<(), CgroupError> {
        limits.validate()?;
        let cpuset = self.check_controllers()?;
        let enable = if cpuset {
            format!("{ENABLE} +cpuset")
        } else {
            ENABLE.to_owned()
        };
        fs::write(&self.root.join("cgroup.subtree_control"), &enable)?;
        fs::create_dir(&self.dir)?;
        fs::write(&self.dir.join("cgroup.subtree_control"), ENABLE)?;
        self.write_cpu(limits.cpu_percent)?;
        fs::write(
            &self.dir.join("cpu.weight"),
            &ENVELOPE_CPU_WEIGHT.to_string(),
        )?;
        fs::write(
            &self.dir.join("memory.max"),
            &limits.memory_bytes.to_string(),
        )?;
        // Present only when the kernel accounts swap.
        let swap = self.dir.join("memory.swap.max");
        if swap.exists() {
            fs::write(&swap, "0")?;
        }
        fs::write(&self.dir.join("pids.max"), &limits.pids_max.to_string())?;
        self.write_cpuset(limits.cpu_percent, cpuset)?;
        tracing::info!(envelope = %self.name, ?limits, ncpus = self.ncpus, "cgroup v2 envelope set");
        Ok(())
    }

    fn set_cpu_percent(&self, pct: u32) -> Result<(), CgroupError> {
        check_cpu_percent(pct)?;
        self.write_cpu(pct)
    }

    fn stats(&self) -> Result<EnvelopeStats, CgroupError> {
        read_stats(&self.dir)
    }

    fn docker_parent(&self) -> String {
        format!("/{}", self.name)
    }

    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let leaf = self.dir.join(DIRECT_LEAF);
        fs::create_dir(&leaf)?;
        fs::write(&leaf.join("cgroup.procs"), &pid.to_string())
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        fs::procs_under([self.dir.as_path()])
    }

    fn remove(&self) -> Result<(), CgroupError> {
        // The root's subtree_control is left alone: other cgroups may rely on it.
        fs::remove_tree(&self.dir)?;
        tracing::info!(envelope = %self.name, "cgroup v2 envelope removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
