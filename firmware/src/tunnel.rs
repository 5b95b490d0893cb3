//! latticed's end of the tunnel to the fleet's gateway (`lattice-tunnel`).
//!
//! The node dials out (it sits behind NAT) and serves the streams the gateway opens. Each stream
//! names a workload id and a port; [`NodeDialer`] connects it only when the workload is in the
//! node's **current applied target** (read from `target.json`, which the agent writes after
//! every applied target) and declares that port, and then only to that workload's own
//! container, at its address on the workload's bridge network as the engine reports it for a
//! container labelled with this node's id. Nothing else is reachable through the tunnel: no
//! host port, no other address, no other node's container.
//!
//! The gateway may also ask for a workload's logs ([`WorkloadLogs`]): only for a workload of
//! the current target, only from the container labelled as this node's, read from the engine's
//! bounded json-file logs (`max-size` × `max-file`, set at create).
//!
//! The same thread serves the registry proxy ([`crate::upstream`]): connections to it go the
//! other way, as streams this node opens toward the fleet's declared upstream `registry`.

use crate::agent::{AgentStore, TARGET_FILE};
use crate::runtime::{object_name, LABEL_NODE, LABEL_WORKLOAD};
use bollard::query_parameters::InspectContainerOptions;
use futures_util::StreamExt;
use lattice_tunnel::{policy, Dialer, LogReader, LogsOpen, Open, Reply};
use lattice_wire::msg::WorkloadSpec;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;

/// The gateway's tunnel address for a fleet URL: the same host and port as the fleet's HTTPS
/// API, over UDP (QUIC), as HTTP/3 does. `https://fleet.example` → `fleet.example:443`.
pub fn gateway_address(fleet_url: &str) -> Option<String> {
    let rest = fleet_url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    })
}

