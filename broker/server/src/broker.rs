//! Wires rumqttd's router, its MQTT listeners and the TLS listener together.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rumqttd::protocol::{v4::V4, v5::V5};
use rumqttd::{Router, Server};
use tokio::runtime::{Handle, Runtime};
use tracing::info;

use crate::listener::{self, Listener};
use crate::{auth, settings, tls, tls_proxy};
use crate::{Authenticator, BrokerConfig, BrokerError, BrokerHandle};

/// Upper bound for the broker's own worker threads and for the number of MQTT listener threads
/// the TLS listener spreads its connections over.
const MAX_PARALLEL: usize = 4;

/// Attempts to bind a listener whose port 0 was replaced by a probed free port.
const FREE_PORT_ATTEMPTS: usize = 3;

pub(crate) fn start(
    config: BrokerConfig,
    auth: Arc<dyn Authenticator>,
) -> Result<BrokerHandle, BrokerError> {
    config.validate()?;
    let tls = match (
        &config.tls_listen,
        &config.tls_cert_pem,
        &config.tls_key_pem,
    ) {
        (Some(listen), Some(cert), Some(key)) => Some((*listen, tls::server_config(cert, key)?)),
        _ => None,
    };
    let (runtime, auth_runtime) = match Handle::try_current() {
        Ok(caller) if tls.is_none() => (None, caller),
        Ok(caller) => (Some(build_runtime()?), caller),
        Err(_) => {
            let runtime = build_runtime()?;
            let handle = runtime.handle().clone();
            (Some(runtime), handle)
        }
    };

    let router_tx = Router::new(0, settings::router(&config)).spawn();
    let server_settings = |name: &str, addr| {
        let mut settings = settings::listener(name, addr, &config);
        let timeout = config.connect_timeout();
        auth::install(&mut settings, auth.clone(), auth_runtime.clone(), timeout);
        settings
    };
    let v4 = |name: &str, addr| {
        let server = Server::new(server_settings(name, addr), router_tx.clone(), V4);
        listener::spawn(&format!("lattice-{name}"), server, addr)
    };
    let v5 = |name: &str, addr| {
        let server = Server::new(server_settings(name, addr), router_tx.clone(), V5);
        listener::spawn(&format!("lattice-{name}"), server, addr)
    };

    let mut handle = BrokerHandle {
        listen: config.listen,
        tls_listen: None,
        v5_listen: None,
        listeners: Vec::new(),
        runtime,
    };
    // The TLS port is fixed (nodes are told it): bound first, so the port-0 listeners below
    // cannot take it (a free port probed for them may be the one asked for here).
    let tls_listener = match (&tls, &handle.runtime) {
        (Some((tls_listen, _)), Some(runtime)) => {
            Some(tls_proxy::bind_listener(runtime, *tls_listen)?)
        }
        _ => None,
    };
    // From here on an error drops `handle`, which stops whatever was started.
    let main = bind_with(config.listen, |addr| v4("mqtt-v4", addr))?;
    handle.listen = main.addr();
    handle.listeners.push(main);
    if let Some(addr) = config.v5_listen {
        let listener = bind_with(addr, |addr| v5("mqtt-v5", addr))?;
        handle.v5_listen = Some(listener.addr());
        handle.listeners.push(listener);
    }
    if let (Some((tls_listen, tls)), Some(runtime), Some(tls_listener)) =
        (tls, &handle.runtime, tls_listener)
    {
        // rumqttd serves each listener on one thread and accepts serially, so TLS connections
        // are spread over the main listener and a few more on loopback.
        let mut upstreams = vec![tls_proxy::reachable(handle.listen)];
        let loopback = internal_ip(upstreams[0]);
        for shard in 1..parallelism() {
            let name = format!("mqtt-v4-shard{shard}");
            let listener = bind_with(SocketAddr::new(loopback, 0), |addr| v4(&name, addr))?;
            upstreams.push(listener.addr());
            handle.listeners.push(listener);
        }
        let proxy = tls_proxy::ProxyConfig {
            listen: tls_listen,
            upstreams,
            tls,
            max_connections: config.max_connections,
            handshake_timeout: config.connect_timeout(),
        };
        handle.tls_listen = Some(tls_proxy::spawn(runtime, tls_listener, proxy)?);
    }
    info!(
        listen = %handle.listen,
        tls = ?handle.tls_listen,
        v5 = ?handle.v5_listen,
        max_connections = config.max_connections,
        "MQTT broker started"
    );
    Ok(handle)
}

/// Spawns a rumqttd listener on `addr`. rumqttd cannot report the port it bound, so port 0 is
/// replaced by a probed free port, retried if someone else takes it in between.
fn bind_with(
    addr: SocketAddr,
    mut spawn: impl FnMut(SocketAddr) -> Result<Listener, BrokerError>,
) -> Result<Listener, BrokerError> {
    if addr.port() != 0 {
        return spawn(addr);
    }
    let mut attempt = 1;
    loop {
        match spawn(listener::free_port(addr)?) {
            Err(BrokerError::Bind { source, .. })
                if source.kind() == io::ErrorKind::AddrInUse && attempt < FREE_PORT_ATTEMPTS =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Loopback address for the internal listeners, in the family of the main listener's.
fn internal_ip(main: SocketAddr) -> IpAddr {
    if main.ip().is_loopback() {
        main.ip()
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

fn parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_PARALLEL)
}

fn build_runtime() -> Result<Runtime, BrokerError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(parallelism())
        .thread_name("lattice-broker")
        .enable_all()
        .build()
        .map_err(BrokerError::Runtime)
}
