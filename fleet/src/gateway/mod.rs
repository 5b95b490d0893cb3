//! The gateway: every consumer endpoint goes through it, and through the node's tunnel to the
//! workload's container. Nothing is published on a provider's network.
//!
//! ```text
//!  consumer ── HTTP(S) Host: web.lattice-apps.localhost ──┐
//!  consumer ── TCP gateway port 20000 ────────────────────┤  gateway (this module)
//!                                                          │   routes: from the targets
//!                                                          │   limits, idle/header timeouts
//!                                                          ▼   bytes + connections counted
//!                                          lattice-tunnel server (QUIC, UDP = the API's port)
//!                                                          ▲
//!  latticed (behind NAT) ── dials out, node key ───────────┘── dials the container's bridge
//!                                                              address + declared port
//! ```
//!
//! * [`routes`] — the pure route table built from the nodes' targets.
//! * [`proxy`] — HTTP/HTTPS by host name (hyper), 404/503 pages.
//! * [`tcp`] — one gateway port per (workload, declared port).
//! * [`certs`] — apps-domain certificates (files, or a generated self-signed set).
//! * [`count`] — byte/connection accounting, activity for idle timeouts.
//! * [`metrics`] — the gateway's Prometheus families.
//! * [`upstream`] — the other direction: streams nodes open toward declared upstreams (the
//!   fleet's registry), ADR 0011.
//! * [`replication`] — reads each S3 primary's replication lag through its tunnel.

pub mod certs;
pub mod count;
pub mod metrics;
pub mod proxy;
pub mod readonly;
pub mod replication;
pub mod routes;
pub mod tcp;
pub mod upstream;

use crate::store::gateway::Traffic;
use crate::store::Store;
use anyhow::Context;
use count::{Counted, Pending};
use lattice_tunnel::{Authorizer, Open, OpenError, Reply, TunnelServer, TunnelStream};
use lattice_wire::{IdentityKey, IdentityPublic};
use routes::{NodeTargets, Route, RouteTable};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Default address of the apps' plain HTTP listener (any free port when it is taken).
pub const DEFAULT_APPS_HTTP: &str = "127.0.0.1:8080";
/// Default address of the apps' HTTPS listener (any free port when it is taken).
pub const DEFAULT_APPS_HTTPS: &str = "127.0.0.1:8444";

/// `lattice fleet|up` flags for the gateway.
#[derive(Debug, clap::Args, Clone)]
pub struct GatewayArgs {
    /// Do not run the gateway: workloads are then unreachable from outside their node.
    #[arg(long)]
    pub no_gateway: bool,
    /// Plain HTTP listener for workloads [default: 127.0.0.1:8080, or any free port if taken].
    #[arg(long, value_name = "ADDR")]
    pub apps_http: Option<SocketAddr>,
    /// HTTPS listener for workloads [default: 127.0.0.1:8444, or any free port if taken].
    #[arg(long, value_name = "ADDR")]
    pub apps_https: Option<SocketAddr>,
    /// Workloads appear as NAME--ACCOUNT.DOMAIN; keep it apart from the console's domain so a
    /// workload can never set the console's cookies.
    #[arg(long, value_name = "DOMAIN", default_value = "lattice-apps.localhost")]
    pub apps_domain: String,
    /// Certificate chain (PEM) for *.DOMAIN; default: a generated self-signed one in DATA.
    #[arg(long, value_name = "FILE", requires = "apps_key")]
    pub apps_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "apps_cert")]
    pub apps_key: Option<PathBuf>,
    /// Address TCP routes (one port per workload port) listen on.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub apps_tcp_ip: IpAddr,
    /// Range of gateway ports for TCP routes, FIRST-LAST.
    #[arg(long, value_name = "FIRST-LAST", default_value = "20000-20999", value_parser = parse_range)]
    pub apps_tcp_ports: (u16, u16),
    /// Most connections open at once to one workload (further ones get 503 or are closed).
    #[arg(long, default_value_t = 256)]
    pub max_conns_per_workload: usize,
    /// Seconds a client has to send a request's headers (slowloris, idle keep-alive).
    #[arg(long, default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds without a byte either way after which a proxied connection is closed.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// The fleet's image registry (host:port), declared to every node as upstream `registry`:
    /// nodes reach it through their tunnels [`lattice up`: the registry it runs].
    #[arg(long, value_name = "ADDR")]
    pub upstream_registry: Option<SocketAddr>,
    /// Hand nodes the digest-pinned images of --upstream-registry as ADDR/repo@sha256:…,
    /// where latticed's registry proxy listens (its `registry_proxy`, default
    /// 127.0.0.1:5001), so their engines pull through the tunnel. Off when not given.
    #[arg(long, value_name = "ADDR")]
    pub node_registry_proxy: Option<SocketAddr>,
    /// Most upstream streams one node may have open at once (more are refused).
    #[arg(long, default_value_t = 64)]
    pub max_upstreams_per_node: usize,
    /// Seconds without a byte either way after which an upstream stream is closed, giving
    /// back its slot under --max-upstreams-per-node (a slow transfer is never cut).
    #[arg(long, default_value_t = 300)]
    pub upstream_idle_timeout_secs: u64,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected FIRST-LAST"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?}: need 0 < FIRST <= LAST"));
    }
    Ok((a, b))
}

