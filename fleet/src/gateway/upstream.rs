//! Upstreams (ADR 0011): the streams nodes open through their tunnels toward what the fleet
//! declared for them. A stream names an upstream (`registry`), never an address; the gateway
//! dials only the address it declared under that name, within a per-node limit of streams
//! open at once, and counts the bytes. Anything else is refused with its reply code and
//! counted (`lattice_gateway_upstream_refused_total{reason}`). A stream that moves no byte for
//! `--upstream-idle-timeout-secs` is closed by the tunnel server (which gives its slot back);
//! how streams end is counted (`lattice_gateway_upstream_closed_total{reason}`).

use super::metrics::{GatewayMetrics, RefusalLabel};
use lattice_tunnel::{policy, Reply, UpstreamConn, UpstreamEnd, UpstreamOpen};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The name under which nodes reach the fleet's image registry.
pub const REGISTRY: &str = "registry";

/// How the fleet hands its nodes the images of its own registry: digest-pinned references
/// under `registry` (host:port as written in image references) are rewritten to `proxy`, the
/// address latticed's registry proxy listens on (its `registry_proxy`), so the node's engine
/// pulls through the tunnel. The digest still pins the content, whatever path the bytes take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistry {
    pub registry: String,
    pub proxy: SocketAddr,
}

impl NodeRegistry {
    /// The rewrite the gateway's flags ask for: `--upstream-registry` handed at
    /// `--node-registry-proxy`; none unless both are given. Goes into
    /// `FleetConfig::node_registry`, from where every target is built.
    pub fn from_flags(args: &super::GatewayArgs) -> Option<NodeRegistry> {
        Some(NodeRegistry {
            registry: args.upstream_registry?.to_string(),
            proxy: args.node_registry_proxy?,
        })
    }
}

