//! API latency under an open-loop load of mixed reads and writes (issue 5, "Measured": API p99
//! under 1,000 requests/s, target < 10 ms).
//!
//! A real `lattice fleet` process (the binary next to this one: HTTPS API with its TLS,
//! embedded broker, gateway) on loopback, on SQLite in a temporary directory and, when
//! `LATTICE_TEST_POSTGRES` is set (`export LATTICE_TEST_POSTGRES=$(./scripts/test-postgres)`),
//! again on a fresh PostgreSQL database. Set-up, all through the API except one step:
//! `NODES` (8) nodes register over pinned HTTPS with real keys and are then marked online by
//! ingesting their hello into the store from this process (as the fleet's MQTT ingest would,
//! before the load starts; `--heartbeat-secs 3600` keeps them online without heartbeats);
//! `ACCOUNTS` (4) consumers sign up and log in once each (login is rate-limited and
//! argon2id-hashed: tokens are made up front, never per request), and each deploys `STABLE`
//! (10) container workloads.
//!
//! Load: open loop at `RATE` (1,000) requests/s for `SECS` (20) s after `WARMUP` (3) s at the
//! same rate that is not counted. Request `i` is due at `start + i / RATE` and is sent then
//! whatever earlier requests are doing; its latency counts from when it was due, not from when
//! it was sent, so a stalled server shows as latency instead of fewer requests (no coordinated
//! omission). Accounts take turns; the kind is drawn from a fixed seed: 30 % GET
//! /api/v1/workloads, 30 % GET /api/v1/workloads/{name}, 20 % GET /api/v1/me, 7 % POST
//! /api/v1/workloads (a new workload, placed by the scheduler; a delete instead once the
//! account has 20 of them), 6 % DELETE of one deployed earlier (a patch when there is none),
//! 7 % PATCH /api/v1/workloads/{name} (a new env
//! value, `strategy: in_place`, the stable workloads in turn). reqwest, one connection pool
//! (HTTP/1.1 keep-alive over TLS, pinned to the fleet key). Every non-2xx answer and every
//! transport error counts as an error, by status.
//!
//! The load generator runs on the same machine as the fleet (and the database): on a 2-core
//! machine they share the cores, so the figures include that contention. The program reports
//! the CPU the fleet process and this process used during the window and the load average.
//!
//! `cargo bench -p lattice-fleet --bench api` (knobs `RATE`, `SECS`, `WARMUP`, `NODES`,
//! `ACCOUNTS`, `STABLE`, `ONLY=sqlite|postgres`; `FLEET_LOG=<RUST_LOG filter>` runs the fleet
//! with that filter and keeps its log as `target/bench/api-fleet-<engine>.log`, e.g.
//! `FLEET_LOG=warn,lattice_fleet::timing=debug` for the writes' phase timings;
//! `FLEET_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p"` runs the fleet
//! under callgrind, zeroed at the window's start and dumped at its end). Prints figures,
//! writes `target/bench/api.json`.

use lattice_fleet::store::{Effect, Store};
use lattice_wire::msg::{Inventory, Message};
use lattice_wire::register::{Provisioning, RegisterRequest, RegisterResponse};
use lattice_wire::{EncryptionKey, IdentityKey, IdentityPublic};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IMAGE: &str =
    "127.0.0.1:5000/bench@sha256:0000000000000000000000000000000000000000000000000000000000000000";
const PASSWORD: &str = "bench-password-123";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    List,
    Show,
    Me,
    Deploy,
    Delete,
    Patch,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::List,
        Kind::Show,
        Kind::Me,
        Kind::Deploy,
        Kind::Delete,
        Kind::Patch,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::List => "GET /workloads",
            Kind::Show => "GET /workloads/{name}",
            Kind::Me => "GET /me",
            Kind::Deploy => "POST /workloads",
            Kind::Delete => "DELETE /workloads/{name}",
            Kind::Patch => "PATCH /workloads/{name}",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::List => "list",
            Kind::Show => "show",
            Kind::Me => "me",
            Kind::Deploy => "deploy",
            Kind::Delete => "delete",
            Kind::Patch => "patch",
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Kind::Deploy | Kind::Delete | Kind::Patch)
    }

    /// The mix: 80 % reads, 20 % writes, from a number in 0..100.
    fn pick(r: u64) -> Kind {
        match r {
            0..30 => Kind::List,
            30..60 => Kind::Show,
            60..80 => Kind::Me,
            80..87 => Kind::Deploy,
            87..93 => Kind::Delete,
            _ => Kind::Patch,
        }
    }
}

