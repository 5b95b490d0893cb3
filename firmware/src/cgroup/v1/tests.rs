use std::fs;

use super::*;
use crate::cgroup::testfs::{changed, expect, snapshot, v1, v1_cgroup};
use crate::cgroup::{for_node, Envelope};

const HYBRID_MOUNTS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "cpuset", "systemd"];

fn manager(root: &Path, mounts: &[&str], ncpus: u32) -> V1Manager {
    v1(root, mounts, "n-1");
    fs::create_dir_all(root.join("unified")).unwrap();
    fs::write(root.join("unified/cgroup.controllers"), "").unwrap();
    match for_node("n-1", Some(root)).unwrap() {
        Envelope::V1(m) => V1Manager { ncpus, ..m },
        other => panic!("expected v1, got {other:?}"),
    }
}

#[test]
fn ensure_writes_exactly_the_limit_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    let before = snapshot(tmp.path());
    m.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    assert_eq!(
        changed(&before, &snapshot(tmp.path())),
        expect(&[
            ("cpu/lattice-n-1/cpu.cfs_quota_us", "20000"),
            ("cpu/lattice-n-1/cpu.cfs_period_us", "100000"),
            ("cpu/lattice-n-1/cpu.shares", "204"),
            ("memory/lattice-n-1/memory.limit_in_bytes", "33554432"),
            ("memory/lattice-n-1/memory.memsw.limit_in_bytes", "33554432"),
            ("pids/lattice-n-1/pids.max", "20"),
            // 10 % of two CPUs needs one: CPU 1, CPU 0 stays the host's.
            ("cpuset/lattice-n-1/cpuset.cpus", "1"),
            ("cpuset/lattice-n-1/cpuset.mems", "0"),
        ])
    );
    assert_eq!(m.docker_parent(), "/lattice-n-1");
}

#[test]
fn the_envelope_spans_every_cpu_when_its_cap_needs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    m.ensure(&EnvelopeLimits::new(80, 1 << 30, 100).unwrap())
        .unwrap();
    let cpus = tmp.path().join("cpuset/lattice-n-1/cpuset.cpus");
    assert_eq!(fs::read_to_string(&cpus).unwrap(), "0-1");
}

#[test]
fn a_new_cap_moves_the_envelope_and_its_containers_to_the_new_cpus() {
    // Docker's container cgroups copy the envelope's CPUs when they are made; a later change
    // must reach them too. (v1 also wants every child within its parent at every step, which
    // plain files cannot check: tests/cgroup_real.rs does that on the real kernel.)
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    m.ensure(&EnvelopeLimits::new(100, 1 << 30, 100).unwrap())
        .unwrap();
    let env = tmp.path().join("cpuset/lattice-n-1");
    v1_cgroup(&env.join("c1"), "cpuset");
    fs::write(env.join("c1/cpuset.cpus"), "0-1").unwrap();
    m.ensure(&EnvelopeLimits::new(50, 1 << 30, 100).unwrap())
        .unwrap();
    assert_eq!(fs::read_to_string(env.join("cpuset.cpus")).unwrap(), "1");
    assert_eq!(fs::read_to_string(env.join("c1/cpuset.cpus")).unwrap(), "1");
    // And back: widened again, the container first gets room from its parent.
    m.ensure(&EnvelopeLimits::new(100, 1 << 30, 100).unwrap())
        .unwrap();
    assert_eq!(fs::read_to_string(env.join("cpuset.cpus")).unwrap(), "0-1");
    assert_eq!(
        fs::read_to_string(env.join("c1/cpuset.cpus")).unwrap(),
        "0-1"
    );
}

#[test]
fn without_a_cpuset_mount_the_envelope_is_not_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), &["cpu", "cpuacct", "memory", "pids"], 2);
    m.ensure(&EnvelopeLimits::new(50, 1 << 30, 100).unwrap())
        .unwrap();
    assert!(m.dir("cpuset").is_none());
    assert!(!tmp.path().join("cpuset").exists());
}