impl Default for GatewayArgs {
    fn default() -> Self {
        GatewayArgs {
            no_gateway: false,
            apps_http: None,
            apps_https: None,
            apps_domain: "lattice-apps.localhost".into(),
            apps_cert: None,
            apps_key: None,
            apps_tcp_ip: [127, 0, 0, 1].into(),
            apps_tcp_ports: (20000, 20999),
            max_conns_per_workload: 256,
            header_timeout_secs: 10,
            idle_timeout_secs: 300,
            upstream_registry: None,
            node_registry_proxy: None,
            max_upstreams_per_node: 64,
            upstream_idle_timeout_secs: 300,
        }
    }
}

/// Why a consumer connection could not be carried to its workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The node holding the workload has no tunnel.
    NodeOffline,
    /// The node refused: the workload is not running (or not reachable on that port).
    NotRunning,
    /// The workload has `max_conns_per_workload` connections open.
    TooMany,
    /// The node did not answer in time.
    Timeout,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::NodeOffline => "node_offline",
            Unavailable::NotRunning => "not_running",
            Unavailable::TooMany => "too_many_connections",
            Unavailable::Timeout => "node_timeout",
        }
    }
}

/// What the gateway's tasks share.
pub struct Gateway {
    pub args: GatewayArgs,
    store: Store,
    tunnels: TunnelServer,
    metrics: metrics::GatewayMetrics,
    routes: RwLock<Arc<RouteTable>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    pending: Pending,
}

impl Gateway {
    pub fn route(&self, host: &str) -> Option<Route> {
        read(&self.routes).http(host).cloned()
    }

    pub fn table(&self) -> Arc<RouteTable> {
        read(&self.routes).clone()
    }

    pub fn tunnels(&self) -> &TunnelServer {
        &self.tunnels
    }

