//! The fleet's OCI registry: Debian's `docker-registry`, started (and stopped) by `lattice up`,
//! or reused when one already answers at the address (the test set-up starts one).
//!
//! [`answers`] is the probe `lattice images` uses too; [`ensure`] is the supervisor.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Where the fleet's registry listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5000";
/// Debian's registry binary (package `docker-registry`).
pub const DEFAULT_BIN: &str = "/usr/bin/docker-registry";
/// The Debian package that holds it.
pub const PACKAGE: &str = "docker-registry";

/// `lattice up`'s registry flags.
#[derive(Debug, clap::Args, Clone)]
pub struct RegistryArgs {
    /// Address of the fleet's OCI registry (Debian's docker-registry, started by `lattice up`
    /// with its storage in the data directory; reused if a registry already answers there).
    #[arg(long = "registry", value_name = "ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Do not start a registry (use an external one, named with --registry-url).
    #[arg(long)]
    pub no_registry: bool,
    /// With --no-registry: the external registry the fleet's images live in (shown at start).
    #[arg(long, value_name = "URL", requires = "no_registry")]
    pub registry_url: Option<String>,
    /// The docker-registry binary.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BIN)]
    pub registry_bin: PathBuf,
}

/// What the probe of an address found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A registry (HTTP API v2) answers.
    Registry,
    /// Something answers HTTP there, but it is not a registry.
    NotARegistry(String),
    /// Nothing answers (refused, timed out).
    Nothing(String),
}

/// The registry's base URL for an address: plain HTTP on loopback (as Docker allows without
/// configuration), HTTPS elsewhere.
pub fn base_url(addr: &str) -> String {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        format!("http://{addr}")
    } else {
        format!("https://{addr}")
    }
}

/// Probes `GET /v2/` at `addr` (host:port). A registry answers 200, or 401 when it wants
/// credentials, with `Docker-Distribution-Api-Version: registry/2.0`.
pub async fn probe(addr: &str) -> Probe {
    let url = format!("{}/v2/", base_url(addr));
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Probe::Nothing(e.to_string()),
    };
    match client.get(&url).send().await {
        Err(e) => Probe::Nothing(format!("{e:#}")),
        Ok(r) => {
            let api = r
                .headers()
                .get("docker-distribution-api-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let status = r.status().as_u16();
            if (status == 200 || status == 401) && api.starts_with("registry/2") {
                Probe::Registry
            } else {
                Probe::NotARegistry(format!(
                    "GET {url} answered {status} without Docker-Distribution-Api-Version: registry/2.0"
                ))
            }
        }
    }
}

/// True when a registry answers at `addr`.
pub async fn answers(addr: &str) -> bool {
    probe(addr).await == Probe::Registry
}

/// The registry `lattice up` runs with.
#[derive(Debug)]
pub enum Registry {
    /// Started by us; stopped by [`Registry::stop`] (or killed when dropped).
    Started {
        addr: SocketAddr,
        child: Box<Child>,
        dir: PathBuf,
    },
    /// Already answered at the address: left alone.
    Reused { addr: SocketAddr },
}

impl Registry {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Registry::Started { addr, .. } | Registry::Reused { addr } => *addr,
        }
    }

    /// One line for `lattice up`'s banner.
    pub fn describe(&self) -> String {
        match self {
            Registry::Started { addr, dir, .. } => format!(
                "{addr} (docker-registry, storage {}, log {})",
                dir.join("storage").display(),
                dir.join("registry.log").display()
            ),
            Registry::Reused { addr } => {
                format!("{addr} (a registry already answered there: reused, not managed)")
            }
        }
    }

    /// Stops the registry if we started it (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(self) {
        if let Registry::Started { mut child, .. } = self {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// The configuration we write for docker-registry (same shape as scripts/test-images').
pub fn config_yaml(addr: SocketAddr, storage: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\n",
        storage.display()
    )
}

/// Makes sure a registry answers at `addr`: reuses one that already does, otherwise starts
/// `bin` with its configuration, storage and log under `dir`, and waits (up to 10 s) until it
/// answers. Fails, naming the package and `--no-registry`, when `bin` is missing.
pub async fn ensure(addr: SocketAddr, dir: &Path, bin: &Path) -> anyhow::Result<Registry> {
    // The registry we start speaks plain HTTP, which Docker and the probe below only use on
    // loopback; anywhere else it would never be found, and it must not be open to the network.
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--registry {addr}: the registry lattice up runs speaks plain HTTP without \
         authentication, so it listens on loopback only (e.g. 127.0.0.1:5000); nodes elsewhere \
         pull through their tunnel"
    );
    let a = addr.to_string();
    match probe(&a).await {
        Probe::Registry => return Ok(Registry::Reused { addr }),
        Probe::NotARegistry(why) => anyhow::bail!(
            "{addr} is taken by something that is not an OCI registry ({why}); pass --registry ADDR \
             for another address, or --no-registry"
        ),
        Probe::Nothing(_) => {}
    }
    anyhow::ensure!(
        bin.exists(),
        "{} not found: install Debian's {PACKAGE} package (apt-get install {PACKAGE}), point \
         --registry-bin at the binary, or pass --no-registry to run without the fleet's registry",
        bin.display()
    );
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage)
        .with_context(|| format!("creating the registry's storage {}", storage.display()))?;
    let config = dir.join("config.yml");
    std::fs::write(&config, config_yaml(addr, &storage))
        .with_context(|| format!("writing {}", config.display()))?;
    let log_path = dir.join("registry.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if answers(&a).await {
            return Ok(Registry::Started {
                addr,
                child: Box::new(child),
                dir: dir.to_path_buf(),
            });
        }
        if let Some(status) = child.try_wait()? {
            // Another instance may have started one at the same address meanwhile.
            if answers(&a).await {
                return Ok(Registry::Reused { addr });
            }
            anyhow::bail!(
                "{} exited at start ({status}); see {}: {}",
                bin.display(),
                log_path.display(),
                tail(&log_path, 5)
            );
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill().await;
            anyhow::bail!(
                "{} did not answer on {addr} within 10 s; see {}: {}",
                bin.display(),
                log_path.display(),
                tail(&log_path, 5)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http_anything_else_https() {
        assert_eq!(base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(base_url("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(
            base_url("registry.example:443"),
            "https://registry.example:443"
        );
    }

    #[test]
    fn the_config_names_storage_and_address() {
        let y = config_yaml("127.0.0.1:5001".parse().unwrap(), Path::new("/d/storage"));
        assert!(y.contains("rootdirectory: /d/storage"), "{y}");
        assert!(y.contains("addr: 127.0.0.1:5001"), "{y}");
    }

    #[tokio::test]
    async fn a_registry_off_loopback_is_refused_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let e = ensure(
            "0.0.0.0:5000".parse().unwrap(),
            dir.path(),
            Path::new("/nonexistent/docker-registry"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("loopback only"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_binary_names_the_package_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        // Port 1 on loopback: nothing answers there.
        let e = ensure(
            "127.0.0.1:1".parse().unwrap(),
            dir.path(),
            Path::new("/nonexistent/docker-registry"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("apt-get install docker-registry"), "{e}");
        assert!(e.contains("--no-registry"), "{e}");
    }
}
