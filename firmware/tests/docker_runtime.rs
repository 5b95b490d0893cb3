//! `DockerRuntime` against the machine's real Docker engine.
//!
//! Needs `/var/run/docker.sock` (skipped with a printed reason without it) and the test image
//! from `scripts/test-images` (a `FROM scratch` busybox served by a loopback registry, pinned by
//! digest in `build/test-images.env`; the tests run the script if the file is missing).
//! Every test uses its own random node id and cgroup parent, so tests run in parallel with each
//! other and beside other nodes on the same engine; whatever carries the test's node id is
//! removed at the end, even when the test fails.

use bollard::models::{ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{
    InspectContainerOptions, InspectNetworkOptions, LogsOptions, StatsOptions, TopOptions,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use lattice_wire::msg::{HealthCheck, RestartPolicy, VolumeSpec, WorkloadClass, WorkloadSpec};
use latticed::runtime::docker::{DockerOptions, DockerRuntime};
use latticed::runtime::hardening::{volume_name, LABEL_VOLUME};
use latticed::runtime::{
    object_name, ContainerRuntime, ContainerStatus, Health, Observed, RuntimeError, LABEL_NODE,
    LABEL_SPEC, LABEL_WORKLOAD,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SOCKET: &str = "/var/run/docker.sock";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("firmware/ has a parent")
        .to_path_buf()
}

fn run_test_images() {
    let script = repo_root().join("scripts/test-images");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (run it by hand to see why):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The digest-pinned test image (`LATTICE_TEST_IMAGE` from the environment or
/// `build/test-images.env`, made by `scripts/test-images` when absent).
fn test_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Ok(image) = std::env::var("LATTICE_TEST_IMAGE") {
            return image;
        }
        let env_file = repo_root().join("build/test-images.env");
        if !env_file.exists() {
            run_test_images();
        }
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/test-images to build the test image",
                env_file.display()
            )
        });
        text.lines()
            .find_map(|l| l.strip_prefix("LATTICE_TEST_IMAGE="))
            .map(str::to_string)
            .unwrap_or_else(|| {
                panic!(
                    "{} has no LATTICE_TEST_IMAGE; run scripts/test-images",
                    env_file.display()
                )
            })
    })
}

/// One test's node: a random id and cgroup parent, cleaned up on drop.
struct Node {
    id: String,
    cgroup_parent: String,
    rt: DockerRuntime,
    docker: Docker,
}

impl Node {
    async fn new(rt: &Env) -> Node {
        let id = format!("t{:08x}", rand::random::<u32>());
        let cgroup_parent = if rt.systemd_driver {
            format!("lattice-test-{id}.slice")
        } else {
            format!("/lattice-test-{id}")
        };
        Node {
            id,
            cgroup_parent,
            rt: runtime(),
            docker: rt.docker.clone(),
        }
    }

    async fn create(&self, spec: &WorkloadSpec) -> Result<String, RuntimeError> {
        self.rt
            .create(&self.id, spec, "spec-hash-1", &self.cgroup_parent)
            .await
    }

    async fn run(&self, spec: &WorkloadSpec) -> String {
        let id = self.create(spec).await.expect("create");
        self.rt.start(&id).await.expect("start");
        id
    }

    async fn observed(&self, container_id: &str) -> Observed {
        self.rt
            .list_owned(&self.id)
            .await
            .expect("list_owned")
            .into_iter()
            .find(|o| o.container_id == container_id)
            .unwrap_or_else(|| panic!("{container_id} not listed for node {}", self.id))
    }

