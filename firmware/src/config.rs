//! latticed's configuration: a TOML file (every key optional, defaults in code), overridden by
//! command-line flags, validated as a whole so that every problem is reported at once, by key.
//!
//! ```toml
//! data_dir = "/var/lib/latticed"
//! provisioning = "lattice1:…"            # or:
//! provisioning_file = "/boot/lattice/provisioning"
//! heartbeat_secs = 10                    # overrides the fleet's choice
//! outbox_max_bytes = 8388608
//! log = "info"
//! runtime = "docker"                     # or "none": record targets, run nothing
//! disk_floor_bytes = 1073741824          # free space kept for the provider: volumes and
//!                                        # image pulls stop here
//! workload_network_pool = "10.197.0.0/16"  # private range for workload networks (a /28 each);
//!                                        # pick one your LAN does not use
//! registry_proxy = "127.0.0.1:5001"      # the fleet's registry through the tunnel (loopback
//!                                        # only; "" = off), see docs/adr/0011
//!
//! [envelope]                             # what the provider donates to all workloads
//! cpu_percent = 50                       # of the whole machine
//! memory_bytes = 4294967296              # default: half of the machine's memory
//! pids_max = 4096
//!
//! [availability]                         # when batch work may run (always-on work always runs)
//! time_zone = "Europe/Berlin"            # default: the machine's zone
//! windows = ["Mon-Fri 19:00-07:00", "Sat-Sun 00:00-24:00"]   # default: none = 24/7
//!
//! [host_load]                            # the owner's processes come first
//! threshold_percent = 50                 # load outside Lattice above which the CPU cap drops
//! min_cpu_percent = 5                    # 0 threshold: off
//! sample_secs = 5
//! ```
//!
//! The provisioning string is needed only until the node has registered; a provisioning file
//! (the image reads it from its FAT partition) is therefore read only when it is needed.

use lattice_wire::register::Provisioning;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where latticed keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/latticed";
/// Default bound of the on-disk outbox: 8 MiB.
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 8 * 1024 * 1024;
const MIN_OUTBOX_MAX_BYTES: u64 = 64 * 1024;
const MAX_OUTBOX_MAX_BYTES: u64 = 1024 * 1024 * 1024;
const MAX_HEARTBEAT_SECS: u32 = 3600;

/// The configuration file, as written. Unknown keys are errors (typos must not pass silently).
/// `Debug` never shows the provisioning string (it holds the token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for keys, registration, epoch, outbox and target.
    pub data_dir: PathBuf,
    /// The provisioning string printed by `lattice tokens create`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<String>,
    /// A file holding the provisioning string (read only while the node is unregistered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_file: Option<PathBuf>,
    /// Seconds between heartbeats; when set, wins over the fleet's registration and targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_secs: Option<u32>,
    /// Bound of the on-disk outbox for messages produced while disconnected.
    pub outbox_max_bytes: u64,
    /// A tracing filter (`info`, `latticed=debug,rumqttc=warn`, …); `RUST_LOG` wins if set.
    pub log: String,
    /// What runs the workloads.
    pub runtime: RuntimeKind,
    /// The provider's caps for all workloads together (the parent cgroup).
    pub envelope: EnvelopeConfig,
    /// Free space kept for the provider on the disk of `data_dir`: new volumes and image pulls
    /// are refused (with this figure in the reason) when they would go below it.
    pub disk_floor_bytes: u64,
    /// The private IPv4 range workload networks get their subnets (a /28 each) from; it must
    /// not be used by the provider's LAN.
    pub workload_network_pool: String,
    /// The provider's weekly windows for batch work.
    pub availability: crate::owner::AvailabilityConfig,
    /// Lowering the envelope's CPU cap while the owner's own processes need the CPU.
    pub host_load: crate::owner::HostLoadConfig,
    /// Loopback address where latticed carries connections to the fleet's registry through
    /// the tunnel (the engine pulls the fleet's images there); empty: no proxy.
    pub registry_proxy: String,
}

