//! The envelope on cgroup v1 (and on the hybrid layout, whose controllers are v1):
//! `<mount>/lattice-{node}` in each of the cpu, cpuacct, memory and pids trees, and in the
//! cpuset tree when it is mounted (the envelope's CPUs, [`super::envelope_cpus`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::limits::{
    cfs_quota_us, check_cpu_percent, envelope_cpus, format_cpu_list, CFS_PERIOD_US,
    ENVELOPE_CPU_SHARES,
};
use super::{envelope_name, fs, CgroupError, CgroupManager, EnvelopeLimits, EnvelopeStats};

/// The v1 controllers the envelope needs.
pub const REQUIRED: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

const EINVAL: i32 = nix::libc::EINVAL;

/// One node's envelope on cgroup v1.
#[derive(Debug, Clone)]
pub struct V1Manager {
    name: String,
    cpu: PathBuf,
    cpuacct: PathBuf,
    memory: PathBuf,
    pids: PathBuf,
    /// In the cpuset tree, when the machine mounts it (optional: without it the envelope is
    /// capped by quota and weight only).
    cpuset: Option<PathBuf>,
    ncpus: u32,
}

impl V1Manager {
    /// `controllers` maps each controller to its mount point (from [`super::detect`]); `ncpus`
    /// is what 100 % of the machine means.
    pub fn new(
        node_id: &str,
        controllers: &BTreeMap<String, PathBuf>,
        ncpus: u32,
    ) -> Result<Self, CgroupError> {
        let name = envelope_name(node_id)?;
        let dir = |controller: &'static str| {
            controllers
                .get(controller)
                .map(|mount| mount.join(&name))
                .ok_or_else(|| CgroupError::MissingController {
                    controller,
                    place: PathBuf::from("the v1 mounts in mountinfo"),
                })
        };
        Ok(Self {
            cpu: dir(REQUIRED[0])?,
            cpuacct: dir(REQUIRED[1])?,
            memory: dir(REQUIRED[2])?,
            pids: dir(REQUIRED[3])?,
            cpuset: controllers.get("cpuset").map(|mount| mount.join(&name)),
            name,
            ncpus: ncpus.max(1),
        })
    }

    /// The envelope's directory in `controller`'s tree (`cpu`, `cpuacct`, `memory`, `pids`).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match controller {
            "cpu" => Some(&self.cpu),
            "cpuacct" => Some(&self.cpuacct),
            "memory" => Some(&self.memory),
            "pids" => Some(&self.pids),
            "cpuset" => self.cpuset.as_deref(),
            _ => None,
        }
    }

    /// The distinct directories (co-mounted controllers share one).
    fn dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = Vec::with_capacity(5);
        let all = [&self.cpu, &self.cpuacct, &self.memory, &self.pids];
        for d in all.into_iter().chain(self.cpuset.as_ref()) {
            if !dirs.contains(&d.as_path()) {
                dirs.push(d);
            }
        }
        dirs
    }

    /// Puts the envelope on the CPUs [`envelope_cpus`] picks from its parent's (all of them
    /// when the cap needs every CPU). A v1 cpuset must stay within its parent's, and Docker's
    /// container cgroups copied the envelope's CPUs when they were made, so a change walks the
    /// whole tree: first every cgroup is widened to the old and new CPUs together (parents
    /// first), then narrowed to the new ones (children first). An empty `cpuset.mems` refuses
    /// tasks, so the parent's memory nodes are copied in first.
    fn write_cpuset(&self, pct: u32) -> Result<(), CgroupError> {
        let Some(dir) = &self.cpuset else {
            return Ok(());
        };
        let parent = dir.parent().unwrap_or(dir);
        let available = fs::read_cpu_list(&parent.join("cpuset.cpus"))?;
        let wanted = envelope_cpus(pct, &available).unwrap_or(available);
        let mems = dir.join("cpuset.mems");
        if fs::read(&mems)?.trim().is_empty() {
            fs::write(&mems, fs::read(&parent.join("cpuset.mems"))?.trim())?;
        }
        let tree = fs::tree(dir)?;
        let mut union = wanted.clone();
        for d in &tree {
            union.extend(fs::read_cpu_list(&d.join("cpuset.cpus"))?);
        }
        union.sort_unstable();
        union.dedup();
        for d in &tree {
            fs::write(&d.join("cpuset.cpus"), &format_cpu_list(&union))?;
        }
        if union != wanted {
            for d in tree.iter().rev() {
                fs::write(&d.join("cpuset.cpus"), &format_cpu_list(&wanted))?;
            }
        }
        Ok(())
    }

    fn write_quota(&self, pct: u32) -> Result<(), CgroupError> {
        let path = self.cpu.join("cpu.cfs_quota_us");
        let value = cfs_quota_us(pct, self.ncpus).to_string();
        fs::write(&path, &value).map_err(|e| match e {
            CgroupError::Write {
                path,
                value,
                source,
            } if source.raw_os_error() == Some(EINVAL) => {
                CgroupError::CpuQuotaBelowChild { path, value }
            }
            other => other,
        })
    }

    /// `memory.memsw.limit_in_bytes` (memory + swap, present when swap accounting is on) must
    /// never be below `memory.limit_in_bytes`, so the order of the two writes depends on the
    /// direction. Setting both to the same value forbids swap.
    fn write_memory(&self, bytes: u64) -> Result<(), CgroupError> {
        let limit = self.memory.join("memory.limit_in_bytes");
        let memsw = self.memory.join("memory.memsw.limit_in_bytes");
        let value = bytes.to_string();
        if !memsw.exists() {
            return fs::write(&limit, &value);
        }
        if bytes > fs::read_u64(&limit)? {
            fs::write(&memsw, &value)?;
            fs::write(&limit, &value)
        } else {
            fs::write(&limit, &value)?;
            fs::write(&memsw, &value)
        }
    }
}