#[test]
fn a_garbled_parent_cpu_list_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    fs::write(tmp.path().join("cpuset/cpuset.cpus"), "zero").unwrap();
    let err = m
        .ensure(&EnvelopeLimits::new(50, 1 << 30, 100).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cpuset/cpuset.cpus"), "{err}");
    assert!(err.contains("\"zero\""), "{err}");
}

#[test]
fn pure_v1_with_comounted_cpu_sets_the_weight_too() {
    // No unified mount: plain v1, as on older distributions, with cpu and cpuacct co-mounted.
    let tmp = tempfile::tempdir().unwrap();
    v1(tmp.path(), &["cpu,cpuacct", "memory", "pids"], "n-1");
    let Envelope::V1(m) = for_node("n-1", Some(tmp.path())).unwrap() else {
        panic!("expected v1");
    };
    let before = snapshot(tmp.path());
    m.ensure(&EnvelopeLimits::new(50, 1 << 30, 100).unwrap())
        .unwrap();
    let changed = changed(&before, &snapshot(tmp.path()));
    assert_eq!(
        changed
            .get("cpu,cpuacct/lattice-n-1/cpu.shares")
            .map(String::as_str),
        Some("204"),
        "{changed:?}"
    );
}

#[test]
fn quota_scales_with_cpus() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 8);
    m.ensure(&EnvelopeLimits::new(50, 1 << 30, 100).unwrap())
        .unwrap();
    let quota = tmp.path().join("cpu/lattice-n-1/cpu.cfs_quota_us");
    assert_eq!(fs::read_to_string(&quota).unwrap(), "400000");
    m.set_cpu_percent(25).unwrap();
    assert_eq!(fs::read_to_string(&quota).unwrap(), "200000");
    let err = m.set_cpu_percent(0).unwrap_err().to_string();
    assert!(err.contains("cpu_percent 0 is outside 1..=100"), "{err}");
    assert_eq!(fs::read_to_string(&quota).unwrap(), "200000");
}

#[test]
fn comounted_cpu_cpuacct_share_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), &["cpu,cpuacct", "memory", "pids"], 2);
    assert_eq!(m.dir("cpu"), m.dir("cpuacct"));
    m.ensure(&EnvelopeLimits::new(100, 1 << 30, 100).unwrap())
        .unwrap();
    m.add_process(4242).unwrap();
    let procs = tmp.path().join("cpu,cpuacct/lattice-n-1/cgroup.procs");
    // Written once, not once per controller name.
    assert_eq!(fs::read_to_string(procs).unwrap(), "4242");
    assert_eq!(m.procs().unwrap(), vec![4242]);
}

#[test]
fn memory_and_swap_limits_are_ordered_by_direction() {
    // The kernel refuses memsw < limit. Make memsw unwritable to see which write comes first:
    // lowering writes the limit first, raising writes memsw first (and so fails before
    // touching the limit).
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    let mem = tmp.path().join("memory/lattice-n-1");
    m.ensure(&EnvelopeLimits::new(10, 64 << 20, 20).unwrap())
        .unwrap();
    fs::remove_file(mem.join("memory.memsw.limit_in_bytes")).unwrap();
    fs::create_dir(mem.join("memory.memsw.limit_in_bytes")).unwrap();
    let limit = || fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap();

    let err = m
        .ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains("memory.memsw.limit_in_bytes"),
        "{err}"
    );
    assert_eq!(limit(), "33554432");

    let err = m
        .ensure(&EnvelopeLimits::new(10, 256 << 20, 20).unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains("memory.memsw.limit_in_bytes"),
        "{err}"
    );
    assert_eq!(limit(), "33554432");
}

#[test]
fn no_swap_accounting_writes_only_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    fs::remove_file(
        tmp.path()
            .join("memory/lattice-n-1/memory.memsw.limit_in_bytes"),
    )
    .unwrap();
    m.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    assert!(!tmp
        .path()
        .join("memory/lattice-n-1/memory.memsw.limit_in_bytes")
        .exists());
}

