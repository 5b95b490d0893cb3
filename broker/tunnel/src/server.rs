//! The gateway's end: accepts nodes' tunnels (QUIC over UDP), authorizes each by its key, and
//! opens streams to a named node's workload port.
//!
//! One tunnel per node: a newer connection from the same node replaces the older one (the
//! node reconnected after a network change; the old one would time out anyway).
//!
//! Upstreams (ADR 0011): a node may open streams too, each naming one upstream (`registry`);
//! the gateway's [`Upstreams`] decides, by name and node, and connects it. Until one is set
//! with [`TunnelServer::serve_upstreams`], every such stream is refused as not declared.

use crate::proto::{self, Decoded, LogsOpen, Open, Reply, UpstreamOpen};
use crate::stream::{transport, TunnelStream};
use lattice_wire::rotation::RotationChain;
use lattice_wire::{IdentityKey, IdentityPublic};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A byte stream an upstream stream is joined to.
pub trait UpstreamIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpstreamIo for T {}

/// The connection to an upstream (the gateway may wrap it to count bytes or hold a limit).
pub type UpstreamConn = Box<dyn UpstreamIo>;

/// The gateway's side of upstreams: whether `node` may use the upstream it names, and the
/// connection to it. Only a name reaches this; the address is the implementation's own.
pub trait Upstreams: Send + Sync + 'static {
    fn connect<'a>(
        &'a self,
        node: &'a str,
        up: &'a UpstreamOpen,
    ) -> Pin<Box<dyn Future<Output = Result<UpstreamConn, Reply>> + Send + 'a>>;

    /// A stream this connected has ended, and why (after its connection was dropped, so
    /// whatever it held is released). For counting; the default does nothing.
    fn ended(&self, _node: &str, _up: &UpstreamOpen, _end: UpstreamEnd) {}
}

/// How a carried upstream stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEnd {
    /// Both sides finished (or one closed and the other followed).
    Closed,
    /// Either side failed (a reset, a refused write).
    Error,
    /// No byte moved either way for [`ServerOptions::upstream_idle_timeout`]: the gateway
    /// closed it.
    IdleTimeout,
}

impl UpstreamEnd {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamEnd::Closed => "closed",
            UpstreamEnd::Error => "error",
            UpstreamEnd::IdleTimeout => "idle_timeout",
        }
    }
}

impl std::fmt::Display for UpstreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// How long a node has to send the header of a stream it opened (an upstream).
    pub upstream_header_timeout: Duration,
    /// An upstream stream that moves no byte either way for this long is closed by the
    /// gateway (its connection dropped, so whatever it held, a per-node slot, is released).
    /// Any byte in either direction starts the wait again, so a slow transfer is never cut.
    pub upstream_idle_timeout: Duration,
    /// The fleet's key rotation chain, served in the certificate (empty: never rotated).
    pub rotation_chain: RotationChain,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            handshake_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(10),
            upstream_header_timeout: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(300),
            rotation_chain: RotationChain::default(),
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
    upstreams: Arc<OnceLock<Arc<dyn Upstreams>>>,
}

impl TunnelServer {
    /// Binds UDP `addr` and starts accepting nodes (needs a tokio runtime).
    pub fn bind(
        addr: SocketAddr,
        fleet: &IdentityKey,
        authorizer: Arc<dyn Authorizer>,
        opts: ServerOptions,
    ) -> Result<TunnelServer, ServerError> {
        let crypto = crate::tls::server_crypto_with_chain(fleet, &opts.rotation_chain)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| ServerError::Bind { addr, source })?;
        let server = TunnelServer {
            endpoint,
            nodes: Arc::default(),
            opts,
            upstreams: Arc::default(),
        };
        tokio::spawn(server.clone().accept_loop(authorizer));
        Ok(server)
    }

    /// Serves the streams nodes open (upstreams) with `upstreams`; set once (later calls are
    /// ignored). Before it is set such streams are refused with `UpstreamNotDeclared`.
    pub fn serve_upstreams(&self, upstreams: Arc<dyn Upstreams>) {
        let _ = self.upstreams.set(upstreams);
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
        tokio::spawn(accept_upstreams(
            conn.clone(),
            node.clone(),
            self.upstreams.clone(),
            UpstreamTimeouts {
                header: self.opts.upstream_header_timeout,
                idle: self.opts.upstream_idle_timeout,
            },
        ));
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

/// The waits of a node-opened stream: for its header, and for a byte once it is carried.
#[derive(Debug, Clone, Copy)]
struct UpstreamTimeouts {
    header: Duration,
    idle: Duration,
}

/// Accepts the streams `node` opens until its connection ends; each is one upstream request.
async fn accept_upstreams(
    conn: quinn::Connection,
    node: String,
    upstreams: Arc<OnceLock<Arc<dyn Upstreams>>>,
    timeouts: UpstreamTimeouts,
) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let node = node.clone();
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            carry_upstream(
                TunnelStream::new(send, recv),
                &node,
                upstreams.get().cloned(),
                timeouts,
            )
            .await
        });
    }
}