    /// Polls `list_owned` until the container's status satisfies `done` (or panics after
    /// `secs`).
    async fn wait_for(
        &self,
        container_id: &str,
        secs: u64,
        done: impl Fn(&ContainerStatus) -> bool,
    ) -> Observed {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let o = self.observed(container_id).await;
            if done(&o.status) {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "{container_id}: still {:?} after {secs} s",
                o.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn inspect(&self, container_id: &str) -> ContainerInspectResponse {
        self.docker
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
            .expect("inspect")
    }
}

/// `docker <list> --filter label=io.lattice.node=<node>`: the ids it prints.
fn labelled(list: &[&str], node_id: &str) -> Vec<String> {
    let filter = format!("label={LABEL_NODE}={node_id}");
    Command::new("docker")
        .args(list)
        .args(["--filter", &filter])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Node {
    /// Removes everything labelled with this node id (Docker CLI: no async in drop; retried,
    /// as killing a busy container can take a moment), then the cgroup parent directories
    /// Docker leaves behind.
    fn drop(&mut self) {
        for (list, rm) in [
            (&["ps", "-aq"][..], &["rm", "-f", "-v"][..]),
            (&["network", "ls", "-q"][..], &["network", "rm"][..]),
            (&["volume", "ls", "-q"][..], &["volume", "rm", "-f"][..]),
        ] {
            for _ in 0..5 {
                let ids = labelled(list, &self.id);
                if ids.is_empty() {
                    break;
                }
                let _ = Command::new("docker").args(rm).args(&ids).output();
            }
            let left = labelled(list, &self.id);
            if !left.is_empty() {
                eprintln!(
                    "cleanup of node {}: `docker {list:?}` still lists {left:?}",
                    self.id
                );
            }
        }
        let rel = self.cgroup_parent.trim_start_matches('/');
        if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
            for d in dirs.flatten() {
                let _ = std::fs::remove_dir(d.path().join(rel));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(rel));
    }
}

struct Env {
    docker: Docker,
    systemd_driver: bool,
}

fn runtime() -> DockerRuntime {
    let mut opts = DockerOptions {
        socket: SOCKET.into(),
        ..Default::default()
    };
    opts.bounds.stop_timeout_secs = 1;
    DockerRuntime::new(opts)
}

/// The engine and the test image, or `None` (skip) when there is no Docker socket.
async fn env() -> Option<Env> {
    if !Path::new(SOCKET).exists() {
        eprintln!("SKIPPED: {SOCKET} is absent (no Docker engine on this machine)");
        return None;
    }
    let rt = runtime();
    let docker = rt.client().await.expect("the Docker engine answers");
    let info = docker.info().await.expect("docker info");
    let systemd_driver = info
        .cgroup_driver
        .is_some_and(|d| d.to_string() == "systemd");
    let image = test_image();
    if let Err(e) = rt.ensure_image(image).await {
        // The registry may be gone (machine restarted): the script restarts it.
        eprintln!("ensure_image({image}) failed ({e}); running scripts/test-images");
        run_test_images();
        rt.ensure_image(image)
            .await
            .expect("test image after scripts/test-images");
    }
    Some(Env {
        docker,
        systemd_driver,
    })
}

fn spec(id: &str, script: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        name: id.into(),
        image: test_image().into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("GREETING".into(), "hello".into())],
        volumes: vec![],
        cpu_millis: 250,
        memory_bytes: 64 << 20,
        pids_max: 64,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::AlwaysOn,
        egress: false,
        capabilities: vec![],
        ports: vec![],
    }
}

fn data_volume() -> VolumeSpec {
    VolumeSpec {
        name: "data".into(),
        mount_path: "/data".into(),
        size_bytes: 8 << 20,
    }
}

async fn logs(docker: &Docker, container_id: &str) -> String {
    let chunks: Vec<_> = docker
        .logs(
            container_id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .try_collect()
        .await
        .expect("logs");
    chunks.iter().map(|c| c.to_string()).collect()
}

async fn wait_for_log(docker: &Docker, container_id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = logs(docker, container_id).await;
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in logs:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn network_exists(docker: &Docker, name: &str) -> bool {
    docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
        .is_ok()
}

async fn volume_exists(docker: &Docker, name: &str) -> bool {
    docker.inspect_volume(name).await.is_ok()
}

#[tokio::test]
async fn created_container_runs_with_every_protection_applied() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let mut s = spec(
        "w-prot",
        r#"grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
(echo x > /rootfile) 2>/dev/null && echo ROOT_WRITABLE || echo ROOT_READONLY
echo x > /tmp/t && echo TMP_WRITABLE
cp /bin/busybox /tmp/bb && (/tmp/bb true 2>/dev/null && echo TMP_EXEC || echo TMP_NOEXEC)
rm -f /tmp/bb
echo x > /data/f && echo VOLUME_WRITABLE
echo "GREETING=$GREETING"
echo READY
exec sleep 3600"#,
    );
    s.volumes = vec![data_volume()];
    s.capabilities = vec!["CHOWN".into()];
    s.pids_max = 48;
    let id = node.run(&s).await;

    let o = node
        .wait_for(&id, 20, |st| matches!(st, ContainerStatus::Running { .. }))
        .await;
    assert_eq!(o.workload_id, "w-prot");
    assert_eq!(o.spec_hash, "spec-hash-1");
    assert!(!o.started_at.starts_with("0001"), "{}", o.started_at);

    // What the engine recorded.
    let i = node.inspect(&id).await;
    assert_eq!(
        i.name.as_deref(),
        Some(&*format!("/{}", object_name(&node.id, "w-prot")))
    );
    let labels = i.config.as_ref().and_then(|c| c.labels.clone()).unwrap();
    assert_eq!(labels[LABEL_NODE], node.id);
    assert_eq!(labels[LABEL_WORKLOAD], "w-prot");
    assert_eq!(labels[LABEL_SPEC], "spec-hash-1");
    let h: HostConfig = i.host_config.clone().unwrap();
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(h.cap_add, Some(vec!["CHOWN".to_string()]));
    let sec = h.security_opt.clone().unwrap_or_default();
    assert!(
        sec.contains(&"no-new-privileges:true".to_string()),
        "{sec:?}"
    );
    assert!(!sec.iter().any(|o| o.contains("unconfined")), "{sec:?}");
    assert_eq!(h.readonly_rootfs, Some(true));
    assert_eq!(h.privileged, Some(false));
    assert_eq!(h.pids_limit, Some(48));
    assert_eq!(h.memory, Some(64 << 20));
    assert_eq!(h.memory_swap, Some(64 << 20));
    assert_eq!(h.nano_cpus, Some(250_000_000));
    assert_eq!(h.cgroup_parent.as_deref(), Some(&*node.cgroup_parent));
    assert!(h.port_bindings.unwrap_or_default().is_empty());
    assert_eq!(h.publish_all_ports, Some(false));
    assert!(h.binds.unwrap_or_default().is_empty());
    for (ns, mode) in [
        ("pid", &h.pid_mode),
        ("uts", &h.uts_mode),
        ("userns", &h.userns_mode),
    ] {
        assert_ne!(mode.as_deref(), Some("host"), "{ns} namespace");
    }
    assert_eq!(h.ipc_mode.as_deref(), Some("private"));
    assert_eq!(
        h.restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .as_deref(),
        Some("no")
    );
    let log = h.log_config.unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    assert!(log.config.unwrap().contains_key("max-size"));
    let ports = i
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .unwrap_or_default();
    assert!(
        ports.values().all(|b| b.is_none()),
        "published ports: {ports:?}"
    );

    // Its own network, internal (no egress declared), labelled.
    let net_name = object_name(&node.id, "w-prot");
    let net = env
        .docker
        .inspect_network(&net_name, None::<InspectNetworkOptions>)
        .await
        .expect("the workload's network");
    assert_eq!(h.network_mode.as_deref(), net.id.as_deref());
    assert_eq!(net.internal, Some(true));
    assert_eq!(net.driver.as_deref(), Some("bridge"));
    assert_eq!(net.labels.as_ref().unwrap()[LABEL_NODE], node.id);
    // Its volume, labelled.
    let vol = env
        .docker
        .inspect_volume(&volume_name(&node.id, "w-prot", "data"))
        .await
        .expect("the workload's volume");
    assert_eq!(vol.labels[LABEL_NODE], node.id);
    assert_eq!(vol.labels[LABEL_VOLUME], "data");

    // What the process inside actually gets.
    let out = wait_for_log(&env.docker, &id, "READY").await;
    for want in [
        "CapEff:\t0000000000000001", // CHOWN only
        "NoNewPrivs:\t1",
        "Seccomp:\t2", // filter mode: Docker's default profile
        "ROOT_READONLY",
        "TMP_WRITABLE",
        "TMP_NOEXEC",
        "VOLUME_WRITABLE",
        "GREETING=hello",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // Under the node's cgroup parent (read on the host, works on v1 and v2).
    let pid = i.state.as_ref().and_then(|s| s.pid).unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let parent = node.cgroup_parent.trim_start_matches('/');
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(parent) && l.contains(&id)),
        "container not under {parent}:\n{cgroups}"
    );

    // A fresh runtime (latticed restarted) sees the same container, same start.
    let again = runtime().list_owned(&node.id).await.unwrap();
    assert_eq!(again, vec![o.clone()]);
    node.rt.remove(&node.id, &o, true).await.unwrap();
}

#[tokio::test]
async fn nodes_see_and_remove_only_their_own_objects() {
    let Some(env) = env().await else { return };
    let a = Node::new(&env).await;
    let b = Node::new(&env).await;
    // Same workload id on both nodes: names differ by node id, labels keep them apart.
    let mut s = spec("w-same", "exec sleep 3600");
    s.volumes = vec![data_volume()];
    let ca = a.run(&s).await;
    let cb = b.run(&s).await;

    let seen_a = a.rt.list_owned(&a.id).await.unwrap();
    let seen_b = b.rt.list_owned(&b.id).await.unwrap();
    assert_eq!(
        seen_a.iter().map(|o| &o.container_id).collect::<Vec<_>>(),
        [&ca]
    );
    assert_eq!(
        seen_b.iter().map(|o| &o.container_id).collect::<Vec<_>>(),
        [&cb]
    );
    let fresh = format!("t{:08x}", rand::random::<u32>());
    assert!(a.rt.list_owned(&fresh).await.unwrap().is_empty());

    // Node a may not remove node b's container, even when handed its id.
    let err = a.rt.remove(&a.id, &seen_b[0], true).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Rejected { .. }), "{err:?}");
    assert!(matches!(
        b.observed(&cb).await.status,
        ContainerStatus::Running { .. }
    ));

    // Replacing a container (no purge) keeps its network and its data volume.
    a.rt.remove(&a.id, &seen_a[0], false).await.unwrap();
    assert!(a.rt.list_owned(&a.id).await.unwrap().is_empty());
    assert!(network_exists(&env.docker, &object_name(&a.id, "w-same")).await);
    assert!(volume_exists(&env.docker, &volume_name(&a.id, "w-same", "data")).await);
    // The workload leaving the target (purge) takes them along.
    a.rt.remove(&a.id, &seen_a[0], true).await.unwrap();
    assert!(a.rt.list_owned(&a.id).await.unwrap().is_empty());
    assert!(env
        .docker
        .inspect_container(&ca, None::<InspectContainerOptions>)
        .await
        .is_err());
    assert!(!network_exists(&env.docker, &object_name(&a.id, "w-same")).await);
    assert!(!volume_exists(&env.docker, &volume_name(&a.id, "w-same", "data")).await);
    // b's things are untouched.
    assert!(matches!(
        b.observed(&cb).await.status,
        ContainerStatus::Running { .. }
    ));
    assert!(network_exists(&env.docker, &object_name(&b.id, "w-same")).await);
    assert!(volume_exists(&env.docker, &volume_name(&b.id, "w-same", "data")).await);
    // Removing again is a no-op.
    a.rt.remove(&a.id, &seen_a[0], true).await.unwrap();
}

