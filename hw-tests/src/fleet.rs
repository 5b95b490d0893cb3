//! A `lattice fleet` process the guest can reach: it listens on loopback and names itself
//! 10.0.2.2 (where a QEMU user-mode guest sees the host) in the URLs it hands out.

use crate::workspace_bin;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Fleet {
    child: Child,
    /// The gateway's plain HTTP address for workloads (`127.0.0.1:PORT`).
    pub apps_http: Option<String>,
    /// The certificate the gateway serves apps with over HTTPS.
    pub apps_ca: PathBuf,
    pub data: PathBuf,
    pub cli_config: PathBuf,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Fleet {
    /// A fleet that runs `s3` workloads from `s3_image` and serves apps over HTTPS too
    /// (the certificate in [`Fleet::apps_ca`]).
    pub fn start(data: &Path, s3_image: &str) -> Fleet {
        std::fs::create_dir_all(data).expect("fleet data dir");
        let log = data.join("fleet.log");
        let cli_config = data.join("cli.toml");
        let http = format!("127.0.0.1:{}", free_port());
        let mqtt = format!("127.0.0.1:{}", free_port());
        let apps_https = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(workspace_bin("lattice"))
            .args(["fleet", "--data"])
            .arg(data)
            .args(["--http", &http, "--mqtt", &mqtt])
            .args(["--s3-image", s3_image])
            .args(["--apps-https", &apps_https])
            .args(["--public-host", lattice_image::qemu::HOST_FROM_GUEST])
            .args(["--heartbeat-secs", "2"])
            .env("LATTICE_CLI_CONFIG", &cli_config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("fleet log"))
            .spawn()
            .expect("spawn lattice fleet");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut apps_http = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("fleet did not start: {}", read(&log)));
            // "apps (HTTP):      http://NAME.lattice-apps.localhost:8080"
            if let Some(url) = line.strip_prefix("apps (HTTP):") {
                apps_http = url
                    .trim()
                    .rsplit_once(':')
                    .map(|(_, port)| format!("127.0.0.1:{port}"));
            }
            if line.starts_with("CLI config:") {
                break;
            }
        }
        // The CLI runs on the host: same fleet, reached on loopback (the key is pinned, not
        // the name).
        let cfg = read(&cli_config).replace(
            &format!("https://{}:", lattice_image::qemu::HOST_FROM_GUEST),
            "https://127.0.0.1:",
        );
        std::fs::write(&cli_config, cfg).expect("rewrite cli config");
        Fleet {
            child,
            apps_http,
            apps_ca: data.join("apps-cert.pem"),
            data: data.to_path_buf(),
            cli_config,
            log,
        }
    }

    /// Runs `lattice ARGS` against this fleet; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(workspace_bin("lattice"))
            .args(args)
            .env("LATTICE_CLI_CONFIG", &self.cli_config)
            .output()
            .expect("run lattice");
        assert!(
            out.status.success(),
            "lattice {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn provisioning(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.cli(&["tokens", "create", "--owner", "hw", "--json"]))
                .expect("token json");
        v["provisioning"]
            .as_str()
            .expect("provisioning")
            .to_string()
    }

    pub fn nodes(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.cli(&["nodes", "--json"])).expect("nodes json")
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
