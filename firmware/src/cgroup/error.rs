//! The one error type of the cgroup module: every variant names the file, directory, unit or
//! value it is about, so a log line alone says what to look at.

use std::io;
use std::path::PathBuf;

use super::limits::LimitsError;

/// What went wrong while detecting, writing or reading a cgroup envelope.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A write to a cgroup control file failed (the kernel refused the value, the file is
    /// missing because the controller is not there, ...).
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    /// A read of a cgroup or proc file failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A cgroup or proc file held something other than what the kernel documents.
    #[error("{path} holds {content:?}, expected {expected}")]
    Parse {
        path: PathBuf,
        content: String,
        expected: &'static str,
    },
    /// `mkdir` of a cgroup directory failed.
    #[error("creating cgroup directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `rmdir` of a cgroup directory failed (EBUSY: processes are still inside).
    #[error("removing cgroup directory {path}: {source}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The limits asked for are impossible; every problem is listed.
    #[error("invalid envelope limits: {0}")]
    InvalidLimits(#[from] LimitsError),
    /// The node id cannot be used inside a cgroup path.
    #[error("node id {0:?} cannot name a cgroup: it must be 1..=64 characters of [A-Za-z0-9_-]")]
    InvalidNodeId(String),
    /// A line of `/proc/self/mountinfo` (or a fixture) does not have the documented shape.
    #[error("mountinfo line {line}: {reason}: {text:?}")]
    Mountinfo {
        line: usize,
        text: String,
        reason: &'static str,
    },
    /// Neither a cgroup v1 controller nor a cgroup2 filesystem was found.
    #[error("no cgroup hierarchy found in {searched}")]
    NoHierarchy { searched: PathBuf },
    /// A controller the envelope needs is not available where it was looked for.
    #[error("cgroup controller {controller} is not available in {place}")]
    MissingController {
        controller: &'static str,
        place: PathBuf,
    },
    /// cgroup v1 refuses a parent CPU quota below the quota of a cgroup inside it (a
    /// container started with a larger `--cpus`).
    #[error(
        "writing {value:?} to {path}: the kernel refuses a cpu quota below that of a cgroup \
         inside the envelope (cgroup v1 rule); lower the containers' CPU limits first"
    )]
    CpuQuotaBelowChild { path: PathBuf, value: String },
    /// systemd is PID 1 and owns the cgroup tree: limits written to the files directly would be
    /// undone by systemd, so the filesystem managers refuse to run there.
    #[error(
        "systemd manages the cgroup tree on this host ({marker} exists) but it is not cgroup v2: \
         the envelope is a systemd slice only on v2 (boot with systemd.unified_cgroup_hierarchy=1)"
    )]
    SystemdOwnsHierarchy { marker: PathBuf },
    /// A call to systemd (over D-Bus) failed.
    #[error("systemd {operation} of {unit}: {message}")]
    Systemd {
        operation: &'static str,
        unit: String,
        message: String,
    },
    /// A failure injected into a fake by a test.
    #[error("injected failure in {call}: {message}")]
    Injected { call: &'static str, message: String },
}