/// splitmix64: a fixed, dependency-free sequence for the mix.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Churn workloads an account may hold (deployed or being deployed) before a drawn deploy
/// deletes one instead: keeps the fleet's size steady when the server falls behind.
const CHURN_MAX: u64 = 20;

struct Account {
    token: String,
    stable: Vec<String>,
    /// Churn workloads deployed (201) and not yet being deleted, oldest first.
    churn: Mutex<VecDeque<String>>,
    /// Churn workloads deployed or being deployed, not yet being deleted.
    churn_live: AtomicU64,
    next_patch: AtomicU64,
}

struct Sample {
    due_us: u64,
    kind: Kind,
    latency_us: u64,
    /// HTTP status, or 0 for a transport error.
    status: u16,
    error: Option<String>,
}

struct Load {
    http: reqwest::Client,
    url: String,
    accounts: Vec<Account>,
    names: AtomicU64,
}

impl Load {
    async fn one(&self, i: u64, kind: Kind) -> (Kind, Result<u16, String>) {
        let a = &self.accounts[(i % self.accounts.len() as u64) as usize];
        let auth = format!("Bearer {}", a.token);
        let base = &self.url;
        // A delete takes the oldest deployed churn workload (a patch when there is none); a
        // deploy past CHURN_MAX is a delete instead.
        let mut kind = kind;
        if kind == Kind::Deploy && a.churn_live.fetch_add(1, Ordering::Relaxed) >= CHURN_MAX {
            a.churn_live.fetch_sub(1, Ordering::Relaxed);
            kind = Kind::Delete;
        }
        let mut churned = None;
        if kind == Kind::Delete {
            churned = a.churn.lock().unwrap().pop_front();
            match churned {
                Some(_) => {
                    a.churn_live.fetch_sub(1, Ordering::Relaxed);
                }
                None => kind = Kind::Patch,
            }
        }
        let req = match kind {
            Kind::List => self.http.get(format!("{base}/api/v1/workloads")),
            Kind::Show => {
                let name = &a.stable[(mix(i ^ 0x5555) % a.stable.len() as u64) as usize];
                self.http.get(format!("{base}/api/v1/workloads/{name}"))
            }
            Kind::Me => self.http.get(format!("{base}/api/v1/me")),
            Kind::Deploy => {
                let name = format!("c{}", self.names.fetch_add(1, Ordering::Relaxed));
                churned = Some(name.clone());
                self.http
                    .post(format!("{base}/api/v1/workloads"))
                    .json(&json!({"kind": "container", "name": name, "image": IMAGE,
                        "port": 8080, "plan": "small"}))
            }
            Kind::Delete => {
                let name = churned.as_deref().unwrap_or_default();
                self.http.delete(format!("{base}/api/v1/workloads/{name}"))
            }
            Kind::Patch => {
                let k = a.next_patch.fetch_add(1, Ordering::Relaxed);
                let name = &a.stable[(k % a.stable.len() as u64) as usize];
                self.http
                    .patch(format!("{base}/api/v1/workloads/{name}"))
                    .json(&json!({"set_env": {"V": i.to_string()}, "strategy": "in_place"}))
            }
        };
        let r = match req.header("authorization", auth).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the whole body: the answer is not complete before it.
                match resp.bytes().await {
                    Ok(_) if (200..300).contains(&status) => Ok(status),
                    // Errors are kept with the server's message (the first one is printed).
                    Ok(b) => Err(format!(
                        "{status} {}",
                        String::from_utf8_lossy(&b[..b.len().min(160)])
                    )),
                    Err(e) => Err(format!("body: {e}")),
                }
            }
            Err(e) => Err(if e.is_timeout() {
                "timeout".to_string()
            } else {
                format!("transport: {e}")
            }),
        };
        if kind == Kind::Deploy {
            if r == Ok(201) {
                a.churn
                    .lock()
                    .unwrap()
                    .push_back(churned.unwrap_or_default());
            } else {
                a.churn_live.fetch_sub(1, Ordering::Relaxed);
            }
        }
        (kind, r)
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn summary(mut lat: Vec<u64>) -> Value {
    lat.sort_unstable();
    json!({
        "count": lat.len(),
        "p50_ms": pct(&lat, 0.50), "p90_ms": pct(&lat, 0.90), "p99_ms": pct(&lat, 0.99),
        "p999_ms": pct(&lat, 0.999),
        "max_ms": lat.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
    })
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// With `FLEET_WRAPPER` running callgrind: zeroes (`-z`, at the window's start) or dumps
/// (`-d`, at its end) the fleet's counts, so the dump holds the instructions of the measured
/// requests only (a figure the machine's load does not change).
fn callgrind_control(pid: u32, what: &str) {
    if std::env::var("FLEET_WRAPPER").is_ok_and(|w| w.contains("callgrind")) {
        let _ = Command::new("callgrind_control")
            .args([what, &pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    format!("{cpus} x {model}")
}

/// A new empty PostgreSQL database on the server of `admin`; its URL.
async fn fresh_postgres(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("bench_api_{}", std::process::id());
    let mut c = sqlx::PgConnection::connect(admin)
        .await
        .expect("LATTICE_TEST_POSTGRES");
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut c)
        .await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

struct FleetProcess {
    child: Child,
    url: String,
    data: std::path::PathBuf,
}

impl Drop for FleetProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fleet(dir: &Path, database: Option<&str>) -> FleetProcess {
    let data = dir.join("fleet");
    let api = free_port();
    // FLEET_WRAPPER: a command the fleet runs under (e.g. valgrind), split at spaces.
    let wrapper = std::env::var("FLEET_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut c = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_lattice"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_lattice")),
    };
    c.args(["fleet", "--data"])
        .arg(&data)
        .args(["--http", &format!("127.0.0.1:{api}")])
        .args(["--mqtt", "127.0.0.1:0"])
        .args(["--apps-http", &format!("127.0.0.1:{}", free_port())])
        .args(["--apps-https", &format!("127.0.0.1:{}", free_port())])
        .args(["--heartbeat-secs", "3600"])
        .env("LATTICE_CLI_CONFIG", dir.join("cli.toml"))
        .env(
            "RUST_LOG",
            std::env::var("FLEET_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("fleet.log")).unwrap());
    if let Some(db) = database {
        c.args(["--database", db]);
    }
    let mut child = c.spawn().expect("lattice fleet");
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut started = false;
    for line in out.lines().map_while(Result::ok) {
        if line.starts_with("CLI config:") {
            started = true;
            break;
        }
    }
    assert!(
        started,
        "lattice fleet did not start: {}",
        std::fs::read_to_string(dir.join("fleet.log")).unwrap_or_default()
    );
    FleetProcess {
        child,
        url: format!("https://127.0.0.1:{api}"),
        data,
    }
}

async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: &Value,
) -> Value {
    let mut r = http.request(method, &url).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Registers a node over the API with fresh keys; its id.
async fn register(http: &reqwest::Client, p: &Provisioning, fleet: &IdentityPublic) -> String {
    let key = IdentityKey::generate();
    let enc = EncryptionKey::generate();
    let inv = Inventory {
        hostname: "bench".into(),
        cpu_count: 1,
        ..Inventory::default()
    };
    let req = RegisterRequest::new(&p.token, &key, &enc.public(), inv, "bench");
    let resp: RegisterResponse = http
        .post(format!("{}/api/v1/register", p.url))
        .json(&req)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("register")
        .json()
        .await
        .expect("register json");
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
    r.node_id
}

struct Knobs {
    rate: u64,
    secs: u64,
    warmup: u64,
    nodes: u64,
    accounts: u64,
    stable: u64,
}

async fn run(engine: &str, database: Option<String>, k: &Knobs) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(dir.path(), database.as_deref());
    let db_url = database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", fleet.data.join("fleet.db").display()));
    let fleet_key = IdentityKey::from_bytes(&std::fs::read(fleet.data.join("fleet.key")).unwrap())
        .unwrap()
        .public();
    let operator = std::fs::read_to_string(fleet.data.join("operator.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = lattice_wire::pin::pinned_http_client(&fleet_key, Duration::from_secs(30)).unwrap();
    let url = fleet.url.clone();
    let post = reqwest::Method::POST;

    // Nodes: registered over the API, marked online by their hello (16 CPUs, 64 GiB: they
    // offer half, room for 32 small workloads each).
    let t = send_json(
        &http,
        post.clone(),
        format!("{url}/api/v1/tokens"),
        Some(&operator),
        &json!({"uses": k.nodes}),
    )
    .await;
    let p = Provisioning::parse(t["provisioning"].as_str().unwrap()).unwrap();
    let mut node_ids = Vec::new();
    for _ in 0..k.nodes {
        node_ids.push(register(&http, &p, &fleet_key).await);
    }
    {
        let store = Store::open(&db_url).await.expect("store");
        for id in &node_ids {
            let inventory = Inventory {
                hostname: id.clone(),
                cpu_model: "bench".into(),
                cpu_count: 16,
                memory_bytes: 64 << 30,
                disk_total_bytes: 1 << 40,
                disk_free_bytes: 1 << 39,
                kernel: "6".into(),
                arch: "x86_64".into(),
            };
            let hello = Effect::Hello {
                inventory_json: serde_json::to_string(&inventory).unwrap(),
                firmware_version: "bench".into(),
                applied_revision: 0,
            };
            store
                .ingest(id, 1, 1, hello, lattice_wire::now_ms())
                .await
                .expect("hello");
        }
    }
    let nodes = send_json(
        &http,
        reqwest::Method::GET,
        format!("{url}/api/v1/nodes"),
        Some(&operator),
        &Value::Null,
    )
    .await;
    let online = nodes
        .as_array()
        .map(|a| a.iter().filter(|n| n["online"] == true).count())
        .unwrap_or(0);
    assert_eq!(online as u64, k.nodes, "nodes online: {nodes}");

    // Consumers: sign up, log in once, deploy the stable workloads.
    let mut accounts = Vec::new();
    for a in 0..k.accounts {
        let email = format!("bench{a}@example.org");
        send_json(
            &http,
            post.clone(),
            format!("{url}/api/v1/accounts"),
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
        let login = send_json(
            &http,
            post.clone(),
            format!("{url}/api/v1/login"),
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
        let token = login["token"].as_str().unwrap().to_string();
        let mut stable = Vec::new();
        for s in 0..k.stable {
            let name = format!("s{s}");
            send_json(
                &http,
                post.clone(),
                format!("{url}/api/v1/workloads"),
                Some(&token),
                &json!({"kind": "container", "name": name, "image": IMAGE, "port": 8080}),
            )
            .await;
            stable.push(name);
        }
        accounts.push(Account {
            token,
            stable,
            churn: Mutex::new(VecDeque::new()),
            churn_live: AtomicU64::new(0),
            next_patch: AtomicU64::new(0),
        });
    }
    let load = Arc::new(Load {
        http,
        url,
        accounts,
        names: AtomicU64::new(0),
    });

    // The open loop.
    let total = k.rate * (k.warmup + k.secs);
    let warm = k.rate * k.warmup;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let pid = fleet.child.id();
    let start = Instant::now() + Duration::from_millis(200);
    let window_start = start + Duration::from_secs(k.warmup);
    let mut max_send_lag = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    let (mut cpu_fleet0, mut cpu_self0, mut load0) = (0, 0, String::new());
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / k.rate);
        if i == warm {
            tokio::time::sleep_until(due.into()).await;
            callgrind_control(pid, "-z");
            cpu_fleet0 = cpu_ticks(pid);
            cpu_self0 = cpu_ticks(std::process::id());
            load0 = loadavg();
        }
        tokio::time::sleep_until(due.into()).await;
        if i >= warm {
            max_send_lag = max_send_lag.max(due.elapsed());
        }
        let kind = Kind::pick(mix(i) % 100);
        let (load, samples) = (load.clone(), samples.clone());
        tasks.spawn(async move {
            let (kind, r) = load.one(i, kind).await;
            let latency_us = due.elapsed().as_micros() as u64;
            if i >= warm {
                let (status, error) = match r {
                    Ok(s) => (s, None),
                    Err(e) => (
                        e.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0),
                        Some(e),
                    ),
                };
                samples.lock().unwrap().push(Sample {
                    due_us: due.duration_since(window_start).as_micros() as u64,
                    kind,
                    latency_us,
                    status,
                    error,
                });
            }
        });
        // Reap finished tasks as we go.
        while tasks.try_join_next().is_some() {}
    }
    let sent_end = Instant::now();
    while tasks.join_next().await.is_some() {}
    let done = Instant::now();
    let cpu_fleet = cpu_ticks(pid) - cpu_fleet0;
    callgrind_control(pid, "-d");
    let cpu_self = cpu_ticks(std::process::id()) - cpu_self0;
    let load1 = loadavg();
    let tick = procfs::ticks_per_second() as f64;
    let window = done.duration_since(window_start).as_secs_f64();

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let mut by_kind: BTreeMap<Kind, Vec<u64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_error: BTreeMap<String, String> = BTreeMap::new();
    let mut all = Vec::new();
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    let mut last_due = 0;
    for s in &samples {
        by_kind.entry(s.kind).or_default().push(s.latency_us);
        all.push(s.latency_us);
        if s.kind.is_write() {
            writes.push(s.latency_us);
        } else {
            reads.push(s.latency_us);
        }
        last_due = last_due.max(s.due_us);
        if !(200..300).contains(&s.status) {
            let what = match (s.status, &s.error) {
                (0, Some(e)) => e.split(':').next().unwrap_or_default().to_string(),
                (status, _) => status.to_string(),
            };
            let key = format!("{} {what}", s.kind.label());
            first_error
                .entry(key.clone())
                .or_insert_with(|| s.error.clone().unwrap_or_default());
            *errors.entry(key).or_default() += 1;
        }
    }
    let n = samples.len();
    let n_errors: u64 = errors.values().sum();
    let achieved = n as f64 / window;
    let ok_rate = (n as u64 - n_errors) as f64 / window;
    let sent_rate = n as f64 / sent_end.duration_since(window_start).as_secs_f64();
    let fleet_cores = cpu_fleet as f64 / tick / window;
    let self_cores = cpu_self as f64 / tick / window;
    let overall = summary(all);
    println!(
        "\n== {engine}: {} requests/s for {} s (after {} s warm-up), {} nodes, {} accounts x {} stable workloads",
        k.rate, k.secs, k.warmup, k.nodes, k.accounts, k.stable
    );
    println!(
        "sent {n} ({sent_rate:.0}/s, latest send {:.1} ms after its time), answered at {achieved:.0}/s, 2xx at {ok_rate:.0}/s, errors {n_errors}",
        max_send_lag.as_secs_f64() * 1000.0
    );
    println!(
        "{:<26} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "kind", "count", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms"
    );
    let row = |name: &str, v: &Value| {
        println!(
            "{:<26} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            v["count"],
            v["p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["p90_ms"].as_f64().unwrap_or(f64::NAN),
            v["p99_ms"].as_f64().unwrap_or(f64::NAN),
            v["p999_ms"].as_f64().unwrap_or(f64::NAN),
            v["max_ms"].as_f64().unwrap_or(f64::NAN),
        )
    };
    let mut kinds = serde_json::Map::new();
    for kind in Kind::ALL {
        let v = summary(by_kind.remove(&kind).unwrap_or_default());
        row(kind.label(), &v);
        kinds.insert(kind.key().to_string(), v);
    }
    let reads = summary(reads);
    let writes = summary(writes);
    row("reads", &reads);
    row("writes", &writes);
    row("overall", &overall);
    for (what, count) in &errors {
        println!(
            "error: {count} x {what} (first: {})",
            first_error
                .get(what)
                .map(String::as_str)
                .unwrap_or_default()
        );
    }
    println!(
        "CPU during the window: fleet process {:.2} cores, load generator {:.2} cores (of {}); load average {load0} -> {load1}; fleet RSS {} MiB",
        fleet_cores,
        self_cores,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        rss_kib(pid) / 1024
    );
    let p99 = overall["p99_ms"].as_f64().unwrap_or(f64::NAN);
    println!(
        "overall p99 {p99:.2} ms (target < 10 ms: {})",
        if p99 < 10.0 { "met" } else { "MISSED" }
    );
    let live = load
        .accounts
        .iter()
        .map(|a| a.stable.len() + a.churn.lock().unwrap().len())
        .sum::<usize>();
    // Did concurrent deploys over-commit a node? (The scheduler alone never does.)
    let over = {
        let store = Store::open(&db_url).await.expect("store");
        let nodes = store.nodes().await.unwrap();
        let placed = store.workloads(None).await.unwrap();
        lattice_fleet::workloads::node_views(&nodes, &placed, lattice_wire::now_ms())
            .iter()
            .filter(|v| {
                v.reserved.cpu_millis > v.capacity.cpu_millis
                    || v.reserved.memory_bytes > v.capacity.memory_bytes
            })
            .map(|v| {
                format!(
                    "{}: {} of {} millicores",
                    v.id, v.reserved.cpu_millis, v.capacity.cpu_millis
                )
            })
            .collect::<Vec<_>>()
    };
    println!(
        "nodes over-committed at the end: {}",
        if over.is_empty() {
            "none".to_string()
        } else {
            over.join(", ")
        }
    );
    drop(fleet);
    if std::env::var_os("FLEET_LOG").is_some() {
        // Kept for reading: the temporary directory goes with this run.
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
        std::fs::create_dir_all(&out).unwrap();
        let kept = out.join(format!("api-fleet-{engine}.log"));
        let _ = std::fs::copy(dir.path().join("fleet.log"), &kept);
        println!("fleet log: {}", kept.display());
    }
    if let (Some(db), Ok(admin)) = (&database, std::env::var("LATTICE_TEST_POSTGRES")) {
        use sqlx::Connection;
        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
            let name = db.rsplit_once('/').unwrap().1;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(&mut c)
                .await;
        }
    }
    json!({
        "engine": engine,
        "requests": n, "window_secs": window,
        "sent_per_sec": sent_rate, "completed_per_sec": achieved, "ok_per_sec": ok_rate,
        "max_send_lag_ms": max_send_lag.as_secs_f64() * 1000.0,
        "errors": n_errors, "errors_by_kind_and_status": errors,
        "latency_ms": {"overall": overall, "reads": reads, "writes": writes, "by_kind": kinds},
        "workloads_at_end": live, "over_committed_nodes": over,
        "fleet_cpu_cores": fleet_cores, "load_generator_cpu_cores": self_cores,
        "load_average_before": load0, "load_average_after": load1,
        "p99_target_met": p99 < 10.0,
    })
}

fn main() {
    let k = Knobs {
        rate: env_u64("RATE", 1000).max(1),
        secs: env_u64("SECS", 20).max(1),
        warmup: env_u64("WARMUP", 3),
        nodes: env_u64("NODES", 8).max(1),
        accounts: env_u64("ACCOUNTS", 4).clamp(1, 10),
        stable: env_u64("STABLE", 10).max(1),
    };
    let only = std::env::var("ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runs = Vec::new();
    rt.block_on(async {
        if only.is_empty() || only == "sqlite" {
            runs.push(run("sqlite", None, &k).await);
        }
        if only.is_empty() || only == "postgres" {
            match std::env::var("LATTICE_TEST_POSTGRES") {
                Ok(admin) => {
                    let db = fresh_postgres(&admin).await;
                    runs.push(run("postgres", Some(db), &k).await);
                }
                Err(_) => println!(
                    "\nPostgreSQL: skipped (LATTICE_TEST_POSTGRES not set; \
                     export LATTICE_TEST_POSTGRES=$(./scripts/test-postgres))"
                ),
            }
        }
    });
    let result = json!({
        "machine": machine(),
        "rate_per_sec": k.rate, "secs": k.secs, "warmup_secs": k.warmup,
        "nodes": k.nodes, "accounts": k.accounts, "stable_workloads_per_account": k.stable,
        "mix_percent": {"list": 30, "show": 30, "me": 20, "deploy": 7, "delete": 6, "patch": 7},
        "runs": runs,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("api.json"),
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
    println!("wrote target/bench/api.json");
}