/// What runs the workloads of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The machine's Docker engine, inside the node's cgroup envelope.
    Docker,
    /// Nothing: targets are recorded and acknowledged only (development, tests without Docker).
    None,
}

/// The provider envelope as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeConfig {
    /// CPU for all workloads together, in percent of the whole machine (1..=100).
    pub cpu_percent: u32,
    /// Memory for all workloads together; absent: half of the machine's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Processes for all workloads together.
    pub pids_max: u32,
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        EnvelopeConfig {
            cpu_percent: 50,
            memory_bytes: None,
            pids_max: 4096,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            provisioning: None,
            provisioning_file: None,
            heartbeat_secs: None,
            outbox_max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            log: "info".to_string(),
            runtime: RuntimeKind::Docker,
            envelope: EnvelopeConfig::default(),
            disk_floor_bytes: crate::runtime::docker::DEFAULT_DISK_FLOOR,
            workload_network_pool: crate::runtime::subnets::DEFAULT_POOL.to_string(),
            availability: Default::default(),
            host_load: Default::default(),
            registry_proxy: crate::upstream::DEFAULT_REGISTRY_PROXY.to_string(),
        }
    }
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub provisioning: Option<String>,
    pub provisioning_file: Option<PathBuf>,
}

/// Where the provisioning string comes from. `Debug` shows the fleet, never the token.
#[derive(Clone, PartialEq, Eq)]
pub enum ProvisioningSource {
    /// Given inline, already parsed.
    Inline(Box<Provisioning>),
    /// In a file, read and parsed by [`ProvisioningSource::load`] when needed.
    File(PathBuf),
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub provisioning: Option<ProvisioningSource>,
    pub heartbeat_override: Option<u32>,
    pub outbox_max_bytes: u64,
    pub log: String,
    pub runtime: RuntimeKind,
    /// Validated envelope limits (memory resolved against the machine).
    pub envelope: crate::cgroup::EnvelopeLimits,
    pub disk_floor_bytes: u64,
    pub network_pool: crate::runtime::subnets::Pool,
    pub owner: crate::owner::OwnerSettings,
    /// Where the registry proxy listens (always a loopback address); `None`: off.
    pub registry_proxy: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    #[error("provisioning_file {path}: cannot read it: {source}")]
    ProvisioningFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("provisioning_file {path}: {source}")]
    ProvisioningParse {
        path: PathBuf,
        #[source]
        source: lattice_wire::register::ProvisioningError,
    },
}

impl Config {
    /// Reads `path` (absent: all defaults).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The defaults as a commented TOML document (`latticed --print-default-config`).
    pub fn default_toml() -> String {
        let body = toml::to_string(&Config::default()).unwrap_or_default();
        format!(
            "# latticed configuration; every key is optional.\n{body}\
             # provisioning = \"lattice1:...\"   (from `lattice tokens create`)\n\
             # provisioning_file = \"/boot/lattice/provisioning\"\n\
             # heartbeat_secs = 10   (overrides the fleet's interval)\n"
        )
    }

    /// Applies command-line overrides. A provisioning source given on the command line
    /// replaces both provisioning keys of the file.
    pub fn apply(&mut self, o: Overrides) {
        if let Some(d) = o.data_dir {
            self.data_dir = d;
        }
        if o.provisioning.is_some() || o.provisioning_file.is_some() {
            self.provisioning = o.provisioning;
            self.provisioning_file = o.provisioning_file;
        }
    }

