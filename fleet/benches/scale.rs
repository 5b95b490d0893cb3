//! Fleet scale benchmark (issue 8): N simulated nodes (`lattice-sim`: real keys, real
//! registration over HTTPS, real MQTT clients over TLS) against the real `lattice fleet`
//! process, on SQLite or PostgreSQL, through the embedded broker or a real Mosquitto.
//!
//! Run (as root for the open-file limit; PostgreSQL optional):
//!
//! ```sh
//! export LATTICE_TEST_POSTGRES=$(./scripts/test-postgres)
//! cargo bench -p lattice-fleet --bench scale
//! ```
//!
//! Knobs: `NODES` (10000), `HEARTBEAT` seconds (10), `SECS` measuring window (60), `WARMUP`
//! seconds after the last node connected (max(3 heartbeats, 30)), `SCENARIOS` (comma list of
//! `ENGINE-BROKER[@NODES[/HEARTBEAT]]`, ENGINE `sqlite` or `postgres`, BROKER `embedded` or
//! `mosquitto`; the default is described in `main`: NODES' heartbeat rate on both engines with
//! as many nodes as the open-file limit lets the embedded broker hold (three descriptors per
//! TLS node), and Mosquitto beside the embedded broker at 2,000 nodes), `CONCURRENCY`
//! registrations in flight (16), `CONNECT_TIMEOUT` seconds (1800). For each scenario: registrations per second, heartbeat-to-stored p50/p99 over the
//! window (the fleet's own `lattice_heartbeat_lag_seconds` histogram, signed timestamp →
//! committed, differenced between two scrapes), heartbeats stored per second, and the CPU and
//! RSS of the fleet (and of Mosquitto, and of the simulator) per 1,000 nodes. Writes
//! `target/bench/scale.json`.

mod harness;

use harness::metrics::{machine, window_quantile};
use harness::{free_port, wait, Cli, Guard};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// CPU seconds (user + system) and RSS in KiB of a process.
fn proc_usage(pid: u32) -> (f64, u64) {
    let tps = procfs::ticks_per_second() as f64;
    let p = procfs::process::Process::new(pid as i32);
    let cpu = p
        .as_ref()
        .ok()
        .and_then(|p| p.stat().ok())
        .map(|s| (s.utime + s.stime) as f64 / tps)
        .unwrap_or(0.0);
    let rss = p
        .ok()
        .and_then(|p| p.status().ok())
        .and_then(|s| s.vmrss)
        .unwrap_or(0);
    (cpu, rss)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn release_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lattice"))
        .parent()
        .unwrap()
        .join(name)
}

/// Mosquitto with the dynamic-security plugin (the Debian package), configured as
/// docs/operator-guide.md says: a plain loopback listener for the fleet, a TLS one serving the
/// fleet's certificate for the nodes.
struct Mosquitto {
    dir: PathBuf,
    port: u16,
    tls_port: u16,
    password_file: PathBuf,
}

impl Mosquitto {
    fn available() -> Option<PathBuf> {
        let plugin = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
            .iter()
            .map(|d| Path::new(d).join("mosquitto_dynamic_security.so"))
            .find(|p| p.is_file())?;
        (Path::new("/usr/sbin/mosquitto").is_file()
            && Path::new("/usr/bin/mosquitto_ctrl").is_file())
        .then_some(plugin)
    }

    fn configure(dir: &Path, plugin: &Path) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap();
        let password = format!("bench-{}", std::process::id());
        let password_file = dir.join("admin-password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dynsec = dir.join("dynamic-security.json");
        let out = Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&dynsec)
            .args(["lattice", &password])
            .output()
            .unwrap();
        assert!(out.status.success(), "mosquitto_ctrl dynsec init: {out:?}");
        let (port, tls_port) = (free_port(), free_port());
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "per_listener_settings false\nallow_anonymous false\n\
                 plugin {plugin}\nplugin_opt_config_file {dynsec}\n\
                 persistence false\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\n\
                 max_packet_size 524288\n\
                 listener {port} 127.0.0.1\n\
                 listener {tls_port} 127.0.0.1\ncertfile {d}/fleet-cert.pem\nkeyfile {d}/fleet-key.pem\n",
                plugin = plugin.display(),
                dynsec = dynsec.display(),
                d = dir.display(),
            ),
        )
        .unwrap();
        Mosquitto {
            dir: dir.to_path_buf(),
            port,
            tls_port,
            password_file,
        }
    }

    fn start(&self, guard: &mut Guard) -> u32 {
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("mosquitto.log")).unwrap())
            .spawn()
            .expect("mosquitto");
        let pid = child.id();
        guard.procs.push(child);
        wait(10, "mosquitto listening", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .map(|_| ())
        });
        pid
    }
}

