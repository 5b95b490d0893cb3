//! What the provider donates ([`EnvelopeLimits`]) and what the envelope reports back
//! ([`EnvelopeStats`]).

use std::fmt;

/// The smallest memory cap accepted: below this neither Docker nor the kernel can start a
/// container in the envelope, so a smaller value is a configuration mistake.
pub const MIN_MEMORY_BYTES: u64 = 8 * 1024 * 1024;
/// The largest pids cap accepted (the kernel's `PID_MAX_LIMIT` on 64-bit).
pub const MAX_PIDS: u32 = 4_194_304;

/// The caps of one node's envelope: everything the node's workloads use together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeLimits {
    /// Percent of the whole machine (all CPUs), 1..=100.
    pub cpu_percent: u32,
    /// Memory for all workloads together, swap excluded (swap is forbidden where the kernel
    /// lets us say so).
    pub memory_bytes: u64,
    /// Processes and threads for all workloads together.
    pub pids_max: u32,
}

/// One reason why [`EnvelopeLimits`] cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitProblem {
    CpuPercent(u32),
    MemoryBytes(u64),
    PidsMax(u32),
}

impl fmt::Display for LimitProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CpuPercent(v) => write!(f, "cpu_percent {v} is outside 1..=100"),
            Self::MemoryBytes(v) => write!(
                f,
                "memory_bytes {v} is outside {MIN_MEMORY_BYTES}..={}",
                i64::MAX
            ),
            Self::PidsMax(v) => write!(f, "pids_max {v} is outside 1..={MAX_PIDS}"),
        }
    }
}

/// Every problem of a set of limits at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsError {
    pub problems: Vec<LimitProblem>,
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LimitsError {}

/// Checks a CPU percentage alone (what [`super::CgroupManager::set_cpu_percent`] takes).
pub fn check_cpu_percent(pct: u32) -> Result<(), LimitsError> {
    if (1..=100).contains(&pct) {
        Ok(())
    } else {
        Err(LimitsError {
            problems: vec![LimitProblem::CpuPercent(pct)],
        })
    }
}

impl EnvelopeLimits {
    /// Builds limits, refusing impossible ones.
    pub fn new(cpu_percent: u32, memory_bytes: u64, pids_max: u32) -> Result<Self, LimitsError> {
        let limits = Self {
            cpu_percent,
            memory_bytes,
            pids_max,
        };
        limits.validate()?;
        Ok(limits)
    }

    /// Lists every problem (not just the first).
    pub fn validate(&self) -> Result<(), LimitsError> {
        let mut problems = Vec::new();
        if !(1..=100).contains(&self.cpu_percent) {
            problems.push(LimitProblem::CpuPercent(self.cpu_percent));
        }
        // cgroup files take signed 64-bit byte counts.
        if self.memory_bytes < MIN_MEMORY_BYTES || self.memory_bytes > i64::MAX as u64 {
            problems.push(LimitProblem::MemoryBytes(self.memory_bytes));
        }
        if !(1..=MAX_PIDS).contains(&self.pids_max) {
            problems.push(LimitProblem::PidsMax(self.pids_max));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LimitsError { problems })
        }
    }
}

/// CFS quota in microseconds per [`CFS_PERIOD_US`] for `pct` percent of `ncpus` CPUs.
/// 100 % of a 2-CPU machine is 200 000 µs per 100 000 µs period: two full CPUs.
pub fn cfs_quota_us(pct: u32, ncpus: u32) -> u64 {
    u64::from(pct) * u64::from(ncpus) * CFS_PERIOD_US / 100
}

/// The CFS period the envelope uses (the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;

/// The kernel's (and systemd's) default CPU weight on cgroup v2: what every other cgroup at
/// the envelope's level has unless someone set otherwise.
pub const DEFAULT_CPU_WEIGHT: u64 = 100;
/// The default `cpu.shares` on cgroup v1, which is also the weight of one nice-0 task: what the
/// host's own processes in the root cgroup compete with, task by task.
pub const DEFAULT_CPU_SHARES: u64 = 1024;

