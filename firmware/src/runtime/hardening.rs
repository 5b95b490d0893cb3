//! What every workload container is made of: the checks a [`WorkloadSpec`] must pass and the
//! Docker objects (container, network, volumes) built from it. Pure functions, no I/O: the
//! Docker runtime sends what these return, the fake runtime runs the same checks, and the unit
//! tests below read the protections straight off the request.
//!
//! Protections on every container (issue 3, item 5):
//!
//! - capabilities: `CapDrop: ["ALL"]`, then only the spec's named set added back; names are
//!   checked against the kernel's list and the ones that reach past the container (see
//!   [`REFUSED_CAPABILITIES`]) are refused with [`RuntimeError::Rejected`];
//! - `no-new-privileges`, and Docker's default seccomp profile (never `seccomp=unconfined`);
//! - limits: `PidsLimit`, `Memory` with `MemorySwap` equal to it (no swap), `NanoCpus`;
//! - a read-only root filesystem; writable places are the declared volumes and a small
//!   size-limited `noexec` tmpfs at `/tmp`;
//! - not privileged, no devices, no host namespaces (PID, IPC, UTS, network, user; private
//!   cgroup namespace), no bind mounts, no published ports;
//! - `CgroupParent` = the node's envelope, `RestartPolicy: no` (the reconciler restarts, with
//!   backoff), json-file logs bounded by `max-size` × `max-file`;
//! - its own bridge network, `Internal` unless the spec declares egress, on a bridge interface
//!   named from the node and workload ids ([`crate::firewall::bridge_name`]) so that the
//!   node's firewall ([`crate::firewall`]) keeps it from private, loopback and link-local
//!   ranges and from the host whether or not it declared egress;
//! - IPv6 off inside the container (`net.ipv6.conf.all.disable_ipv6=1`): no link-local IPv6
//!   path around the IPv4 firewall.
//!
//! - volumes: named Docker volumes on the `local` driver that bind a size-limited filesystem
//!   made by [`crate::volumes`] (writes past the size fail with ENOSPC in the container).

use super::{RuntimeError, LABEL_NODE, LABEL_SPEC, LABEL_WORKLOAD};
use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig,
    Ipam, IpamConfig, Mount, MountTypeEnum, NetworkCreateRequest, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateOptions,
};
use lattice_wire::msg::{VolumeSpec, WorkloadSpec};
use std::collections::HashMap;

/// Label naming the spec volume a Docker volume was made for.
pub const LABEL_VOLUME: &str = "io.lattice.volume";
/// Label holding the declared size of a volume in bytes.
pub const LABEL_VOLUME_SIZE: &str = "io.lattice.volume-size";

/// Docker's network option naming the bridge interface.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// Label on a workload network: how many upstream listeners its bridge address has (the
/// firewall lets the workload reach exactly those ports on the host).
pub const LABEL_UPSTREAMS: &str = "io.lattice.upstreams";
/// The first port of a workload's upstream listeners, on its bridge's address on the host;
/// upstream `i` of the spec is at `UPSTREAM_PORT_BASE + i`.
pub const UPSTREAM_PORT_BASE: u16 = 7700;
/// Most upstreams one workload may declare.
pub const MAX_UPSTREAMS: usize = 16;

/// Where the writable scratch tmpfs goes.
pub const TMP_PATH: &str = "/tmp";