    pub fn metrics(&self) -> &metrics::GatewayMetrics {
        &self.metrics
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.args.idle_timeout_secs.max(1))
    }

    /// Opens a counted stream to `route`, within the workload's connection limit. `early`:
    /// do not wait for the node's answer (the first read reports a refusal; saves a round
    /// trip for protocols where the client speaks first).
    pub async fn open(
        &self,
        route: &Route,
        early: bool,
    ) -> Result<Counted<TunnelStream>, Unavailable> {
        let sem = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.workload.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.args.max_conns_per_workload.max(1))))
            .clone();
        let permit = sem.try_acquire_owned().map_err(|_| {
            self.metrics.refuse(Unavailable::TooMany.as_str());
            Unavailable::TooMany
        })?;
        let open = Open {
            workload: route.workload.clone(),
            port: route.port,
        };
        let opened = if early {
            self.tunnels.open_early(&route.node, &open).await
        } else {
            self.tunnels.open(&route.node, &open).await
        };
        let stream = opened.map_err(|e| {
            let why = match &e {
                OpenError::NodeOffline(_) => Unavailable::NodeOffline,
                OpenError::Timeout(_) => Unavailable::Timeout,
                OpenError::Refused {
                    reply: Reply::Unavailable,
                    ..
                } => Unavailable::NodeOffline,
                OpenError::Refused { .. } | OpenError::Stream { .. } | OpenError::Proto(_) => {
                    Unavailable::NotRunning
                }
            };
            tracing::debug!(workload = %route.workload, node = %route.node, error = %e, "stream not opened");
            self.metrics.refuse(why.as_str());
            why
        })?;
        Ok(Counted::new(
            stream,
            &route.workload,
            &self.metrics,
            self.pending.clone(),
            permit,
        ))
    }

    /// Rebuilds the route table from the store, cuts tunnels of revoked nodes, writes the
    /// traffic counted since the last call.
    async fn refresh(&self) -> anyhow::Result<()> {
        let nodes = self.store.nodes().await?;
        let targets: Vec<NodeTargets> = nodes
            .iter()
            .map(|n| NodeTargets {
                id: n.id.clone(),
                revoked: n.revoked,
                target: n.target.clone(),
            })
            .collect();
        let workloads = self.store.workloads(None).await?;
        let owners: HashMap<String, String> = workloads
            .iter()
            .map(|w| (w.id.clone(), w.account_id.clone()))
            .collect();
        // S3 replicas are reached only by their primaries.
        let internal: HashSet<String> = workloads
            .iter()
            .filter(|w| crate::kinds::s3::primary_id(w).is_some())
            .map(|w| w.id.clone())
            .collect();
        let placed: HashMap<String, String> = workloads
            .into_iter()
            .filter_map(|w| Some((w.id, w.node_id?)))
            .collect();
        let table = RouteTable::build_owned(
            &self.args.apps_domain,
            &targets,
            &placed,
            &owners,
            &internal,
        );
        let changed = *read(&self.routes).as_ref() != table;
        if changed {
            for p in &table.problems {
                tracing::warn!(problem = %p, "route table");
            }
            *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        }
        for n in nodes.iter().filter(|n| n.revoked) {
            if self.tunnels.is_connected(&n.id) {
                tracing::info!(node = %n.id, "cutting the tunnel of a revoked node");
                self.tunnels.disconnect(&n.id, "node revoked");
            }
        }
        self.metrics
            .tunnels
            .set(self.tunnels.connected().len() as i64);
        self.flush_traffic().await
    }

    async fn flush_traffic(&self) -> anyhow::Result<()> {
        let now = lattice_wire::now_ms();
        let mut failed = None;
        for (workload_id, d) in self.pending.take() {
            if failed.is_none() {
                let t = Traffic {
                    workload_id: workload_id.clone(),
                    bytes_in: d.0,
                    bytes_out: d.1,
                    connections: d.2,
                };
                match self.store.add_gateway_traffic(&t, now).await {
                    Ok(()) => continue,
                    Err(e) => failed = Some(e),
                }
            }
            // Not stored: put it back, it is billed later rather than never.
            self.pending.requeue(&workload_id, d);
        }
        match failed {
            Some(e) => Err(e).context("storing gateway traffic"),
            None => Ok(()),
        }
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Lets a node hold a tunnel when its key is registered and not revoked.
struct StoreAuthorizer(Store);

impl Authorizer for StoreAuthorizer {
    fn authorize(
        &self,
        key: IdentityPublic,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let text = key.to_string();
            let nodes = self.0.nodes().await.map_err(|e| {
                tracing::error!(error = %e, "cannot read nodes to authorize a tunnel");
                "the fleet cannot check nodes now".to_owned()
            })?;
            match nodes.into_iter().find(|n| n.identity_key == text) {
                Some(n) if !n.revoked => Ok(n.id),
                Some(n) => {
                    tracing::info!(node = %n.id, "tunnel refused: node revoked");
                    Err("unknown or revoked node".into())
                }
                None => Err("unknown or revoked node".into()),
            }
        })
    }
}

/// A running gateway.
pub struct RunningGateway {
    pub gateway: Arc<Gateway>,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub tunnel_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningGateway {
    /// The upstreams nodes may reach through their tunnels, by name.
    pub fn upstreams(args: &GatewayArgs) -> std::collections::BTreeMap<String, SocketAddr> {
        args.upstream_registry
            .map(|a| (upstream::REGISTRY.to_owned(), a))
            .into_iter()
            .collect()
    }

    /// The address a workload named `name` appears under over HTTP.
    pub fn http_url(&self, name: &str) -> String {
        format!(
            "http://{name}.{}:{}",
            self.gateway.args.apps_domain,
            self.http_addr.port()
        )
    }

    pub fn shutdown(&self) {
        self.gateway.tunnels.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn bind_or_any(
    given: Option<SocketAddr>,
    default: &str,
    what: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    if let Some(addr) = given {
        return tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the gateway's {what} listener on {addr}"));
    }
    let addr: SocketAddr = default.parse().expect("literal");
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "gateway {what}: default address taken, using any free port");
            let any = SocketAddr::new(addr.ip(), 0);
            tokio::net::TcpListener::bind(any)
                .await
                .with_context(|| format!("binding the gateway's {what} listener on {any}"))
        }
    }
}