/// The tunnel client on its own thread and runtime (two workers), so consumer traffic never
/// competes with the agent's single-threaded control loop. Stops when dropped.
pub struct TunnelThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TunnelThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the tunnel client for a registered node: to the gateway at the fleet's address,
/// with the node's key, pinning the fleet key, dialling containers of `docker_socket`'s
/// engine; and the registry proxy on `registry_proxy` (a listener that cannot be bound is
/// logged, the tunnel runs without it).
pub fn start(
    data_dir: PathBuf,
    registration: &crate::identity::Registration,
    keys: &crate::identity::NodeKeys,
    fleet_pin: Arc<crate::fleet_pin::PersistentPin>,
    docker_socket: &std::path::Path,
    registry_proxy: Option<std::net::SocketAddr>,
) -> Result<TunnelThread, String> {
    let gateway = gateway_address(&registration.fleet_url)
        .ok_or_else(|| format!("fleet URL {} has no host", registration.fleet_url))?;
    let fleet_key = registration
        .fleet_public()
        .map_err(|e| format!("fleet key in the registration: {e}"))?;
    // Fail here, not in the thread, if the TLS configuration cannot be built.
    lattice_tunnel::tls::client_crypto_with(&keys.identity, fleet_pin.clone())
        .map_err(|e| e.to_string())?;
    let bridge = DockerBridge::new(docker_socket, registration.node_id.clone())?;
    let (socket, node_id) = (docker_socket.to_path_buf(), registration.node_id.clone());
    let upstream_dir = data_dir.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("latticed-tunnel")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tunnel's runtime: {e}"))?;
    let mut opts =
        lattice_tunnel::ClientOptions::new(gateway.clone(), keys.identity.clone(), fleet_key);
    opts.fleet_pin = Some(fleet_pin as Arc<dyn lattice_wire::pin::PinHolder>);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(%gateway, "starting the tunnel to the gateway");
    let thread = std::thread::Builder::new()
        .name("latticed-tunnel".into())
        .spawn(move || {
            runtime.block_on(async move {
                let dialer = NodeDialer {
                    target: TargetFile::new(data_dir),
                    bridge,
                    connect_timeout: Duration::from_secs(5),
                };
                match lattice_tunnel::client::spawn(opts, Arc::new(dialer)) {
                    Ok(handle) => {
                        let proxy = match registry_proxy {
                            Some(addr) => match crate::upstream::bind(addr).await {
                                Ok(listener) => {
                                    tracing::info!(%addr, "registry proxy listening (upstream registry through the tunnel)");
                                    Some(tokio::spawn(crate::upstream::serve(
                                        listener,
                                        crate::upstream::REGISTRY,
                                        handle.upstreams(),
                                    )))
                                }
                                Err(e) => {
                                    tracing::warn!(%addr, error = %e, "the registry proxy cannot listen: images of the fleet's registry are not pulled through the tunnel");
                                    None
                                }
                            },
                            None => None,
                        };
                        // Workload upstreams: listeners on the workloads' bridges.
                        let upstreams = match DockerBridge::new(&socket, node_id.clone()) {
                            Ok(gateways) => Some(tokio::spawn(crate::workload_upstreams::run(
                                node_id.clone(),
                                TargetFile::new(upstream_dir.clone()),
                                gateways,
                                handle.upstreams(),
                            ))),
                            Err(e) => {
                                tracing::error!(error = %e, "workload upstreams cannot start");
                                None
                            }
                        };
                        let _ = stopped.await;
                        if let Some(p) = proxy {
                            p.abort();
                        }
                        if let Some(u) = upstreams {
                            u.abort();
                        }
                        handle.stop();
                    }
                    Err(e) => tracing::error!(error = %e, "the tunnel cannot start"),
                }
            });
        })
        .map_err(|e| format!("starting the tunnel's thread: {e}"))?;
    Ok(TunnelThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Where a workload's container can be reached from the host.
pub trait BridgeAddresses: Send + Sync + 'static {
    /// The container's address on its workload network; `Ok(None)` if it is not running.
    fn address<'a>(
        &'a self,
        workload: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<IpAddr>, String>> + Send + 'a>>;
}

/// A workload container's logs, read from the engine.
pub trait WorkloadLogs: Send + Sync + 'static {
    /// The logs as asked; `Ok(None)` if the workload has no container on this node.
    fn logs<'a>(
        &'a self,
        logs: &'a LogsOpen,
    ) -> Pin<Box<dyn Future<Output = Result<Option<LogReader>, String>> + Send + 'a>>;
}

/// The node's current target as the agent last stored it; re-read when the file changes.
pub struct TargetFile {
    store: AgentStore,
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, Arc<Vec<WorkloadSpec>>)>,
}

impl TargetFile {
    pub fn new(data_dir: PathBuf) -> Self {
        TargetFile {
            path: data_dir.join(TARGET_FILE),
            store: AgentStore::new(&data_dir),
            cached: Mutex::new((None, Arc::default())),
        }
    }

    /// The workloads of the current target (empty before the first one).
    pub fn workloads(&self) -> Arc<Vec<WorkloadSpec>> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if modified.is_none() {
            *cached = (None, Arc::default());
        } else if cached.0 != modified {
            let workloads = self
                .store
                .load_target()
                .map(|t| t.workloads)
                .unwrap_or_default();
            *cached = (modified, Arc::new(workloads));
        }
        cached.1.clone()
    }
}

/// Dials only declared ports of workloads in the node's current target, at their bridge
/// addresses.
pub struct NodeDialer<B> {
    pub target: TargetFile,
    pub bridge: B,
    pub connect_timeout: Duration,
}

