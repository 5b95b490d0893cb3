//! The node's end: keeps one QUIC connection to the gateway (reconnecting with backoff),
//! accepts the streams the gateway opens, and connects each one only where the node's
//! [`Dialer`] agrees (a workload of its current target, a declared port). It also opens
//! streams of its own toward the upstreams the fleet declared ([`UpstreamOpener`], ADR 0011).

use crate::proto::{self, Decoded, LogsOpen, Open, Reply, Request, UpstreamOpen};
use crate::stream::{transport, TunnelStream};
use lattice_wire::{IdentityKey, IdentityPublic};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A workload's log output as the node reads it from its container engine.
pub type LogReader = Pin<Box<dyn AsyncRead + Send>>;

/// Connects an accepted stream to a workload, or says why not.
pub trait Dialer: Send + Sync + 'static {
    fn dial(
        &self,
        open: Open,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, Reply>> + Send + '_>>;

    /// The workload's logs, as asked. A dialer that keeps no logs refuses with `Unavailable`.
    fn logs(
        &self,
        logs: LogsOpen,
    ) -> Pin<Box<dyn Future<Output = Result<LogReader, Reply>> + Send + '_>> {
        let _ = logs;
        Box::pin(async { Err(Reply::Unavailable) })
    }
}

/// Where the tunnel is, as seen by tests and the daemon's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    Connecting,
    Connected {
        gateway: SocketAddr,
    },
    /// The last attempt failed or the connection was lost; retrying after a backoff.
    Down {
        reason: String,
    },
    Stopped,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of the gateway's tunnel listener (UDP).
    pub gateway: String,
    pub node_key: IdentityKey,
    pub fleet_key: IdentityPublic,
    /// Where the pinned fleet key lives, when it follows rotations (latticed's persisted pin);
    /// `None`: `fleet_key`, in memory.
    pub fleet_pin: Option<Arc<dyn lattice_wire::pin::PinHolder>>,
    /// How long one connection attempt (resolve + handshake) may take.
    pub connect_timeout: Duration,
    /// How long the gateway has to send a stream's open header.
    pub header_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl ClientOptions {
    pub fn new(gateway: String, node_key: IdentityKey, fleet_key: IdentityPublic) -> Self {
        ClientOptions {
            gateway,
            node_key,
            fleet_key,
            fleet_pin: None,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

/// A running tunnel client; stops when dropped or on [`ClientHandle::stop`].
pub struct ClientHandle {
    state: watch::Receiver<TunnelState>,
    stop: watch::Sender<bool>,
    conn: watch::Receiver<Option<quinn::Connection>>,
}

impl ClientHandle {
    pub fn state(&self) -> watch::Receiver<TunnelState> {
        self.state.clone()
    }

    /// Opens streams toward the gateway's upstreams over this client's tunnel.
    pub fn upstreams(&self) -> UpstreamOpener {
        UpstreamOpener {
            conn: self.conn.clone(),
        }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the client (needs a tokio runtime).
pub fn spawn(
    opts: ClientOptions,
    dialer: Arc<dyn Dialer>,
) -> Result<ClientHandle, crate::tls::TlsError> {
    let pin = opts
        .fleet_pin
        .clone()
        .unwrap_or_else(|| lattice_wire::pin::MemoryPin::shared(opts.fleet_key));
    let crypto = crate::tls::client_crypto_with(&opts.node_key, pin)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let (state_tx, state) = watch::channel(TunnelState::Connecting);
    let (stop, stop_rx) = watch::channel(false);
    let (conn_tx, conn) = watch::channel(None);
    tokio::spawn(run(opts, config, dialer, state_tx, conn_tx, stop_rx));
    Ok(ClientHandle { state, stop, conn })
}

/// Why an upstream stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the tunnel to the gateway is down")]
    NoTunnel,
    #[error("the gateway refused upstream {name}: {reply}")]
    Refused { name: String, reply: Reply },
    #[error("upstream {name}: the gateway did not answer in time")]
    Timeout { name: String },
    #[error("upstream {name}: {reason}")]
    Stream { name: String, reason: String },
    #[error(transparent)]
    Proto(#[from] proto::ProtoError),
}

/// Opens streams toward the upstreams the fleet declared for this node. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamOpener {
    conn: watch::Receiver<Option<quinn::Connection>>,
}

impl UpstreamOpener {
    /// A stream to upstream `name`, once the gateway has connected it. Waits up to `wait` for
    /// the tunnel (it may be reconnecting) and as long again for the gateway's answer.
    pub async fn open(&self, name: &str, wait: Duration) -> Result<TunnelStream, UpstreamError> {
        let header = proto::encode_upstream(&UpstreamOpen { name: name.into() })?;
        let mut conn = self.conn.clone();
        let conn = match tokio::time::timeout(wait, conn.wait_for(Option::is_some)).await {
            Ok(Ok(c)) => c.clone().ok_or(UpstreamError::NoTunnel)?,
            _ => return Err(UpstreamError::NoTunnel),
        };
        let stream_err = |e: &dyn std::fmt::Display| UpstreamError::Stream {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        let attempt = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream_err(&e))?;
            send.write_all(&header).await.map_err(|e| stream_err(&e))?;
            let mut buf = [0u8; proto::REPLY_LEN];
            recv.read_exact(&mut buf)
                .await
                .map_err(|e| stream_err(&e))?;
            match proto::decode_reply(&buf)? {
                Decoded::Done(Reply::Ok, _) => Ok(TunnelStream::new(send, recv)),
                Decoded::Done(reply, _) => Err(UpstreamError::Refused {
                    name: name.to_owned(),
                    reply,
                }),
                Decoded::NeedMore(_) => Err(stream_err(&"short reply")),
            }
        };
        tokio::time::timeout(wait, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Timeout {
                    name: name.to_owned(),
                })
            })
    }
}

async fn run(
    opts: ClientOptions,
    config: quinn::ClientConfig,
    dialer: Arc<dyn Dialer>,
    state: watch::Sender<TunnelState>,
    current: watch::Sender<Option<quinn::Connection>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt: u32 = 0;
    loop {
        let _ = state.send(TunnelState::Connecting);
        let session = async {
            let conn = connect(&opts, &config).await?;
            attempt = 0;
            let gateway = conn.remote_address();
            tracing::info!(%gateway, "tunnel connected");
            let _ = state.send(TunnelState::Connected { gateway });
            current.send_replace(Some(conn.clone()));
            Ok::<String, String>(serve(conn, &dialer, opts.header_timeout).await)
        };
        let reason = tokio::select! {
            r = session => match r { Ok(reason) | Err(reason) => reason },
            _ = stop.wait_for(|s| *s) => break,
        };
        current.send_replace(None);
        let delay = backoff(&opts, attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "tunnel down");
        let _ = state.send(TunnelState::Down { reason });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    current.send_replace(None);
    let _ = state.send(TunnelState::Stopped);
}

/// Equal-jitter exponential backoff, like the node's MQTT link.
fn backoff(opts: &ClientOptions, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    let nominal = opts
        .backoff_base
        .saturating_mul(factor)
        .min(opts.backoff_cap);
    let half = nominal / 2;
    let jitter = rand::random_range(0..=(nominal - half).as_millis() as u64);
    half + Duration::from_millis(jitter)
}

async fn connect(
    opts: &ClientOptions,
    config: &quinn::ClientConfig,
) -> Result<quinn::Connection, String> {
    let attempt = async {
        let addr = tokio::net::lookup_host(&opts.gateway)
            .await
            .map_err(|e| format!("resolving gateway {}: {e}", opts.gateway))?
            .next()
            .ok_or_else(|| format!("gateway {} resolves to no address", opts.gateway))?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| format!("binding a UDP socket for the tunnel: {e}"))?;
        let conn = endpoint
            .connect_with(config.clone(), addr, "lattice-tunnel")
            .map_err(|e| format!("connecting to gateway {addr}: {e}"))?
            .await
            .map_err(|e| format!("gateway {addr}: {e}"))?;
        Ok(conn)
    };
    tokio::time::timeout(opts.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("gateway {}: connect timed out", opts.gateway)))
}

