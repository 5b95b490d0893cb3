//! What this machine is ([`Inventory`], sent at registration) and how busy it is ([`Usage`],
//! sent with every status message).
//!
//! Everything comes from procfs and a few syscalls (uname, gethostname, statvfs) so the
//! supervisor needs no external tools on the minimal image. Disk figures are for the
//! filesystem holding the node's data directory, since that is the space the node can donate.
//! CPU load is a delta between two `/proc/stat` readings, which is why [`UsageSampler`] keeps
//! state; its first sample covers the time since boot.
//!
//! `lattice-wire` defines structurally identical wire types; the field names here must match.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use procfs::{Current, CurrentSI, ProcError};

/// The machine readings travel as the wire's types (no conversion layer).
pub use lattice_wire::msg::{Inventory, Usage};

/// Failures reading the machine; each names the file or call that failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading {file}: {source}")]
    Proc {
        file: &'static str,
        #[source]
        source: ProcError,
    },
    #[error("statvfs {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("uname: {0}")]
    Uname(#[source] Errno),
    #[error("gethostname: {0}")]
    Hostname(#[source] Errno),
}

fn proc_err(file: &'static str) -> impl FnOnce(ProcError) -> InventoryError {
    move |source| InventoryError::Proc { file, source }
}

/// Read the machine's static inventory. Disk figures are for the filesystem of `data_dir`.
pub fn read_inventory(data_dir: &Path) -> Result<Inventory, InventoryError> {
    let hostname = nix::unistd::gethostname()
        .map_err(InventoryError::Hostname)?
        .to_string_lossy()
        .into_owned();
    let uts = nix::sys::utsname::uname().map_err(InventoryError::Uname)?;
    let cpuinfo = procfs::CpuInfo::current().map_err(proc_err("/proc/cpuinfo"))?;
    // Many ARM boards have no "model name"; procfs also drops the trailing board-wide
    // "Hardware"/"Model" lines there, so there is nothing better to report.
    let cpu_model = cpuinfo
        .model_name(0)
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
        .to_string();
    let cpu_count = match cpuinfo.num_cores() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mem = procfs::Meminfo::current().map_err(proc_err("/proc/meminfo"))?;
    let disk = disk_figures(data_dir)?;
    Ok(Inventory {
        hostname,
        cpu_model,
        cpu_count: u32::try_from(cpu_count).unwrap_or(u32::MAX),
        memory_bytes: mem.mem_total,
        disk_total_bytes: disk.total,
        disk_free_bytes: disk.available,
        kernel: uts.release().to_string_lossy().into_owned(),
        arch: uts.machine().to_string_lossy().into_owned(),
    })
}

struct Disk {
    total: u64,
    /// Free blocks minus the root reserve: what the node can actually fill.
    available: u64,
    /// Total minus all free blocks (as `df` reports "Used").
    used: u64,
}

// statvfs field types are u32 on some 32-bit targets and u64 on others.
#[allow(clippy::useless_conversion)]
fn disk_figures(path: &Path) -> Result<Disk, InventoryError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| InventoryError::Statvfs {
        path: path.to_path_buf(),
        source,
    })?;
    let frag = u64::from(st.fragment_size());
    let blocks = u64::from(st.blocks());
    Ok(Disk {
        total: blocks.saturating_mul(frag),
        available: u64::from(st.blocks_available()).saturating_mul(frag),
        used: blocks
            .saturating_sub(u64::from(st.blocks_free()))
            .saturating_mul(frag),
    })
}

/// CPU tick totals from the aggregate `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

impl CpuTicks {
    fn from_cpu_time(t: &procfs::CpuTime) -> Self {
        let idle = t.idle + t.iowait.unwrap_or(0);
        // guest/guest_nice are already included in user/nice, so they are not added again.
        let busy = t.user
            + t.nice
            + t.system
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        CpuTicks {
            busy,
            total: busy + idle,
        }
    }
}

/// Samples [`Usage`]; keeps the previous `/proc/stat` totals to compute CPU load between calls.
pub struct UsageSampler {
    data_dir: PathBuf,
    prev: CpuTicks,
}