impl<B: BridgeAddresses + WorkloadLogs> Dialer for NodeDialer<B> {
    fn logs(
        &self,
        logs: LogsOpen,
    ) -> Pin<Box<dyn Future<Output = Result<LogReader, Reply>> + Send + '_>> {
        Box::pin(async move {
            policy::check_logs(&self.target.workloads(), &logs)?;
            match self.bridge.logs(&logs).await {
                Ok(Some(reader)) => Ok(reader),
                Ok(None) => Err(Reply::NotRunning),
                Err(e) => {
                    tracing::warn!(workload = %logs.workload, error = %e, "cannot read the workload's logs");
                    Err(Reply::Unavailable)
                }
            }
        })
    }

    fn dial(
        &self,
        open: Open,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, Reply>> + Send + '_>> {
        Box::pin(async move {
            policy::check_open(&self.target.workloads(), &open)?;
            let ip = match self.bridge.address(&open.workload).await {
                Ok(Some(ip)) => ip,
                Ok(None) => return Err(Reply::NotRunning),
                Err(e) => {
                    tracing::warn!(workload = %open.workload, error = %e, "cannot find the workload's address");
                    return Err(Reply::NotRunning);
                }
            };
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect((ip, open.port)))
                .await
            {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => {
                    tracing::info!(workload = %open.workload, port = open.port, error = %e, "workload refused a tunnel stream");
                    Err(Reply::ConnectFailed)
                }
                Err(_) => Err(Reply::ConnectFailed),
            }
        })
    }
}

/// Container addresses from the Docker engine: the container `lattice-{node}-{workload}`,
/// only if it carries this node's and that workload's labels and is running; its address on
/// the network of the same name.
pub struct DockerBridge {
    docker: bollard::Docker,
    node_id: String,
}

impl DockerBridge {
    pub fn new(socket: &std::path::Path, node_id: String) -> Result<Self, String> {
        let socket = socket.to_string_lossy().into_owned();
        let docker = bollard::Docker::connect_with_unix(&socket, 10, bollard::API_DEFAULT_VERSION)
            .map_err(|e| format!("Docker socket {socket}: {e}"))?;
        Ok(DockerBridge { docker, node_id })
    }
}

impl DockerBridge {
    /// The workload's container, if there is one and it carries this node's and the
    /// workload's labels (anything else under that name is an error, never used).
    async fn own_container(
        &self,
        workload: &str,
    ) -> Result<Option<(String, bollard::models::ContainerInspectResponse)>, String> {
        let name = object_name(&self.node_id, workload);
        let info = match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(format!("inspecting {name}: {e}")),
        };
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        if labels.get(LABEL_NODE).map(String::as_str) != Some(self.node_id.as_str())
            || labels.get(LABEL_WORKLOAD).map(String::as_str) != Some(workload)
        {
            return Err(format!("{name} is not labelled as this node's {workload}"));
        }
        Ok(Some((name, info)))
    }
}

/// Bytes of log output buffered between the engine and the tunnel stream.
const LOG_BUFFER: usize = 64 * 1024;

impl WorkloadLogs for DockerBridge {
    fn logs<'a>(
        &'a self,
        logs: &'a LogsOpen,
    ) -> Pin<Box<dyn Future<Output = Result<Option<LogReader>, String>> + Send + 'a>> {
        Box::pin(async move {
            let Some((name, info)) = self.own_container(&logs.workload).await? else {
                return Ok(None);
            };
            let id = info.id.unwrap_or(name);
            let options = bollard::query_parameters::LogsOptions {
                follow: logs.follow,
                stdout: true,
                stderr: true,
                timestamps: logs.timestamps,
                tail: if logs.tail == lattice_tunnel::proto::TAIL_ALL {
                    "all".to_owned()
                } else {
                    logs.tail.to_string()
                },
                ..Default::default()
            };
            let stream = self.docker.logs(&id, Some(options));
            // The engine's stream is pumped into a pipe; when the tunnel stream ends the pipe's
            // reader is dropped and the pump, with the engine's request, ends at once.
            let (writer, reader) = tokio::io::duplex(LOG_BUFFER);
            let workload = logs.workload.clone();
            tokio::spawn(pump_logs(stream, writer, workload));
            Ok(Some(Box::pin(reader) as LogReader))
        })
    }
}