/// The reference a node gets for `image`: `REGISTRY/repo[:tag]@sha256:<64 hex>` with the
/// fleet's registry as host becomes `PROXY/repo[:tag]@sha256:…`; anything else (another
/// registry, no digest, no rewrite configured) is returned unchanged.
pub fn node_image_ref(image: &str, rewrite: Option<&NodeRegistry>) -> String {
    let Some(r) = rewrite else {
        return image.to_owned();
    };
    let Some((host, rest)) = image.split_once('/') else {
        return image.to_owned();
    };
    let pinned = rest.rsplit_once("@sha256:").is_some_and(|(repo, digest)| {
        !repo.is_empty()
            && digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if pinned && host.eq_ignore_ascii_case(&r.registry) {
        format!("{}/{rest}", r.proxy)
    } else {
        image.to_owned()
    }
}

/// The gateway's upstreams: the declared names and addresses, and the per-node limit.
pub struct UpstreamGateway {
    declared: BTreeMap<String, SocketAddr>,
    per_node: usize,
    connect_timeout: Duration,
    metrics: GatewayMetrics,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The gateway whose routes lead to other workloads (workload upstreams), once it exists
    /// (it is made after the tunnel server this serves).
    gateway: std::sync::OnceLock<std::sync::Weak<super::Gateway>>,
}

/// The metrics label of every workload upstream (their names carry workload ids, which would
/// make a label value per workload).
const WORKLOAD_LABEL: &str = "workload";

impl UpstreamGateway {
    /// Every node may use every upstream in `declared` (fleet-level upstreams; per-workload
    /// ones would be checked against the node's target here).
    pub fn new(
        declared: BTreeMap<String, SocketAddr>,
        per_node: usize,
        metrics: GatewayMetrics,
    ) -> Self {
        UpstreamGateway {
            declared,
            per_node: per_node.max(1),
            connect_timeout: Duration::from_secs(5),
            metrics,
            limits: Mutex::default(),
            gateway: std::sync::OnceLock::new(),
        }
    }

    /// Lets workload upstreams through to the routes of `gateway` (a node's target declares
    /// them: `RouteTable::upstream`).
    pub fn attach(&self, gateway: &Arc<super::Gateway>) {
        let _ = self.gateway.set(Arc::downgrade(gateway));
    }

    /// A slot under the limit of `key`: the node for fleet-level upstreams (the registry), the
    /// node and the upstream's name for workload upstreams, so one workload's connections
    /// never use up another's slots, nor the node's image pulls.
    fn permit(
        &self,
        key: &str,
        node: &str,
        up: &UpstreamOpen,
    ) -> Result<OwnedSemaphorePermit, Reply> {
        let sem = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_node)))
            .clone();
        sem.try_acquire_owned()
            .map_err(|_| self.refuse(node, up, Reply::Unavailable))
    }

    /// A workload upstream: a stream to the workload the node's target names, through the
    /// tunnel of the node it is placed on, like a consumer's connection to it.
    async fn connect_workload(&self, node: &str, up: &UpstreamOpen) -> Result<UpstreamConn, Reply> {
        let gateway = self.gateway.get().and_then(std::sync::Weak::upgrade);
        let route = gateway
            .as_ref()
            .and_then(|g| g.table().upstream(node, &up.name).cloned());
        let (Some(gateway), Some(route)) = (gateway, route) else {
            return Err(self.refuse(node, up, Reply::UpstreamNotDeclared));
        };
        let permit = self.permit(&format!("{node}/{}", up.name), node, up)?;
        let stream = gateway.open(&route, false).await.map_err(|why| {
            tracing::info!(%node, upstream = %up.name, workload = %route.workload, reason = why.as_str(), "workload upstream not reachable");
            let reply = match why {
                super::Unavailable::NotRunning => Reply::NotRunning,
                _ => Reply::Unavailable,
            };
            self.refuse(node, up, reply)
        })?;
        let label = GatewayMetrics::upstream(WORKLOAD_LABEL);
        self.metrics.upstream_streams.get_or_create(&label).inc();
        let active = self.metrics.upstream_active.get_or_create(&label).clone();
        active.inc();
        tracing::debug!(%node, upstream = %up.name, to = %route.node, "workload upstream stream");
        Ok(Box::new(WorkloadUpstream {
            stream,
            active,
            _permit: permit,
        }))
    }

    fn refuse(&self, node: &str, up: &UpstreamOpen, reply: Reply) -> Reply {
        // The name passed the wire's check ([a-z0-9-]), so it is safe to log as it is.
        tracing::info!(%node, upstream = %up.name, %reply, "upstream stream refused");
        self.metrics
            .upstream_refused
            .get_or_create(&RefusalLabel {
                reason: reply.as_str().to_owned(),
            })
            .inc();
        reply
    }

    async fn connect_checked(&self, node: &str, up: &UpstreamOpen) -> Result<UpstreamConn, Reply> {
        let addr = match policy::check_upstream(&self.declared, up) {
            Ok(addr) => *addr,
            Err(Reply::UpstreamNotDeclared) => return self.connect_workload(node, up).await,
            Err(r) => return Err(self.refuse(node, up, r)),
        };
        let permit = self.permit(node, node, up)?;
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                tracing::warn!(upstream = %up.name, %addr, error = %e, "upstream does not answer");
                return Err(self.refuse(node, up, Reply::ConnectFailed));
            }
            Err(_) => {
                tracing::warn!(upstream = %up.name, %addr, "upstream connect timed out");
                return Err(self.refuse(node, up, Reply::ConnectFailed));
            }
        };
        let _ = tcp.set_nodelay(true);
        let label = GatewayMetrics::upstream(&up.name);
        self.metrics.upstream_streams.get_or_create(&label).inc();
        let active = self.metrics.upstream_active.get_or_create(&label).clone();
        active.inc();
        tracing::debug!(%node, upstream = %up.name, "upstream stream");
        // Nodes only ever pull from the fleet's registry (see `readonly`).
        let gate = (up.name == REGISTRY).then(|| ReadGate {
            gate: crate::gateway::readonly::ReadOnlyGate::default(),
            node: node.to_owned(),
            refused: self
                .metrics
                .upstream_refused
                .get_or_create(&RefusalLabel {
                    reason: "not_a_read".to_owned(),
                })
                .clone(),
        });
        Ok(Box::new(CountedUpstream {
            tcp,
            gate,
            bytes_in: self.metrics.upstream_bytes_in.get_or_create(&label).clone(),
            bytes_out: self
                .metrics
                .upstream_bytes_out
                .get_or_create(&label)
                .clone(),
            active,
            _permit: permit,
        }))
    }
}

impl lattice_tunnel::Upstreams for UpstreamGateway {
    fn connect<'a>(
        &'a self,
        node: &'a str,
        up: &'a UpstreamOpen,
    ) -> Pin<Box<dyn Future<Output = Result<UpstreamConn, Reply>> + Send + 'a>> {
        Box::pin(self.connect_checked(node, up))
    }

    fn ended(&self, node: &str, up: &UpstreamOpen, end: UpstreamEnd) {
        tracing::debug!(%node, upstream = %up.name, %end, "upstream stream ended");
        self.metrics
            .upstream_closed
            .get_or_create(&RefusalLabel {
                reason: end.as_str().to_owned(),
            })
            .inc();
    }
}

/// A workload upstream: the stream to the other workload (which counts its bytes for that
/// workload, as any connection to it), holding the node's upstream slot until dropped.
struct WorkloadUpstream {
    stream: super::count::Counted<lattice_tunnel::TunnelStream>,
    active: Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for WorkloadUpstream {
    fn drop(&mut self) {
        self.active.dec();
    }
}

impl AsyncRead for WorkloadUpstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WorkloadUpstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connection to an upstream: counts bytes as they pass (so a long pull shows on
/// /metrics while it runs) and holds the node's stream permit until dropped.
struct CountedUpstream {
    tcp: TcpStream,
    /// For the registry: what the node sends must be reads.
    gate: Option<ReadGate>,
    bytes_in: Counter,
    bytes_out: Counter,
    active: Gauge,
    _permit: OwnedSemaphorePermit,
}

/// The read-only check of a registry stream, with who is on the other end and the counter of
/// refusals.
struct ReadGate {
    gate: crate::gateway::readonly::ReadOnlyGate,
    node: String,
    refused: Counter,
}

impl Drop for CountedUpstream {
    fn drop(&mut self) {
        self.active.dec();
    }
}

impl AsyncRead for CountedUpstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes_out.inc_by(n as u64);
        }
        r
    }
}

