//! `latticed`, the Lattice node supervisor.
//!
//! On first start it makes the node's keys, registers with the fleet over pinned HTTPS
//! ([`register`]), and from then on runs the MQTT control loop ([`agent`]): hello and status
//! heartbeats signed with the node key, targets from the fleet checked, replay-protected and
//! applied, events and telemetry queued on disk ([`outbox`]) while the broker is away.
//!
//! [`daemon::run`] is the whole binary as a library call; [`agent::Agent`] runs the loop for a
//! node that is already registered (tests start it in-process that way).

pub mod agent;
pub mod backoff;
pub mod cgroup;
pub mod config;
pub mod daemon;
pub mod firewall;
pub mod fleet_pin;
pub mod identity;
pub mod inventory;
pub mod outbox;
pub mod owner;
/// Pinned TLS (moved to `lattice-wire` so the fleet's CLI shares it without linking latticed).
pub use lattice_wire::pin;
pub mod reconcile;
pub mod register;
pub mod runtime;
pub mod shutdown;
pub mod state_dir;
pub mod tunnel;
pub mod upstream;
pub mod volumes;
pub mod watchdog;
pub mod wifi;
pub mod workload_upstreams;
