//! The embeddable MQTT broker of a Lattice fleet, with device authentication.
//!
//! # Why rumqttd
//!
//! The fleet manager must run a broker in-process for the one-machine setup (`lattice up`), with
//! no external service to install. [rumqttd] is a pure-Rust, embeddable MQTT 3.1.1/5 broker
//! built for many device connections, and it offers an asynchronous authentication hook on
//! CONNECT, so node credentials can be checked against the fleet's store. At larger scale an
//! operator may point fleet and nodes at an external broker instead; nothing else in Lattice
//! depends on this crate (the firmware never links rumqttd).
//!
//! # Trust does not live in the broker
//!
//! rumqttd authenticates connections but has **no per-topic ACLs**: any authenticated client
//! may publish to or subscribe to any topic, including another node's. So the broker is only a
//! router. Authorization lives in the message layer (crate `lattice-wire`): the fleet signs
//! everything it sends, nodes sign what they publish, a per-sender counter stops replays, and
//! targets and secrets are encrypted to the receiving node's key. A node holding its own broker
//! credential can therefore neither read another node's secrets nor speak for it. The broker's
//! authentication keeps strangers off the fleet's broker and bounds who can load it.
//!
//! # How the fleet plugs in
//!
//! The fleet implements [`Authenticator`] (rule: `client_id == username` and the password
//! matches the node's broker credential) and calls [`start`]:
//!
//! ```no_run
//! use std::sync::Arc;
//! use lattice_broker::{AuthFuture, Authenticator, BrokerConfig};
//!
//! struct Nodes; // the fleet's credential store
//!
//! impl Authenticator for Nodes {
//!     fn authenticate<'a>(&'a self, client_id: &'a str, username: &'a str, password: &'a str)
//!         -> AuthFuture<'a>
//!     {
//!         Box::pin(async move { client_id == username && password == "looked up in the store" })
//!     }
//! }
//!
//! let config = BrokerConfig {
//!     tls_listen: Some("0.0.0.0:8883".parse().unwrap()),
//!     tls_cert_pem: Some("/var/lib/lattice/broker.crt".into()),
//!     tls_key_pem: Some("/var/lib/lattice/broker.key".into()),
//!     ..BrokerConfig::default()
//! };
//! let broker = lattice_broker::start(config, Arc::new(Nodes))?;
//! println!("MQTT on {} and TLS on {:?}", broker.local_addr(), broker.tls_local_addr());
//! // ... keep `broker` alive: dropping it stops the broker.
//! # Ok::<(), lattice_broker::BrokerError>(())
//! ```
//!
//! # Parts
//!
//! - MQTT 3.1.1 on plain TCP (`listen`, meant for loopback) and, optionally, MQTT 5 on plain TCP
//!   (`v5_listen`), each a rumqttd listener on its own thread.
//! - MQTT 3.1.1 over TLS (`tls_listen`): this crate terminates TLS (rustls, one task per
//!   handshake, bounded by the connect timeout) and forwards the stream to the plain listener,
//!   because rumqttd's own TLS listener handshakes serially in its accept loop. rumqttd runs
//!   each listener on a single thread and accepts one connection per timer tick, so the TLS
//!   connections are spread over the main listener plus up to three more on loopback (one per
//!   CPU, at most four in all).
//! - A refused CONNECT is answered by closing the connection (rumqttd sends no CONNACK refusal
//!   code; clients see the connection closed before CONNACK).
//!
//! # Operating notes
//!
//! - rumqttd logs through `tracing`. Neither it nor this crate logs passwords, with one
//!   exception in rumqttd: a client that sends a *second* CONNECT on an established connection
//!   has that packet, password included, logged at WARN by `rumqttd::router::routing`. A
//!   filter directive `rumqttd::router::routing=error` suppresses it.
//! - Each connection costs one file descriptor, and a TLS connection three (device socket,
//!   loopback hop, rumqttd's side). Raise `RLIMIT_NOFILE` (systemd `LimitNOFILE=`) accordingly.
//! - Clients must allow packets up to `max_payload_bytes` (rumqttc's default limit is 10 KiB).
//! - rumqttd's router is one thread and matches topics to filters by scanning: the first
//!   publish on a topic costs one match per subscription filter, and a new filter one match per
//!   known topic. With a topic and a filter per node this grows with the square of the fleet
//!   (measured with 9,000 nodes on 2 cores: about 18 s for the first status from every node,
//!   25 s for the first target to every node; later ones 1.5 s and 0.5 s). PINGREQs wait behind
//!   this, so clients need a keep-alive longer than the stall (60 s was enough at 9,000; 15 s
//!   was not). `tests/load.rs` measures it.
//! - A subscriber that falls behind by more than its filter's in-memory log loses messages
//!   ([`LogLimits`]). Only the `fan_in_filters` (by default one per upward channel,
//!   `lattice/v1/nodes/+/status` etc.) get a large log; a consumer subscribed to
//!   `lattice/v1/nodes/+/+` instead gets the small per-node size and, in a burst from 4,500
//!   nodes, received 187 messages.
//!
//! [rumqttd]: https://github.com/bytebeamio/rumqtt

mod auth;
mod broker;
mod config;
mod error;
mod handle;
mod listener;
mod settings;
mod tls;
mod tls_proxy;

use std::sync::Arc;

pub use auth::{AuthFuture, Authenticator};
pub use config::{BrokerConfig, LogLimits};
pub use error::BrokerError;
pub use handle::BrokerHandle;

/// Starts the broker; returns once every listener is listening.
///
/// Errors, rather than panics, on an invalid configuration, an unreadable or unusable
/// certificate or key, and an address that cannot be bound (e.g. port in use). It blocks the
/// calling thread for the few milliseconds the listeners take to bind. Authentication futures
/// run on the Tokio runtime `start` is called from, if any.
pub fn start(
    config: BrokerConfig,
    auth: Arc<dyn Authenticator>,
) -> Result<BrokerHandle, BrokerError> {
    broker::start(config, auth)
}
