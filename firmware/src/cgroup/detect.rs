//! Which cgroup hierarchy the machine has: read from `/proc/self/mountinfo` (the kernel's own
//! list of mounts, so nothing is assumed about `/sys/fs/cgroup`), or, for a root override,
//! from the layout of a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{fs, CgroupError};

/// The v1 controllers the kernel knows. Super options of a `cgroup` mount that are not in this
/// list (`rw`, `xattr`, `name=systemd`, `release_agent=...`) are mount flags, not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// The mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Only cgroup2 (the unified hierarchy), mounted at `root`.
    V2 { root: PathBuf },
    /// Only cgroup v1: each controller mounted on its own directory (several controllers may
    /// share one: `cpu,cpuacct`).
    V1 {
        controllers: BTreeMap<String, PathBuf>,
    },
    /// v1 controllers plus a cgroup2 mount beside them (systemd's "hybrid" mode, and these
    /// build machines: `/sys/fs/cgroup/unified` with no controllers enabled). The controllers
    /// live on the v1 side, so limits are set there.
    Hybrid {
        controllers: BTreeMap<String, PathBuf>,
        unified: PathBuf,
    },
}

/// Reads `/proc/self/mountinfo` and classifies the hierarchy.
pub fn detect() -> Result<Hierarchy, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    parse_mountinfo(&fs::read(path)?).map_err(|e| match e {
        CgroupError::NoHierarchy { .. } => CgroupError::NoHierarchy {
            searched: path.to_path_buf(),
        },
        other => other,
    })
}

/// Classifies the hierarchy described by mountinfo `text` (see proc(5)):
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Result<Hierarchy, CgroupError> {
    let mut controllers = BTreeMap::new();
    let mut unified = None;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason| CgroupError::Mountinfo {
            line: index + 1,
            text: line.to_owned(),
            reason,
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| bad("no ' - ' separator"))?;
        if sep < 6 {
            return Err(bad("fewer than 6 fields before the separator"));
        }
        let (fstype, super_opts) = match fields.get(sep + 1..sep + 4) {
            Some([fstype, _source, opts]) => (*fstype, *opts),
            _ => return Err(bad("fewer than 3 fields after the separator")),
        };
        let mount_point = PathBuf::from(unescape(fields[4]));
        match fstype {
            "cgroup2" => {
                unified.get_or_insert(mount_point);
            }
            "cgroup" => {
                for opt in super_opts.split(',') {
                    if V1_CONTROLLERS.contains(&opt) {
                        // The first mount wins; later ones are bind mounts of the same tree.
                        controllers
                            .entry(opt.to_owned())
                            .or_insert_with(|| mount_point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    classify(controllers, unified).ok_or_else(|| CgroupError::NoHierarchy {
        searched: PathBuf::from("mountinfo"),
    })
}

fn classify(controllers: BTreeMap<String, PathBuf>, unified: Option<PathBuf>) -> Option<Hierarchy> {
    match (controllers.is_empty(), unified) {
        (true, Some(root)) => Some(Hierarchy::V2 { root }),
        (false, None) => Some(Hierarchy::V1 { controllers }),
        (false, Some(unified)) => Some(Hierarchy::Hybrid {
            controllers,
            unified,
        }),
        (true, None) => None,
    }
}

/// mountinfo escapes space, tab, newline and backslash in paths as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Classifies a directory laid out like `/sys/fs/cgroup` (used when a root override is given:
/// tests, or a hierarchy mounted elsewhere). `root/cgroup.controllers` means v2 at `root`;
/// subdirectories holding a v1 `tasks` file are v1 controllers, named by the directory
/// (`cpu,cpuacct` names two); `root/unified/cgroup.controllers` beside them means hybrid.
pub fn detect_layout(root: &Path) -> Result<Hierarchy, CgroupError> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(Hierarchy::V2 {
            root: root.to_path_buf(),
        });
    }
    let mut controllers = BTreeMap::new();
    for dir in fs::subdirs(root)? {
        if !dir.join("tasks").is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for controller in name.split(',').filter(|c| V1_CONTROLLERS.contains(c)) {
            controllers
                .entry(controller.to_owned())
                .or_insert_with(|| dir.clone());
        }
    }
    let unified = root.join("unified");
    let unified = unified
        .join("cgroup.controllers")
        .is_file()
        .then_some(unified);
    classify(controllers, unified).ok_or_else(|| CgroupError::NoHierarchy {
        searched: root.to_path_buf(),
    })
}

/// Where systemd, when it is PID 1, says so (`sd_booted(3)`).
pub const SYSTEMD_MARKER: &str = "/run/systemd/system";

/// Whether systemd runs this machine (and so owns the cgroup tree).
pub fn systemd_booted() -> bool {
    Path::new(SYSTEMD_MARKER).is_dir()
}

#[cfg(test)]
mod tests;
