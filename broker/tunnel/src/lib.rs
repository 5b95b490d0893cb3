//! The tunnel between a node and the fleet's gateway.
//!
//! Provider machines sit behind NAT with no inbound ports, so the node dials out: one QUIC
//! connection per node to the gateway, TLS 1.3 inside, both ends identified by their Ed25519
//! keys ([`tls`]). The gateway opens one QUIC stream per consumer connection; QUIC gives every
//! stream its own flow control, so a slow consumer stalls only its own stream. Each stream
//! starts with a small header ([`proto`]) naming a workload id and a port, never an address;
//! the node accepts it only for a workload of its current target and a port that workload
//! declares ([`policy`]), and dials the container itself ([`client::Dialer`]).
//!
//! * [`proto`] — the stream-open header and reply; pure, no I/O.
//! * [`policy`] — the node's rule for a stream; pure.
//! * [`tls`] — certificates from identity keys, the client-key verifier, QUIC crypto configs.
//! * [`server`] — the gateway's end: accepts and authorizes nodes, opens streams.
//! * [`client`] — the node's end: connects, reconnects with backoff, serves streams.
//!
//! The other direction, upstreams: the node opens a stream naming an upstream the fleet
//! declared (`registry`), never an address; the gateway resolves the name and carries the
//! bytes ([`client::UpstreamOpener`], [`server::Upstreams`], docs/adr/0011-tunnel-upstreams.md).
//!
//! Why QUIC (quinn) and not TLS + yamux: docs/adr/0006-tunnel-transport-quic.md.

pub mod client;
pub mod policy;
pub mod proto;
pub mod server;
pub mod stream;
pub mod tls;

pub use client::{
    ClientHandle, ClientOptions, Dialer, LogReader, TunnelState, UpstreamError, UpstreamOpener,
};
pub use proto::{LogsOpen, Open, Reply, UpstreamOpen};
pub use server::{
    Authorizer, OpenError, ServerOptions, TunnelServer, UpstreamConn, UpstreamEnd, UpstreamIo,
    Upstreams,
};
pub use stream::TunnelStream;