struct Scenario {
    name: String,
    database: Option<String>,
    mosquitto: bool,
}

struct Running {
    cli: Cli,
    pid: u32,
    url: String,
    broker_pid: Option<u32>,
}

fn start_fleet(dir: &Path, s: &Scenario, heartbeat: u64, guard: &mut Guard) -> Running {
    let data = dir.join("fleet");
    let cli = Cli {
        config: dir.join("cli.toml"),
    };
    let mut args: Vec<String> = vec![
        "fleet".into(),
        "--data".into(),
        data.display().to_string(),
        "--http".into(),
        format!("127.0.0.1:{}", free_port()),
        "--apps-http".into(),
        format!("127.0.0.1:{}", free_port()),
        "--apps-https".into(),
        format!("127.0.0.1:{}", free_port()),
        "--heartbeat-secs".into(),
        heartbeat.to_string(),
    ];
    if let Some(db) = &s.database {
        args.extend(["--database".into(), db.clone()]);
    }
    let mosquitto = if s.mosquitto {
        let plugin = Mosquitto::available().expect("mosquitto");
        let m = Mosquitto::configure(&dir.join("mosquitto"), &plugin);
        args.extend([
            "--broker".into(),
            format!("mqtt://127.0.0.1:{}", m.port),
            "--broker-user".into(),
            "lattice".into(),
            "--broker-password-file".into(),
            m.password_file.display().to_string(),
            "--node-broker-url".into(),
            format!("mqtts://127.0.0.1:{}", m.tls_port),
        ]);
        Some(m)
    } else {
        args.extend(["--mqtt".into(), format!("127.0.0.1:{}", free_port())]);
        None
    };
    let mut fleet = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(&args)
        .env("LATTICE_CLI_CONFIG", &cli.config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("fleet.log")).unwrap())
        .spawn()
        .expect("lattice fleet");
    let pid = fleet.id();
    let mut broker_pid = None;
    if let Some(m) = &mosquitto {
        // The fleet writes its certificate, then waits for the broker.
        wait(60, "the fleet's certificate", || {
            data.join("fleet-key.pem").exists().then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
        for f in ["fleet-cert.pem", "fleet-key.pem"] {
            std::fs::copy(data.join(f), m.dir.join(f)).unwrap();
        }
        broker_pid = Some(m.start(guard));
    }
    let mut out = std::io::BufReader::new(fleet.stdout.take().unwrap()).lines();
    let mut url = String::new();
    for line in out.by_ref().map_while(Result::ok) {
        if let Some(u) = line.strip_prefix("fleet API:") {
            url = u.trim().to_string();
        }
        if line.starts_with("CLI config:") {
            break;
        }
    }
    std::thread::spawn(move || out.for_each(drop));
    guard.procs.push(fleet);
    assert!(
        !url.is_empty(),
        "the fleet did not start: {}",
        dir.join("fleet.log").display()
    );
    Running {
        cli,
        pid,
        url,
        broker_pid,
    }
}

/// The fleet's /metrics over its pinned HTTPS API.
struct Scraper {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Scraper {
    fn new(fleet_key: &lattice_wire::IdentityPublic) -> Scraper {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = rt.block_on(async {
            lattice_wire::pin::pinned_http_client(fleet_key, Duration::from_secs(30)).unwrap()
        });
        Scraper { rt, http }
    }

    fn metrics(&self, url: &str) -> String {
        self.rt.block_on(async {
            match self.http.get(format!("{url}/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => panic!("scraping {url}/metrics: {e}"),
            }
        })
    }
}

fn run_scenario(s: &Scenario, nodes: u64, heartbeat: u64, secs: u64) -> serde_json::Value {
    println!(
        "\n== {}: {nodes} nodes, heartbeat {heartbeat} s, load average {}",
        s.name,
        loadavg()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut guard = Guard::default();
    let f = start_fleet(dir.path(), s, heartbeat, &mut guard);
    let token = f.cli.json(&[
        "tokens",
        "create",
        "--owner",
        "bench",
        "--uses",
        &nodes.to_string(),
        "--json",
    ]);
    let prov_text = token["provisioning"].as_str().unwrap().to_string();
    let prov_file = dir.path().join("provisioning");
    std::fs::write(&prov_file, &prov_text).unwrap();
    let fleet_key = lattice_wire::register::Provisioning::parse(&prov_text)
        .unwrap()
        .fleet_public()
        .unwrap();
    let http = Scraper::new(&fleet_key);

    let concurrency = env_u64("CONCURRENCY", 16).to_string();
    let mut sim: Child = Command::new(release_bin("lattice-sim"))
        .arg("--provisioning-file")
        .arg(&prov_file)
        .args([
            "--nodes",
            &nodes.to_string(),
            "--json",
            "--progress-secs",
            "5",
        ])
        .args(["--concurrency", &concurrency])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("sim.log")).unwrap())
        .spawn()
        .expect("lattice-sim");
    let sim_pid = sim.id();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let out = sim.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    guard.procs.push(sim);

    // Registration and connection.
    let started = Instant::now();
    let mut registered_rate = 0.0;
    let mut registered_secs = 0.0;
    let deadline = started + Duration::from_secs(env_u64("CONNECT_TIMEOUT", 1800));
    let mut last_print = Instant::now();
    loop {
        let v = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "{}: not all {nodes} nodes connected in time (sim log {})",
                    s.name,
                    dir.path().join("sim.log").display()
                )
            });
        if let Some(secs) = v["registration_secs"].as_f64() {
            registered_rate = v["registrations_per_sec"].as_f64().unwrap_or(0.0);
            registered_secs = secs;
        }
        if last_print.elapsed() > Duration::from_secs(30) {
            println!(
                "  {:.0} s: registered {} connected {} (load {})",
                v["elapsed_secs"].as_f64().unwrap_or(0.0),
                v["registered"],
                v["connected"],
                loadavg()
            );
            last_print = Instant::now();
        }
        assert_eq!(
            v["registration_failures"], 0,
            "{}: registrations failed: {v}",
            s.name
        );
        if v["connected"].as_i64() == Some(nodes as i64) {
            break;
        }
    }
    let connected_secs = started.elapsed().as_secs_f64();
    println!(
        "  registered {nodes} in {registered_secs:.1} s ({registered_rate:.0}/s, {} in flight), \
         all connected after {connected_secs:.1} s",
        concurrency
    );
    let warmup = env_u64("WARMUP", (3 * heartbeat).max(30));
    std::thread::sleep(Duration::from_secs(warmup));

    // The window.
    let load0 = loadavg();
    let m0 = http.metrics(&f.url);
    let (fleet_cpu0, _) = proc_usage(f.pid);
    let broker_cpu0 = f.broker_pid.map(|p| proc_usage(p).0).unwrap_or(0.0);
    let (sim_cpu0, _) = proc_usage(sim_pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let m1 = http.metrics(&f.url);
    let window = t0.elapsed().as_secs_f64();
    let (fleet_cpu1, fleet_rss) = proc_usage(f.pid);
    let (broker_cpu1, broker_rss) = f.broker_pid.map(proc_usage).unwrap_or((0.0, 0));
    let (sim_cpu1, sim_rss) = proc_usage(sim_pid);
    let load1 = loadavg();

    let lag = "lattice_heartbeat_lag_seconds";
    let (p50, stored) = window_quantile(&m0, &m1, lag, 0.5);
    let (p99, _) = window_quantile(&m0, &m1, lag, 0.99);
    let (p999, _) = window_quantile(&m0, &m1, lag, 0.999);
    let rejected = counter(&m1, "lattice_messages_rejected_total")
        - counter(&m0, "lattice_messages_rejected_total");
    let online = f.cli.json(&["nodes", "--json"]);
    let online = online
        .as_array()
        .map(|a| a.iter().filter(|n| n["online"] == true).count())
        .unwrap_or(0);
    let per_k = nodes as f64 / 1000.0;
    let fleet_cores = (fleet_cpu1 - fleet_cpu0) / window;
    let broker_cores = (broker_cpu1 - broker_cpu0) / window;
    let sim_cores = (sim_cpu1 - sim_cpu0) / window;
    let expected = nodes as f64 / heartbeat as f64;
    println!(
        "  window {window:.0} s (load {load0} → {load1}): {:.0} heartbeats stored/s (expected \
         {expected:.0}), heartbeat-to-stored p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms; \
         {rejected:.0} refused; {online}/{nodes} online",
        stored / window,
        p50 * 1000.0,
        p99 * 1000.0,
        p999 * 1000.0
    );
    println!(
        "  fleet: {fleet_cores:.2} cores, RSS {:.0} MiB ({:.3} cores and {:.1} MiB per 1,000 \
         nodes){}; simulator {sim_cores:.2} cores, RSS {:.0} MiB",
        fleet_rss as f64 / 1024.0,
        fleet_cores / per_k,
        fleet_rss as f64 / 1024.0 / per_k,
        if f.broker_pid.is_some() {
            format!(
                "; mosquitto {broker_cores:.2} cores, RSS {:.0} MiB",
                broker_rss as f64 / 1024.0
            )
        } else {
            String::new()
        },
        sim_rss as f64 / 1024.0,
    );
    println!(
        "  FIGURE {} heartbeat-to-stored p99 {:.1} ms (target < 100 ms: {})",
        s.name,
        p99 * 1000.0,
        if p99 < 0.1 { "met" } else { "missed" }
    );
    let _ = f.cli;
    drop(guard);
    serde_json::json!({
        "scenario": s.name,
        "nodes": nodes,
        "heartbeat_secs": heartbeat,
        "window_secs": window,
        "load_avg": [load0, load1],
        "registration_secs": registered_secs,
        "registrations_per_sec": registered_rate,
        "registration_concurrency": concurrency,
        "all_connected_secs": connected_secs,
        "heartbeats_stored_per_sec": stored / window,
        "heartbeats_expected_per_sec": expected,
        "heartbeat_to_stored_ms": {"p50": p50 * 1000.0, "p99": p99 * 1000.0, "p999": p999 * 1000.0},
        "refused": rejected,
        "online": online,
        "fleet": {"cores": fleet_cores, "rss_mib": fleet_rss as f64 / 1024.0,
                  "cores_per_1000_nodes": fleet_cores / per_k,
                  "rss_mib_per_1000_nodes": fleet_rss as f64 / 1024.0 / per_k},
        "mosquitto": f.broker_pid.map(|_| serde_json::json!({"cores": broker_cores, "rss_mib": broker_rss as f64 / 1024.0})),
        "simulator": {"cores": sim_cores, "rss_mib": sim_rss as f64 / 1024.0},
    })
}

