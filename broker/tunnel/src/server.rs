//! The gateway's end: accepts nodes' tunnels (QUIC over UDP), authorizes each by its key, and
//! opens streams to a named node's workload port.
//!
//! One tunnel per node: a newer connection from the same node replaces the older one (the
//! node reconnected after a network change; the old one would time out anyway).

use crate::proto::{self, Decoded, LogsOpen, Open, Reply};
use crate::stream::{transport, TunnelStream};
use lattice_wire::{IdentityKey, IdentityPublic};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Close codes the gateway sends (the node logs them with the reason text).
pub mod close {
    /// The node's key is unknown or revoked.
    pub const REFUSED: u32 = 1;
    /// The same node connected again.
    pub const REPLACED: u32 = 2;
    /// The gateway is stopping.
    pub const SHUTDOWN: u32 = 3;
}

/// Decides whether a node key may hold a tunnel, and which node it is.
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok(node_id)` for a registered, non-revoked node; `Err(reason)` otherwise (the reason
    /// is sent to the node, so it must not reveal anything but the refusal).
    fn authorize(
        &self,
        key: IdentityPublic,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("binding the tunnel listener on UDP {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a stream to a workload could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("node {0} has no tunnel to this gateway")]
    NodeOffline(String),
    #[error("node {node} refused the stream: {reply}")]
    Refused { node: String, reply: Reply },
    #[error("node {0} did not answer the stream open in time")]
    Timeout(String),
    #[error("tunnel to node {node}: {reason}")]
    Stream { node: String, reason: String },
    #[error(transparent)]
    Proto(#[from] proto::ProtoError),
}

/// Tunable limits of the gateway's end.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long a node has to complete the QUIC handshake and be authorized.
    pub handshake_timeout: Duration,
    /// How long a node has to answer a stream open (it dials the container meanwhile).
    pub open_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            handshake_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(10),
        }
    }
}

type Nodes = Arc<Mutex<HashMap<String, quinn::Connection>>>;

/// The listening gateway end. Cheap to clone.
#[derive(Clone)]
pub struct TunnelServer {
    endpoint: quinn::Endpoint,
    nodes: Nodes,
    opts: ServerOptions,
}

impl TunnelServer {
    /// Binds UDP `addr` and starts accepting nodes (needs a tokio runtime).
    pub fn bind(
        addr: SocketAddr,
        fleet: &IdentityKey,
        authorizer: Arc<dyn Authorizer>,
        opts: ServerOptions,
    ) -> Result<TunnelServer, ServerError> {
        let crypto = crate::tls::server_crypto(fleet)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| ServerError::Bind { addr, source })?;
        let server = TunnelServer {
            endpoint,
            nodes: Arc::default(),
            opts,
        };
        tokio::spawn(server.clone().accept_loop(authorizer));
        Ok(server)
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Ids of the nodes with a tunnel now.
    pub fn connected(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.nodes).keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn is_connected(&self, node: &str) -> bool {
        lock(&self.nodes).contains_key(node)
    }

    /// Cuts a node's tunnel (e.g. after revocation).
    pub fn disconnect(&self, node: &str, reason: &str) {
        if let Some(conn) = lock(&self.nodes).remove(node) {
            conn.close(close::REFUSED.into(), reason.as_bytes());
        }
    }

    /// Stops accepting and closes every tunnel.
    pub fn shutdown(&self) {
        self.endpoint
            .close(close::SHUTDOWN.into(), b"gateway shutting down");
        lock(&self.nodes).clear();
    }

    /// A new stream to `node` with the open header already written.
    async fn start_stream(
        &self,
        node: &str,
        header: &[u8],
    ) -> Result<(quinn::SendStream, quinn::RecvStream), OpenError> {
        let conn = lock(&self.nodes)
            .get(node)
            .cloned()
            .ok_or_else(|| OpenError::NodeOffline(node.to_owned()))?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| stream_err(node, &e))?;
        send.write_all(header)
            .await
            .map_err(|e| stream_err(node, &e))?;
        Ok((send, recv))
    }

    /// Opens a stream to `open.workload`'s `open.port` on `node`; returns it once the node
    /// has connected it to the container.
    pub async fn open(&self, node: &str, open: &Open) -> Result<TunnelStream, OpenError> {
        self.request(node, &proto::encode_open(open)?).await
    }

    /// Asks `node` for `logs.workload`'s logs; returns the stream once the node has accepted.
    /// Read the logs from it; keep it open while they are wanted (a following node stops when
    /// the stream is dropped), and do not shut its write half down.
    pub async fn open_logs(&self, node: &str, logs: &LogsOpen) -> Result<TunnelStream, OpenError> {
        self.request(node, &proto::encode_logs(logs)?).await
    }

    /// Opens a stream with `header` and waits for the node's reply.
    async fn request(&self, node: &str, header: &[u8]) -> Result<TunnelStream, OpenError> {
        let attempt = async {
            let (send, mut recv) = self.start_stream(node, header).await?;
            let mut buf = [0u8; proto::REPLY_LEN];
            recv.read_exact(&mut buf)
                .await
                .map_err(|e| stream_err(node, &e))?;
            match proto::decode_reply(&buf)? {
                Decoded::Done(Reply::Ok, _) => Ok(TunnelStream::new(send, recv)),
                Decoded::Done(reply, _) => Err(OpenError::Refused {
                    node: node.to_owned(),
                    reply,
                }),
                Decoded::NeedMore(_) => Err(stream_err(node, &"short reply")),
            }
        };
        match tokio::time::timeout(self.opts.open_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(OpenError::Timeout(node.to_owned())),
        }
    }

    /// Like [`TunnelServer::open`], without waiting for the node's answer: the caller may
    /// write at once (saving a round trip); the first read fails with `ConnectionRefused` if
    /// the node refused. For protocols where the client speaks first (HTTP).
    pub async fn open_early(&self, node: &str, open: &Open) -> Result<TunnelStream, OpenError> {
        let attempt = async {
            let (send, recv) = self.start_stream(node, &proto::encode_open(open)?).await?;
            Ok(TunnelStream::awaiting_reply(send, recv))
        };
        match tokio::time::timeout(self.opts.open_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(OpenError::Timeout(node.to_owned())),
        }
    }

    async fn accept_loop(self, authorizer: Arc<dyn Authorizer>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let server = self.clone();
            let authorizer = authorizer.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let timeout = server.opts.handshake_timeout;
                match tokio::time::timeout(timeout, server.admit(incoming, &*authorizer)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => {
                        tracing::info!(%remote, %reason, "tunnel refused")
                    }
                    Err(_) => tracing::info!(%remote, "tunnel handshake timed out"),
                }
            });
        }
    }

    /// Handshake, authorization, registration; then watches the connection in the background.
    async fn admit(&self, incoming: quinn::Incoming, auth: &dyn Authorizer) -> Result<(), String> {
        let conn = incoming
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        let key = conn
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|certs| certs.first().and_then(crate::tls::certificate_key));
        let Some(key) = key else {
            conn.close(close::REFUSED.into(), b"no node certificate");
            return Err("no node certificate".into());
        };
        let node = match auth.authorize(key).await {
            Ok(node) => node,
            Err(reason) => {
                conn.close(close::REFUSED.into(), reason.as_bytes());
                return Err(format!("key {key}: {reason}"));
            }
        };
        tracing::info!(%node, remote = %conn.remote_address(), "tunnel up");
        if let Some(old) = lock(&self.nodes).insert(node.clone(), conn.clone()) {
            old.close(close::REPLACED.into(), b"replaced by a newer tunnel");
        }
        let nodes = self.nodes.clone();
        tokio::spawn(async move {
            let why = conn.closed().await;
            let mut map = lock(&nodes);
            if map.get(&node).map(|c| c.stable_id()) == Some(conn.stable_id()) {
                map.remove(&node);
            }
            drop(map);
            tracing::info!(%node, reason = %why, "tunnel down");
        });
        Ok(())
    }
}

fn stream_err(node: &str, e: &dyn std::fmt::Display) -> OpenError {
    OpenError::Stream {
        node: node.to_owned(),
        reason: e.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