#[test]
fn stats_come_from_the_accounting_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    let root = tmp.path();
    fs::write(
        root.join("cpuacct/lattice-n-1/cpuacct.usage"),
        "123456789\n",
    )
    .unwrap();
    fs::write(
        root.join("memory/lattice-n-1/memory.usage_in_bytes"),
        "4096\n",
    )
    .unwrap();
    fs::write(
        root.join("memory/lattice-n-1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    fs::write(root.join("pids/lattice-n-1/pids.current"), "7\n").unwrap();
    fs::write(root.join("pids/lattice-n-1/pids.events"), "max 5\n").unwrap();
    assert_eq!(
        m.stats().unwrap(),
        EnvelopeStats {
            cpu_usage_ns: 123_456_789,
            memory_current_bytes: 4096,
            pids_current: 7,
            oom_kills: Some(2),
            pids_limit_hits: Some(5),
        }
    );
    // Older kernels: no oom_kill line, no pids.events.
    fs::write(
        root.join("memory/lattice-n-1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    )
    .unwrap();
    fs::remove_file(root.join("pids/lattice-n-1/pids.events")).unwrap();
    let s = m.stats().unwrap();
    assert_eq!((s.oom_kills, s.pids_limit_hits), (None, None));
}

#[test]
fn add_process_writes_every_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    let before = snapshot(tmp.path());
    m.add_process(77).unwrap();
    assert_eq!(
        changed(&before, &snapshot(tmp.path())),
        expect(&[
            ("cpu/lattice-n-1/cgroup.procs", "77"),
            ("cpuacct/lattice-n-1/cgroup.procs", "77"),
            // On the envelope's CPUs too.
            ("cpuset/lattice-n-1/cgroup.procs", "77"),
            ("memory/lattice-n-1/cgroup.procs", "77"),
            ("pids/lattice-n-1/cgroup.procs", "77"),
        ])
    );
}

#[test]
fn procs_include_containers_below() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    let container = tmp.path().join("memory/lattice-n-1/abc123");
    v1_cgroup(&container, "memory");
    fs::write(container.join("cgroup.procs"), "10\n11\n").unwrap();
    fs::write(tmp.path().join("pids/lattice-n-1/cgroup.procs"), "9\n10\n").unwrap();
    assert_eq!(m.procs().unwrap(), vec![9, 10, 11]);
}

#[test]
fn remove_takes_every_controller_directory_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    v1_cgroup(&tmp.path().join("cpu/lattice-n-1/abc123"), "cpu");
    m.remove().unwrap();
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        assert!(!tmp.path().join(c).join("lattice-n-1").exists(), "{c}");
        assert!(tmp.path().join(c).join("tasks").exists(), "{c} mount kept");
    }
    m.remove().unwrap();
}

#[test]
fn missing_control_file_names_path_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    let pids_max = tmp.path().join("pids/lattice-n-1/pids.max");
    fs::remove_file(&pids_max).unwrap();
    fs::create_dir(&pids_max).unwrap();
    match m
        .ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap_err()
    {
        CgroupError::Write { path, value, .. } => {
            assert_eq!(path, pids_max);
            assert_eq!(value, "20");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn invalid_limits_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manager(tmp.path(), HYBRID_MOUNTS, 2);
    let before = snapshot(tmp.path());
    let bad = EnvelopeLimits {
        cpu_percent: 0,
        memory_bytes: 32 << 20,
        pids_max: 20,
    };
    let err = m.ensure(&bad).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidLimits(_)));
    assert_eq!(changed(&before, &snapshot(tmp.path())), expect(&[]));
}

#[test]
fn missing_controller_and_bad_node_id() {
    let mut controllers = BTreeMap::new();
    controllers.insert("cpu".to_owned(), PathBuf::from("/x/cpu"));
    let err = V1Manager::new("n-1", &controllers, 2).unwrap_err();
    assert!(err.to_string().contains("cpuacct"), "{err}");
    assert!(matches!(
        V1Manager::new("../etc", &controllers, 2),
        Err(CgroupError::InvalidNodeId(_))
    ));
}
