use std::collections::BTreeMap;
use std::path::PathBuf;

use super::testfs;
use super::*;

#[test]
fn envelope_names_are_per_node_and_safe() {
    assert_eq!(envelope_name("n-0123").unwrap(), "lattice-n-0123");
    for bad in ["", "../x", "a/b", "a.b", &"x".repeat(65)] {
        assert!(
            matches!(envelope_name(bad), Err(CgroupError::InvalidNodeId(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn hierarchy_picks_the_manager() {
    let v2 = Hierarchy::V2 {
        root: PathBuf::from("/sys/fs/cgroup"),
    };
    assert!(matches!(
        from_hierarchy("n-1", &v2, 2).unwrap(),
        Envelope::V2(_)
    ));

    let controllers: BTreeMap<String, PathBuf> = ["cpu", "cpuacct", "memory", "pids"]
        .iter()
        .map(|c| (c.to_string(), PathBuf::from("/sys/fs/cgroup").join(c)))
        .collect();
    let hybrid = Hierarchy::Hybrid {
        controllers: controllers.clone(),
        unified: PathBuf::from("/sys/fs/cgroup/unified"),
    };
    let Envelope::V1(m) = from_hierarchy("n-1", &hybrid, 2).unwrap() else {
        panic!("hybrid must use the v1 controllers");
    };
    assert_eq!(
        m.dir("memory").unwrap(),
        PathBuf::from("/sys/fs/cgroup/memory/lattice-n-1")
    );

    // Hybrid where a needed controller lives on the unified side: refused, by name.
    let mut partial = controllers;
    partial.remove("pids");
    let err = from_hierarchy(
        "n-1",
        &Hierarchy::Hybrid {
            controllers: partial,
            unified: PathBuf::from("/sys/fs/cgroup/unified"),
        },
        2,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn systemd_hosts_get_a_slice_on_v2_and_are_refused_on_v1() {
    let v2 = Hierarchy::V2 {
        root: "/sys/fs/cgroup".into(),
    };
    let env = on_systemd("n-1", &v2, 2, || Box::new(RecordingSystemd::default())).unwrap();
    assert!(matches!(env, Envelope::Systemd(_)), "{env:?}");
    assert_eq!(env.docker_parent(), "lattice-n\\x2d1.slice");
    let v1 = Hierarchy::V1 {
        controllers: Default::default(),
    };
    let err = on_systemd("n-1", &v1, 2, || Box::new(RecordingSystemd::default())).unwrap_err();
    assert!(
        err.to_string().contains("systemd manages the cgroup tree"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    testfs::v2(tmp.path(), "cpu memory pids", "n-1");
    assert!(matches!(
        for_node_on("n-1", Some(tmp.path()), true).unwrap(),
        Envelope::V2(_)
    ));
}

#[test]
fn two_nodes_on_one_machine_do_not_collide() {
    let tmp = tempfile::tempdir().unwrap();
    testfs::v2(tmp.path(), "cpu memory pids", "a");
    testfs::v2_cgroup(&tmp.path().join("lattice-b"));
    let a = for_node("a", Some(tmp.path())).unwrap();
    let b = for_node("b", Some(tmp.path())).unwrap();
    a.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    b.ensure(&EnvelopeLimits::new(30, 64 << 20, 40).unwrap())
        .unwrap();
    assert_ne!(a.docker_parent(), b.docker_parent());
    a.remove().unwrap();
    assert!(tmp.path().join("lattice-b/pids.max").exists());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("lattice-b/pids.max")).unwrap(),
        "40"
    );
}

#[test]
fn the_enum_dispatches_to_the_fake() {
    let env = Envelope::Fake(FakeManager::new("n-1").unwrap());
    env.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    env.set_cpu_percent(5).unwrap();
    env.add_process(3).unwrap();
    let Envelope::Fake(fake) = &env else {
        unreachable!()
    };
    assert_eq!(
        fake.calls(),
        vec![
            Call::Ensure(EnvelopeLimits::new(10, 32 << 20, 20).unwrap()),
            Call::SetCpuPercent(5),
            Call::AddProcess(3),
        ]
    );
    assert_eq!(env.docker_parent(), "/lattice-n-1");
}

#[test]
fn online_cpus_is_positive() {
    assert!(online_cpus() >= 1);
}
