//! The handle that keeps a started broker running.

use std::net::SocketAddr;

use tokio::runtime::Runtime;
use tracing::info;

use crate::listener::Listener;

/// A running broker. **Dropping it stops the broker**: the listeners close and every client is
/// disconnected. Keep it for as long as the broker should serve.
///
/// rumqttd offers no way to stop its router thread; it stays parked (idle, holding the memory
/// of its logs) until the process exits. Starting and stopping brokers repeatedly in one process
/// (tests) therefore leaks one idle thread per broker.
#[must_use = "dropping the handle stops the broker"]
pub struct BrokerHandle {
    pub(crate) listen: SocketAddr,
    pub(crate) tls_listen: Option<SocketAddr>,
    pub(crate) v5_listen: Option<SocketAddr>,
    /// rumqttd listener threads (MQTT 3.1.1, MQTT 5).
    pub(crate) listeners: Vec<Listener>,
    /// Runs the TLS listener and, when `start` was called outside Tokio, the authenticator.
    pub(crate) runtime: Option<Runtime>,
}

impl BrokerHandle {
    /// Address of the plain-TCP MQTT 3.1.1 listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Address of the MQTT-over-TLS listener, if configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_listen
    }

    /// Address of the plain-TCP MQTT 5 listener, if configured.
    pub fn v5_local_addr(&self) -> Option<SocketAddr> {
        self.v5_listen
    }

    /// Stops the broker (same as dropping the handle, but reads better at a call site).
    pub fn shutdown(self) {}
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        // The TLS listener first, so no new connection is forwarded to a closing listener.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        self.listeners.clear();
        info!(listen = %self.listen, "MQTT broker stopped");
    }
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("listen", &self.listen)
            .field("tls_listen", &self.tls_listen)
            .field("v5_listen", &self.v5_listen)
            .field(
                "listeners",
                &self
                    .listeners
                    .iter()
                    .map(Listener::addr)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
