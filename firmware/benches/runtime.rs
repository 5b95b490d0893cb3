//! Runtime benchmark (issue 3, "Measured"): the reconcile loop against the real Docker engine.
//!
//! 1. Target-to-running: a target of 10 workloads (test image, `sleep 3600`) handed to
//!    `latticed::reconcile::spawn` with a real `DockerRuntime`, under a real envelope; the time
//!    until each workload is first reported `Running`, and until all are.
//! 2. Supervision cost: this process's CPU (utime+stime from `/proc/self/stat`) over an idle
//!    period while the loop supervises the 10 workloads, and its `VmRSS`. This is the reconcile
//!    loop in-process (same current-thread tokio runtime as latticed), not the whole latticed
//!    binary (no MQTT link, agent or outbox).
//! 3. Envelope overhead: a CPU-bound busybox loop with `cpu_millis = 500` for 10 s inside the
//!    envelope (`CgroupParent` = envelope) and then under a sibling cgroup without the envelope;
//!    the CPU each obtained (the container's `cpuacct.usage`) and the ratio.
//!
//! Needs root, Docker at the default socket, a writable cgroup hierarchy not owned by systemd,
//! and the test image (`LATTICE_TEST_IMAGE`, else `build/test-images.env`, made by
//! `scripts/test-images` when missing). Everything labelled with the bench's node id, the
//! envelope and the sibling cgroup are removed at the end, also after a panic.
//!
//! 4. Host probe under hogs: the latency of a probe on the host (fork+exec of `/bin/true`, and
//!    a 1 ms timer's oversleep) for `PROBE_SECS`, idle and then while a memory hog (OOM-killed
//!    over and over at its 64 MiB limit), a CPU hog (a whole core) and a fork bomb (64 pids)
//!    run as workloads in the envelope; p50/p99 of each and the loaded/idle ratio.
//!
//! Knobs: `IDLE_SECS` (default 60), `CPU_SECS` (default 10), `PROBE_SECS` (default 10).
//! Prints figures and writes `target/bench/runtime.json`.

use lattice_wire::msg::{RestartPolicy, Target, WorkloadClass, WorkloadSpec, WorkloadState};
use latticed::cgroup::{self, CgroupManager, Envelope, EnvelopeLimits};
use latticed::reconcile;
use latticed::runtime::docker::{DockerOptions, DockerRuntime};
use latticed::runtime::ContainerRuntime;
use latticed::shutdown;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKLOADS: usize = 10;
const MIB: u64 = 1024 * 1024;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("firmware/ has a parent")
        .to_path_buf()
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The digest-pinned test image.
fn test_image() -> String {
    if let Ok(image) = std::env::var("LATTICE_TEST_IMAGE") {
        return image;
    }
    let env_file = repo_root().join("build/test-images.env");
    if !env_file.exists() {
        let script = repo_root().join("scripts/test-images");
        let status = Command::new(&script)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(status.success(), "{} failed", script.display());
    }
    let text = std::fs::read_to_string(&env_file)
        .unwrap_or_else(|e| panic!("{}: {e}", env_file.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("LATTICE_TEST_IMAGE="))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{} has no LATTICE_TEST_IMAGE", env_file.display()))
}

/// Why this machine cannot run the benchmark, if it cannot.
fn skip_reason() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return Some("not root".into());
    }
    if !Path::new("/var/run/docker.sock").exists() && std::env::var("DOCKER_HOST").is_err() {
        return Some("no Docker socket".into());
    }
    if cgroup::detect::systemd_booted() {
        return Some("systemd owns the cgroup hierarchy".into());
    }
    None
}

fn spec(id: &str, command: &str, cpu_millis: u32) -> WorkloadSpec {
    WorkloadSpec {
        id: id.to_string(),
        name: id.to_string(),
        image: test_image(),
        command: vec!["sh".into(), "-c".into(), command.into()],
        env: Vec::new(),
        volumes: Vec::new(),
        cpu_millis,
        memory_bytes: 32 * MIB,
        pids_max: 64,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::AlwaysOn,
        egress: false,
        capabilities: Vec::new(),
        ports: Vec::new(),
        upstreams: Vec::new(),
    }
}

