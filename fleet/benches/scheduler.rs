//! Placement throughput (issue 5, "Measured"): decisions per second on one core with 10,000
//! simulated nodes of mixed size, load, reliability, price and availability, each decision
//! over all of them; placed workloads are reserved on their node as they go, as the fleet does.
//!
//! `cargo bench -p lattice-fleet --bench scheduler`; prints figures and writes
//! `target/bench/scheduler.json`. Knobs: `NODES` (10000), `DECISIONS` (20000).

use lattice_fleet::scheduler::{place, Class, NodeView, Request, Resources};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (the figures must not depend on a seed from the clock).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// This process's user + system CPU time, from `/proc/self/stat` (10 ms ticks).
fn cpu_secs() -> f64 {
    let stat = procfs::process::Process::myself()
        .and_then(|p| p.stat())
        .expect("/proc/self/stat");
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

fn main() {
    let n_nodes = env("NODES", 10_000);
    let decisions = env("DECISIONS", 20_000);
    let mut rng = Lcg(42);
    let gib = 1u64 << 30;
    let mut nodes: Vec<NodeView> = (0..n_nodes)
        .map(|i| {
            let cores = 1 + rng.next() % 8;
            NodeView {
                id: format!("n-{i:05}"),
                provider: format!("p-{}", i / 3),
                online: rng.next() % 20 != 0,
                cordoned: rng.next() % 100 == 0,
                arch: if rng.next() % 5 == 0 {
                    "aarch64"
                } else {
                    "x86_64"
                }
                .into(),
                region: ["eu", "us", "ap"][(rng.next() % 3) as usize].into(),
                labels: BTreeMap::new(),
                storage_classes: vec!["ssd".into()],
                always_available: rng.next() % 3 != 0,
                capacity: Resources {
                    cpu_millis: cores * 500,
                    memory_bytes: cores * gib,
                    disk_bytes: 100 * gib,
                },
                reserved: Resources::default(),
                reliability: 0.8 + (rng.next() % 200) as f64 / 1000.0,
                price: 5 + rng.next() % 20,
            }
        })
        .collect();
    let index: BTreeMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), i))
        .collect();

    let mut placed = 0usize;
    let cpu0 = cpu_secs();
    let start = Instant::now();
    for i in 0..decisions {
        let req = Request {
            needs: Resources {
                cpu_millis: 100 + (i as u64 % 4) * 100,
                memory_bytes: (128 << 20) * (1 + i as u64 % 4),
                disk_bytes: 0,
            },
            class: if i % 2 == 0 {
                Class::AlwaysOn
            } else {
                Class::Batch
            },
            arch: None,
            region: None,
            labels: BTreeMap::new(),
            storage_class: None,
            avoid_nodes: vec![],
            avoid_providers: vec![],
        };
        let d = place(&nodes, &req);
        if let Some(id) = d.node {
            let n = &mut nodes[index[&id]];
            n.reserved.cpu_millis += req.needs.cpu_millis;
            n.reserved.memory_bytes += req.needs.memory_bytes;
            placed += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let rate = decisions as f64 / secs;
    let cpu_rate = decisions as f64 / cpu;
    println!(
        "{decisions} decisions over {n_nodes} nodes in {secs:.2} s wall ({rate:.0}/s), \
         {cpu:.2} s of CPU: {cpu_rate:.0} decisions per CPU-second on one core \
         ({placed} placed); target >= 5000/s"
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let json = format!(
        "{{\"nodes\": {n_nodes}, \"decisions\": {decisions}, \"placed\": {placed}, \"seconds\": {secs:.4}, \"decisions_per_sec\": {rate:.1}, \"cpu_seconds\": {cpu:.4}, \"decisions_per_cpu_sec\": {cpu_rate:.1}}}\n"
    );
    std::fs::write(out.join("scheduler.json"), json).expect("write scheduler.json");
    println!("wrote target/bench/scheduler.json");
}
