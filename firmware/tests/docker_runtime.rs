//! `DockerRuntime` against the machine's real Docker engine.
//!
//! Needs `/var/run/docker.sock` (skipped with a printed reason without it) and the test image
//! from `scripts/test-images` (a `FROM scratch` busybox served by a loopback registry, pinned by
//! digest in `build/test-images.env`; the tests run the script if the file is missing).
//! Every test uses its own random node id and cgroup parent, so tests run in parallel with each
//! other and beside other nodes on the same engine; whatever carries the test's node id is
//! removed at the end, even when the test fails.

mod common;

use common::docker::*;

use bollard::models::HostConfig;
use bollard::query_parameters::{
    InspectContainerOptions, InspectNetworkOptions, LogsOptions, StatsOptions, TopOptions,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use lattice_wire::msg::HealthCheck;
use latticed::runtime::docker::{DockerOptions, DockerRuntime};
use latticed::runtime::hardening::{volume_name, LABEL_VOLUME};
use latticed::runtime::{
    object_name, ContainerRuntime, ContainerStatus, Health, RuntimeError, LABEL_NODE, LABEL_SPEC,
    LABEL_WORKLOAD,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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
async fn an_unchanged_container_is_listed_without_an_inspect() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let id = node.run(&spec("w-idle", "exec sleep 600")).await;
    let first = node
        .wait_for(&id, 30, |st| matches!(st, ContainerStatus::Running { .. }))
        .await;
    // Idle rounds: the list alone says nothing changed, so nothing is inspected.
    let before = node.rt.inspects();
    for _ in 0..3 {
        assert_eq!(node.observed(&id).await, first);
    }
    assert_eq!(
        node.rt.inspects(),
        before,
        "an idle list inspected a container"
    );
    // Killed behind the runtime's back: the list shows the new state, and the inspect that
    // follows gives the exit code.
    let out = Command::new("docker")
        .args(["kill", &id])
        .output()
        .expect("docker kill");
    assert!(out.status.success(), "{out:?}");
    let killed = node
        .wait_for(&id, 30, |st| matches!(st, ContainerStatus::Exited { .. }))
        .await;
    assert_eq!(
        killed.status,
        ContainerStatus::Exited {
            code: 137,
            oom_killed: false
        }
    );
    assert!(node.rt.inspects() > before);
    // Started again by the runtime: what was seen is dropped, the new start time is read.
    node.rt.start(&id).await.expect("start");
    let again = node
        .wait_for(&id, 30, |st| matches!(st, ContainerStatus::Running { .. }))
        .await;
    assert_ne!(again.started_at, first.started_at);
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

    // Tasks come and go as the bomb forks and fails; the highest count seen must come near
    // the limit (the bomb ran) and no sample may pass it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut highest = 0;
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
        let current = pids.current.unwrap_or(0);
        assert!(current <= limit, "{current} tasks > limit {limit}");
        highest = highest.max(current);
        if highest >= limit - 4 || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        highest >= limit - 4,
        "the bomb never came near the limit (at most {highest}/{limit}): did it run?"
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

/// Docker's default pools hold about 30 bridge networks per engine; every workload has its own
/// network, so a node needs more. latticed gives each a /28 of its own pool: 40 workloads get
/// 40 distinct subnets inside the pool, and each container's address is in its own.
#[tokio::test]
async fn forty_workload_networks_get_their_own_subnets_from_the_pool() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let pool: latticed::runtime::subnets::Net =
        latticed::runtime::subnets::DEFAULT_POOL.parse().unwrap();
    let mut subnets = Vec::new();
    for i in 0..40 {
        let id = node
            .create(&spec(&format!("w-net{i}"), "exec sleep 3600"))
            .await
            .unwrap_or_else(|e| panic!("workload {i}: {e}"));
        let name = object_name(&node.id, &format!("w-net{i}"));
        let net = node
            .docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
            .unwrap();
        let subnet: latticed::runtime::subnets::Net = net.ipam.unwrap().config.unwrap()[0]
            .subnet
            .clone()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            pool.overlaps(&subnet) && subnet.prefix() == 28,
            "{name}: {subnet} is not a /28 of {pool}"
        );
        assert!(
            subnets
                .iter()
                .all(|s: &latticed::runtime::subnets::Net| !s.overlaps(&subnet)),
            "{subnet} overlaps another workload's"
        );
        subnets.push(subnet);
        if i == 39 {
            node.rt.start(&id).await.unwrap();
            let ip = node
                .inspect(&id)
                .await
                .network_settings
                .unwrap()
                .networks
                .unwrap()[&name]
                .ip_address
                .clone()
                .unwrap();
            let ip: std::net::Ipv4Addr = ip.parse().unwrap();
            let inside = latticed::runtime::subnets::parse_used([format!("{ip}/28").as_str()]);
            assert_eq!(inside, vec![subnet], "container {ip} is outside {subnet}");
        }
    }
}
