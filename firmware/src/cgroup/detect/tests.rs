use super::*;

const HYBRID: &str = include_str!("../../../tests/data/cgroup/mountinfo-hybrid-buildvm.txt");
const V2: &str = include_str!("../../../tests/data/cgroup/mountinfo-v2-systemd.txt");
const V1: &str = include_str!("../../../tests/data/cgroup/mountinfo-v1-centos7.txt");
const BAD: &str = include_str!("../../../tests/data/cgroup/mountinfo-bad.txt");

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn build_vm_is_hybrid_with_separate_cpu_and_cpuacct() {
    let Hierarchy::Hybrid {
        controllers,
        unified,
    } = parse_mountinfo(HYBRID).unwrap()
    else {
        panic!("not hybrid");
    };
    assert_eq!(unified, p("/sys/fs/cgroup/unified"));
    assert_eq!(controllers["cpu"], p("/sys/fs/cgroup/cpu"));
    assert_eq!(controllers["cpuacct"], p("/sys/fs/cgroup/cpuacct"));
    assert_eq!(controllers["memory"], p("/sys/fs/cgroup/memory"));
    assert_eq!(controllers["pids"], p("/sys/fs/cgroup/pids"));
    // name=systemd is a named hierarchy, not a controller.
    assert!(!controllers.contains_key("systemd"));
    assert!(!controllers.contains_key("name=systemd"));
    assert!(!controllers.contains_key("rw"));
}

#[test]
fn systemd_v2_host() {
    assert_eq!(
        parse_mountinfo(V2).unwrap(),
        Hierarchy::V2 {
            root: p("/sys/fs/cgroup")
        }
    );
}

#[test]
fn pure_v1_with_comounted_controllers() {
    let Hierarchy::V1 { controllers } = parse_mountinfo(V1).unwrap() else {
        panic!("not v1");
    };
    assert_eq!(controllers["cpu"], p("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(controllers["cpuacct"], p("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(controllers["net_cls"], p("/sys/fs/cgroup/net_cls,net_prio"));
    assert_eq!(controllers["memory"], p("/sys/fs/cgroup/memory"));
    assert!(!controllers.contains_key("seclabel"));
    assert!(!controllers.contains_key("xattr"));
}

#[test]
fn no_cgroup_mounts_is_an_error() {
    let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n";
    assert!(matches!(
        parse_mountinfo(text),
        Err(CgroupError::NoHierarchy { .. })
    ));
}

#[test]
fn malformed_line_names_line_and_text() {
    let err = parse_mountinfo(BAD).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("mountinfo line 1"), "{text}");
    assert!(text.contains("/sys/fs/cgroup rw,relatime tmpfs"), "{text}");
    let short = "1 2 0:1 / - cgroup2 cgroup2 rw";
    assert!(parse_mountinfo(short)
        .unwrap_err()
        .to_string()
        .contains("fewer than 6 fields"));
}

#[test]
fn escaped_mount_points_and_optional_fields() {
    let text = "41 31 0:38 / /srv/cg\\040root rw,relatime shared:3 master:1 - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_mountinfo(text).unwrap(),
        Hierarchy::V2 {
            root: p("/srv/cg root")
        }
    );
}

#[test]
fn the_machine_itself_parses() {
    // Whatever this machine has, its real mountinfo must classify.
    detect().unwrap();
}

#[test]
fn layouts_classify_like_mounts() {
    use std::fs::{create_dir_all, write};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    assert!(matches!(
        detect_layout(root),
        Err(CgroupError::NoHierarchy { .. })
    ));
    for c in ["cpu,cpuacct", "memory", "pids", "systemd"] {
        create_dir_all(root.join(c)).unwrap();
        write(root.join(c).join("tasks"), "").unwrap();
    }
    let Hierarchy::V1 { controllers } = detect_layout(root).unwrap() else {
        panic!("not v1");
    };
    assert_eq!(controllers["cpuacct"], root.join("cpu,cpuacct"));
    assert_eq!(
        controllers.keys().collect::<Vec<_>>(),
        ["cpu", "cpuacct", "memory", "pids"]
    );

    create_dir_all(root.join("unified")).unwrap();
    write(root.join("unified/cgroup.controllers"), "").unwrap();
    assert!(matches!(
        detect_layout(root).unwrap(),
        Hierarchy::Hybrid { unified, .. } if unified == root.join("unified")
    ));

    write(root.join("cgroup.controllers"), "cpu memory pids").unwrap();
    assert_eq!(
        detect_layout(root).unwrap(),
        Hierarchy::V2 {
            root: root.to_path_buf()
        }
    );
}