impl CgroupManager for V1Manager {
    fn ensure(&self, limits: &EnvelopeLimits) -> Result<(), CgroupError> {
        limits.validate()?;
        for dir in self.dirs() {
            fs::create_dir(dir)?;
        }
        fs::write(
            &self.cpu.join("cpu.cfs_period_us"),
            &CFS_PERIOD_US.to_string(),
        )?;
        self.write_quota(limits.cpu_percent)?;
        fs::write(
            &self.cpu.join("cpu.shares"),
            &ENVELOPE_CPU_SHARES.to_string(),
        )?;
        self.write_memory(limits.memory_bytes)?;
        fs::write(&self.pids.join("pids.max"), &limits.pids_max.to_string())?;
        self.write_cpuset(limits.cpu_percent)?;
        tracing::info!(envelope = %self.name, ?limits, ncpus = self.ncpus, "cgroup v1 envelope set");
        Ok(())
    }

    fn set_cpu_percent(&self, pct: u32) -> Result<(), CgroupError> {
        check_cpu_percent(pct)?;
        self.write_quota(pct)
    }

    fn stats(&self) -> Result<EnvelopeStats, CgroupError> {
        Ok(EnvelopeStats {
            cpu_usage_ns: fs::read_u64(&self.cpuacct.join("cpuacct.usage"))?,
            memory_current_bytes: fs::read_u64(&self.memory.join("memory.usage_in_bytes"))?,
            pids_current: fs::read_u64(&self.pids.join("pids.current"))?,
            oom_kills: fs::read_keyed_if_present(
                &self.memory.join("memory.oom_control"),
                "oom_kill",
            )?,
            pids_limit_hits: fs::read_keyed_if_present(&self.pids.join("pids.events"), "max")?,
        })
    }

    fn docker_parent(&self) -> String {
        format!("/{}", self.name)
    }

    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        for dir in self.dirs() {
            fs::write(&dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        fs::procs_under(self.dirs())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            fs::remove_tree(dir)?;
        }
        tracing::info!(envelope = %self.name, "cgroup v1 envelope removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
