//! The TLS listener: terminates TLS and forwards each connection to the plain MQTT listener.
//!
//! rumqttd has a TLS listener of its own, but it performs each TLS handshake inside its accept
//! loop, without a timeout: one client that opens a TCP connection and never sends a
//! ClientHello stops every later TLS client from connecting (measured with rumqttd 0.20). It
//! also re-reads the certificate files for every connection. Here each handshake runs in its
//! own task under the connect timeout, and the certificate is loaded once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::BrokerError;

/// Pending connections the kernel queues for the TLS listener (reconnect storms).
const BACKLOG: u32 = 1024;

/// Copy buffer per direction per connection; MQTT packets are mostly small.
const COPY_BUFFER: usize = 4096;

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where and how the TLS listener runs.
pub(crate) struct ProxyConfig {
    pub listen: SocketAddr,
    /// The plain MQTT listeners that receive the decrypted streams, used in turn.
    pub upstreams: Vec<SocketAddr>,
    pub tls: Arc<ServerConfig>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    #[error("cannot reach the MQTT listener: {0}")]
    Upstream(#[source] io::Error),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// Binds the TLS listener on `runtime` (before the broker's port-0 listeners, so none of them
/// can take a fixed port that was free a moment ago).
pub(crate) fn bind_listener(
    runtime: &Runtime,
    addr: SocketAddr,
) -> Result<TcpListener, BrokerError> {
    let _context = runtime.enter();
    bind(addr).map_err(|source| BrokerError::Bind { addr, source })
}

/// Starts serving the TLS listener on `runtime`; returns the bound address.
pub(crate) fn spawn(
    runtime: &Runtime,
    listener: TcpListener,
    config: ProxyConfig,
) -> Result<SocketAddr, BrokerError> {
    let addr = config.listen;
    let bind_error = |source| BrokerError::Bind { addr, source };
    let local = listener.local_addr().map_err(bind_error)?;
    info!(%local, upstreams = ?config.upstreams, "MQTT TLS listener started");
    runtime.spawn(accept_loop(listener, config));
    Ok(local)
}

/// The address to reach a listener bound to `listen` from this host.
pub(crate) fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn accept_loop(listener: TcpListener, config: ProxyConfig) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let acceptor = TlsAcceptor::from(config.tls);
    let mut upstreams = config.upstreams.into_iter().cycle();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "TLS listener cannot accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "TLS connection refused: connection limit reached");
            continue;
        };
        let Some(upstream) = upstreams.next() else {
            warn!("TLS listener has no MQTT listener to forward to");
            return;
        };
        let acceptor = acceptor.clone();
        let timeout = config.handshake_timeout;
        tokio::spawn(async move {
            match serve(stream, acceptor, upstream, timeout).await {
                Ok(()) => debug!(%peer, "TLS connection closed"),
                Err(error) => debug!(%peer, %error, "TLS connection ended"),
            }
            drop(permit);
        });
    }
}

async fn serve(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    handshake_timeout: Duration,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let tls = tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
        .await
        .map_err(|_| ConnError::HandshakeTimeout)?
        .map_err(ConnError::Handshake)?;
    let plain = TcpStream::connect(upstream)
        .await
        .map_err(ConnError::Upstream)?;
    plain.set_nodelay(true)?;
    let (tls_read, tls_write) = tokio::io::split(tls);
    let (plain_read, plain_write) = plain.into_split();
    // Whichever side finishes first ends the connection; rumqttd closing the socket (refused
    // CONNECT, keep-alive timeout) must close the device's connection too.
    tokio::select! {
        result = pump(tls_read, plain_write) => result?,
        result = pump(plain_read, tls_write) => result?,
    }
    Ok(())
}

/// Copies `from` to `to` until end of stream, then shuts `to` down (TLS close_notify / FIN).
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) -> io::Result<()> {
    let mut buffer = vec![0; COPY_BUFFER];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer[..read]).await?;
        to.flush().await?;
    }
}