impl UsageSampler {
    /// A sampler whose disk figures are for the filesystem of `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        UsageSampler {
            data_dir,
            prev: CpuTicks::default(),
        }
    }

    /// Take a sample. CPU percentage covers the time since the previous call (since boot on
    /// the first call).
    pub fn sample(&mut self) -> Result<Usage, InventoryError> {
        let stat = procfs::KernelStats::current().map_err(proc_err("/proc/stat"))?;
        let now = CpuTicks::from_cpu_time(&stat.total);
        let busy = now.busy.saturating_sub(self.prev.busy);
        let total = now.total.saturating_sub(self.prev.total);
        self.prev = now;
        // busy <= total, so the ratio is 0..=10000 and fits in u32; no ticks elapsed -> 0.
        let cpu_percent_x100 = busy
            .min(total)
            .saturating_mul(10_000)
            .checked_div(total)
            .map_or(0, |p| u32::try_from(p).unwrap_or(10_000));

        let mem = procfs::Meminfo::current().map_err(proc_err("/proc/meminfo"))?;
        // MemAvailable exists since Linux 3.14; approximate it on anything older.
        let available = mem
            .mem_available
            .unwrap_or(mem.mem_free + mem.buffers + mem.cached);
        let load = procfs::LoadAverage::current().map_err(proc_err("/proc/loadavg"))?;
        let uptime = procfs::Uptime::current().map_err(proc_err("/proc/uptime"))?;
        let disk = disk_figures(&self.data_dir)?;
        Ok(Usage {
            cpu_percent_x100,
            memory_used_bytes: mem.mem_total.saturating_sub(available),
            memory_total_bytes: mem.mem_total,
            disk_used_bytes: disk.used,
            disk_total_bytes: disk.total,
            // `as` saturates for floats; load averages are non-negative.
            load1_x100: (f64::from(load.one) * 100.0).round() as u32,
            uptime_secs: uptime.uptime as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn meminfo_total_bytes() -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    #[test]
    fn inventory_matches_the_real_machine() {
        let dir = tempfile::tempdir().unwrap();
        let inv = read_inventory(dir.path()).unwrap();
        let processors = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count() as u32;
        let parallel = std::thread::available_parallelism().unwrap().get() as u32;
        assert!(
            inv.cpu_count == processors || inv.cpu_count == parallel,
            "{inv:?}"
        );
        let mem = meminfo_total_bytes();
        assert!(
            inv.memory_bytes.abs_diff(mem) <= mem / 100,
            "{inv:?} vs {mem}"
        );
        let host = nix::unistd::gethostname().unwrap();
        assert_eq!(inv.hostname, host.to_string_lossy());
        assert_eq!(inv.arch, std::env::consts::ARCH);
        assert!(!inv.kernel.is_empty() && inv.kernel.chars().next().unwrap().is_ascii_digit());
        assert!(!inv.cpu_model.is_empty());
        assert!(inv.disk_total_bytes > 0 && inv.disk_free_bytes <= inv.disk_total_bytes);
        let json = serde_json::to_string(&inv).unwrap();
        assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inv);
    }

    #[test]
    fn missing_data_dir_error_names_the_path() {
        let err = read_inventory(Path::new("/nonexistent/lattice-data")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/lattice-data"),
            "{err}"
        );
    }

    #[test]
    fn usage_is_plausible_and_busy_loop_shows_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let mut sampler = UsageSampler::new(dir.path().to_path_buf());
        let first = sampler.sample().unwrap();
        assert!(first.cpu_percent_x100 <= 10_000);
        assert!(first.memory_used_bytes > 0 && first.memory_used_bytes < first.memory_total_bytes);
        assert!(first.disk_total_bytes > 0 && first.disk_used_bytes <= first.disk_total_bytes);
        assert!(first.uptime_secs > 0);

        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            std::hint::spin_loop();
        }
        let busy = sampler.sample().unwrap();
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(busy.cpu_percent_x100 > 0, "{busy:?}");
        assert!(busy.cpu_percent_x100 <= 10_000, "{busy:?}");
    }
}
