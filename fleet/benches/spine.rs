//! Spine benchmark: registration latency, heartbeat-to-stored latency with N simulated nodes
//! (real MQTT clients over TLS, real keys, real embedded broker, real SQLite store), signature
//! checks per second, the store's status rate one transaction per status and batched, and
//! latticed's RSS while idle and connected.
//!
//! Run: `cargo build --release -p latticed && cargo bench -p lattice-fleet --bench spine`
//! (env: `NODES` (default 1000), `SECS` measuring window (default 60), `HEARTBEAT` (10)).
//! Prints figures and writes `target/bench/spine.json`.

mod harness;

use harness::metrics::{machine, window_quantile};
use lattice_fleet::server::{self, FleetConfig};
use lattice_wire::msg::{Inventory, Message, Status, Usage};
use lattice_wire::register::{Provisioning, RegisterRequest, RegisterResponse};
use lattice_wire::topic::{topic, Channel};
use lattice_wire::{EncryptionKey, Envelope, IdentityKey, IdentityPublic, MessageKind, Sender};
use rumqttc::{AsyncClient, MqttOptions, QoS, TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct SimNode {
    id: String,
    key: IdentityKey,
    password: String,
}

async fn register(
    http: &reqwest::Client,
    p: &Provisioning,
    fleet: &IdentityPublic,
) -> (SimNode, f64) {
    let key = IdentityKey::generate();
    let enc = EncryptionKey::generate();
    let inv = Inventory {
        hostname: "sim".into(),
        cpu_count: 1,
        ..Inventory::default()
    };
    let req = RegisterRequest::new(&p.token, &key, &enc.public(), inv, "bench");
    let t = Instant::now();
    let resp: RegisterResponse = http
        .post(format!("{}/api/v1/register", p.url))
        .json(&req)
        .send()
        .await
        .expect("register")
        .error_for_status()
        .expect("register status")
        .json()
        .await
        .expect("register json");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(resp.envelope)
        .unwrap();
    let opened = lattice_wire::envelope::decode(&bytes)
        .unwrap()
        .open(fleet, Some(&enc))
        .unwrap();
    let Message::Registered(r) = opened.message else {
        panic!("not registered")
    };
    (
        SimNode {
            id: r.node_id,
            key,
            password: r.broker_password,
        },
        ms,
    )
}

fn status(node: &SimNode, epoch: u64, counter: u64) -> Vec<u8> {
    let h = Envelope {
        sender: Sender::Node(node.id.clone()),
        recipient: None,
        epoch,
        counter,
        timestamp_ms: lattice_wire::now_ms(),
        kind: MessageKind::Status,
        sealed: false,
    };
    let msg = Message::Status(Status {
        applied_revision: 0,
        usage: Usage {
            cpu_percent_x100: 100,
            ..Usage::default()
        },
        workloads: vec![],
    });
    lattice_wire::envelope::encode(&h, &msg, &node.key, None).unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

fn signature_checks_per_sec() -> f64 {
    let k = IdentityKey::generate();
    let n = SimNode {
        id: "n-bench".into(),
        key: k.clone(),
        password: String::new(),
    };
    let bytes = status(&n, 1, 1);
    let iters = 20_000;
    let t = Instant::now();
    for _ in 0..iters {
        let u = lattice_wire::envelope::decode(&bytes).unwrap();
        std::hint::black_box(u.open(&k.public(), None).unwrap());
    }
    iters as f64 / t.elapsed().as_secs_f64()
}

/// The store alone (SQLite file, WAL, as the fleet opens it): statuses of `nodes` nodes
/// stored one transaction each, then in transactions of `MAX_BATCH` (the ingest worker's
/// group commit when messages queue up). Returns (one by one, batched) in statuses/s.
async fn store_ingest_rates(dir: &std::path::Path, nodes: usize) -> (f64, f64) {
    use lattice_fleet::store::{Effect, IngestItem, NewNode, Store, TokenRow};
    let url = format!("sqlite://{}", dir.join("store-only.db").display());
    let store = Store::open(&url).await.unwrap();
    let token = TokenRow {
        id: "t".into(),
        secret_hash: "h".into(),
        owner: None,
        max_uses: nodes as u64,
        uses: 0,
        expires_ms: u64::MAX / 2,
        created_ms: 0,
    };
    store.insert_token(&token).await.unwrap();
    for i in 0..nodes {
        let n = NewNode {
            id: format!("n-{i}"),
            identity_key: format!("k-{i}"),
            encryption_key: format!("e-{i}"),
            broker_secret_hash: "b".into(),
            inventory: "{}".into(),
        };
        store.register_node("h", &n, 0).await.unwrap();
    }
    let items = |counter: u64| -> Vec<IngestItem> {
        (0..nodes)
            .map(|i| IngestItem {
                node_id: format!("n-{i}"),
                epoch: 1,
                counter,
                effect: Effect::Status {
                    usage_json: format!("{{\"cpu_percent_x100\":{counter}}}"),
                    applied_revision: 0,
                    workloads_json: "[]".into(),
                },
                now_ms: lattice_wire::now_ms(),
            })
            .collect()
    };
    let t = Instant::now();
    for counter in 1..=2 {
        for it in items(counter) {
            let o = store.ingest(&it.node_id, it.epoch, it.counter, it.effect, it.now_ms);
            o.await.unwrap();
        }
    }
    let one_by_one = (2 * nodes) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for counter in 3..=4 {
        for chunk in items(counter).chunks(lattice_fleet::ingest::MAX_BATCH) {
            store.ingest_batch(chunk).await.unwrap();
        }
    }
    let batched = (2 * nodes) as f64 / t.elapsed().as_secs_f64();
    (one_by_one, batched)
}

fn main() {
    let nodes_n = env_u64("NODES", 1000) as usize;
    let secs = env_u64("SECS", 60);
    let heartbeat = env_u64("HEARTBEAT", 10);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sig_rate = signature_checks_per_sec();
    println!("signature checks (decode + verify + decode body): {sig_rate:.0}/s on one core");
    let (one_by_one, batched) = rt.block_on(store_ingest_rates(dir.path(), nodes_n));
    println!(
        "store alone (SQLite file): {one_by_one:.0} statuses/s one transaction each, \
         {batched:.0}/s in transactions of {}",
        lattice_fleet::ingest::MAX_BATCH
    );

    let result = rt.block_on(async {
        let mut cfg = FleetConfig::local(dir.path().join("fleet"));
        cfg.http = "127.0.0.1:0".parse().unwrap();
        cfg.mqtts = "127.0.0.1:0".parse().unwrap();
        cfg.heartbeat_secs = heartbeat as u32;
        let fleet = server::start(cfg).await.expect("fleet");
        let token = lattice_fleet::api::issue_token(&fleet.state, None, nodes_n as u64 + 10, 3600).await.unwrap();
        let p = Provisioning::parse(&token.provisioning).unwrap();
        let fleet_key = fleet.fleet_key;
        let http = lattice_wire::pin::pinned_http_client(&fleet_key, Duration::from_secs(30)).unwrap();

        // Registration latency (sequential) and throughput (8 concurrent).
        let mut reg_ms = Vec::new();
        let mut sims = Vec::new();
        for _ in 0..50.min(nodes_n) {
            let (n, ms) = register(&http, &p, &fleet_key).await;
            reg_ms.push(ms);
            sims.push(n);
        }
        let t = Instant::now();
        let remaining = nodes_n.saturating_sub(sims.len());
        let mut set = tokio::task::JoinSet::new();
        let mut started = 0;
        while started < remaining || !set.is_empty() {
            while started < remaining && set.len() < 8 {
                let (h, p, k) = (http.clone(), p.clone(), fleet_key);
                set.spawn(async move { register(&h, &p, &k).await });
                started += 1;
            }
            if let Some(Ok((n, ms))) = set.join_next().await {
                reg_ms.push(ms);
                sims.push(n);
            }
        }
        let reg_rate = remaining as f64 / t.elapsed().as_secs_f64();
        reg_ms.sort_by(f64::total_cmp);
        println!("registration: p50 {:.1} ms, p99 {:.1} ms; {reg_rate:.0} registrations/s with 8 concurrent", percentile(&reg_ms, 0.5), percentile(&reg_ms, 0.99));

        // Simulated nodes: connect over TLS, heartbeat with jitter.
        let (host, port) = fleet.mqtts_url.trim_start_matches("mqtts://").rsplit_once(':').map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap())).unwrap();
        let tls = lattice_wire::pin::pinned_client_config(&fleet_key);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connect_t = Instant::now();
        for (i, n) in sims.into_iter().enumerate() {
            let mut opts = MqttOptions::new(&n.id, &host, port);
            opts.set_credentials(&n.id, &n.password);
            opts.set_keep_alive(Duration::from_secs(30));
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
            let (client, mut el) = AsyncClient::new(opts, 10);
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    if el.poll().await.is_err() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            });
            tokio::spawn(async move {
                let offset = Duration::from_millis((i as u64 * 7919) % (heartbeat * 1000));
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(Duration::from_secs(heartbeat));
                let mut counter = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tick.tick().await;
                    counter += 1;
                    let _ = client.publish(topic(&n.id, Channel::Status), QoS::AtLeastOnce, false, status(&n, 1, counter)).await;
                }
            });
        }
        // Warm up one heartbeat period, then measure.
        tokio::time::sleep(Duration::from_secs(heartbeat + 2)).await;
        let before = fleet.state.metrics.render();
        let cpu0 = procfs_cpu_ticks();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu1 = procfs_cpu_ticks();
        let after = fleet.state.metrics.render();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = connect_t;
        let count = |m: &str| -> f64 {
            m.lines().find_map(|l| l.strip_prefix("lattice_heartbeat_lag_seconds_count ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
        };
        let stored = count(&after) - count(&before);
        // Quantiles over the measuring window only (warm-up and connection storm excluded).
        let p50 = window_quantile(&before, &after, "lattice_heartbeat_lag_seconds", 0.5).0 * 1000.0;
        let p99 = window_quantile(&before, &after, "lattice_heartbeat_lag_seconds", 0.99).0 * 1000.0;
        let (on, _off) = fleet.state.store.node_counts().await.unwrap();
        let rss = rss_kib(std::process::id());
        let cpu_pct = (cpu1 - cpu0) as f64 / procfs::ticks_per_second() as f64 / secs as f64 * 100.0;
        println!("{nodes_n} nodes ({on} online), heartbeat {heartbeat}s: {stored:.0} heartbeats stored in {secs}s ({:.0}/s); heartbeat-to-stored p50 {p50:.1} ms, p99 {p99:.1} ms", stored / secs as f64);
        println!("bench process (fleet + broker + {nodes_n} simulated clients): RSS {} MiB, CPU {cpu_pct:.0}% of one core", rss / 1024);

        // latticed RSS, idle and connected, against the same fleet.
        let latticed_rss = latticed_rss(&fleet, &dir.path().join("node")).await;
        serde_json::json!({
            "machine": machine(),
            "nodes": nodes_n, "heartbeat_secs": heartbeat, "window_secs": secs,
            "registration_ms": {"p50": percentile(&reg_ms, 0.5), "p99": percentile(&reg_ms, 0.99)},
            "registrations_per_sec": reg_rate,
            "heartbeats_stored_per_sec": stored / secs as f64,
            "heartbeat_to_stored_ms": {"p50": p50, "p99": p99},
            "signature_checks_per_sec": sig_rate,
            "store_statuses_per_sec": {"one_by_one": one_by_one, "batched": batched},
            "bench_process_rss_mib": rss / 1024,
            "bench_process_cpu_percent": cpu_pct,
            "latticed_rss_kib": latticed_rss,
        })
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("spine.json"),
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
    println!("wrote target/bench/spine.json");
}

fn procfs_cpu_ticks() -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.stat())
        .map(|s| s.utime + s.stime)
        .unwrap_or(0)
}

async fn latticed_rss(fleet: &server::RunningFleet, data: &std::path::Path) -> Option<u64> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/latticed");
    if !bin.exists() {
        println!(
            "latticed RSS: skipped ({} not built: cargo build --release -p latticed)",
            bin.display()
        );
        return None;
    }
    let token = lattice_fleet::api::issue_token(&fleet.state, None, 1, 600)
        .await
        .ok()?;
    std::fs::create_dir_all(data).ok()?;
    let prov = data.join("provisioning");
    std::fs::write(&prov, &token.provisioning).ok()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&bin)
        .arg("--data-dir")
        .arg(data)
        .arg("--provisioning-file")
        .arg(&prov)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    while !data.join("registration.json").exists() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "latticed registered {} ms after start (release build)",
        started.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss = rss_kib(child.id()?);
    println!(
        "latticed RSS idle and connected: {} KiB ({:.1} MiB; target <= 12 MiB)",
        rss,
        rss as f64 / 1024.0
    );
    let _ = child.kill().await;
    Some(rss)
}
