//! TCP routes: one gateway port per (workload, declared port), assigned once and kept in the
//! store, so a `postgres://` URL stays the same across fleet restarts. Routing by TLS server
//! name on one shared port would need PostgreSQL's SSLRequest answered first (its clients do
//! not start with a TLS ClientHello); a port per database needs nothing from the protocol.

use super::{Gateway, Unavailable};
use crate::gateway::routes::RouteTable;
use crate::store::Store;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The listeners of the current TCP routes.
pub struct TcpRoutes {
    gateway: Arc<Gateway>,
    listeners: HashMap<(String, u16), (SocketAddr, tokio::task::JoinHandle<()>)>,
}

impl TcpRoutes {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        TcpRoutes {
            gateway,
            listeners: HashMap::new(),
        }
    }

    /// Listens for every TCP route of `table`, stops listening for routes that are gone.
    pub async fn reconcile(&mut self, table: &RouteTable, store: &Store) {
        let wanted: Vec<(String, u16)> = table
            .tcp_routes()
            .map(|r| (r.workload.clone(), r.port))
            .collect();
        self.listeners.retain(|key, (addr, task)| {
            let keep = wanted.contains(key);
            if !keep {
                tracing::info!(workload = %key.0, port = key.1, %addr, "TCP route removed");
                task.abort();
            }
            keep
        });
        for key in wanted {
            if self.listeners.contains_key(&key) {
                continue;
            }
            let args = &self.gateway.args;
            let port = match store
                .gateway_port(&key.0, key.1, args.apps_tcp_ports, lattice_wire::now_ms())
                .await
            {
                Ok(Some(p)) => p,
                Ok(None) => {
                    tracing::error!(workload = %key.0, port = key.1, range = ?args.apps_tcp_ports, "no free gateway port for a TCP route");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot assign a gateway port");
                    continue;
                }
            };
            let addr = SocketAddr::new(args.apps_tcp_ip, port);
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(workload = %key.0, port = key.1, %addr, error = %e, "cannot listen for a TCP route");
                    continue;
                }
            };
            tracing::info!(workload = %key.0, port = key.1, %addr, "TCP route");
            let task = tokio::spawn(accept(self.gateway.clone(), listener, key.clone()));
            self.listeners.insert(key, (addr, task));
        }
    }
}

async fn accept(gateway: Arc<Gateway>, listener: TcpListener, key: (String, u16)) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let gateway = gateway.clone();
        let key = key.clone();
        tokio::spawn(async move {
            if let Err(why) = carry(&gateway, client, &key).await {
                tracing::debug!(workload = %key.0, reason = why.as_str(), "TCP connection refused");
            }
        });
    }
}

/// Carries one consumer connection through the tunnel; closes it when either side closes,
/// or when no byte has moved for the idle timeout.
async fn carry(
    gateway: &Gateway,
    mut client: TcpStream,
    key: &(String, u16),
) -> Result<(), Unavailable> {
    let route = gateway
        .table()
        .tcp(&key.0, key.1)
        .cloned()
        .ok_or(Unavailable::NotRunning)?;
    let _ = client.set_nodelay(true);
    let mut stream = gateway.open(&route, false).await?;
    let activity = stream.activity.clone();
    let idle = gateway.idle_timeout();
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut stream, 64 * 1024, 64 * 1024);
    tokio::select! {
        _ = copy => {}
        _ = idle_watch(activity, idle) => {
            tracing::debug!(workload = %route.workload, "idle TCP connection closed");
        }
    }
    Ok(())
}

/// Returns once nothing has moved for `idle`.
pub async fn idle_watch(activity: super::count::Activity, idle: Duration) {
    loop {
        let quiet = activity.idle();
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet + Duration::from_millis(10)).await;
    }
}
