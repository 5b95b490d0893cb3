//! latticed supervising workloads, as a provider runs it: the real `latticed` binary (release,
//! next to this bench), registered with a real `lattice fleet` over MQTT/TLS with its tunnel
//! up, running `WORKLOADS` (10) container workloads (busybox httpd from the test image, plan
//! `micro`) on the machine's Docker engine. Measured:
//!
//! - deploy → all running: from the first `lattice deploy` to every workload `running` in the
//!   fleet's view (what the consumer sees; includes the fleet, MQTT and the node's reconcile);
//! - latticed's CPU (utime + stime from `/proc/PID/stat`) over `IDLE_SECS` (60) of idle
//!   supervision with all of them running, as a percent of one core;
//! - latticed's RSS (`VmRSS`, sampled every second over the same window: last and max) and its
//!   peak (`VmHWM`, the whole run).
//!
//! Issue 3's targets: RSS <= 15 MB and < 0.2 % of a core idle with 10 workloads. Needs root,
//! Docker and the test image (`scripts/test-images`).
//!
//! `cargo build --release -p latticed && cargo bench -p lattice-fleet --bench supervisor`.
//! Writes `target/bench/supervisor.json`.

use std::path::Path;
use std::time::{Duration, Instant};

mod harness;
use harness::{latticed, wait, Fleet, Guard};

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("latticed's stat");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat shape") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A `Vm*:` line of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

fn ticks_per_sec() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

fn main() {
    if !harness::can_run_workloads() {
        eprintln!("SKIPPED: needs root and a Docker engine");
        return;
    }
    let env_u64 = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env_u64("WORKLOADS", 10) as usize;
    let idle_secs = env_u64("IDLE_SECS", 60);
    let image = harness::test_image();

    let dir = tempfile::tempdir().unwrap();
    let mut guard = Guard::default();
    let fleet = Fleet::start(dir.path(), &[], &mut guard);
    let node_dir = dir.path().join("node");
    guard.dirs.push(node_dir.clone());
    let node = latticed(&node_dir, &fleet.token("bench"));
    let pid = node.id();
    guard.procs.push(node);
    let node_id = fleet.wait_online(&node_dir);
    let cpu_registered = cpu_ticks(pid);
    println!("latticed {pid} online as {node_id}; deploying {n} workloads (plan micro)");

    let names: Vec<String> = (0..n).map(|i| format!("sv{i}")).collect();
    let t0 = Instant::now();
    for name in &names {
        fleet.deploy_httpd(name, &image, "micro");
    }
    let deployed_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut running_ms = vec![None; n];
    wait(300, "every workload running", || {
        let list = fleet.cli.json(&["workloads", "--json"]);
        for w in list.as_array().expect("a list") {
            let Some(i) = names.iter().position(|n| w["name"] == n.as_str()) else {
                continue;
            };
            if running_ms[i].is_none() && w["state"] == "running" {
                assert_eq!(w["node"], node_id.as_str(), "{w}");
                running_ms[i] = Some(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        running_ms.iter().all(Option::is_some).then_some(())
    });
    let running_ms: Vec<f64> = running_ms.into_iter().map(Option::unwrap).collect();
    let all_running_ms = running_ms.iter().cloned().fold(0.0, f64::max);
    let cpu_deploy_ticks = cpu_ticks(pid) - cpu_registered;
    let running = harness::containers_of(&node_id).len();
    assert_eq!(running, n, "containers of {node_id} in the engine");
    println!(
        "all {n} running {all_running_ms:.0} ms after the first deploy (deploys sent in {deployed_ms:.0} ms); \
         latticed used {:.2} s CPU meanwhile",
        cpu_deploy_ticks as f64 / ticks_per_sec()
    );

    // Idle supervision: nothing changes, latticed keeps its heartbeats, status, reconcile
    // rounds, telemetry and tunnel alive.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, i0) = (cpu_ticks(pid), Instant::now());
    let mut rss = Vec::new();
    while i0.elapsed() < Duration::from_secs(idle_secs) {
        rss.push(status_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let idle_cpu_secs = (cpu_ticks(pid) - c0) as f64 / ticks_per_sec();
    let window = i0.elapsed().as_secs_f64();
    let idle_percent = idle_cpu_secs / window * 100.0;
    let rss_last = *rss.last().unwrap();
    let rss_max = *rss.iter().max().unwrap();
    let hwm = status_kib(pid, "VmHWM:");
    assert_eq!(
        harness::containers_of(&node_id).len(),
        n,
        "a container went away while idle"
    );
    let result = serde_json::json!({
        "workloads": n,
        "plan": "micro",
        "deploys_sent_ms": deployed_ms,
        "deploy_to_running_ms": running_ms,
        "deploy_to_all_running_ms": all_running_ms,
        "latticed_cpu_during_deploy_secs": cpu_deploy_ticks as f64 / ticks_per_sec(),
        "idle_window_secs": window,
        "idle_cpu_secs": idle_cpu_secs,
        "idle_cpu_percent_of_core": idle_percent,
        "rss_kib_last": rss_last,
        "rss_kib_max_idle": rss_max,
        "rss_kib_peak_whole_run": hwm,
        "target_rss_kib": 15_000_000 / 1024,
        "target_idle_cpu_percent": 0.2,
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    println!(
        "latticed with {n} running workloads: RSS {rss_last} KiB (max {rss_max}, peak {hwm}; target <= 15 MB), \
         idle CPU {idle_percent:.3} % of one core over {window:.0} s (target < 0.2 %)"
    );
    drop(guard);
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("supervisor.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("written to {}", out.display());
}