/// Nodes one process can hold given its open-file limit: the embedded broker takes three
/// descriptors per TLS node (device socket, loopback hop, rumqttd's side; see
/// broker/server/src/lib.rs), Mosquitto and the simulator one each.
fn embedded_capacity() -> u64 {
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 1024));
    soft.saturating_sub(1_000) / 3 / 500 * 500
}

fn main() {
    let nodes = env_u64("NODES", 10_000);
    let heartbeat = env_u64("HEARTBEAT", 10);
    let secs = env_u64("SECS", 60);
    // Each node is a socket in the simulator and one to three in the broker: raise the limit
    // (children inherit it). Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft
    // limit goes up to the hard one.
    {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let want = (4 * nodes + 4096).max(65_536);
        if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
        }
    }
    let cap = embedded_capacity();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "lattice-sim",
            "--bin",
            "lattice-sim",
        ])
        .status()
        .expect("cargo build lattice-sim");
    assert!(status.success(), "building lattice-sim failed");

    let postgres = std::env::var("LATTICE_TEST_POSTGRES").ok();
    let fresh_pg = |tag: &str| -> Option<String> {
        let base = postgres.clone()?;
        let name = format!(
            "lattice_scale_{}_{}",
            tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id()
        );
        let out = Command::new("psql")
            .arg(&base)
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "cannot create database {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let (head, _) = base.rsplit_once('/')?;
        Some(format!("{head}/{name}"))
    };
    // By default the same heartbeat rate as NODES nodes at HEARTBEAT: on both engines through
    // the embedded broker with as many nodes as this process's open-file limit lets it hold
    // (three descriptors per TLS node) and a shorter heartbeat when that is fewer than NODES;
    // then Mosquitto beside the embedded broker at 2,000 nodes (Mosquitto's dynamic-security
    // plugin rewrites its whole JSON file on every change, so registering N nodes takes time
    // growing with N²: ~2,800 nodes took 140 s here). `ENGINE-BROKER@NODES/HEARTBEAT` runs any
    // other combination.
    let rate = nodes as f64 / heartbeat as f64;
    let held = nodes.min(cap);
    let hb_held = ((held as f64 / rate).round() as u64).max(1);
    let small = 2_000.min(nodes);
    let hb_small = ((small as f64 / rate).round() as u64).max(1);
    let default = {
        let mut d = vec![format!("sqlite-embedded@{held}/{hb_held}")];
        if postgres.is_some() {
            d.push(format!("postgres-embedded@{held}/{hb_held}"));
        }
        if Mosquitto::available().is_some() {
            d.push(format!("sqlite-mosquitto@{small}/{hb_small}"));
            d.push(format!("sqlite-embedded@{small}/{hb_small}"));
        }
        d.join(",")
    };
    println!(
        "open files: {} here, so the embedded broker holds at most ~{cap} nodes in one process",
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|l| l.0)
            .unwrap_or(0)
    );
    let wanted = std::env::var("SCENARIOS").unwrap_or(default);
    let mut results = Vec::new();
    for spec in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, sizing) = spec.split_once('@').unwrap_or((spec, ""));
        let (n, hb) = match sizing.split_once('/') {
            Some((n, hb)) => (n.parse().ok(), hb.parse().ok()),
            None => (sizing.parse().ok(), None),
        };
        let (n, hb) = (n.unwrap_or(nodes), hb.unwrap_or(heartbeat));
        let (engine, broker) = name
            .split_once('-')
            .unwrap_or_else(|| panic!("scenario {name}: ENGINE-BROKER[@NODES[/HEARTBEAT]]"));
        let database = match engine {
            "sqlite" => None,
            "postgres" => match fresh_pg(spec) {
                Some(db) => Some(db),
                None => {
                    println!("{spec}: skipped (no LATTICE_TEST_POSTGRES)");
                    continue;
                }
            },
            other => panic!("unknown engine {other}"),
        };
        let mosquitto = match broker {
            "embedded" => false,
            "mosquitto" => true,
            other => panic!("unknown broker {other}"),
        };
        if !mosquitto && n > cap {
            println!("{spec}: skipped: the embedded broker holds at most ~{cap} nodes under this open-file limit");
            continue;
        }
        results.push(run_scenario(
            &Scenario {
                name: format!("{name}@{n}/{hb}"),
                database,
                mosquitto,
            },
            n,
            hb,
            secs,
        ));
    }
    // Mosquitto against the embedded broker, same engine and node count.
    let find = |n: &str| results.iter().find(|r| r["scenario"] == n);
    let mut ratios = serde_json::Map::new();
    for r in &results {
        let name = r["scenario"].as_str().unwrap_or_default();
        let Some((engine, sizing)) = name.split_once("-embedded@") else {
            continue;
        };
        let Some(m) = find(&format!("{engine}-mosquitto@{sizing}")) else {
            continue;
        };
        let q = |k: &str| {
            m["heartbeat_to_stored_ms"][k].as_f64().unwrap_or(f64::NAN)
                / r["heartbeat_to_stored_ms"][k].as_f64().unwrap_or(f64::NAN)
        };
        let reg = m["registrations_per_sec"].as_f64().unwrap_or(f64::NAN)
            / r["registrations_per_sec"].as_f64().unwrap_or(f64::NAN);
        let cpu = m["fleet"]["cores"].as_f64().unwrap_or(f64::NAN)
            + m["mosquitto"]["cores"].as_f64().unwrap_or(0.0);
        let cpu = cpu / r["fleet"]["cores"].as_f64().unwrap_or(f64::NAN);
        println!(
            "\n{engine}, {sizing}: Mosquitto / embedded: heartbeat-to-stored p50 ×{:.2}, p99 \
             ×{:.2}; registrations/s ×{reg:.2}; CPU (fleet + broker) ×{cpu:.2}",
            q("p50"),
            q("p99")
        );
        ratios.insert(
            format!("{engine}@{sizing}"),
            serde_json::json!({"p50": q("p50"), "p99": q("p99"), "registrations_per_sec": reg, "cpu": cpu}),
        );
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = serde_json::json!({
        "machine": machine(),
        "nodes": nodes,
        "heartbeat_secs": heartbeat,
        "embedded_broker_capacity": cap,
        "scenarios": results,
        "mosquitto_over_embedded": ratios,
    });
    std::fs::write(
        out.join("scale.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("wrote target/bench/scale.json");
}