/// The envelope's CPU weight (v2 `cpu.weight`, systemd `CPUWeight`), against the default 100.
///
/// The quota caps how much the envelope may use in all; the weight decides who runs when the
/// host and the envelope both want a CPU inside that cap. At the default weight the envelope
/// competes with the host's processes as an equal, so a CPU hog in a workload delays the
/// provider's own work (issue 3: "the host owner always wins"). At 20 the envelope gets about
/// 20 / (20 + 100) = 1/6 of a contended CPU against one busy host process (less against
/// several) and all of an idle one, up to its quota: weights only matter under contention, so
/// donated CPU the host does not use is not wasted. Not lower (1, or v1's minimum 2, or
/// `cpu.idle`): an always-on workload (a database) must keep making progress while the host
/// is busy for a long time, and 1/6 of a CPU keeps it alive where 1/100 would let its clients
/// time out. systemd's own `background.slice` for users' background jobs uses 30, in the
/// same spirit.
pub const ENVELOPE_CPU_WEIGHT: u64 = 20;
/// [`ENVELOPE_CPU_WEIGHT`] on cgroup v1's scale: 1024 × 20 / 100 = 204 (rounded down).
pub const ENVELOPE_CPU_SHARES: u64 = DEFAULT_CPU_SHARES * ENVELOPE_CPU_WEIGHT / DEFAULT_CPU_WEIGHT;

/// What the envelope uses right now, read from the kernel's accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvelopeStats {
    /// CPU time used since the envelope was created, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged to the envelope now, in bytes.
    pub memory_current_bytes: u64,
    /// Processes and threads inside the envelope now.
    pub pids_current: u64,
    /// Processes killed by the OOM killer because of the envelope's memory cap, if the kernel
    /// reports it (v1 `memory.oom_control` `oom_kill` since Linux 4.13; v2 `memory.events`).
    pub oom_kills: Option<u64>,
    /// Times a fork was refused because of the pids cap (`pids.events` `max`), if reported.
    pub pids_limit_hits: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sane_limits() {
        assert!(EnvelopeLimits::new(50, 1 << 30, 512).is_ok());
        assert!(EnvelopeLimits::new(1, MIN_MEMORY_BYTES, 1).is_ok());
        assert!(EnvelopeLimits::new(100, i64::MAX as u64, MAX_PIDS).is_ok());
    }

    #[test]
    fn names_every_problem() {
        let err = EnvelopeLimits::new(0, 1024, 0).unwrap_err();
        assert_eq!(err.problems.len(), 3);
        let text = err.to_string();
        assert!(text.contains("cpu_percent 0 is outside 1..=100"), "{text}");
        assert!(text.contains("memory_bytes 1024 is outside"), "{text}");
        assert!(text.contains("pids_max 0 is outside 1..=4194304"), "{text}");
    }

    #[test]
    fn rejects_each_bound() {
        assert!(EnvelopeLimits::new(101, 1 << 30, 10).is_err());
        assert!(EnvelopeLimits::new(10, u64::MAX, 10).is_err());
        assert!(EnvelopeLimits::new(10, 1 << 30, MAX_PIDS + 1).is_err());
        assert_eq!(
            check_cpu_percent(0).unwrap_err().to_string(),
            "cpu_percent 0 is outside 1..=100"
        );
    }

    #[test]
    fn weight_is_low_and_the_same_on_both_scales() {
        assert_eq!(ENVELOPE_CPU_SHARES, 204);
        const {
            assert!(ENVELOPE_CPU_WEIGHT < DEFAULT_CPU_WEIGHT);
            // Within the kernel's and systemd's accepted ranges.
            assert!(ENVELOPE_CPU_WEIGHT >= 1 && ENVELOPE_CPU_WEIGHT <= 10_000);
            assert!(ENVELOPE_CPU_SHARES >= 2 && ENVELOPE_CPU_SHARES <= 262_144);
        }
    }

    #[test]
    fn quota_is_percent_of_all_cpus() {
        assert_eq!(cfs_quota_us(10, 2), 20_000);
        assert_eq!(cfs_quota_us(100, 2), 200_000);
        assert_eq!(cfs_quota_us(50, 1), 50_000);
        assert_eq!(cfs_quota_us(1, 1), 1_000);
    }
}