/// Copies the engine's log stream into the pipe the tunnel reads, until either ends. Nothing
/// is ever written toward this side of the pipe, so a read on it returns only when the tunnel's
/// end is dropped: a follow of a quiet container ends then, not at its next line.
async fn pump_logs<S>(mut stream: S, mut writer: tokio::io::DuplexStream, workload: String)
where
    S: futures_util::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>
        + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut probe = [0u8; 1];
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = writer.read(&mut probe) => return,
        };
        match item {
            None => return,
            Some(Ok(out)) => {
                if writer.write_all(&out.into_bytes()).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::info!(%workload, error = %e, "the engine's log stream ended");
                let _ = writer
                    .write_all(format!("\n[latticed: the log stream ended: {e}]\n").as_bytes())
                    .await;
                return;
            }
        }
    }
}

impl crate::workload_upstreams::NetworkGateways for DockerBridge {
    /// The gateway of the workload's network, as its container sees it, and the spec hash
    /// the container was made from.
    fn bridge<'a>(
        &'a self,
        workload: &'a str,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<Option<crate::workload_upstreams::Bridge>, String>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let Some((name, info)) = self.own_container(workload).await? else {
                return Ok(None);
            };
            let spec_hash = info
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(crate::runtime::LABEL_SPEC).cloned())
                .unwrap_or_default();
            let gw = info
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(&name))
                .and_then(|n| n.gateway.clone())
                .filter(|ip| !ip.is_empty());
            match gw {
                Some(ip) => ip
                    .parse()
                    .map(|gateway| Some(crate::workload_upstreams::Bridge { gateway, spec_hash }))
                    .map_err(|e| format!("{name}: gateway {ip:?}: {e}")),
                None => Ok(None),
            }
        })
    }
}

impl BridgeAddresses for DockerBridge {
    fn address<'a>(
        &'a self,
        workload: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<IpAddr>, String>> + Send + 'a>> {
        Box::pin(async move {
            let Some((name, info)) = self.own_container(workload).await? else {
                return Ok(None);
            };
            if info.state.as_ref().and_then(|s| s.running) != Some(true) {
                return Ok(None);
            }
            let ip = info
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(&name))
                .and_then(|n| n.ip_address.clone())
                .filter(|ip| !ip.is_empty());
            match ip {
                Some(ip) => ip
                    .parse()
                    .map(Some)
                    .map_err(|e| format!("{name}: address {ip:?}: {e}")),
                None => Ok(None),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_wire::msg::Target;

    struct Fixed(Option<IpAddr>);

    impl WorkloadLogs for Fixed {
        fn logs<'a>(
            &'a self,
            logs: &'a LogsOpen,
        ) -> Pin<Box<dyn Future<Output = Result<Option<LogReader>, String>> + Send + 'a>> {
            let text = format!("logs of {}\n", logs.workload);
            Box::pin(async move {
                Ok(Some(
                    Box::pin(std::io::Cursor::new(text.into_bytes())) as LogReader
                ))
            })
        }
    }

