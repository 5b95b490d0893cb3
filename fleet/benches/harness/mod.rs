//! What the benches that run real processes share: a `lattice fleet` with its CLI, real
//! latticed processes (the release binaries next to the bench), and a guard that kills them
//! and removes what their nodes left on the machine (containers, networks, volumes, firewall
//! chains, envelopes), also when the bench panics.
#![allow(dead_code)] // each bench uses its own part

pub mod metrics;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn http_status(addr: SocketAddr, host: &str) -> Option<u16> {
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

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn containers_of(node: &str) -> Vec<String> {
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
pub fn clean_node(node: &str) {
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
pub struct Guard {
    pub procs: Vec<Child>,
    pub dirs: Vec<PathBuf>,
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

pub struct Cli {
    pub config: PathBuf,
}

impl Cli {
    pub fn run(&self, args: &[&str]) -> String {
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

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.run(args)).expect("json")
    }
}

pub fn latticed(dir: &Path, provisioning: &str) -> Child {
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

pub fn node_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("registration.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["node_id"].as_str().map(str::to_string)
}

pub fn wait<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The digest-pinned test image from `build/test-images.env` (`scripts/test-images`).
pub fn test_image() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/test-images.env"))
        .expect("build/test-images.env: run scripts/test-images")
        .lines()
        .find_map(|l| l.strip_prefix("LATTICE_TEST_IMAGE=").map(str::to_string))
        .expect("LATTICE_TEST_IMAGE")
}

/// Whether this machine can run the workload benches (root and a Docker engine).
pub fn can_run_workloads() -> bool {
    Path::new("/var/run/docker.sock").exists() && nix::unistd::geteuid().is_root()
}

/// A running `lattice fleet` on loopback (data in `dir/fleet`, log in `dir/fleet.log`), its
/// CLI configured as operator, and the gateway's plain HTTP address for workloads.
pub struct Fleet {
    pub cli: Cli,
    pub apps: SocketAddr,
}

impl Fleet {
    /// Starts it with `extra` flags; the process goes into `guard`.
    pub fn start(dir: &Path, extra: &[&str], guard: &mut Guard) -> Fleet {
        let apps: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cli = Cli {
            config: dir.join("cli.toml"),
        };
        let mut fleet = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(["fleet", "--data"])
            .arg(dir.join("fleet"))
            .args(["--http", &format!("127.0.0.1:{}", free_port())])
            .args(["--mqtt", &format!("127.0.0.1:{}", free_port())])
            .args(["--apps-http", &apps.to_string()])
            .args(["--apps-https", &format!("127.0.0.1:{}", free_port())])
            .args(extra)
            .env("LATTICE_CLI_CONFIG", &cli.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("fleet.log")).unwrap())
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
        guard.procs.push(fleet);
        Fleet { cli, apps }
    }

    /// A provisioning string for a new node of `owner`.
    pub fn token(&self, owner: &str) -> String {
        self.cli
            .json(&["tokens", "create", "--owner", owner, "--json"])["provisioning"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Deploys `name`: busybox httpd from `image` on port 8080 serving "ok", plan `plan`.
    pub fn deploy_httpd(&self, name: &str, image: &str, plan: &str) {
        self.cli.run(&[
            "deploy",
            "container",
            name,
            "--plan",
            plan,
            "--image",
            image,
            "--port",
            "8080",
            "--",
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        ]);
    }

    /// Waits for the latticed with data in `dir` to register and come online; its node id.
    pub fn wait_online(&self, dir: &Path) -> String {
        let id = wait(30, "node registered", || node_id(dir));
        wait(60, "node online", || {
            (self.cli.json(&["node", "show", &id, "--json"])["online"] == true).then_some(())
        });
        id
    }
}