/// Starts the gateway: the tunnel listener on UDP `tunnel` (nodes use the fleet's HTTPS
/// address), the apps' HTTP and HTTPS listeners, the TCP routes and the refresh loop.
pub async fn start(
    args: GatewayArgs,
    data_dir: PathBuf,
    store: Store,
    metrics: metrics::GatewayMetrics,
    fleet_key: &IdentityKey,
    tunnel: SocketAddr,
) -> anyhow::Result<RunningGateway> {
    let tls = match (&args.apps_cert, &args.apps_key) {
        (Some(c), Some(k)) => certs::from_files(c, k)?,
        _ => certs::self_signed(&data_dir, &args.apps_domain)?,
    };
    // The tunnel's certificate carries the fleet's key rotation chain, like the API's and the
    // broker's: nodes that pinned an earlier key follow it here too.
    let rotations = crate::rotation::load_chain(&data_dir)?;
    let tunnels = TunnelServer::bind(
        tunnel,
        fleet_key,
        Arc::new(StoreAuthorizer(store.clone())),
        lattice_tunnel::ServerOptions {
            rotation_chain: rotations,
            upstream_idle_timeout: Duration::from_secs(args.upstream_idle_timeout_secs.max(1)),
            ..lattice_tunnel::ServerOptions::default()
        },
    )
    .with_context(|| format!("starting the tunnel listener on UDP {tunnel}"))?;
    let tunnel_addr = tunnels.local_addr()?;
    let declared = RunningGateway::upstreams(&args);
    for (name, addr) in &declared {
        tracing::info!(upstream = %name, %addr, "upstream declared to nodes");
    }
    let upstreams = Arc::new(upstream::UpstreamGateway::new(
        declared,
        args.max_upstreams_per_node,
        metrics.clone(),
    ));
    tunnels.serve_upstreams(upstreams.clone());
    let http = bind_or_any(args.apps_http, DEFAULT_APPS_HTTP, "HTTP").await?;
    let https = bind_or_any(args.apps_https, DEFAULT_APPS_HTTPS, "HTTPS").await?;
    let (http_addr, https_addr) = (http.local_addr()?, https.local_addr()?);
    let gateway = Arc::new(Gateway {
        args,
        store,
        tunnels,
        metrics,
        routes: RwLock::default(),
        limits: Mutex::default(),
        pending: Pending::default(),
    });
    upstreams.attach(&gateway);
    gateway.refresh().await?;
    let mut tasks = vec![
        tokio::spawn(proxy::serve(gateway.clone(), http, None)),
        tokio::spawn(proxy::serve(
            gateway.clone(),
            https,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        )),
    ];
    let tcp = tcp::TcpRoutes::new(gateway.clone());
    let g = gateway.clone();
    tasks.push(tokio::spawn(async move {
        let mut tcp = tcp;
        loop {
            if let Err(e) = g.refresh().await {
                tracing::warn!(error = %e, "gateway refresh failed");
            }
            tcp.reconcile(&g.table(), &g.store).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }));
    tasks.push(tokio::spawn(replication::run(gateway.clone())));
    tracing::info!(%http_addr, %https_addr, %tunnel_addr, domain = %gateway.args.apps_domain, "gateway running");
    Ok(RunningGateway {
        gateway,
        http_addr,
        https_addr,
        tunnel_addr,
        tasks,
    })
}

/// `lattice gateway`: the gateway as its own process, next to (or in front of) fleet
/// processes started with `--no-gateway`. It reads routes and node keys from the same store
/// and holds the fleet key (nodes pin it). Nodes reach the tunnel at the fleet URL's host and
/// port over UDP, so on one machine give it the API's address (`--tunnel`); across machines,
/// send that address's UDP to gateways and its TCP to fleet replicas. Its Prometheus metrics
/// are on `http://METRICS/metrics`.
pub async fn run_alone(
    args: GatewayArgs,
    data_dir: PathBuf,
    database: Option<String>,
    tunnel: SocketAddr,
    metrics_addr: SocketAddr,
) -> anyhow::Result<()> {
    crate::server::prepare_data_dir(&data_dir)?;
    let url =
        database.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("fleet.db").display()));
    let store = Store::open(&url).await?;
    let (key, _) = crate::rotation::load(&data_dir)?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let gw = start(args, data_dir, store, metrics.gateway.clone(), &key, tunnel).await?;
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding the metrics listener on {metrics_addr}"))?;
    let metrics_local = listener.local_addr()?;
    let m = metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = m.clone();
            async move { m.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    println!("apps (HTTP):      {}", gw.http_url("NAME--ACCOUNT"));
    println!(
        "apps (HTTPS):     https://NAME--ACCOUNT.{}:{}",
        gw.gateway.args.apps_domain,
        gw.https_addr.port()
    );
    println!("tunnel (QUIC):    udp://{}", gw.tunnel_addr);
    println!("metrics:          http://{metrics_local}/metrics");
    println!("ready");
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    gw.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_are_checked() {
        assert_eq!(parse_range("20000-20999"), Ok((20000, 20999)));
        assert_eq!(parse_range("5-5"), Ok((5, 5)));
        assert!(parse_range("9-5").is_err());
        assert!(parse_range("0-5").is_err());
        assert!(parse_range("5").is_err());
    }
}
