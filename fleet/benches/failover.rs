//! Failover: time from a node's loss to its stateless workloads serving again elsewhere, through
//! the gateway, at the same URL.
//!
//! A real `lattice fleet` (gateway included, default flags apart from its addresses) and two
//! real latticed processes (the binaries next to this one) on the machine's Docker engine.
//! `WORKLOADS` container workloads (busybox httpd from the test image, plan small; default 3)
//! are deployed onto node A (B cordoned meanwhile) and served through the gateway; then A's
//! latticed is SIGKILLed and its containers removed (the node is gone). Measured from the kill:
//! when the fleet marked A offline, when each workload was rescheduled (its event), and when each
//! URL answered 200 again. `GRACE` sets `--node-lost-grace-secs` (default: the fleet's default,
//! 30 s). Needs root, Docker and the test image (`scripts/test-images`).
//!
//! `cargo build --release -p latticed && cargo bench -p lattice-fleet --bench failover`.
//! Writes `target/bench/failover.json`.

use std::path::Path;
use std::time::{Duration, Instant};

mod harness;
use harness::{clean_node, containers_of, docker, http_status, latticed, now_ms, Fleet, Guard};

fn main() {
    // Leftovers of an interrupted run: `FAILOVER_CLEAN_NODES="n-… n-…"`.
    if let Ok(ids) = std::env::var("FAILOVER_CLEAN_NODES") {
        ids.split_whitespace().for_each(clean_node);
        return;
    }
    if !harness::can_run_workloads() {
        eprintln!("SKIPPED: needs root and a Docker engine");
        return;
    }
    let image = harness::test_image();
    let n: usize = std::env::var("WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let grace = std::env::var("GRACE").ok();

    let dir = tempfile::tempdir().unwrap();
    let mut guard = Guard::default();
    let mut extra: Vec<&str> = Vec::new();
    if let Some(g) = &grace {
        extra.extend(["--node-lost-grace-secs", g]);
    }
    let fleet = Fleet::start(dir.path(), &extra, &mut guard);
    let (cli, apps) = (&fleet.cli, fleet.apps);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    guard.dirs = vec![a_dir.clone(), b_dir.clone()];
    let mut a = latticed(&a_dir, &fleet.token("bench"));
    guard.procs.push(latticed(&b_dir, &fleet.token("bench")));
    let a_id = fleet.wait_online(&a_dir);
    let b_id = fleet.wait_online(&b_dir);

    cli.run(&["node", "cordon", &b_id]);
    let names: Vec<String> = (0..n).map(|i| format!("fo{i}")).collect();
    for name in &names {
        fleet.deploy_httpd(name, &image, "small");
    }
    let host = |name: &str| format!("{name}--operator.lattice-apps.localhost");
    for name in &names {
        let served = (0..1200).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            http_status(apps, &host(name)) == Some(200)
        });
        if !served {
            let log = std::fs::read_to_string(dir.path().join("fleet.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{name} not served before the loss: {:?}; fleet log (last lines, newest first):\n{}",
                http_status(apps, &host(name)),
                tail.join("\n")
            );
        }
    }
    cli.run(&["node", "uncordon", &b_id]);
    let grace_secs = grace.clone().unwrap_or_else(|| "30 (default)".into());
    println!("{n} workloads served from node A; killing A (grace {grace_secs} s)");

    // The loss: latticed SIGKILLed (its MQTT connection and tunnel drop) and its containers
    // removed.
    let t0 = Instant::now();
    let t0_ms = now_ms();
    let _ = a.kill();
    let _ = a.wait();
    for c in containers_of(&a_id) {
        docker(&["rm", "-f", &c]);
    }
    let mut offline_s = None;
    let mut served_s: Vec<Option<f64>> = vec![None; n];
    while served_s.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(300) {
        if offline_s.is_none() && cli.json(&["node", "show", &a_id, "--json"])["online"] == false {
            offline_s = Some(t0.elapsed().as_secs_f64());
        }
        for (i, name) in names.iter().enumerate() {
            if served_s[i].is_none() && http_status(apps, &host(name)) == Some(200) {
                served_s[i] = Some(t0.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rescheduled_s = Vec::new();
    for name in &names {
        let w = cli.json(&["workload", "show", name, "--json"]);
        assert_eq!(w["node"], b_id.as_str(), "{w}");
        let at = w["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "rescheduled")
            .and_then(|e| e["at_ms"].as_u64())
            .expect("rescheduled event");
        rescheduled_s.push(at.saturating_sub(t0_ms) as f64 / 1000.0);
    }
    let served: Vec<f64> = served_s
        .iter()
        .map(|s| s.expect("every workload served again within 300 s"))
        .collect();
    let max = served.iter().cloned().fold(0.0, f64::max);
    let result = serde_json::json!({
        "workloads": n,
        "grace_secs": grace.as_deref().and_then(|g| g.parse::<u64>().ok()).unwrap_or(30),
        "node_offline_after_s": offline_s,
        "rescheduled_after_s": rescheduled_s,
        "serving_again_after_s": served,
        "all_serving_again_after_s": max,
        "target_s": 60,
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    drop(guard);
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("failover.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("written to {}", out.display());
}