#[tokio::test]
async fn memory_hog_is_oom_killed_and_reported() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let mut s = spec(
        "w-memhog",
        r#"x=$(head -c 200000000 /dev/zero | tr "\0" a); echo survived"#,
    );
    s.memory_bytes = 32 << 20;
    let id = node.run(&s).await;
    let o = node
        .wait_for(&id, 30, |st| matches!(st, ContainerStatus::Exited { .. }))
        .await;
    assert_eq!(
        o.status,
        ContainerStatus::Exited {
            code: 137,
            oom_killed: true
        }
    );
    assert!(!logs(&env.docker, &id).await.contains("survived"));
}

#[tokio::test]
async fn fork_bomb_stops_at_the_pids_limit() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let limit = 32u64;
    // The bomb runs in a subshell; PID 1 becomes `sleep` so the container lives on.
    let mut s = spec("w-forkbomb", "(b() { b | b & }; b) & exec sleep 3600");
    s.pids_max = limit as u32;
    s.cpu_millis = 200;
    let id = node.create(&s).await.expect("create");
    // Never start a bomb without its limit (it would take the machine down).
    let pids_limit = node
        .inspect(&id)
        .await
        .host_config
        .and_then(|h| h.pids_limit);
    assert_eq!(pids_limit, Some(limit as i64), "PidsLimit before start");
    node.rt.start(&id).await.expect("start");

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut current;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = env
            .docker
            .stats(
                &id,
                Some(StatsOptions {
                    stream: false,
                    one_shot: true,
                }),
            )
            .next()
            .await
            .expect("a stats sample")
            .expect("stats");
        let pids = stats.pids_stats.expect("pids stats");
        assert_eq!(pids.limit, Some(limit), "the engine's pids limit");
        current = pids.current.unwrap_or(0);
        assert!(current <= limit, "{current} tasks > limit {limit}");
        if current >= limit - 2 || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        current >= limit - 2,
        "the bomb never reached the limit ({current}/{limit}): did it run?"
    );
    let top = env
        .docker
        .top_processes(&id, None::<TopOptions>)
        .await
        .expect("docker top");
    let procs = top.processes.unwrap_or_default().len() as u64;
    assert!(procs <= limit, "{procs} processes listed");
    // The container is still alive and the host still forks.
    assert!(matches!(
        node.observed(&id).await.status,
        ContainerStatus::Running { .. }
    ));
    assert!(Command::new("true").status().unwrap().success());
}

