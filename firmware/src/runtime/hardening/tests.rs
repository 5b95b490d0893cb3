use super::*;
use lattice_wire::msg::{HealthCheck, RestartPolicy as Restart, VolumeSpec, WorkloadClass};

fn spec() -> WorkloadSpec {
    WorkloadSpec {
        id: "w-1".into(),
        name: "web".into(),
        image: "127.0.0.1:5000/lattice/busybox@sha256:00".into(),
        command: vec!["sh".into(), "-c".into(), "sleep 1".into()],
        env: vec![("A".into(), "b=c".into())],
        volumes: vec![VolumeSpec {
            name: "data".into(),
            mount_path: "/data".into(),
            size_bytes: 1 << 20,
        }],
        cpu_millis: 250,
        memory_bytes: 64 << 20,
        pids_max: 64,
        health: None,
        restart: Restart::Always,
        class: WorkloadClass::AlwaysOn,
        egress: false,
        capabilities: vec!["chown".into(), "CAP_SETUID".into(), "CHOWN".into()],
        ports: vec![8080],
        upstreams: Vec::new(),
    }
}

fn body(s: &WorkloadSpec) -> ContainerCreateBody {
    container_body(
        "n-1",
        s,
        "hash",
        "/lattice-n-1",
        "net-id",
        &Bounds::default(),
    )
    .unwrap()
}

fn reason(e: RuntimeError) -> String {
    match e {
        RuntimeError::Rejected { workload, reason } => {
            assert_eq!(workload, "w-1");
            reason
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[test]
fn every_protection_is_in_the_request() {
    let b = body(&spec());
    let h = b.host_config.clone().unwrap();
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(
        h.cap_add,
        Some(vec!["CHOWN".to_string(), "SETUID".to_string()])
    );
    assert_eq!(
        h.security_opt,
        Some(vec!["no-new-privileges:true".to_string()])
    );
    assert_eq!(h.privileged, Some(false));
    assert_eq!(h.readonly_rootfs, Some(true));
    assert_eq!(h.pids_limit, Some(64));
    assert_eq!(h.memory, Some(64 << 20));
    assert_eq!(h.memory_swap, Some(64 << 20));
    assert_eq!(h.nano_cpus, Some(250_000_000));
    assert_eq!(h.cgroup_parent.as_deref(), Some("/lattice-n-1"));
    assert_eq!(h.network_mode.as_deref(), Some("net-id"));
    assert_eq!(h.port_bindings, None);
    assert_eq!(h.publish_all_ports, Some(false));
    assert_eq!(h.binds, None);
    assert_eq!(h.devices, None);
    assert_eq!(h.ipc_mode.as_deref(), Some("private"));
    assert_eq!(h.pid_mode.as_deref(), Some(""));
    assert_eq!(h.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::PRIVATE));
    assert_eq!(
        h.restart_policy.unwrap().name,
        Some(RestartPolicyNameEnum::NO)
    );
    let tmp = &h.tmpfs.unwrap()[TMP_PATH];
    assert!(
        tmp.contains("noexec") && tmp.contains("size=16777216"),
        "{tmp}"
    );
    let log = h.log_config.unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let log = log.config.unwrap();
    assert_eq!(log["max-size"], "10485760");
    assert_eq!(log["max-file"], "3");
    let mounts = h.mounts.unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].typ, Some(MountTypeEnum::VOLUME));
    assert_eq!(mounts[0].source.as_deref(), Some("lattice-n-1-w-1-data"));
    assert_eq!(mounts[0].target.as_deref(), Some("/data"));
    let labels = b.labels.unwrap();
    assert_eq!(labels[LABEL_NODE], "n-1");
    assert_eq!(labels[LABEL_WORKLOAD], "w-1");
    assert_eq!(labels[LABEL_SPEC], "hash");
    assert_eq!(b.entrypoint, Some(vec!["sh".to_string()]));
    assert_eq!(b.cmd, Some(vec!["-c".to_string(), "sleep 1".to_string()]));
    assert_eq!(b.env, Some(vec!["A=b=c".to_string()]));
    assert_eq!(b.exposed_ports, None);
    assert_eq!(b.healthcheck, None);
}