/// Accepts streams until the connection ends; returns why it ended.
async fn serve(
    conn: quinn::Connection,
    dialer: &Arc<dyn Dialer>,
    header_timeout: Duration,
) -> String {
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let dialer = dialer.clone();
                tokio::spawn(async move {
                    handle(TunnelStream::new(send, recv), &*dialer, header_timeout).await
                });
            }
            Err(e) => return e.to_string(),
        }
    }
}

async fn handle(mut stream: TunnelStream, dialer: &dyn Dialer, header_timeout: Duration) {
    let header = tokio::time::timeout(
        header_timeout,
        read_header(&mut stream, proto::MAX_REQUEST_LEN, proto::decode_request),
    )
    .await;
    let (request, extra) = match header {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "tunnel stream with a bad open header");
            let _ = stream
                .write_all(&proto::encode_reply(Reply::BadRequest))
                .await;
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => return,
    };
    let open = match request {
        Request::Connect(open) => open,
        Request::Logs(logs) => return send_logs(stream, dialer, logs).await,
    };
    let mut tcp = match dialer.dial(open.clone()).await {
        Ok(tcp) => tcp,
        Err(reply) => {
            tracing::info!(workload = %open.workload, port = open.port, %reply, "tunnel stream refused");
            let _ = stream.write_all(&proto::encode_reply(reply)).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if stream
        .write_all(&proto::encode_reply(Reply::Ok))
        .await
        .is_err()
    {
        return;
    }
    if !extra.is_empty() && tcp.write_all(&extra).await.is_err() {
        return;
    }
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut tcp, 64 * 1024, 64 * 1024).await
    {
        tracing::debug!(workload = %open.workload, error = %e, "tunnel stream ended with an error");
    }
}

