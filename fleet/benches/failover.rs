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

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn http_status(addr: SocketAddr, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn containers_of(node: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.lattice.node={node}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Removes what a node left: containers, networks, volumes, firewall chains, envelope.
fn clean_node(node: &str) {
    for id in containers_of(node) {
        docker(&["rm", "-f", "-v", &id]);
    }
    for kind in ["network", "volume"] {
        let label = format!("label=io.lattice.node={node}");
        for n in docker(&[kind, "ls", "-q", "--filter", &label]).lines() {
            docker(&[kind, "rm", n]);
        }
    }
    use latticed::firewall::Firewall;
    let _ = latticed::firewall::iptables::Iptables::new().clear(node);
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in controllers.flatten() {
            let _ = std::fs::remove_dir(c.path().join(format!("lattice-{node}")));
        }
    }
}

/// Kills the processes and removes what the nodes left, also when the bench panics.
#[derive(Default)]
struct Guard {
    procs: Vec<Child>,
    dirs: Vec<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for d in &self.dirs {
            if let Some(id) = node_id(d) {
                clean_node(&id);
            }
        }
    }
}

struct Cli {
    config: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(args)
            .env("LATTICE_CLI_CONFIG", &self.config)
            .output()
            .expect("lattice");
        assert!(
            out.status.success(),
            "lattice {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.run(args)).expect("json")
    }
}

fn latticed(dir: &Path, provisioning: &str) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let prov = dir.join("provisioning");
    std::fs::write(&prov, provisioning).unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("latticed");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p latticed",
        bin.display()
    );
    Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .arg("--provisioning-file")
        .arg(&prov)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("latticed")
}

fn node_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("registration.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["node_id"].as_str().map(str::to_string)
}

fn wait<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    // Leftovers of an interrupted run: `FAILOVER_CLEAN_NODES="n-… n-…"`.
    if let Ok(ids) = std::env::var("FAILOVER_CLEAN_NODES") {
        ids.split_whitespace().for_each(clean_node);
        return;
    }
    if !(Path::new("/var/run/docker.sock").exists() && nix::unistd::geteuid().is_root()) {
        eprintln!("SKIPPED: needs root and a Docker engine");
        return;
    }
    let image = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/test-images.env"),
    )
    .expect("build/test-images.env: run scripts/test-images")
    .lines()
    .find_map(|l| l.strip_prefix("LATTICE_TEST_IMAGE=").map(str::to_string))
    .expect("LATTICE_TEST_IMAGE");
    let n: usize = std::env::var("WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let grace = std::env::var("GRACE").ok();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let apps: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cli = Cli {
        config: dir.path().join("cli.toml"),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice"));
    cmd.args(["fleet", "--data"])
        .arg(&data)
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt", &format!("127.0.0.1:{}", free_port())])
        .args(["--apps-http", &apps.to_string()])
        .args(["--apps-https", &format!("127.0.0.1:{}", free_port())]);
    if let Some(g) = &grace {
        cmd.args(["--node-lost-grace-secs", g]);
    }
    let mut guard = Guard::default();
    let mut fleet = cmd
        .env("LATTICE_CLI_CONFIG", &cli.config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("fleet.log")).unwrap())
        .spawn()
        .expect("lattice fleet");
    let mut out = std::io::BufReader::new(fleet.stdout.take().unwrap()).lines();
    for line in out.by_ref().map_while(Result::ok) {
        if line.starts_with("CLI config:") {
            break;
        }
    }
    // Keep reading: the fleet must never write to a closed pipe.
    std::thread::spawn(move || out.for_each(drop));

    let token = |owner: &str| {
        cli.json(&["tokens", "create", "--owner", owner, "--json"])["provisioning"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    guard.procs.push(fleet);
    guard.dirs = vec![a_dir.clone(), b_dir.clone()];
    let mut a = latticed(&a_dir, &token("bench"));
    guard.procs.push(latticed(&b_dir, &token("bench")));
    let a_id = wait(30, "a registered", || node_id(&a_dir));
    let b_id = wait(30, "b registered", || node_id(&b_dir));
    for id in [&a_id, &b_id] {
        wait(60, "node online", || {
            (cli.json(&["node", "show", id, "--json"])["online"] == true).then_some(())
        });
    }

    cli.run(&["node", "cordon", &b_id]);
    let names: Vec<String> = (0..n).map(|i| format!("fo{i}")).collect();
    for name in &names {
        cli.run(&[
            "deploy",
            "container",
            name,
            "--image",
            &image,
            "--port",
            "8080",
            "--",
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        ]);
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