#[tokio::test]
async fn an_image_that_cannot_be_had_is_image_missing() {
    let Some(_env) = env().await else { return };
    let image = format!("127.0.0.1:5000/lattice/nope@sha256:{}", "0".repeat(64));
    let started = Instant::now();
    match runtime().ensure_image(&image).await {
        Err(RuntimeError::ImageMissing {
            image: named,
            reason,
        }) => {
            assert_eq!(named, image);
            assert!(!reason.is_empty());
            let shown = RuntimeError::ImageMissing {
                image: named,
                reason: reason.clone(),
            }
            .to_string();
            assert!(shown.contains(&image), "{shown}");
            eprintln!("reason given: {reason}");
        }
        other => panic!("expected ImageMissing, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_refused_capability_is_rejected_and_nothing_is_created() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let mut s = spec("w-admin", "exec sleep 3600");
    s.capabilities = vec!["NET_BIND_SERVICE".into(), "SYS_ADMIN".into()];
    s.volumes = vec![data_volume()];
    match node.create(&s).await {
        Err(RuntimeError::Rejected { workload, reason }) => {
            assert_eq!(workload, "w-admin");
            assert!(reason.contains("SYS_ADMIN"), "{reason}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(node.rt.list_owned(&node.id).await.unwrap().is_empty());
    assert!(!network_exists(&env.docker, &object_name(&node.id, "w-admin")).await);
    assert!(!volume_exists(&env.docker, &volume_name(&node.id, "w-admin", "data")).await);
}

#[tokio::test]
async fn pause_unpause_stop_and_health_are_reflected() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let mut s = spec("w-pause", "touch /tmp/ok; exec sleep 3600");
    s.health = Some(HealthCheck {
        command: vec!["test".into(), "-f".into(), "/tmp/ok".into()],
        interval_secs: 1,
        timeout_secs: 2,
        retries: 1,
    });
    let id = node.run(&s).await;
    let mut sick = spec("w-sick", "exec sleep 3600");
    sick.health = Some(HealthCheck {
        command: vec!["false".into()],
        interval_secs: 1,
        timeout_secs: 2,
        retries: 1,
    });
    let sick_id = node.run(&sick).await;

    node.wait_for(&id, 20, |st| {
        *st == ContainerStatus::Running {
            health: Health::Healthy,
        }
    })
    .await;
    node.wait_for(&sick_id, 20, |st| {
        *st == ContainerStatus::Running {
            health: Health::Unhealthy,
        }
    })
    .await;

    let before = node.observed(&id).await.started_at;
    node.rt.pause(&id).await.unwrap();
    node.rt.pause(&id).await.unwrap(); // idempotent
    assert_eq!(node.observed(&id).await.status, ContainerStatus::Paused);
    node.rt.unpause(&id).await.unwrap();
    let o = node.observed(&id).await;
    assert!(matches!(o.status, ContainerStatus::Running { .. }), "{o:?}");
    assert_eq!(o.started_at, before, "unpause is not a restart");

    node.rt.stop(&id).await.unwrap();
    let o = node.observed(&id).await;
    assert!(
        matches!(
            o.status,
            ContainerStatus::Exited {
                oom_killed: false,
                ..
            }
        ),
        "{o:?}"
    );
    node.rt.stop(&id).await.unwrap(); // already stopped: fine
    let err = node.rt.pause(&id).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Container { .. }), "{err:?}");
}

/// A Unix-socket proxy to the engine that the test can take away and bring back, standing in
/// for a Docker daemon stopped and restarted under a running latticed.
fn engine_proxy(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(path).expect("bind proxy socket");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut engine) = tokio::net::UnixStream::connect(SOCKET).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut engine).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn an_engine_that_goes_away_is_unavailable_and_is_reconnected() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let id = node.run(&spec("w-away", "exec sleep 3600")).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let rt = DockerRuntime::new(DockerOptions {
        socket: sock.clone(),
        ..Default::default()
    });
    // Not there yet (latticed started before the engine).
    let err = rt.list_owned(&node.id).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");

    let proxy = engine_proxy(&sock);
    let seen = rt.list_owned(&node.id).await.unwrap();
    assert_eq!(seen[0].container_id, id);

    // The engine stops: the socket file stays but nobody answers.
    proxy.abort();
    let _ = proxy.await;
    let err = rt.list_owned(&node.id).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    let err = rt.start(&id).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    // ... and its socket goes away.
    std::fs::remove_file(&sock).unwrap();
    let err = rt.ensure_image(test_image()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");

    // The engine is back: the same runtime answers again, the container untouched.
    let _proxy = engine_proxy(&sock);
    assert_eq!(rt.list_owned(&node.id).await.unwrap(), seen);
}
