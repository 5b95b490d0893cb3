use std::fs;

use super::*;
use crate::cgroup::testfs::v2_cgroup;

fn manager(root: &Path) -> (SystemdManager, RecordingSystemd) {
    let bus = RecordingSystemd::default();
    let m = SystemdManager::new("n-3", root, 2, Box::new(bus.clone())).unwrap();
    (m, bus)
}

#[test]
fn slice_names_escape_dashes() {
    assert_eq!(slice_name("n-3").unwrap(), "lattice-n\\x2d3.slice");
    assert_eq!(slice_name("abc_1").unwrap(), "lattice-abc_1.slice");
    assert!(slice_name("a.b").is_err());
}

#[test]
fn first_ensure_starts_the_slice_later_ones_set_properties() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, bus) = manager(tmp.path());
    let limits = EnvelopeLimits::new(10, 32 << 20, 20).unwrap();
    m.ensure(&limits).unwrap();
    m.ensure(&limits).unwrap();
    let slice = "lattice-n\\x2d3.slice".to_owned();
    let props = vec![
        UnitProperty::u64("CPUQuotaPerSecUSec", 200_000),
        UnitProperty::u64("CPUWeight", 20),
        // 10 % of two CPUs (no cpuset file in the temporary root: CPUs 0 and 1): CPU 1 only.
        UnitProperty {
            name: "AllowedCPUs",
            value: PropertyValue::Bytes(vec![0b10]),
        },
        UnitProperty::u64("MemoryMax", 32 << 20),
        UnitProperty::u64("MemorySwapMax", 0),
        UnitProperty::u64("TasksMax", 20),
    ];
    let mut with_description = props.clone();
    with_description.insert(
        0,
        UnitProperty::str("Description", "Lattice provider envelope"),
    );
    assert_eq!(
        bus.calls(),
        vec![
            SystemdCall::UnitLoaded(slice.clone()),
            SystemdCall::Start(slice.clone(), with_description),
            SystemdCall::UnitLoaded(slice.clone()),
            SystemdCall::Set(slice, props),
        ]
    );
}

#[test]
fn cpu_changes_processes_and_removal_go_through_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, bus) = manager(tmp.path());
    m.ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap();
    m.set_cpu_percent(50).unwrap();
    assert!(m.set_cpu_percent(0).is_err());
    m.add_process(99).unwrap();
    m.remove().unwrap();
    m.remove().unwrap();
    let slice = "lattice-n\\x2d3.slice".to_owned();
    assert_eq!(
        bus.calls()[2..],
        [
            SystemdCall::Set(
                slice.clone(),
                vec![UnitProperty::u64("CPUQuotaPerSecUSec", 1_000_000)]
            ),
            SystemdCall::Start(
                "lattice-n\\x2d3-pid99.scope".into(),
                vec![
                    UnitProperty::str("Slice", slice.clone()),
                    UnitProperty {
                        name: "PIDs",
                        value: PropertyValue::Pids(vec![99]),
                    },
                ]
            ),
            SystemdCall::UnitLoaded(slice.clone()),
            SystemdCall::Stop(slice.clone()),
            SystemdCall::UnitLoaded(slice),
        ]
    );
    assert_eq!(m.docker_parent(), "lattice-n\\x2d3.slice");
}

#[test]
fn stats_are_read_from_the_slice_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _bus) = manager(tmp.path());
    assert_eq!(
        m.dir(),
        tmp.path().join("lattice.slice/lattice-n\\x2d3.slice")
    );
    v2_cgroup(m.dir());
    fs::write(m.dir().join("pids.current"), "4\n").unwrap();
    fs::write(m.dir().join("cgroup.procs"), "12\n").unwrap();
    assert_eq!(m.stats().unwrap().pids_current, 4);
    assert_eq!(m.procs().unwrap(), vec![12]);
}

#[test]
fn systemd_failures_name_operation_and_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, bus) = manager(tmp.path());
    bus.fail_next("Access denied");
    let err = m
        .ensure(&EnvelopeLimits::new(10, 32 << 20, 20).unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "systemd GetUnit of lattice-n\\x2d3.slice: Access denied"
    );
}

#[test]
fn allowed_cpus_come_from_the_root_cpuset_and_are_unrestricted_at_full_cap() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("cpuset.cpus.effective"), "0-3\n").unwrap();
    let (m, bus) = manager(tmp.path());
    m.ensure(&EnvelopeLimits::new(50, 32 << 20, 20).unwrap())
        .unwrap();
    m.ensure(&EnvelopeLimits::new(100, 32 << 20, 20).unwrap())
        .unwrap();
    let allowed: Vec<PropertyValue> = bus
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            SystemdCall::Start(_, props) | SystemdCall::Set(_, props) => Some(props),
            _ => None,
        })
        .flatten()
        .filter(|p| p.name == "AllowedCPUs")
        .map(|p| p.value)
        .collect();
    assert_eq!(
        allowed,
        vec![
            PropertyValue::Bytes(vec![0b1100]),
            PropertyValue::Bytes(vec![])
        ],
        "half of 4 CPUs is CPUs 2-3; the full cap lifts the restriction"
    );
}