    /// Checks every key, reporting all problems together.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: must not be empty".to_string());
        }
        let provisioning = match (self.provisioning, self.provisioning_file) {
            (Some(_), Some(_)) => {
                problems.push("provisioning, provisioning_file: set only one of them".to_string());
                None
            }
            (Some(text), None) => match Provisioning::parse(&text) {
                Ok(p) => Some(ProvisioningSource::Inline(Box::new(p))),
                Err(e) => {
                    problems.push(format!("provisioning: {e}"));
                    None
                }
            },
            (None, Some(path)) if path.as_os_str().is_empty() => {
                problems.push("provisioning_file: must not be empty".to_string());
                None
            }
            (None, Some(path)) => Some(ProvisioningSource::File(path)),
            (None, None) => None,
        };
        if let Some(h) = self.heartbeat_secs {
            if h == 0 || h > MAX_HEARTBEAT_SECS {
                problems.push(format!(
                    "heartbeat_secs: must be between 1 and {MAX_HEARTBEAT_SECS}, got {h}"
                ));
            }
        }
        if !(MIN_OUTBOX_MAX_BYTES..=MAX_OUTBOX_MAX_BYTES).contains(&self.outbox_max_bytes) {
            problems.push(format!(
                "outbox_max_bytes: must be between {MIN_OUTBOX_MAX_BYTES} and \
                 {MAX_OUTBOX_MAX_BYTES}, got {}",
                self.outbox_max_bytes
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log) {
            problems.push(format!("log: not a valid filter ({e})"));
        }
        let memory = self
            .envelope
            .memory_bytes
            .unwrap_or_else(|| half_of_memory().unwrap_or(1 << 30));
        let envelope = crate::cgroup::EnvelopeLimits::new(
            self.envelope.cpu_percent,
            memory,
            self.envelope.pids_max,
        );
        if let Err(e) = &envelope {
            problems.push(format!("envelope: {e}"));
        }
        let network_pool = self
            .workload_network_pool
            .parse()
            .and_then(crate::runtime::subnets::Pool::new)
            .unwrap_or_else(|e| {
                problems.push(format!("workload_network_pool: {e}"));
                Default::default()
            });
        let registry_proxy = match self.registry_proxy.trim() {
            "" => None,
            text => match text.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => Some(a),
                Ok(a) => {
                    problems.push(format!(
                        "registry_proxy: {a} is not a loopback address (the proxy must not be \
                         reachable from the network)"
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("registry_proxy: {text:?}: {e} (expected IP:PORT)"));
                    None
                }
            },
        };
        let owner = crate::owner::OwnerSettings::validate(&self.availability, &self.host_load)
            .unwrap_or_else(|p| {
                problems.extend(p);
                Default::default()
            });
        let (Ok(envelope), true) = (envelope, problems.is_empty()) else {
            return Err(ConfigError::Invalid(problems));
        };
        Ok(Settings {
            data_dir: self.data_dir,
            provisioning,
            heartbeat_override: self.heartbeat_secs,
            outbox_max_bytes: self.outbox_max_bytes,
            log: self.log,
            runtime: self.runtime,
            envelope,
            disk_floor_bytes: self.disk_floor_bytes,
            network_pool,
            owner,
            registry_proxy,
        })
    }
}

/// Half of `MemTotal` from /proc/meminfo.
fn half_of_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024 / 2)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field(
                "provisioning",
                &self.provisioning.as_ref().map(|_| "<redacted>"),
            )
            .field("provisioning_file", &self.provisioning_file)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("outbox_max_bytes", &self.outbox_max_bytes)
            .field("log", &self.log)
            .finish()
    }
}

impl fmt::Debug for ProvisioningSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProvisioningSource::Inline(p) => f
                .debug_struct("Inline")
                .field("url", &p.url)
                .field("fleet_key", &p.fleet_key)
                .field("token", &"<redacted>")
                .finish(),
            ProvisioningSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl ProvisioningSource {
    /// The provisioning config, reading the file if that is where it lives.
    pub fn load(&self) -> Result<Provisioning, ConfigError> {
        match self {
            ProvisioningSource::Inline(p) => Ok((**p).clone()),
            ProvisioningSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    ConfigError::ProvisioningFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                Provisioning::parse(&text).map_err(|source| ConfigError::ProvisioningParse {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
