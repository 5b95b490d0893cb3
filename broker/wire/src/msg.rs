//! Message types carried inside envelopes.
//!
//! postcard is not self-describing: changing any of these types changes the wire format, and
//! must come with a bump of [`crate::PROTOCOL_VERSION`] (receivers accept the previous one too).

use crate::keys::{EncryptionPublic, IdentityPublic};
use crate::topic::Channel;
use serde::{Deserialize, Serialize};

/// What a node's machine is, sent at registration and in every hello.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inventory {
    pub hostname: String,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
    pub kernel: String,
    pub arch: String,
}

/// Live usage, carried by every status (heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Whole-machine CPU busy percent × 100 (0..=10000).
    pub cpu_percent_x100: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    /// 1-minute load average × 100.
    pub load1_x100: u32,
    pub uptime_secs: u64,
}

/// One workload the fleet wants on a node: what to run, with which limits and protections.
///
/// Serialized with serde defaults so the fleet can store it as JSON and add fields without
/// breaking stored targets; on the wire (postcard) every field is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Fleet-made id (`w-…`): names, labels and cgroups carry it.
    pub id: String,
    pub name: String,
    /// Image reference pinned by digest (`registry/repo@sha256:…`).
    pub image: String,
    /// Command (entrypoint and arguments); empty: the image's own.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment, including generated secrets: this is why targets are always sealed.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// CPU limit in thousandths of a core (1000 = one core).
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    /// Most processes the workload may run (fork bombs stop here).
    #[serde(default = "default_pids")]
    pub pids_max: u32,
    #[serde(default)]
    pub health: Option<HealthCheck>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub class: WorkloadClass,
    /// May reach the public internet (never private, loopback or link-local ranges).
    #[serde(default)]
    pub egress: bool,
    /// Capabilities added back after dropping all (e.g. `CHOWN`, `SETUID`), per image.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Ports the workload listens on (reached only through the node's tunnel).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Other workloads this one may connect to, through the node's tunnel and the fleet's
    /// gateway (ADR 0011): the only way out of its network besides `egress`.
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
}

/// A connection a workload may open to a port of another workload, wherever that one runs.
/// latticed listens for it on the workload's own network and carries each connection through
/// its tunnel as upstream `name`; the gateway lets the stream through only because the node's
/// target declares it, and opens it to the workload the fleet placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSpec {
    /// The stream's name (`[a-z0-9-]`, 1 to 32 bytes): [`UpstreamSpec::name_for`].
    pub name: String,
    /// The workload it leads to (its id) and that workload's declared port.
    pub workload: String,
    pub port: u16,
    /// The environment variable in which the container finds `IP:PORT` to connect to.
    pub env: String,
}

impl UpstreamSpec {
    /// The stream name for `port` of workload `workload_id` (`w-…` ids are 18 bytes, so this
    /// is at most 24).
    pub fn name_for(workload_id: &str, port: u16) -> String {
        format!("{workload_id}-{port}")
    }

    /// Whether `env` may name the variable: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes
    /// (checked by the fleet at deploy and again by latticed).
    pub fn valid_env(env: &str) -> bool {
        !env.is_empty()
            && env.len() <= 128
            && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !env.as_bytes()[0].is_ascii_digit()
    }
}

fn default_pids() -> u32 {
    256
}

/// A size-limited volume the workload may write to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub name: String,
    pub mount_path: String,
    pub size_bytes: u64,
}

/// A command run inside the container to judge its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// `AlwaysOn` work (databases, storage, sites) runs 24/7; `Batch` work may be paused outside
/// the provider's availability windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WorkloadClass {
    #[default]
    AlwaysOn,
    Batch,
}

/// What a workload is doing, as the node last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadState {
    /// Image being fetched or container being created.
    Creating,
    Running,
    Healthy,
    Unhealthy,
    /// Paused (batch work outside the availability windows).
    Paused,
    Exited {
        code: i64,
    },
    OomKilled,
    /// The node cannot get the image; `reason` says why.
    ImageMissing {
        reason: String,
    },
    /// Anything else that keeps it from running; `reason` says what.
    Failed {
        reason: String,
    },
}

/// One workload's actual state, reported in every status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub id: String,
    pub state: WorkloadState,
    /// Restarts by the supervisor since the workload was created.
    pub restarts: u32,
}

/// The revisioned desired state of one node. Always sealed to the node's encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Target {
    pub revision: u64,
    pub workloads: Vec<WorkloadSpec>,
    /// Seconds between heartbeats the fleet asks for.
    pub heartbeat_secs: u32,
}

/// Sent by a node after every (re)connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub firmware_version: String,
    pub inventory: Inventory,
    /// The target revision the node has applied (0: none yet).
    pub applied_revision: u64,
}

/// The heartbeat: what the node has applied and how the machine is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub applied_revision: u64,
    pub usage: Usage,
    pub workloads: Vec<WorkloadStatus>,
}

/// Periodic samples that may be dropped under pressure (events are kept first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    pub samples: Vec<(u64, Usage)>,
}

/// Something that happened on the node, delivered in order even across disconnects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub kind: String,
    pub detail: String,
}

/// The MQTT last will, signed at CONNECT; the broker publishes it on an unclean disconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Will {
    pub reason: String,
}

/// The fleet's answer to a registration, sealed to the new node's encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub node_id: String,
    /// Password for the broker (user name and client id are the node id).
    pub broker_password: String,
    /// Broker URLs the node may use, in order of preference (`mqtts://host:port`, `mqtt://…`).
    pub broker_urls: Vec<String>,
    pub heartbeat_secs: u32,
    /// Echo of the keys the fleet registered, so the node can check nothing was swapped.
    pub identity: IdentityPublic,
    pub encryption: EncryptionPublic,
}

/// Every message, tagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    Status(Status),
    Telemetry(Telemetry),
    Event(Event),
    Will(Will),
    Target(Target),
    Registered(Registered),
}

/// The kind of a message, readable (and signed) before the body is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    Hello,
    Status,
    Telemetry,
    Event,
    Will,
    Target,
    Registered,
}

impl MessageKind {
    /// Kinds whose body must be sealed to the recipient (they carry secrets).
    pub fn requires_sealing(self) -> bool {
        matches!(self, MessageKind::Target | MessageKind::Registered)
    }

    /// True for kinds only the fleet may send.
    pub fn from_fleet(self) -> bool {
        matches!(self, MessageKind::Target | MessageKind::Registered)
    }

    /// The MQTT channel this kind travels on (`None`: not sent over MQTT).
    pub fn channel(self) -> Option<Channel> {
        match self {
            MessageKind::Hello => Some(Channel::Hello),
            MessageKind::Status => Some(Channel::Status),
            MessageKind::Telemetry => Some(Channel::Telemetry),
            MessageKind::Event => Some(Channel::Events),
            MessageKind::Will => Some(Channel::Will),
            MessageKind::Target => Some(Channel::Target),
            MessageKind::Registered => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Hello => "hello",
            MessageKind::Status => "status",
            MessageKind::Telemetry => "telemetry",
            MessageKind::Event => "event",
            MessageKind::Will => "will",
            MessageKind::Target => "target",
            MessageKind::Registered => "registered",
        }
    }
}

impl Message {
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Hello(_) => MessageKind::Hello,
            Message::Status(_) => MessageKind::Status,
            Message::Telemetry(_) => MessageKind::Telemetry,
            Message::Event(_) => MessageKind::Event,
            Message::Will(_) => MessageKind::Will,
            Message::Target(_) => MessageKind::Target,
            Message::Registered(_) => MessageKind::Registered,
        }
    }
}