#[test]
fn empty_command_keeps_the_images_own() {
    let mut s = spec();
    s.command.clear();
    let b = body(&s);
    assert_eq!((b.entrypoint, b.cmd), (None, None));
}

#[test]
fn health_check_is_cmd_form_in_nanoseconds() {
    let mut s = spec();
    s.health = Some(HealthCheck {
        command: vec!["true".into()],
        interval_secs: 2,
        timeout_secs: 0,
        retries: 3,
    });
    let h = body(&s).healthcheck.unwrap();
    assert_eq!(h.test, Some(vec!["CMD".to_string(), "true".to_string()]));
    assert_eq!(h.interval, Some(2_000_000_000));
    assert_eq!(h.timeout, None, "0 means Docker's default");
    assert_eq!(h.retries, Some(3));
}

#[test]
fn dangerous_capabilities_are_refused_by_name() {
    for cap in [
        "SYS_ADMIN",
        "cap_sys_admin",
        "NET_ADMIN",
        "SYS_PTRACE",
        "SYS_MODULE",
        "DAC_READ_SEARCH",
        "SYS_RAWIO",
        "NET_RAW",
        "all",
        "SYS_TIME",
    ] {
        let mut s = spec();
        s.capabilities = vec!["CHOWN".into(), cap.into()];
        let r = reason(container_body("n", &s, "h", "/p", "n", &Bounds::default()).unwrap_err());
        let bare = cap.to_ascii_uppercase();
        let bare = bare.trim_start_matches("CAP_");
        assert!(r.contains(bare) && r.contains("refused"), "{cap}: {r}");
    }
}

#[test]
fn malformed_and_unknown_capabilities_are_refused() {
    for cap in ["", "SYS-ADMIN", "CHOWN,SYS_ADMIN", "FLY"] {
        let mut s = spec();
        s.capabilities = vec![cap.into()];
        let r = reason(validate("n", &s).unwrap_err());
        assert!(r.contains("capability"), "{cap}: {r}");
    }
}

#[test]
fn impossible_limits_are_refused() {
    type Edit = fn(&mut WorkloadSpec);
    let cases: [(&str, Edit); 4] = [
        ("pids_max 0", |s| s.pids_max = 0),
        ("memory_bytes", |s| s.memory_bytes = 1 << 20),
        ("memory_bytes", |s| s.memory_bytes = u64::MAX),
        ("cpu_millis", |s| s.cpu_millis = 0),
    ];
    for (needle, edit) in cases {
        let mut s = spec();
        edit(&mut s);
        let r = reason(validate("n", &s).unwrap_err());
        assert!(r.contains(needle), "{r}");
    }
}

#[test]
fn volume_paths_must_be_plain_and_not_reserved() {
    for path in [
        "data",
        "/",
        "/proc",
        "/proc/x",
        "/sys",
        "/dev/shm",
        "/tmp",
        "/tmp/a",
        "/a/../etc",
        "/a/./b",
        "/a//b",
        "/a/",
        "/a:ro",
        "/a,b",
    ] {
        let mut s = spec();
        s.volumes[0].mount_path = path.into();
        let r = reason(validate("n", &s).unwrap_err());
        assert!(r.contains("mount path"), "{path}: {r}");
    }
    let mut s = spec();
    s.volumes[0].mount_path = "/tmpdata".into();
    validate("n", &s).unwrap();
}

