//! Runs one rumqttd MQTT listener on its own thread and reports whether it bound its address.
//!
//! rumqttd's `Broker::start` spawns listener threads, logs a bind failure and carries on, and
//! blocks its caller forever. Driving `rumqttd::Server` ourselves lets `start` return a real
//! error: the server binds on its first poll (a `SocketAddr` needs no resolver), so a server
//! future that is still pending after one poll is listening.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rumqttd::protocol::Protocol;
use rumqttd::{LinkType, Server};
use tokio::sync::oneshot;
use tracing::{debug, error};

use crate::BrokerError;

/// How long `spawn` waits for the thread to report.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running listener thread. Dropping it stops the listener and closes its connections.
pub(crate) struct Listener {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only ends its runtime (closing the connections); a panic there has
            // already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

/// A port on `addr`'s interface that is free right now (rumqttd cannot report the port it got).
pub(crate) fn free_port(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(|source| BrokerError::Bind { addr, source })
}

/// Starts `server` (configured to listen on `addr`) on a thread named `name`.
pub(crate) fn spawn<P>(
    name: &str,
    server: Server<P>,
    addr: SocketAddr,
) -> Result<Listener, BrokerError>
where
    P: Protocol + Clone + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run(server, addr, ready_tx, stop_rx))
        .map_err(|source| BrokerError::Thread {
            name: name.to_string(),
            source,
        })?;
    let mut listener = Listener {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(())) => Ok(listener),
        Ok(Err(error)) => Err(error),
        Err(_) => {
            // Do not join a thread that may be stuck; it stops once told to.
            listener.thread = None;
            Err(BrokerError::ListenerStopped { addr })
        }
    }
}

fn run<P>(
    mut server: Server<P>,
    addr: SocketAddr,
    ready: mpsc::SyncSender<Result<(), BrokerError>>,
    stop: oneshot::Receiver<()>,
) where
    P: Protocol + Clone + Send + 'static,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = ready.send(Err(BrokerError::Runtime(source)));
            return;
        }
    };
    runtime.block_on(async move {
        let mut serve = pin!(server.start(LinkType::Remote));
        match poll_fn(|cx| Poll::Ready(serve.as_mut().poll(cx))).await {
            Poll::Pending => {
                if ready.send(Ok(())).is_err() {
                    return;
                }
            }
            Poll::Ready(result) => {
                // Binding is the only thing the server does before its accept loop.
                let source = match result {
                    Err(e) => match std::error::Error::source(&e)
                        .and_then(|inner| inner.downcast_ref::<io::Error>())
                    {
                        Some(inner) => io::Error::new(inner.kind(), inner.to_string()),
                        None => io::Error::other(e.to_string()),
                    },
                    Ok(()) => io::Error::other("listener returned at once"),
                };
                let _ = ready.send(Err(BrokerError::Bind { addr, source }));
                return;
            }
        }
        tokio::select! {
            result = serve => error!(%addr, ?result, "MQTT listener ended"),
            _ = stop => debug!(%addr, "MQTT listener stopping"),
        }
    });
}