/// Capabilities a workload may never have, with the reason given when one is asked for.
pub const REFUSED_CAPABILITIES: &[(&str, &str)] = &[
    ("ALL", "would add back every capability"),
    ("SYS_ADMIN", "mounts, namespaces and most of root"),
    ("NET_ADMIN", "reconfigures networking and firewalls"),
    ("SYS_PTRACE", "traces and reads other processes"),
    ("SYS_MODULE", "loads kernel modules"),
    (
        "DAC_READ_SEARCH",
        "bypasses read permission checks (open_by_handle_at escape)",
    ),
    ("SYS_RAWIO", "raw I/O to devices and ports"),
    (
        "NET_RAW",
        "raw sockets: spoofing and sniffing on the bridge",
    ),
    ("SYS_TIME", "sets the host's clock"),
    ("SYS_BOOT", "reboot and kexec"),
    ("SYS_RESOURCE", "overrides resource limits and quotas"),
    ("SYS_PACCT", "switches process accounting"),
    (
        "LINUX_IMMUTABLE",
        "makes files the node must clean up undeletable",
    ),
    ("MAC_ADMIN", "changes the host's MAC policy"),
    ("MAC_OVERRIDE", "bypasses the host's MAC policy"),
    ("AUDIT_CONTROL", "changes the host's audit rules"),
    ("SYSLOG", "reads and clears the kernel log"),
    ("BPF", "loads BPF programs"),
    ("PERFMON", "kernel performance monitoring"),
    ("WAKE_ALARM", "wakes the host from suspend"),
    ("BLOCK_SUSPEND", "keeps the host from suspending"),
    ("CHECKPOINT_RESTORE", "process checkpoint/restore"),
];

/// Capabilities a workload may name (added back after dropping all).
pub const ALLOWED_CAPABILITIES: &[&str] = &[
    "AUDIT_READ",
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
    "SYS_NICE",
    "SYS_TTY_CONFIG",
];

/// Paths a volume may not be mounted on (or under).
const FORBIDDEN_MOUNTS: &[&str] = &["/proc", "/sys", "/dev", TMP_PATH];

/// Node-side bounds that are not part of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Size of the `/tmp` tmpfs (it also counts against the container's memory limit).
    pub tmp_bytes: u64,
    /// Largest json-file log file before Docker rotates it.
    pub log_max_bytes: u64,
    /// Log files kept per container (the bound on the node is `log_max_bytes * log_max_files`).
    pub log_max_files: u32,
    /// Seconds between SIGTERM and SIGKILL on stop.
    pub stop_timeout_secs: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            tmp_bytes: 16 << 20,
            log_max_bytes: 10 << 20,
            log_max_files: 3,
            stop_timeout_secs: 10,
        }
    }
}

fn rejected(spec: &WorkloadSpec, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Rejected {
        workload: spec.id.clone(),
        reason: reason.into(),
    }
}

