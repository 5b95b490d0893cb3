//! Temporary directories laid out like `/sys/fs/cgroup`, with the files the kernel would put in
//! each cgroup, for the managers' unit tests.

use std::collections::BTreeMap;
use std::fs::{create_dir_all, read_dir, read_to_string, write};
use std::path::Path;

const V1_ROOT_FILES: &[(&str, &str)] = &[("tasks", ""), ("cgroup.procs", "")];

/// Files of a fresh v1 cgroup, per controller.
fn v1_files(controller: &str) -> &'static [(&'static str, &'static str)] {
    match controller {
        "cpu" => &[
            ("cpu.cfs_period_us", "100000\n"),
            ("cpu.cfs_quota_us", "-1\n"),
            ("cpu.shares", "1024\n"),
            (
                "cpu.stat",
                "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
            ),
        ],
        "cpuacct" => &[("cpuacct.usage", "0\n")],
        "memory" => &[
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            ("memory.usage_in_bytes", "0\n"),
            ("memory.failcnt", "0\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            ),
        ],
        "pids" => &[
            ("pids.max", "max\n"),
            ("pids.current", "0\n"),
            ("pids.events", "max 0\n"),
        ],
        // A new v1 cpuset starts with no CPUs and no memory nodes (clone_children off).
        "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")],
        _ => &[],
    }
}

/// A v1 hierarchy under `root`: one directory per entry of `mounts` (`"cpu,cpuacct"` is a
/// co-mount), each with a `lattice-{node}` cgroup already made (the kernel fills a cgroup
/// directory on `mkdir`; a plain directory would stay empty).
pub fn v1(root: &Path, mounts: &[&str], node: &str) {
    for mount in mounts {
        let dir = root.join(mount);
        create_dir_all(&dir).unwrap();
        for (f, v) in V1_ROOT_FILES {
            write(dir.join(f), v).unwrap();
        }
        if mount.split(',').any(|c| c == "cpuset") {
            // The root cpuset holds the machine: two CPUs, one memory node.
            write(dir.join("cpuset.cpus"), "0-1\n").unwrap();
            write(dir.join("cpuset.mems"), "0\n").unwrap();
        }
        v1_cgroup(&dir.join(format!("lattice-{node}")), mount);
    }
}

/// The files of a v1 cgroup at `dir` in the mount named `mount`.
pub fn v1_cgroup(dir: &Path, mount: &str) {
    create_dir_all(dir).unwrap();
    for (f, v) in V1_ROOT_FILES {
        write(dir.join(f), v).unwrap();
    }
    for controller in mount.split(',') {
        for (f, v) in v1_files(controller) {
            write(dir.join(f), v).unwrap();
        }
    }
}

/// A v2 hierarchy at `root` offering `controllers`, with `lattice-{node}` and its `direct`
/// leaf already made.
pub fn v2(root: &Path, controllers: &str, node: &str) {
    create_dir_all(root).unwrap();
    write(root.join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
    write(root.join("cgroup.subtree_control"), "\n").unwrap();
    write(root.join("cgroup.procs"), "1\n").unwrap();
    write(root.join("cpuset.cpus.effective"), "0-1\n").unwrap();
    let dir = root.join(format!("lattice-{node}"));
    v2_cgroup(&dir);
    v2_cgroup(&dir.join("direct"));
}

/// The files of a v2 cgroup with cpu, memory and pids enabled by its parent.
pub fn v2_cgroup(dir: &Path) {
    create_dir_all(dir).unwrap();
    for (f, v) in [
        ("cgroup.controllers", "cpu memory pids\n"),
        ("cgroup.subtree_control", "\n"),
        ("cgroup.procs", ""),
        ("cpu.max", "max 100000\n"),
        ("cpu.weight", "100\n"),
        ("cpuset.cpus", "\n"),
        ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("memory.current", "0\n"),
        ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
        ("pids.max", "max\n"),
        ("pids.current", "0\n"),
        ("pids.events", "max 0\n"),
    ] {
        write(dir.join(f), v).unwrap();
    }
}

/// Every regular file below `root` and its content, keyed by the path relative to `root`.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The files whose content differs between two snapshots, with their new content.
pub fn changed(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `[(path, value)]` as the map [`changed`] returns.
pub fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