#[test]
fn volumes_must_not_overlap_or_repeat() {
    let mut s = spec();
    let mut v = s.volumes[0].clone();
    v.name = "logs".into();
    v.mount_path = "/data/logs".into();
    s.volumes.push(v);
    assert!(reason(validate("n", &s).unwrap_err()).contains("overlaps"));
    s.volumes[1].mount_path = "/logs".into();
    s.volumes[1].name = "data".into();
    assert!(reason(validate("n", &s).unwrap_err()).contains("twice"));
    s.volumes[1].name = "logs".into();
    validate("n", &s).unwrap();
    s.volumes[1].size_bytes = 0;
    assert!(reason(validate("n", &s).unwrap_err()).contains("size 0"));
}

#[test]
fn ids_and_env_must_be_usable() {
    let mut s = spec();
    s.id = "w/1".into();
    assert!(matches!(
        validate("n", &s),
        Err(RuntimeError::Rejected { .. })
    ));
    let s = spec();
    assert!(matches!(
        validate("-n", &s),
        Err(RuntimeError::Rejected { .. })
    ));
    assert!(matches!(
        validate("", &s),
        Err(RuntimeError::Rejected { .. })
    ));
    let mut s = spec();
    s.env.push(("A=B".into(), "c".into()));
    assert!(reason(validate("n", &s).unwrap_err()).contains("environment"));
    let mut s = spec();
    s.health = Some(HealthCheck {
        command: vec![],
        interval_secs: 1,
        timeout_secs: 1,
        retries: 1,
    });
    assert!(reason(validate("n", &s).unwrap_err()).contains("health"));
    assert!(
        reason(container_body("n", &spec(), "h", "", "x", &Bounds::default()).unwrap_err())
            .contains("cgroup parent")
    );
}

#[test]
fn network_is_internal_unless_egress_is_declared() {
    let mut s = spec();
    let subnet: crate::runtime::subnets::Net = "10.197.3.16/28".parse().unwrap();
    let n = network_request("n-1", &s, subnet);
    assert_eq!(n.name, "lattice-n-1-w-1");
    let ipam = n.ipam.clone().unwrap().config.unwrap();
    assert_eq!(ipam[0].subnet.as_deref(), Some("10.197.3.16/28"));
    assert_eq!(ipam[0].gateway.as_deref(), Some("10.197.3.17"));
    assert_eq!(n.internal, Some(true));
    assert_eq!(n.driver.as_deref(), Some("bridge"));
    assert_eq!(n.labels.unwrap()[LABEL_NODE], "n-1");
    // The bridge interface is named so the firewall can guard it before it exists.
    assert_eq!(
        n.options.unwrap()[BRIDGE_NAME_OPTION],
        crate::firewall::bridge_name("n-1", "w-1")
    );
    s.egress = true;
    assert_eq!(network_request("n-1", &s, subnet).internal, Some(false));
}

#[test]
fn ipv6_is_off_inside_every_container() {
    let body = container_body("n", &spec(), "h", "/p", "x", &Bounds::default()).unwrap();
    let sysctls = body.host_config.unwrap().sysctls.unwrap();
    assert_eq!(sysctls["net.ipv6.conf.all.disable_ipv6"], "1");
}

#[test]
fn volumes_are_named_and_labelled_per_node_and_workload() {
    let s = spec();
    let v = [volume_request(
        "n-1",
        &s,
        &s.volumes[0],
        std::path::Path::new("/v/data"),
    )];
    assert_eq!(v[0].name.as_deref(), Some("lattice-n-1-w-1-data"));
    // It binds the size-limited filesystem made for it.
    let o = v[0].driver_opts.clone().unwrap();
    assert_eq!((o["type"].as_str(), o["o"].as_str()), ("none", "bind"));
    assert_eq!(o["device"], "/v/data");
    let l = v[0].labels.clone().unwrap();
    assert_eq!(l[LABEL_NODE], "n-1");
    assert_eq!(l[LABEL_WORKLOAD], "w-1");
    assert_eq!(l[LABEL_VOLUME], "data");
    assert_eq!(l[LABEL_VOLUME_SIZE], (1u64 << 20).to_string());
}
