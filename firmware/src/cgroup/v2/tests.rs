use std::fs;

use super::*;
use crate::cgroup::testfs::{changed, expect, snapshot, v2, v2_cgroup};
use crate::cgroup::{for_node, Envelope};

fn manager(root: &Path, ncpus: u32) -> V2Manager {
    v2(root, "cpuset cpu io memory hugetlb pids rdma misc", "n-2");
    match for_node("n-2", Some(root)).unwrap() {
        Envelope::V2(m) => V2Manager { ncpus, ..m },
        other => panic!("expected v2, got {other:?}"),
    }
}

#[test]
fn ensure_writes_exactly_the_limit_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    let before = snapshot(tmp.path());
    m.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    assert_eq!(
        changed(&before, &snapshot(tmp.path())),
        expect(&[
            ("cgroup.subtree_control", "+cpu +memory +pids +cpuset"),
            ("lattice-n-2/cgroup.subtree_control", "+cpu +memory +pids"),
            ("lattice-n-2/cpu.max", "20000 100000"),
            // 10 % of two CPUs needs one: CPU 1, CPU 0 stays the host's.
            ("lattice-n-2/cpuset.cpus", "1"),
            ("lattice-n-2/cpu.weight", "20"),
            ("lattice-n-2/memory.max", "33554432"),
            ("lattice-n-2/memory.swap.max", "0"),
            ("lattice-n-2/pids.max", "20"),
        ])
    );
    assert_eq!(m.docker_parent(), "/lattice-n-2");
    assert_eq!(m.dir(), tmp.path().join("lattice-n-2"));
}

#[test]
fn a_cap_that_needs_every_cpu_leaves_the_cpuset_to_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    m.ensure(&EnvelopeLimits::new(50, 32 << 20, 20).unwrap())
        .unwrap();
    let cpus = tmp.path().join("lattice-n-2/cpuset.cpus");
    assert_eq!(fs::read_to_string(&cpus).unwrap(), "1");
    m.ensure(&EnvelopeLimits::new(60, 32 << 20, 20).unwrap())
        .unwrap();
    assert_eq!(
        fs::read_to_string(&cpus).unwrap(),
        "",
        "empty: all of the parent's"
    );
}

#[test]
fn without_the_cpuset_controller_nothing_is_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    v2(tmp.path(), "cpu memory pids", "n-2");
    let Envelope::V2(m) = for_node("n-2", Some(tmp.path())).unwrap() else {
        panic!("expected v2");
    };
    m.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    assert_eq!(
        fs::read_to_string(tmp.path().join("lattice-n-2/cpuset.cpus")).unwrap(),
        "\n",
        "untouched"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory +pids"
    );
}

#[test]
fn no_swap_file_no_swap_write() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    fs::remove_file(tmp.path().join("lattice-n-2/memory.swap.max")).unwrap();
    m.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    assert!(!tmp.path().join("lattice-n-2/memory.swap.max").exists());
}

#[test]
fn set_cpu_percent_rewrites_cpu_max() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 4);
    let before = snapshot(tmp.path());
    m.set_cpu_percent(75).unwrap();
    assert_eq!(
        changed(&before, &snapshot(tmp.path())),
        expect(&[("lattice-n-2/cpu.max", "300000 100000")])
    );
    assert!(m.set_cpu_percent(101).is_err());
}

#[test]
fn missing_controller_is_named() {
    // Like the unified mount on the hybrid build machines: no controllers at all.
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    fs::write(
        tmp.path().join("cgroup.controllers"),
        "cpuset cpu io hugetlb\n",
    )
    .unwrap();
    let before = snapshot(tmp.path());
    let err = m
        .ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap_err();
    match &err {
        CgroupError::MissingController { controller, place } => {
            assert_eq!(*controller, "memory");
            assert_eq!(*place, tmp.path().join("cgroup.controllers"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(changed(&before, &snapshot(tmp.path())), expect(&[]));
}

#[test]
fn stats_come_from_cpu_stat_and_current_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    let dir = tmp.path().join("lattice-n-2");
    fs::write(
        dir.join("cpu.stat"),
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
    )
    .unwrap();
    fs::write(dir.join("memory.current"), "8192\n").unwrap();
    fs::write(dir.join("pids.current"), "3\n").unwrap();
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
    )
    .unwrap();
    fs::write(dir.join("pids.events"), "max 4\n").unwrap();
    assert_eq!(
        m.stats().unwrap(),
        EnvelopeStats {
            cpu_usage_ns: 2_500_000,
            memory_current_bytes: 8192,
            pids_current: 3,
            oom_kills: Some(1),
            pids_limit_hits: Some(4),
        }
    );
    fs::write(dir.join("cpu.stat"), "user_usec 2000\n").unwrap();
    let err = m.stats().unwrap_err().to_string();
    assert!(
        err.contains("cpu.stat") && err.contains("usage_usec"),
        "{err}"
    );
}

#[test]
fn add_process_goes_into_the_direct_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    let before = snapshot(tmp.path());
    m.add_process(31337).unwrap();
    assert_eq!(
        changed(&before, &snapshot(tmp.path())),
        expect(&[("lattice-n-2/direct/cgroup.procs", "31337")])
    );
    let container = tmp.path().join("lattice-n-2/0123abcd");
    v2_cgroup(&container);
    fs::write(container.join("cgroup.procs"), "5\n6\n").unwrap();
    assert_eq!(m.procs().unwrap(), vec![5, 6, 31337]);
}

#[test]
fn remove_takes_the_tree_and_keeps_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    v2_cgroup(&tmp.path().join("lattice-n-2/0123abcd"));
    m.remove().unwrap();
    assert!(!tmp.path().join("lattice-n-2").exists());
    assert!(tmp.path().join("cgroup.controllers").exists());
    m.remove().unwrap();
}

#[test]
fn write_error_names_path_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), 2);
    let mem = tmp.path().join("lattice-n-2/memory.max");
    fs::remove_file(&mem).unwrap();
    let err = m
        .ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&mem.display().to_string()) && text.contains("\"33554432\""),
        "{text}"
    );
}