impl AsyncWrite for CountedUpstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(g) = &self.gate {
            if let Err(why) = g.gate.check(buf) {
                tracing::warn!(node = %g.node, %why, "registry upstream: not a read; stream closed");
                g.refused.inc();
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("the fleet's registry is read-only for nodes: {why}"),
                )));
            }
        }
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.bytes_in.inc_by(n as u64);
            if let Some(g) = &mut self.gate {
                g.gate.commit(&buf[..n]);
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_tunnel::Upstreams;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn up(name: &str) -> UpstreamOpen {
        UpstreamOpen { name: name.into() }
    }

    #[tokio::test]
    async fn only_declared_upstreams_within_the_per_node_limit_and_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let metrics = GatewayMetrics::default();
        let gw = UpstreamGateway::new(
            BTreeMap::from([(REGISTRY.to_string(), addr)]),
            2,
            metrics.clone(),
        );
        let refused = |reason: &str| {
            metrics
                .upstream_refused
                .get_or_create(&RefusalLabel {
                    reason: reason.into(),
                })
                .get()
        };

        let mut a = gw.connect("n-1", &up(REGISTRY)).await.unwrap();
        a.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        let label = GatewayMetrics::upstream(REGISTRY);
        assert_eq!(metrics.upstream_bytes_in.get_or_create(&label).get(), 4);
        assert_eq!(metrics.upstream_bytes_out.get_or_create(&label).get(), 4);

        assert_eq!(
            gw.connect("n-1", &up("backup")).await.err(),
            Some(Reply::UpstreamNotDeclared)
        );
        assert_eq!(refused("upstream_not_declared"), 1);

        // Two per node: the third waits for one to close; another node is not affected.
        let b = gw.connect("n-1", &up(REGISTRY)).await.unwrap();
        assert_eq!(
            gw.connect("n-1", &up(REGISTRY)).await.err(),
            Some(Reply::Unavailable)
        );
        assert_eq!(refused("unavailable"), 1);
        assert!(gw.connect("n-2", &up(REGISTRY)).await.is_ok());
        assert_eq!(metrics.upstream_active.get_or_create(&label).get(), 2);
        drop(b);
        assert!(gw.connect("n-1", &up(REGISTRY)).await.is_ok());
        drop(a);
        assert_eq!(metrics.upstream_active.get_or_create(&label).get(), 0);
        assert_eq!(metrics.upstream_streams.get_or_create(&label).get(), 4);
    }

    #[test]
    fn only_pinned_images_of_the_fleets_registry_go_through_the_proxy() {
        let d = "7bd3e4624d02d09002508825322fac55dc42a987efe7703b8f2e07cfbf86ce9e";
        let r = NodeRegistry {
            registry: "127.0.0.1:5000".into(),
            proxy: "127.0.0.1:5001".parse().unwrap(),
        };
        let rw = |i: &str| node_image_ref(i, Some(&r));
        assert_eq!(
            rw(&format!("127.0.0.1:5000/lattice/busybox@sha256:{d}")),
            format!("127.0.0.1:5001/lattice/busybox@sha256:{d}")
        );
        assert_eq!(
            rw(&format!("127.0.0.1:5000/app:v1@sha256:{d}")),
            format!("127.0.0.1:5001/app:v1@sha256:{d}")
        );
        for same in [
            "127.0.0.1:5000/app:v1".to_string(),
            format!("127.0.0.1:5000/app@sha256:{}", &d[..63]),
            format!("127.0.0.1:5000/app@sha256:{}", d.to_uppercase()),
            format!("127.0.0.1:5000/@sha256:{d}"),
            format!("registry.example/app@sha256:{d}"),
            format!("127.0.0.1:50000/app@sha256:{d}"),
            format!("busybox@sha256:{d}"),
            String::new(),
        ] {
            assert_eq!(rw(&same), same);
        }
        let image = format!("127.0.0.1:5000/app@sha256:{d}");
        assert_eq!(node_image_ref(&image, None), image);
    }

    #[tokio::test]
    async fn a_silent_upstream_is_connect_failed() {
        // A port nothing listens on (bound, then released).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let gw = UpstreamGateway::new(
            BTreeMap::from([(REGISTRY.to_string(), addr)]),
            4,
            GatewayMetrics::default(),
        );
        assert_eq!(
            gw.connect("n-1", &up(REGISTRY)).await.err(),
            Some(Reply::ConnectFailed)
        );
    }
}
