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

/// The CPUs the envelope may run on when the provider donates `pct` percent of the machine,
/// whose CPUs are `available`: the highest-numbered `ceil(pct × n / 100)` of them, so that the
/// host keeps the others (CPU 0 first, where most interrupts land) to itself. `None` when
/// that is every CPU (the envelope needs them all, or there is only one): no pinning then.
///
/// Why pin at all, when the CFS quota already caps the envelope and its low weight lets the
/// host win a contended CPU: the quota is spent on all CPUs at once, so a capped workload
/// still runs on every CPU for part of each period, and a host process that wakes up on such
/// a CPU waits for the workload's time slice to end (the kernel's EEVDF scheduler does not
/// preempt at once for a higher weight). Measured on the 2-core build machine with a memory
/// hog, a CPU hog and a fork bomb in a 50 % envelope: the host's fork+exec p99 went from
/// ×3.3–×4.8 of idle to ×0.9–×1.1 with the envelope on CPU 1 alone (docs/benchmarks.md).
pub fn envelope_cpus(pct: u32, available: &[u32]) -> Option<Vec<u32>> {
    let mut cpus = available.to_vec();
    cpus.sort_unstable();
    cpus.dedup();
    let n = cpus.len() as u64;
    let wanted = (u64::from(pct.clamp(1, 100)) * n).div_ceil(100).max(1);
    if wanted >= n {
        return None;
    }
    Some(cpus.split_off((n - wanted) as usize))
}

/// Parses a kernel CPU list (`cpuset.cpus`, `/sys/devices/system/cpu/online`): `0-3,8,10-11`;
/// an empty list is empty. `None` when it is not one.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Writes CPUs as a kernel CPU list, ranges joined: `[0, 1, 2, 5]` is `0-2,5`.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut cpus = cpus.to_vec();
    cpus.sort_unstable();
    cpus.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        parts.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// CPUs as the bit mask systemd's `AllowedCPUs` property takes (D-Bus `ay`): bit `i % 8` of
/// byte `i / 8` is CPU `i`.
pub fn cpu_mask(cpus: &[u32]) -> Vec<u8> {
    let len = cpus.iter().max().map_or(0, |&m| m as usize / 8 + 1);
    let mut mask = vec![0u8; len];
    for &cpu in cpus {
        mask[cpu as usize / 8] |= 1 << (cpu % 8);
    }
    mask
}

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
    fn the_host_keeps_the_lowest_cpus_the_envelope_does_not_need() {
        assert_eq!(envelope_cpus(50, &[0, 1]), Some(vec![1]));
        assert_eq!(envelope_cpus(10, &[0, 1]), Some(vec![1]));
        assert_eq!(envelope_cpus(51, &[0, 1]), None, "needs more than one CPU");
        assert_eq!(envelope_cpus(100, &[0, 1, 2, 3]), None);
        assert_eq!(envelope_cpus(75, &[0, 1, 2, 3]), Some(vec![1, 2, 3]));
        assert_eq!(envelope_cpus(25, &[3, 2, 1, 0]), Some(vec![3]));
        assert_eq!(envelope_cpus(30, &[0, 1, 2, 3]), Some(vec![2, 3]));
        // Gaps (offline CPUs, a restricted parent) are respected.
        assert_eq!(envelope_cpus(50, &[0, 2, 4, 6]), Some(vec![4, 6]));
        assert_eq!(envelope_cpus(1, &[0]), None, "one CPU cannot be split");
        assert_eq!(envelope_cpus(1, &[]), None);
    }

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-"), None);
        assert_eq!(format_cpu_list(&[5, 0, 1, 2]), "0-2,5");
        assert_eq!(format_cpu_list(&[1]), "1");
        assert_eq!(format_cpu_list(&[1, 3]), "1,3");
        assert_eq!(format_cpu_list(&[]), "");
        let cpus = vec![0, 1, 2, 3, 8, 10, 11];
        assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)), Some(cpus));
    }

    #[test]
    fn systemd_mask_sets_one_bit_per_cpu() {
        assert_eq!(cpu_mask(&[1]), vec![0b10]);
        assert_eq!(cpu_mask(&[1, 2, 3]), vec![0b1110]);
        assert_eq!(cpu_mask(&[0, 9]), vec![0b1, 0b10]);
        assert_eq!(cpu_mask(&[]), Vec::<u8>::new());
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
