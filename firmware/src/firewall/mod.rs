//! The egress firewall around workload networks (issue 3, item 5): what a workload's containers
//! may reach. Docker alone gives an `Internal` network no route out, but it still lets a
//! container talk to the host itself (any address of the host, through the bridge's gateway),
//! and a network with egress gets NAT to everything the host reaches, the provider's LAN
//! included. This module closes both:
//!
//! - **forward** (traffic routed through the host): from a workload bridge to any private,
//!   loopback, link-local, shared (CGNAT), multicast or reserved IPv4 range ([`DENIED_RANGES`])
//!   is rejected, whatever the workload declared. What is left is the public internet, reached
//!   only by workloads that declared egress (the others sit on `Internal` networks that Docker
//!   does not route at all).
//! - **input** (traffic to the host's own addresses): from a workload bridge only replies to
//!   connections the host opened (the tunnel dialling the workload) are accepted; everything
//!   else is rejected, so no service on the host is reachable from a workload.
//!
//! IPv6 is off inside every container (`net.ipv6.conf.all.disable_ipv6=1`, see
//! `runtime::hardening`), so there is no IPv6 path to filter.
//!
//! Ownership: every bridge gets a name derived from the node id and the workload id
//! ([`bridge_name`]); each node has two chains of its own ([`Chains`]) named from a hash of its
//! id, jumped to from Docker's `DOCKER-USER` chain (forward) and from `INPUT`, and every rule
//! carries a comment with the node id and the workload id. A node rewrites only its own chains
//! ([`Firewall::sync`] is declarative: the whole set of the node's workloads each time), so
//! several nodes on one host never touch each other's rules.
//!
//! [`plan`] turns the set into rules without I/O; [`iptables`] applies them with
//! `iptables-restore`; [`fake`] records them for tests of the callers.

pub mod fake;
pub mod iptables;
pub mod plan;

use sha2::{Digest, Sha256};

/// One workload network the firewall guards.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Guarded {
    pub workload_id: String,
    /// Linux interface name of the workload's bridge ([`bridge_name`]).
    pub bridge: String,
    /// The workload declared egress (informational: forward rules are the same for all; a
    /// workload without egress is on an `Internal` network that Docker does not route).
    pub egress: bool,
    /// The workload's upstream listeners: its bridge's own address on the host and the TCP
    /// ports latticed listens on there (`runtime::hardening::upstream_addrs`), the one thing
    /// on the host the workload may connect to. `None`: the workload declares no upstream.
    pub upstreams: Option<UpstreamPorts>,
}

/// Where a workload's upstream listeners are: `gateway:first..first+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UpstreamPorts {
    pub gateway: std::net::Ipv4Addr,
    pub first: u16,
    pub count: u16,
}

/// IPv4 ranges no workload may reach, with what each one is.
pub const DENIED_RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    (
        "169.254.0.0/16",
        "link-local (cloud metadata services live here)",
    ),
    ("172.16.0.0/12", "private (Docker's own bridges)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
];

/// The node's two chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chains {
    /// Jumped to from `DOCKER-USER` (which Docker puts first in `FORWARD`).
    pub forward: String,
    /// Jumped to from `INPUT`.
    pub input: String,
}

fn short_hash(parts: &[&str], chars: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut s = hex::encode(h.finalize());
    s.truncate(chars);
    s
}

/// Chain names for a node: `LTF-<20 hex>` and `LTI-<20 hex>` (iptables allows 28 characters,
/// node ids are longer, so the id itself goes into each rule's comment).
pub fn chains(node_id: &str) -> Chains {
    let h = short_hash(&[node_id], 20);
    Chains {
        forward: format!("LTF-{h}"),
        input: format!("LTI-{h}"),
    }
}

/// Interface name of a workload's bridge: `lt` + 13 hex characters of a hash of the node id and
/// the workload id (Linux allows 15 characters). Set through Docker's
/// `com.docker.network.bridge.name` option so the firewall can name it before the network
/// exists.
pub fn bridge_name(node_id: &str, workload_id: &str) -> String {
    format!("lt{}", short_hash(&[node_id, workload_id], 13))
}

/// Why the firewall could not be set.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A tool is missing: the message names the Debian package.
    #[error("firewall: {0}")]
    Missing(String),
    /// The kernel or the tool refused the rules.
    #[error("firewall: {tool} failed: {reason}")]
    Refused { tool: String, reason: String },
}

/// Where the rules are applied. `sync` replaces the node's whole rule set with the one given
/// (an empty set leaves no chains behind); it must be safe to call from several tasks and
/// several processes at once.
pub trait Firewall: Send + Sync + std::fmt::Debug {
    fn sync(&self, node_id: &str, guarded: &[Guarded]) -> Result<(), FirewallError>;
    /// Removes the node's chains and the jumps to them (a node leaving the host).
    fn clear(&self, node_id: &str) -> Result<(), FirewallError>;
}