    impl BridgeAddresses for Fixed {
        fn address<'a>(
            &'a self,
            _workload: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<Option<IpAddr>, String>> + Send + 'a>> {
            let ip = self.0;
            Box::pin(async move { Ok(ip) })
        }
    }

    fn target(dir: &std::path::Path, ports: &[u16]) {
        let workloads: Vec<WorkloadSpec> = serde_json::from_value(serde_json::json!([{
            "id": "w-web", "name": "web", "image": "img@sha256:00", "cpu_millis": 100,
            "memory_bytes": 1 << 25, "ports": ports,
        }]))
        .unwrap();
        let t = Target {
            revision: 2,
            workloads,
            heartbeat_secs: 10,
        };
        AgentStore::new(dir).save_target(&t).unwrap();
    }

    fn open(id: &str, port: u16) -> Open {
        Open {
            workload: id.into(),
            port,
        }
    }

    #[tokio::test]
    async fn dials_only_declared_ports_of_the_current_target() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dialer = NodeDialer {
            target: TargetFile::new(dir.path().to_path_buf()),
            bridge: Fixed(Some("127.0.0.1".parse().unwrap())),
            connect_timeout: Duration::from_secs(2),
        };
        // No target yet: nothing is reachable.
        assert_eq!(
            dialer.dial(open("w-web", port)).await.err(),
            Some(Reply::UnknownWorkload)
        );
        target(dir.path(), &[port]);
        assert!(dialer.dial(open("w-web", port)).await.is_ok());
        assert_eq!(
            dialer.dial(open("w-web", port.wrapping_add(1))).await.err(),
            Some(Reply::PortNotDeclared)
        );
        assert_eq!(
            dialer.dial(open("w-db", port)).await.err(),
            Some(Reply::UnknownWorkload)
        );
        // A new target without the port takes effect at once.
        std::thread::sleep(Duration::from_millis(20));
        target(dir.path(), &[1]);
        assert_eq!(
            dialer.dial(open("w-web", port)).await.err(),
            Some(Reply::PortNotDeclared)
        );
    }

    #[tokio::test]
    async fn logs_only_of_workloads_in_the_current_target() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let dialer = NodeDialer {
            target: TargetFile::new(dir.path().to_path_buf()),
            bridge: Fixed(None),
            connect_timeout: Duration::from_secs(2),
        };
        let logs = |id: &str| LogsOpen {
            workload: id.into(),
            follow: false,
            timestamps: false,
            tail: 10,
        };
        assert_eq!(
            dialer.logs(logs("w-web")).await.err(),
            Some(Reply::UnknownWorkload)
        );
        target(dir.path(), &[80]);
        // A stopped workload's logs are still there for its owner.
        let mut text = String::new();
        dialer
            .logs(logs("w-web"))
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "logs of w-web\n");
        assert_eq!(
            dialer.logs(logs("w-db")).await.err(),
            Some(Reply::UnknownWorkload)
        );
    }

    #[tokio::test]
    async fn a_follow_of_a_quiet_container_ends_when_the_tunnel_side_goes() {
        use tokio::io::AsyncReadExt;
        // An engine stream that never yields (a container that prints nothing).
        let quiet = futures_util::stream::pending::<
            Result<bollard::container::LogOutput, bollard::errors::Error>,
        >();
        let (writer, reader) = tokio::io::duplex(LOG_BUFFER);
        let pump = tokio::spawn(pump_logs(quiet, writer, "w-web".into()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !pump.is_finished(),
            "the pump waits for output while followed"
        );
        drop(reader);
        tokio::time::timeout(Duration::from_secs(2), pump)
            .await
            .expect("the pump (and the engine request it holds) ends when the reader goes")
            .unwrap();

        // Output is copied as it comes, then the end of the engine's stream ends the pipe.
        let lines = futures_util::stream::iter(vec![Ok(bollard::container::LogOutput::StdOut {
            message: "hello\n".into(),
        })]);
        let (writer, mut reader) = tokio::io::duplex(LOG_BUFFER);
        tokio::spawn(pump_logs(lines, writer, "w-web".into()));
        let mut text = String::new();
        reader.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello\n");
    }

    #[test]
    fn the_gateway_is_the_fleet_address_over_udp() {
        assert_eq!(
            gateway_address("https://127.0.0.1:8443").as_deref(),
            Some("127.0.0.1:8443")
        );
        assert_eq!(
            gateway_address("https://fleet.example/api").as_deref(),
            Some("fleet.example:443")
        );
        assert_eq!(
            gateway_address("https://[::1]:9443").as_deref(),
            Some("[::1]:9443")
        );
        assert_eq!(
            gateway_address("https://[::1]").as_deref(),
            Some("[::1]:443")
        );
        assert_eq!(gateway_address("http://fleet.example"), None);
        assert_eq!(gateway_address("https://"), None);
    }

    #[tokio::test]
    async fn a_stopped_workload_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        target(dir.path(), &[80]);
        let dialer = NodeDialer {
            target: TargetFile::new(dir.path().to_path_buf()),
            bridge: Fixed(None),
            connect_timeout: Duration::from_secs(2),
        };
        assert_eq!(
            dialer.dial(open("w-web", 80)).await.err(),
            Some(Reply::NotRunning)
        );
    }
}
