//! latticed's end of upstreams (ADR 0011): a listener on loopback whose every connection is
//! carried through the tunnel as a stream to one upstream the fleet declared, by name.
//!
//! The registry proxy (`registry_proxy`, default `127.0.0.1:5001`) carries upstream
//! `registry`: the fleet hands this node the images of its registry as
//! `127.0.0.1:5001/repo@sha256:…`, and the machine's Docker engine, which treats registries on
//! 127.0.0.0/8 as plain-HTTP-allowed, pulls them through here, the tunnel and the gateway,
//! even when the node has no route to the registry. The digest pins the content; the proxy
//! adds no trust. The listener is on loopback only (the configuration refuses anything
//! else), so the provider's LAN never reaches the fleet's registry through this node.

use lattice_tunnel::UpstreamOpener;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The upstream the registry proxy carries.
pub const REGISTRY: &str = "registry";
/// Where the registry proxy listens unless configured otherwise.
pub const DEFAULT_REGISTRY_PROXY: &str = "127.0.0.1:5001";
/// Most connections the proxy carries at once (the gateway has its own per-node limit).
pub const MAX_PROXY_CONNECTIONS: usize = 64;
/// How long a connection waits for the tunnel (it may be reconnecting) and for the gateway.
const WAIT: Duration = Duration::from_secs(10);

/// Binds the proxy's listener (in the tunnel's runtime).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Carries every connection accepted on `listener` to upstream `name` through the tunnel.
pub async fn serve(listener: TcpListener, name: impl Into<Arc<str>>, opener: UpstreamOpener) {
    let name: Arc<str> = name.into();
    let limit = Arc::new(Semaphore::new(MAX_PROXY_CONNECTIONS));
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "upstream proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(upstream = %name, %peer, "upstream proxy: too many connections, one closed");
            continue;
        };
        let opener = opener.clone();
        let name = name.clone();
        tokio::spawn(async move {
            carry(client, &name, &opener).await;
            drop(permit);
        });
    }
}

async fn carry(mut client: TcpStream, name: &str, opener: &UpstreamOpener) {
    let _ = client.set_nodelay(true);
    let mut stream = match opener.open(name, WAIT).await {
        Ok(s) => s,
        Err(e) => {
            // Closing the connection is all the engine learns; the reason is in our log.
            tracing::warn!(upstream = name, error = %e, "upstream proxy: connection not carried");
            return;
        }
    };
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut stream, 64 * 1024, 64 * 1024)
        .await
    {
        Ok((up, down)) => {
            tracing::debug!(
                upstream = name,
                bytes_up = up,
                bytes_down = down,
                "upstream connection done"
            )
        }
        Err(e) => {
            tracing::debug!(upstream = name, error = %e, "upstream connection ended with an error")
        }
    }
}