/// Sends a workload's logs down the stream until they end (the stream is then finished) or
/// the gateway goes away (it drops its end: a follow stops at once, not at the next line).
async fn send_logs(mut stream: TunnelStream, dialer: &dyn Dialer, logs: LogsOpen) {
    let mut reader = match dialer.logs(logs.clone()).await {
        Ok(r) => r,
        Err(reply) => {
            tracing::info!(workload = %logs.workload, %reply, "logs request refused");
            let _ = stream.write_all(&proto::encode_reply(reply)).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    if stream
        .write_all(&proto::encode_reply(Reply::Ok))
        .await
        .is_err()
    {
        return;
    }
    let TunnelStream {
        mut send, mut recv, ..
    } = stream;
    let gone = async {
        let mut buf = [0u8; 64];
        // The gateway sends nothing after its header; EOF or a reset means it stopped reading.
        while matches!(recv.read(&mut buf).await, Ok(Some(_))) {}
    };
    tokio::select! {
        r = tokio::io::copy(&mut reader, &mut send) => {
            match r {
                Ok(_) => { let _ = send.finish(); }
                Err(e) => tracing::debug!(workload = %logs.workload, error = %e, "logs stream ended with an error"),
            }
        }
        _ = gone => tracing::debug!(workload = %logs.workload, "the gateway stopped reading logs"),
    }
}

/// Reads until `decode` is done; returns the value and any bytes read past it.
async fn read_header<R, T>(
    r: &mut R,
    max: usize,
    decode: impl Fn(&[u8]) -> Result<Decoded<T>, proto::ProtoError>,
) -> Result<(T, Vec<u8>), proto::ProtoError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(max);
    let mut chunk = [0u8; 128];
    loop {
        if let Decoded::Done(v, n) = decode(&buf)? {
            return Ok((v, buf.split_off(n)));
        }
        let n = r.read(&mut chunk).await.unwrap_or(0);
        if n == 0 || buf.len() > max {
            return Err(proto::ProtoError::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