/// True for names Docker accepts in object names and that keep `lattice-{node}-{workload}`
/// unambiguous enough: ASCII letters, digits, `_`, `.`, `-`, starting with a letter or digit.
fn is_docker_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The capabilities to add back, normalised (`chown`, `CAP_CHOWN` → `CHOWN`), de-duplicated;
/// refuses unknown names and every entry of [`REFUSED_CAPABILITIES`], naming it.
pub fn capabilities(spec: &WorkloadSpec) -> Result<Vec<String>, RuntimeError> {
    let mut out: Vec<String> = Vec::new();
    for raw in &spec.capabilities {
        if raw.is_empty() || !raw.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
            return Err(rejected(
                spec,
                format!("capability {raw:?} is not a capability name (letters and _ only)"),
            ));
        }
        let upper = raw.to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if let Some((_, why)) = REFUSED_CAPABILITIES.iter().find(|(c, _)| *c == name) {
            return Err(rejected(
                spec,
                format!("capability {name} is refused on Lattice nodes ({why})"),
            ));
        }
        if !ALLOWED_CAPABILITIES.contains(&name) {
            return Err(rejected(spec, format!("unknown capability {raw:?}")));
        }
        if !out.iter().any(|c| c == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Checks everything about a spec that does not need the engine; the first problem found is
/// returned as [`RuntimeError::Rejected`].
pub fn validate(node_id: &str, spec: &WorkloadSpec) -> Result<(), RuntimeError> {
    if !is_docker_name(node_id) {
        return Err(rejected(
            spec,
            format!("node id {node_id:?} is not usable in Docker object names"),
        ));
    }
    if !is_docker_name(&spec.id) {
        return Err(rejected(
            spec,
            format!(
                "workload id {:?} is not usable in Docker object names",
                spec.id
            ),
        ));
    }
    if spec.image.trim().is_empty() {
        return Err(rejected(spec, "no image"));
    }
    if spec.cpu_millis < 10 {
        return Err(rejected(
            spec,
            format!(
                "cpu_millis {} is below the smallest limit (10, a hundredth of a core)",
                spec.cpu_millis
            ),
        ));
    }
    if spec.memory_bytes < 6 << 20 || spec.memory_bytes > i64::MAX as u64 {
        return Err(rejected(
            spec,
            format!(
                "memory_bytes {} is outside 6 MiB..=i64::MAX (Docker's smallest limit is 6 MiB)",
                spec.memory_bytes
            ),
        ));
    }
    if spec.pids_max == 0 {
        // Docker reads 0 as "no limit".
        return Err(rejected(spec, "pids_max 0 would mean no pids limit"));
    }
    capabilities(spec)?;
    if spec.command.iter().any(|a| a.contains('\0')) {
        return Err(rejected(spec, "command contains a NUL byte"));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(rejected(
                spec,
                format!("environment variable {k:?} has an invalid name or value"),
            ));
        }
    }
    if let Some(h) = &spec.health {
        if h.command.is_empty() || h.command.iter().any(|a| a.contains('\0')) {
            return Err(rejected(spec, "health check command is empty or has a NUL"));
        }
    }
    let mut names = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    for v in &spec.volumes {
        if !is_docker_name(&v.name) {
            return Err(rejected(
                spec,
                format!("volume name {:?} is not usable in Docker names", v.name),
            ));
        }
        if v.size_bytes == 0 {
            return Err(rejected(spec, format!("volume {} has size 0", v.name)));
        }
        check_mount_path(&v.mount_path).map_err(|why| {
            rejected(
                spec,
                format!("volume {} mount path {:?}: {why}", v.name, v.mount_path),
            )
        })?;
        if names.contains(&&v.name) {
            return Err(rejected(spec, format!("volume {} declared twice", v.name)));
        }
        if paths
            .iter()
            .any(|p| is_under(p, &v.mount_path) || is_under(&v.mount_path, p))
        {
            return Err(rejected(
                spec,
                format!(
                    "volume {} mount path {} overlaps another volume",
                    v.name, v.mount_path
                ),
            ));
        }
        names.push(&v.name);
        paths.push(&v.mount_path);
    }
    check_upstreams(spec)
}

/// Upstreams: a few, each a stream name the tunnel accepts, towards a real port, in a
/// variable of its own (not one `env` sets too).
fn check_upstreams(spec: &WorkloadSpec) -> Result<(), RuntimeError> {
    if spec.upstreams.len() > MAX_UPSTREAMS {
        return Err(rejected(
            spec,
            format!(
                "{} upstreams declared (at most {MAX_UPSTREAMS})",
                spec.upstreams.len()
            ),
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for u in &spec.upstreams {
        if !lattice_tunnel::proto::valid_upstream_name(&u.name) {
            return Err(rejected(
                spec,
                format!("upstream name {:?} is not [a-z0-9-]{{1,32}}", u.name),
            ));
        }
        if !lattice_wire::msg::UpstreamSpec::valid_env(&u.env) {
            return Err(rejected(
                spec,
                format!(
                    "upstream {}: environment variable name {:?} is not [A-Za-z_][A-Za-z0-9_]*",
                    u.name, u.env
                ),
            ));
        }
        if u.port == 0 {
            return Err(rejected(spec, format!("upstream {}: port 0", u.name)));
        }
        if spec.env.iter().any(|(k, _)| k == &u.env) || seen.contains(&u.env.as_str()) {
            return Err(rejected(
                spec,
                format!("upstream {}: variable {} is set twice", u.name, u.env),
            ));
        }
        seen.push(&u.env);
    }
    Ok(())
}

/// Where the workload's upstream listeners are, given its bridge's address on the host:
/// (upstream name, variable, address) in the spec's order.
pub fn upstream_addrs(
    spec: &WorkloadSpec,
    gateway: std::net::Ipv4Addr,
) -> Vec<(String, String, std::net::SocketAddrV4)> {
    spec.upstreams
        .iter()
        .zip(UPSTREAM_PORT_BASE..)
        .map(|(u, port)| {
            (
                u.name.clone(),
                u.env.clone(),
                std::net::SocketAddrV4::new(gateway, port),
            )
        })
        .collect()
}

/// Adds each upstream's `VARIABLE=IP:PORT` to the container's environment.
pub fn add_upstream_env(
    body: &mut ContainerCreateBody,
    spec: &WorkloadSpec,
    gateway: std::net::Ipv4Addr,
) {
    let env = body.env.get_or_insert_with(Vec::new);
    for (_, var, addr) in upstream_addrs(spec, gateway) {
        env.push(format!("{var}={addr}"));
    }
}

/// `true` if `path` is `base` or below it.
fn is_under(path: &str, base: &str) -> bool {
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn check_mount_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be absolute");
    }
    if path == "/" {
        return Err("cannot be the root");
    }
    if path.ends_with('/') || path.contains("//") || path.contains(['\0', ',', ':']) {
        return Err("must be a plain path (no trailing /, //, NUL, ',' or ':')");
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err("must not contain . or ..");
    }
    if FORBIDDEN_MOUNTS.iter().any(|f| is_under(path, f)) {
        return Err("is reserved (/proc, /sys, /dev, /tmp)");
    }
    Ok(())
}

/// Labels every object of a workload carries.
pub fn labels(node_id: &str, workload_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_NODE.to_string(), node_id.to_string()),
        (LABEL_WORKLOAD.to_string(), workload_id.to_string()),
    ])
}