/// `Running: 10` style counts of the published states (empty: nothing published yet).
fn state_counts(statuses: &[lattice_wire::msg::WorkloadStatus]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in statuses {
        let name = format!("{:?}", s.state);
        let name = name
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_string();
        *counts.entry(name).or_default() += 1;
    }
    if counts.is_empty() {
        return "(no status yet)".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// This process's CPU time (utime + stime) in seconds, from `/proc/self/stat`.
fn self_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (utime + stime) as f64 / tck
}

fn self_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The container's `cpuacct.usage` (ns) on cgroup v1, or `usage_usec` × 1000 on v2.
fn container_cpu_ns(parent: &str, container_id: &str) -> u64 {
    let rel = parent.trim_start_matches('/');
    let candidates = [
        Path::new(CGROUP_ROOT)
            .join("cpuacct")
            .join(rel)
            .join(container_id)
            .join("cpuacct.usage"),
        Path::new(CGROUP_ROOT)
            .join("cpu,cpuacct")
            .join(rel)
            .join(container_id)
            .join("cpuacct.usage"),
    ];
    for c in &candidates {
        if let Ok(text) = std::fs::read_to_string(c) {
            return text.trim().parse().expect("cpuacct.usage is a number");
        }
    }
    let v2 = Path::new(CGROUP_ROOT)
        .join(rel)
        .join(container_id)
        .join("cpu.stat");
    let text = std::fs::read_to_string(&v2)
        .unwrap_or_else(|e| panic!("no CPU accounting for {container_id} under {parent}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us * 1000)
        .expect("usage_usec")
}

/// Removes everything the bench made, also when it panics: containers, networks and volumes
/// labelled with the node id (Docker CLI), the sibling cgroup Docker made, and the envelope.
struct Cleanup {
    node: String,
    outside_parent: String,
    envelope: Option<Envelope>,
}

fn labelled(list: &[&str], node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(list)
        .args(["--filter", &format!("label=io.lattice.node={node}")])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use latticed::firewall::Firewall;
        let _ = latticed::firewall::iptables::Iptables::new().clear(&self.node);
        for (list, rm) in [
            (&["ps", "-aq"][..], &["rm", "-f", "-v"][..]),
            (&["network", "ls", "-q"][..], &["network", "rm"][..]),
            (&["volume", "ls", "-q"][..], &["volume", "rm", "-f"][..]),
        ] {
            for _ in 0..5 {
                let ids = labelled(list, &self.node);
                if ids.is_empty() {
                    break;
                }
                let _ = Command::new("docker").args(rm).args(&ids).output();
            }
            let left = labelled(list, &self.node);
            if !left.is_empty() {
                eprintln!("cleanup: `docker {list:?}` still lists {left:?}");
            }
        }
        let rel = self.outside_parent.trim_start_matches('/');
        if let Ok(dirs) = std::fs::read_dir(CGROUP_ROOT) {
            for d in dirs.flatten() {
                let _ = std::fs::remove_dir(d.path().join(rel));
            }
        }
        if let Some(env) = self.envelope.take() {
            let rel = env.docker_parent().trim_start_matches('/').to_string();
            if let Err(e) = env.remove() {
                eprintln!("cleanup: removing the envelope: {e}");
            }
            // Docker also made the parent in the controllers the envelope does not manage
            // (blkio, cpuset, devices, freezer, systemd, unified).
            if let Ok(dirs) = std::fs::read_dir(CGROUP_ROOT) {
                for d in dirs.flatten() {
                    let dir = d.path().join(&rel);
                    if dir.exists() {
                        if let Err(e) = std::fs::remove_dir(&dir) {
                            eprintln!("cleanup: {}: {e}", dir.display());
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct Figures {
    node: String,
    image_present_before: bool,
    all_running_ms: f64,
    per_workload_ms: Vec<f64>,
    timeline: Vec<(f64, String)>,
    /// ensure_image, create, start, list_owned for one workload (mean ms).
    phase_ms: [f64; 4],
    idle_secs: f64,
    idle_cpu_secs: f64,
    idle_cpu_percent: f64,
    rss_kib: u64,
    cpu_secs: f64,
    inside_cores: f64,
    outside_cores: f64,
    probe_secs: f64,
    idle_probe: Probe,
    loaded_probe: Probe,
}

fn main() {
    if let Some(reason) = skip_reason() {
        println!("skipping the runtime benchmark: {reason}");
        return;
    }
    let node = format!("bench-{:08x}", rand::random::<u32>());
    let envelope = cgroup::for_node(&node, None).expect("envelope for this machine");
    let envelope_parent = envelope.docker_parent();
    let mut cleanup = Cleanup {
        node: node.clone(),
        outside_parent: format!("/bench-outside-{node}"),
        envelope: None,
    };
    envelope
        .ensure(&EnvelopeLimits::new(50, 2 << 30, 4096).expect("limits"))
        .expect("ensure the envelope");
    let outside_parent = cleanup.outside_parent.clone();
    cleanup.envelope = Some(envelope);

    // latticed runs its loop on a current-thread runtime; so does the bench.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let figures = rt.block_on(run(&node, &envelope_parent, &outside_parent));
    drop(rt);
    drop(cleanup);
    report(&figures);
}

async fn run(node: &str, envelope_parent: &str, outside_parent: &str) -> Figures {
    let image = test_image();
    let runtime = Arc::new(DockerRuntime::new(DockerOptions::default()));
    runtime.ping().await.expect("Docker engine answers");
    let image_present_before = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .is_ok_and(|o| o.status.success());

    // 1. Target to running.
    let (trigger, shut) = shutdown::channel();
    let handle = reconcile::spawn(
        runtime.clone(),
        node.to_string(),
        envelope_parent.to_string(),
        shut,
    );
    let workloads: Vec<WorkloadSpec> = (0..WORKLOADS)
        .map(|i| spec(&format!("w-bench-{i}"), "exec sleep 3600", 50))
        .collect();
    let mut rx = handle.subscribe();
    let t0 = Instant::now();
    handle.set_target(Target {
        revision: 1,
        workloads,
        heartbeat_secs: 10,
    });
    let mut first_running: BTreeMap<String, f64> = BTreeMap::new();
    // Every published status change: (ms since set_target, workloads per state).
    let mut timeline: Vec<(f64, String)> = Vec::new();
    let deadline = t0 + Duration::from_secs(120);
    while first_running.len() < WORKLOADS {
        let statuses = rx.borrow_and_update().clone();
        let now_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let summary = state_counts(&statuses);
        if timeline.last().is_none_or(|(_, last)| *last != summary) {
            timeline.push((now_ms, summary));
        }
        for s in &statuses {
            match &s.state {
                WorkloadState::Running | WorkloadState::Healthy => {
                    first_running.entry(s.id.clone()).or_insert(now_ms);
                }
                WorkloadState::Failed { reason } | WorkloadState::ImageMissing { reason } => {
                    panic!("workload {} cannot run: {reason}", s.id)
                }
                _ => {}
            }
        }
        if first_running.len() == WORKLOADS {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "not all running after 120 s: {statuses:?}");
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
    let all_running_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut per_workload_ms: Vec<f64> = first_running.values().copied().collect();
    per_workload_ms.sort_by(f64::total_cmp);
    for (ms, summary) in &timeline {
        println!("   {ms:7.0} ms  {summary}");
    }
    println!(
        "1. target -> {WORKLOADS} running: all in {all_running_ms:.0} ms, per workload p50 {:.0} ms",
        percentile(&per_workload_ms, 50.0)
    );

    // 2. Supervision cost while they run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = Duration::from_secs(env_secs("IDLE_SECS", 60));
    let cpu_before = self_cpu_secs();
    let w0 = Instant::now();
    tokio::time::sleep(idle).await;
    let idle_secs = w0.elapsed().as_secs_f64();
    let idle_cpu_secs = self_cpu_secs() - cpu_before;
    let rss_kib = self_rss_kib();
    let still: Vec<_> = handle
        .statuses()
        .into_iter()
        .filter(|s| !matches!(s.state, WorkloadState::Running) || s.restarts != 0)
        .collect();
    assert!(still.is_empty(), "workloads left Running: {still:?}");
    println!(
        "2. reconcile loop in-process, {WORKLOADS} running, {idle_secs:.0} s idle: {:.3}% of one core, RSS {rss_kib} KiB",
        idle_cpu_secs / idle_secs * 100.0
    );

    // Stop the loop so the CPU test's containers (same node label) are not removed by it.
    trigger.trigger();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Where the time goes: the engine's cost of one workload's phases, one after another as the
    // loop does them (the loop is stopped, so these extra containers are left alone).
    let mut phases = Vec::new();
    for i in 0..3 {
        let s = spec(&format!("w-probe-{i}"), "exec sleep 3600", 50);
        let p0 = Instant::now();
        runtime.ensure_image(&s.image).await.expect("ensure_image");
        let p1 = Instant::now();
        let cid = runtime
            .create(node, &s, "bench", envelope_parent)
            .await
            .expect("create");
        let p2 = Instant::now();
        runtime.start(&cid).await.expect("start");
        let p3 = Instant::now();
        let owned = runtime.list_owned(node).await.expect("list_owned");
        let p4 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
        phases.push([ms(p0, p1), ms(p1, p2), ms(p2, p3), ms(p3, p4)]);
        let observed = owned
            .into_iter()
            .find(|o| o.container_id == cid)
            .expect("probe listed");
        runtime
            .remove(node, &observed, true)
            .await
            .expect("remove probe");
    }
    let mean = |k: usize| phases.iter().map(|p| p[k]).sum::<f64>() / phases.len() as f64;
    let phase_ms = [mean(0), mean(1), mean(2), mean(3)];
    println!(
        "   one workload by hand (mean of 3): ensure_image {:.1} ms, create (with its network) {:.0} ms, start {:.0} ms, list_owned {:.1} ms",
        phase_ms[0], phase_ms[1], phase_ms[2], phase_ms[3]
    );

    // 3. Envelope overhead.
    let cpu_secs = env_secs("CPU_SECS", 10);
    let hog = "i=0; while :; do i=$((i+1)); done";
    let mut cores = Vec::new();
    for (id, parent) in [("w-cpu-in", envelope_parent), ("w-cpu-out", outside_parent)] {
        let mut s = spec(id, hog, 500);
        s.restart = RestartPolicy::Never;
        let cid = runtime
            .create(node, &s, "bench", parent)
            .await
            .expect("create the CPU workload");
        runtime.start(&cid).await.expect("start the CPU workload");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n0 = container_cpu_ns(parent, &cid);
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(cpu_secs)).await;
        let n1 = container_cpu_ns(parent, &cid);
        let c = (n1 - n0) as f64 / 1e9 / w0.elapsed().as_secs_f64();
        println!("3. CPU-bound, cpu_millis 500, {cpu_secs} s under {parent}: {c:.3} cores");
        cores.push(c);
        let observed = runtime
            .list_owned(node)
            .await
            .expect("list_owned")
            .into_iter()
            .find(|o| o.container_id == cid)
            .expect("the CPU workload is listed");
        runtime
            .remove(node, &observed, true)
            .await
            .expect("remove the CPU workload");
    }

    // 4. The host's probe, idle and under three hogs in workloads.
    let probe_secs = env_secs("PROBE_SECS", 10);
    let idle_probe = probe(Duration::from_secs(probe_secs)).await;
    let hogs = [
        // Fills its memory until the kernel kills the filler, over and over.
        (
            "w-hog-mem",
            "while :; do head -c 200000000 /dev/zero | tail > /dev/null; done",
            500,
            64 * MIB,
            64,
        ),
        ("w-hog-cpu", "while :; do :; done", 1000, 32 * MIB, 64),
        (
            "w-hog-fork",
            "(b() { b | b & }; b) & exec sleep 3600",
            500,
            32 * MIB,
            64,
        ),
    ];
    let mut hog_ids: Vec<String> = Vec::new();
    for (id, script, millis, memory, pids) in hogs {
        let mut s = spec(id, script, millis);
        s.memory_bytes = memory;
        s.pids_max = pids;
        s.restart = RestartPolicy::Never;
        let cid = runtime
            .create(node, &s, "bench", envelope_parent)
            .await
            .expect("create a hog");
        runtime.start(&cid).await.expect("start a hog");
        hog_ids.push(cid);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_probe = probe(Duration::from_secs(probe_secs)).await;
    println!("4. host probe idle:   {idle_probe:?}");
    println!("   host probe hogged: {loaded_probe:?}");

    // Purge the 10 workloads through the runtime (the CLI guard catches anything left).
    for o in runtime.list_owned(node).await.expect("list_owned") {
        if let Err(e) = runtime.remove(node, &o, true).await {
            eprintln!("remove {}: {e}", o.workload_id);
        }
    }

    Figures {
        node: node.to_string(),
        image_present_before,
        all_running_ms,
        per_workload_ms,
        timeline,
        phase_ms,
        idle_secs,
        idle_cpu_secs,
        idle_cpu_percent: idle_cpu_secs / idle_secs * 100.0,
        rss_kib,
        cpu_secs: cpu_secs as f64,
        inside_cores: cores[0],
        outside_cores: cores[1],
        probe_secs: probe_secs as f64,
        idle_probe,
        loaded_probe,
    }
}

/// p50 and p99 (ms) of the two host probes over a period.
#[derive(Debug, Clone, Copy)]
struct Probe {
    spawn_p50: f64,
    spawn_p99: f64,
    timer_p50: f64,
    timer_p99: f64,
    samples: usize,
}

/// Runs the host probes for `period` on a thread of its own (not the loop's runtime): each
/// sample forks and execs `/bin/true` and waits for it, then sleeps 1 ms and records by how
/// much the sleep overran.
async fn probe(period: Duration) -> Probe {
    tokio::task::spawn_blocking(move || {
        let (mut spawn, mut timer) = (Vec::new(), Vec::new());
        let end = Instant::now() + period;
        while Instant::now() < end {
            let t = Instant::now();
            let ok = Command::new("/bin/true")
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                spawn.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(1));
            timer.push((t.elapsed().as_secs_f64() * 1e3 - 1.0).max(0.0));
        }
        spawn.sort_by(f64::total_cmp);
        timer.sort_by(f64::total_cmp);
        Probe {
            spawn_p50: percentile(&spawn, 50.0),
            spawn_p99: percentile(&spawn, 99.0),
            timer_p50: percentile(&timer, 50.0),
            timer_p99: percentile(&timer, 99.0),
            samples: spawn.len(),
        }
    })
    .await
    .expect("probe thread")
}

fn report(f: &Figures) {
    let p50 = percentile(&f.per_workload_ms, 50.0);
    let max = f.per_workload_ms.last().copied().unwrap_or(f64::NAN);
    let ratio = f.inside_cores / f.outside_cores;
    println!();
    println!(
        "node {} (image present before: {})",
        f.node, f.image_present_before
    );
    println!(
        "target -> all {WORKLOADS} running:       {:.0} ms (per workload p50 {p50:.0} ms, max {max:.0} ms; target p50 < 1000 ms)",
        f.all_running_ms
    );
    println!(
        "reconcile loop in-process, idle:    {:.3}% of one core ({:.2} s CPU in {:.0} s; target < 0.2%)",
        f.idle_cpu_percent, f.idle_cpu_secs, f.idle_secs
    );
    println!(
        "bench process RSS (loop in-process): {} KiB ({:.1} MiB) - not the latticed binary",
        f.rss_kib,
        f.rss_kib as f64 / 1024.0
    );
    println!(
        "envelope overhead: inside {:.3} cores, outside {:.3} cores, ratio {ratio:.3}",
        f.inside_cores, f.outside_cores
    );
    let (i, l) = (f.idle_probe, f.loaded_probe);
    println!(
        "host probe p99 under hogs vs idle: fork+exec {:.2} / {:.2} ms (x{:.2}), 1 ms timer oversleep {:.3} / {:.3} ms (x{:.2}); target within 2x",
        l.spawn_p99,
        i.spawn_p99,
        l.spawn_p99 / i.spawn_p99,
        l.timer_p99,
        i.timer_p99,
        l.timer_p99 / i.timer_p99.max(1e-3)
    );
    let probe_json = |p: Probe| {
        serde_json::json!({
            "spawn_p50_ms": p.spawn_p50, "spawn_p99_ms": p.spawn_p99,
            "timer_oversleep_p50_ms": p.timer_p50, "timer_oversleep_p99_ms": p.timer_p99,
            "samples": p.samples,
        })
    };
    let json = serde_json::json!({
        "probe_secs": f.probe_secs,
        "host_probe_idle": probe_json(i),
        "host_probe_hogged": probe_json(l),
        "host_probe_spawn_p99_ratio": l.spawn_p99 / i.spawn_p99,
        "node": f.node,
        "workloads": WORKLOADS,
        "image_present_before": f.image_present_before,
        "target_to_all_running_ms": f.all_running_ms,
        "per_workload_running_ms": f.per_workload_ms,
        "per_workload_p50_ms": p50,
        "status_timeline": f
            .timeline
            .iter()
            .map(|(ms, summary)| serde_json::json!({ "ms": ms, "states": summary }))
            .collect::<Vec<_>>(),
        "one_workload_phase_ms": {
            "ensure_image": f.phase_ms[0],
            "create": f.phase_ms[1],
            "start": f.phase_ms[2],
            "list_owned": f.phase_ms[3],
        },
        "idle_secs": f.idle_secs,
        "idle_cpu_secs": f.idle_cpu_secs,
        "idle_cpu_percent_of_core": f.idle_cpu_percent,
        "rss_kib": f.rss_kib,
        "rss_note": "bench process running the reconcile loop in-process, not the latticed binary",
        "cpu_test_secs": f.cpu_secs,
        "cpu_inside_envelope_cores": f.inside_cores,
        "cpu_outside_envelope_cores": f.outside_cores,
        "envelope_cpu_ratio": ratio,
    });
    let out = repo_root().join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(
        out.join("runtime.json"),
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write runtime.json");
    println!("wrote target/bench/runtime.json");
}
