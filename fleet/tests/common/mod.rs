//! Test harness: real `lattice` and `latticed` processes on loopback, driven through the CLI.
#![allow(dead_code)]

pub mod docker;
pub mod rig;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the test executable (target/<profile>/NAME).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run the suite with `cargo test --workspace` (or `cargo build --workspace`) first",
        p.display()
    );
    p
}

pub fn lattice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lattice"))
}

/// A running `lattice fleet` or `lattice up`, killed when dropped.
pub struct Fleet {
    pub child: Child,
    pub data: PathBuf,
    pub cli_config: PathBuf,
    pub url: String,
    pub http: String,
    pub mqtts: String,
    pub log: PathBuf,
}

/// `lattice ARGS` with `LATTICE_CLI_CONFIG=cfg` (another account's CLI config) and `stdin`
/// piped in (passwords); returns (success, stdout, stderr).
pub fn lattice_as(cfg: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(lattice_bin())
        .args(args)
        .env("LATTICE_CLI_CONFIG", cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lattice");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new, empty PostgreSQL database named `{prefix}_{pid}` on the server of
/// `LATTICE_TEST_POSTGRES` (scripts/test starts it); its URL. `None` (test skipped, with the
/// reason printed) when that is unset, which CI never allows.
pub fn fresh_postgres(prefix: &str) -> Option<String> {
    let Ok(admin) = std::env::var("LATTICE_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "LATTICE_TEST_POSTGRES is not set: scripts/test starts PostgreSQL and sets it"
        );
        eprintln!("SKIPPED: LATTICE_TEST_POSTGRES not set (run scripts/test-postgres)");
        return None;
    };
    let name = format!("{prefix}_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut c)
            .await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
    });
    Some(format!("{}/{name}", admin.rsplit_once('/').unwrap().0))
}

/// Free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Fleet {
    /// Starts `lattice <cmd>` on fresh ports with data in `data`, waits until it prints `ready`
    /// (up) or its addresses (fleet).
    pub fn start(cmd: &str, data: &Path, http_port: u16, mqtt_port: u16, extra: &[&str]) -> Fleet {
        Self::start_with_cli(
            cmd,
            data,
            http_port,
            mqtt_port,
            extra,
            &data.join("cli.toml"),
        )
    }

    /// Like [`Fleet::start`], with `LATTICE_CLI_CONFIG` pointing at `cli_config`.
    pub fn start_with_cli(
        cmd: &str,
        data: &Path,
        http_port: u16,
        mqtt_port: u16,
        extra: &[&str],
        cli_config: &Path,
    ) -> Fleet {
        let http = format!("127.0.0.1:{http_port}");
        let mqtt = format!("127.0.0.1:{mqtt_port}");
        let mut args = vec!["--http", &http, "--mqtt", &mqtt];
        args.extend_from_slice(extra);
        Self::launch(cmd, data, &args, cli_config)
    }

    /// Starts `lattice <cmd> --data DATA --heartbeat-secs 2 ARGS` (no `--http`/`--mqtt` added).
    pub fn launch(cmd: &str, data: &Path, args: &[&str], cli_config: &Path) -> Fleet {
        let cli_config = cli_config.to_path_buf();
        let log = data.with_extension(format!("{cmd}.log"));
        let mut c = Command::new(lattice_bin());
        c.arg(cmd)
            .arg("--data")
            .arg(data)
            .arg("--heartbeat-secs")
            .arg("2")
            .args(args)
            .env("LATTICE_CLI_CONFIG", &cli_config)
            .env("RUST_LOG", "info,lattice_fleet=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        if cmd == "up" {
            c.arg("--latticed").arg(workspace_bin("latticed"));
        }
        let mut child = c.spawn().expect("spawn lattice");
        let stdout = child.stdout.take().unwrap();
        let mut url = String::new();
        let mut mqtts = String::new();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "lattice {cmd} did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            if let Some(u) = line.strip_prefix("fleet API:") {
                url = u.trim().to_string();
            }
            if let Some(u) = line.strip_prefix("MQTT (TLS):") {
                mqtts = u.trim().to_string();
            }
            if line.starts_with("ready") || (cmd == "fleet" && line.starts_with("CLI config:")) {
                break;
            }
        }
        Fleet {
            child,
            data: data.to_path_buf(),
            cli_config,
            http: url.trim_start_matches("https://").to_string(),
            url,
            mqtts,
            log,
        }
    }

    /// Runs `lattice ARGS` against this fleet; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(lattice_bin())
            .args(args)
            .env("LATTICE_CLI_CONFIG", &self.cli_config)
            .output()
            .expect("run lattice");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(ok, "lattice {args:?} failed: {err}");
        out
    }

    pub fn nodes(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.cli_ok(&["nodes", "--json"])).expect("nodes json")
    }

    pub fn node(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["node", "show", id, "--json"])).expect("node json")
    }

    /// A provisioning string for one node.
    pub fn provisioning(&self, owner: &str) -> String {
        let out = self.cli_ok(&["tokens", "create", "--owner", owner, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["provisioning"].as_str().unwrap().to_string()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `lattice up`'s local node (it stops with its parent).
        let reg = self.data.join("node/registration.json");
        if let Some(id) = std::fs::read_to_string(reg)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["node_id"].as_str().map(str::to_string))
        {
            std::thread::sleep(Duration::from_millis(300));
            remove_envelope(&id);
        }
    }
}

/// A `latticed` process, killed when dropped.
pub struct Node {
    pub child: Child,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Node {
    pub fn start(data: &Path, provisioning: &str) -> Node {
        std::fs::create_dir_all(data).unwrap();
        let prov = data.join("provisioning");
        std::fs::write(&prov, provisioning).unwrap();
        let log = data.with_extension("log");
        let child = Command::new(workspace_bin("latticed"))
            .arg("--data-dir")
            .arg(data)
            .arg("--provisioning-file")
            .arg(&prov)
            .env("RUST_LOG", "info,latticed=debug")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("spawn latticed");
        Node {
            child,
            data: data.to_path_buf(),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The node id from its persisted registration.
    pub fn node_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data.join("registration.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["node_id"].as_str().map(str::to_string)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if let Some(id) = self.node_id() {
            remove_envelope(&id);
        }
    }
}

/// Removes the (empty) cgroup envelope a test node left: latticed keeps it on exit on purpose,
/// so that a restarted supervisor adopts the containers running in it.
pub fn remove_envelope(node_id: &str) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        let _ = std::fs::remove_dir(c.path().join(format!("lattice-{node_id}")));
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