/// Docker volume name for a spec volume: `lattice-{node}-{workload}-{volume}`.
pub fn volume_name(node_id: &str, workload_id: &str, volume: &str) -> String {
    format!("lattice-{node_id}-{workload_id}-{volume}")
}

/// The create request for each of the workload's volumes (local driver, labelled).
// size limit: not enforced yet (issue 3 disk); the declared size is only a label.
pub fn volume_request(
    node_id: &str,
    spec: &WorkloadSpec,
    volume: &VolumeSpec,
    data: &std::path::Path,
) -> VolumeCreateOptions {
    let mut l = labels(node_id, &spec.id);
    l.insert(LABEL_VOLUME.to_string(), volume.name.clone());
    l.insert(LABEL_VOLUME_SIZE.to_string(), volume.size_bytes.to_string());
    VolumeCreateOptions {
        name: Some(volume_name(node_id, &spec.id, &volume.name)),
        driver: Some("local".to_string()),
        driver_opts: Some(HashMap::from([
            ("type".to_string(), "none".to_string()),
            ("o".to_string(), "bind".to_string()),
            ("device".to_string(), data.to_string_lossy().into_owned()),
        ])),
        labels: Some(l),
        ..Default::default()
    }
}

/// The workload's own bridge network: `Internal` (no route out) unless the spec declares
/// egress. `egress: true` is the plain bridge for now (private ranges not yet filtered).
pub fn network_request(
    node_id: &str,
    spec: &WorkloadSpec,
    subnet: super::subnets::Net,
) -> NetworkCreateRequest {
    NetworkCreateRequest {
        // From latticed's own pool, not Docker's default pools (about 30 networks per engine,
        // and 192.168/16 where home LANs are): see `subnets`.
        ipam: Some(Ipam {
            driver: Some("default".to_string()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(subnet.gateway().to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        name: super::object_name(node_id, &spec.id),
        driver: Some("bridge".to_string()),
        internal: Some(!spec.egress),
        attachable: Some(false),
        enable_ipv6: Some(false),
        options: Some(HashMap::from([(
            BRIDGE_NAME_OPTION.to_string(),
            crate::firewall::bridge_name(node_id, &spec.id),
        )])),
        labels: Some({
            let mut l = labels(node_id, &spec.id);
            l.insert(
                LABEL_UPSTREAMS.to_string(),
                spec.upstreams.len().to_string(),
            );
            l
        }),
        ..Default::default()
    }
}

fn secs_to_nanos(secs: u32) -> Option<i64> {
    (secs > 0).then(|| i64::from(secs) * 1_000_000_000)
}

/// The container create request with every protection. `network` is the id (or name) of the
/// workload's network. Runs [`validate`] first.
pub fn container_body(
    node_id: &str,
    spec: &WorkloadSpec,
    spec_hash: &str,
    cgroup_parent: &str,
    network: &str,
    bounds: &Bounds,
) -> Result<ContainerCreateBody, RuntimeError> {
    validate(node_id, spec)?;
    if cgroup_parent.is_empty() {
        return Err(rejected(spec, "no cgroup parent given"));
    }
    let cap_add = capabilities(spec)?;
    let mut labels = labels(node_id, &spec.id);
    labels.insert(LABEL_SPEC.to_string(), spec_hash.to_string());

    let mounts: Vec<Mount> = spec
        .volumes
        .iter()
        .map(|v| Mount {
            target: Some(v.mount_path.clone()),
            source: Some(volume_name(node_id, &spec.id, &v.name)),
            typ: Some(MountTypeEnum::VOLUME),
            read_only: Some(false),
            ..Default::default()
        })
        .collect();

    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: Some(cap_add),
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        privileged: Some(false),
        readonly_rootfs: Some(true),
        pids_limit: Some(i64::from(spec.pids_max)),
        memory: Some(spec.memory_bytes as i64),
        memory_swap: Some(spec.memory_bytes as i64),
        nano_cpus: Some(i64::from(spec.cpu_millis) * 1_000_000),
        oom_kill_disable: Some(false),
        cgroup_parent: Some(cgroup_parent.to_string()),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        ipc_mode: Some("private".to_string()),
        pid_mode: Some(String::new()),
        uts_mode: Some(String::new()),
        userns_mode: Some(String::new()),
        network_mode: Some(network.to_string()),
        sysctls: Some(HashMap::from([(
            "net.ipv6.conf.all.disable_ipv6".to_string(),
            "1".to_string(),
        )])),
        port_bindings: None,
        publish_all_ports: Some(false),
        binds: None,
        devices: None,
        mounts: Some(mounts),
        tmpfs: Some(HashMap::from([(
            TMP_PATH.to_string(),
            format!("rw,noexec,nosuid,nodev,mode=1777,size={}", bounds.tmp_bytes),
        )])),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        auto_remove: Some(false),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_string()),
            config: Some(HashMap::from([
                ("max-size".to_string(), bounds.log_max_bytes.to_string()),
                ("max-file".to_string(), bounds.log_max_files.to_string()),
            ])),
        }),
        ..Default::default()
    };

    let (entrypoint, cmd) = match spec.command.split_first() {
        Some((first, rest)) => (Some(vec![first.clone()]), Some(rest.to_vec())),
        None => (None, None),
    };
    let healthcheck = spec.health.as_ref().map(|h| {
        let mut test = vec!["CMD".to_string()];
        test.extend(h.command.iter().cloned());
        HealthConfig {
            test: Some(test),
            interval: secs_to_nanos(h.interval_secs),
            timeout: secs_to_nanos(h.timeout_secs),
            retries: (h.retries > 0).then_some(i64::from(h.retries)),
            ..Default::default()
        }
    });

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint,
        cmd,
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        healthcheck,
        stop_timeout: Some(i64::from(bounds.stop_timeout_secs)),
        host_config: Some(host_config),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