/// One node-opened stream: header, decision, reply, then bytes both ways until either side
/// ends or no byte has moved for the idle timeout.
async fn carry_upstream(
    mut stream: TunnelStream,
    node: &str,
    upstreams: Option<Arc<dyn Upstreams>>,
    timeouts: UpstreamTimeouts,
) {
    let header = tokio::time::timeout(timeouts.header, async {
        let mut buf = Vec::with_capacity(proto::MAX_UPSTREAM_LEN);
        let mut chunk = [0u8; 64];
        loop {
            if let Decoded::Done(up, n) = proto::decode_upstream(&buf)? {
                return Ok((up, buf.split_off(n)));
            }
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 || buf.len() > proto::MAX_UPSTREAM_LEN {
                return Err(proto::ProtoError::Truncated);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (up, extra) = match header {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::info!(%node, error = %e, "upstream stream with a bad header");
            let _ = stream
                .write_all(&proto::encode_reply(Reply::BadRequest))
                .await;
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => {
            tracing::info!(%node, "upstream stream sent no header in time");
            return;
        }
    };
    let Some(upstreams) = upstreams else {
        let _ = stream
            .write_all(&proto::encode_reply(Reply::UpstreamNotDeclared))
            .await;
        let _ = stream.shutdown().await;
        return;
    };
    let upstream = match upstreams.connect(node, &up).await {
        Ok(c) => c,
        Err(reply) => {
            let _ = stream.write_all(&proto::encode_reply(reply)).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let end = carry_connected(stream, upstream, extra, node, &up, timeouts.idle).await;
    // The connection (and what it holds) is dropped by now.
    upstreams.ended(node, &up, end);
}

/// Bytes both ways between an accepted upstream stream and its connection, until either side
/// ends or nothing has moved for `idle`; drops both before returning.
async fn carry_connected(
    mut stream: TunnelStream,
    upstream: UpstreamConn,
    extra: Vec<u8>,
    node: &str,
    up: &UpstreamOpen,
    idle: Duration,
) -> UpstreamEnd {
    // Every byte either way passes through the connection: reads are the upstream's bytes
    // toward the node, writes the node's toward the upstream.
    let mut upstream = Watched::new(upstream);
    let activity = upstream.activity.clone();
    if stream
        .write_all(&proto::encode_reply(Reply::Ok))
        .await
        .is_err()
    {
        return UpstreamEnd::Error;
    }
    if !extra.is_empty() && upstream.write_all(&extra).await.is_err() {
        return UpstreamEnd::Error;
    }
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut upstream, 64 * 1024, 64 * 1024);
    let end = tokio::select! {
        r = copy => match r {
            Ok(_) => UpstreamEnd::Closed,
            Err(e) => {
                tracing::debug!(%node, upstream = %up.name, error = %e, "upstream stream ended with an error");
                UpstreamEnd::Error
            }
        },
        _ = activity.quiet_for(idle) => UpstreamEnd::IdleTimeout,
    };
    if end == UpstreamEnd::IdleTimeout {
        tracing::info!(%node, upstream = %up.name, idle_secs = idle.as_secs_f64(), "idle upstream stream closed");
        // The node reads the end of the stream; the upstream's connection is closed on drop.
        // Bounded: an upstream that does not take its shutdown must not hold the slot.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.shutdown().await;
            let _ = upstream.shutdown().await;
        })
        .await;
    }
    end
}

/// When a byte last moved through a [`Watched`] connection.
#[derive(Debug, Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long nothing has moved.
    fn quiet(&self) -> Duration {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        last.elapsed()
    }

    /// Returns once nothing has moved for `idle`.
    async fn quiet_for(&self, idle: Duration) {
        loop {
            let quiet = self.quiet();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A connection that records when a byte last passed, either way.
struct Watched<T> {
    io: T,
    activity: Activity,
}

impl<T> Watched<T> {
    fn new(io: T) -> Self {
        Watched {
            io,
            activity: Activity::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
