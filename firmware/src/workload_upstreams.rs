//! Workload upstreams (ADR 0011): the connections a workload may open to another workload.
//!
//! For every upstream of every workload in the node's target, latticed listens on that
//! workload's bridge address on the host (the network's gateway) at
//! `hardening::UPSTREAM_PORT_BASE + i`, the address the container finds in the upstream's
//! variable, and carries each connection through the tunnel as upstream `name`
//! (`upstream::serve`). Each listener is bound to the workload's bridge device
//! (`SO_BINDTODEVICE`), so only packets that arrive from that workload's network reach it: not
//! the LAN (which might route to the bridge address), not another workload. The firewall
//! accepts the workload's packets to those ports only where such a socket is bound to that
//! address (`-m socket`), so a host service listening on every address at the same port is
//! never reached instead (`firewall::plan`). The gateway lets the stream through only because
//! the node's target declares it. Nothing listens for a workload whose container was not made
//! from the target's spec (during an update the old container's variables may name other
//! upstreams), and a listener whose upstream left the target is closed.

use crate::runtime::hardening::upstream_addrs;
use crate::tunnel::TargetFile;
use lattice_tunnel::UpstreamOpener;
use lattice_wire::msg::WorkloadSpec;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::time::Duration;

/// How often the listeners are matched to the target.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A workload's container as the listeners need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Its network's gateway: the bridge's address on the host.
    pub gateway: Ipv4Addr,
    /// The spec hash the container was made from (`runtime::LABEL_SPEC`).
    pub spec_hash: String,
}

/// A workload's bridge address on the host.
pub trait NetworkGateways: Send + Sync + 'static {
    /// `Ok(None)` while the workload has no container (and so perhaps no network yet).
    fn bridge<'a>(
        &'a self,
        workload: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Bridge>, String>> + Send + 'a>>;
}

/// One listener: where, the bridge device it is bound to, and the upstream it carries.
pub type Wanted = (SocketAddrV4, String, String);

/// The listeners `workloads` need on node `node_id`, given each workload's container
/// (`bridges`): only workloads whose container was made from their current spec, so its
/// variables name these upstreams in this order. Pure.
pub fn wanted(
    node_id: &str,
    workloads: &[WorkloadSpec],
    bridges: &HashMap<String, Bridge>,
) -> BTreeSet<Wanted> {
    workloads
        .iter()
        .filter_map(|w| {
            let b = bridges.get(&w.id)?;
            (b.spec_hash == crate::reconcile::hash::spec_hash(w)).then_some((w, b.gateway))
        })
        .flat_map(|(w, gw)| {
            let device = crate::firewall::bridge_name(node_id, &w.id);
            upstream_addrs(w, gw)
                .into_iter()
                .map(move |(name, _, addr)| (addr, device.clone(), name))
        })
        .collect()
}

/// A listener on `addr` that only packets arriving on `device` reach.
fn bind_on_device(addr: SocketAddrV4, device: &str) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind_device(Some(device.as_bytes()))?;
    socket.bind(SocketAddr::V4(addr))?;
    socket.listen(128)
}

/// The running listeners.
#[derive(Default)]
pub struct Listeners {
    running: HashMap<Wanted, tokio::task::JoinHandle<()>>,
    /// Listeners that could not bind, so the failure is logged once, not every second.
    failed: BTreeSet<Wanted>,
}

impl Listeners {
    /// Closes the listeners no longer wanted and opens the missing ones.
    pub async fn sync(&mut self, wanted: &BTreeSet<Wanted>, opener: &UpstreamOpener) {
        self.running.retain(|key, task| {
            let keep = wanted.contains(key) && !task.is_finished();
            if !keep {
                tracing::info!(addr = %key.0, upstream = %key.2, "workload upstream listener closed");
                task.abort();
            }
            keep
        });
        self.failed.retain(|k| wanted.contains(k));
        for key in wanted {
            if self.running.contains_key(key) {
                continue;
            }
            match bind_on_device(key.0, &key.1) {
                Ok(listener) => {
                    tracing::info!(addr = %key.0, device = %key.1, upstream = %key.2, "workload upstream listening");
                    self.failed.remove(key);
                    let task = tokio::spawn(crate::upstream::serve(
                        listener,
                        std::sync::Arc::<str>::from(key.2.as_str()),
                        opener.clone(),
                    ));
                    self.running.insert(key.clone(), task);
                }
                Err(e) => {
                    // The firewall does not let the workload through to a port without our
                    // socket, so nothing else on the host is reached meanwhile.
                    if self.failed.insert(key.clone()) {
                        tracing::warn!(addr = %key.0, device = %key.1, upstream = %key.2, error = %e, "workload upstream cannot listen yet; retrying");
                    }
                }
            }
        }
    }

    /// Where listeners run now.
    pub fn addresses(&self) -> BTreeSet<Wanted> {
        self.running.keys().cloned().collect()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}

/// Keeps the listeners matched to the node's target until dropped (run it in the tunnel's
/// runtime).
pub async fn run<G: NetworkGateways>(
    node_id: String,
    target: TargetFile,
    gateways: G,
    opener: UpstreamOpener,
) {
    let mut listeners = Listeners::default();
    loop {
        let workloads = target.workloads();
        let mut bridges = HashMap::new();
        for w in workloads.iter().filter(|w| !w.upstreams.is_empty()) {
            match gateways.bridge(&w.id).await {
                Ok(Some(b)) => {
                    bridges.insert(w.id.clone(), b);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(workload = %w.id, error = %e, "no bridge address for the workload's upstreams")
                }
            }
        }
        listeners
            .sync(&wanted(&node_id, &workloads, &bridges), &opener)
            .await;
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_wire::msg::UpstreamSpec;

    fn spec(id: &str, upstreams: &[(&str, &str)]) -> WorkloadSpec {
        let mut w: WorkloadSpec = serde_json::from_value(serde_json::json!({
            "id": id, "name": id, "image": "i@sha256:00", "cpu_millis": 100,
            "memory_bytes": 1 << 25,
        }))
        .unwrap();
        w.upstreams = upstreams
            .iter()
            .map(|(name, env)| UpstreamSpec {
                name: (*name).into(),
                workload: "w-other".into(),
                port: 9000,
                env: (*env).into(),
            })
            .collect();
        w
    }

    #[test]
    fn each_upstream_gets_a_port_on_its_own_workloads_bridge_once_its_container_matches() {
        let ws = [
            spec("w-a", &[("w-x-9000", "X"), ("w-y-80", "Y")]),
            spec("w-b", &[("w-x-9000", "X")]),
            spec("w-c", &[]),
        ];
        let gw_a: Ipv4Addr = "10.201.0.1".parse().unwrap();
        let bridge = |w: &WorkloadSpec, gw: &str| Bridge {
            gateway: gw.parse().unwrap(),
            spec_hash: crate::reconcile::hash::spec_hash(w),
        };
        let dev = crate::firewall::bridge_name("n-1", "w-a");
        let got = wanted(
            "n-1",
            &ws,
            &HashMap::from([("w-a".to_string(), bridge(&ws[0], "10.201.0.1"))]),
        );
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                (
                    SocketAddrV4::new(gw_a, 7700),
                    dev.clone(),
                    "w-x-9000".to_string()
                ),
                (SocketAddrV4::new(gw_a, 7701), dev, "w-y-80".to_string()),
            ]
        );
        // A container made from another spec (an update in progress) gets no listener: its
        // variables may name other upstreams at these ports.
        let old = spec("w-a", &[("w-y-80", "Y")]);
        let got = wanted(
            "n-1",
            &ws,
            &HashMap::from([("w-a".to_string(), bridge(&old, "10.201.0.1"))]),
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[tokio::test]
    async fn listeners_follow_what_is_wanted() {
        // A real tunnel client that never connects: listeners only need its opener.
        let key = lattice_wire::IdentityKey::generate();
        let opts = lattice_tunnel::ClientOptions::new(
            "127.0.0.1:9".into(),
            key.clone(),
            lattice_wire::IdentityKey::generate().public(),
        );
        struct NoDial;
        impl lattice_tunnel::client::Dialer for NoDial {
            fn dial(
                &self,
                _: lattice_tunnel::Open,
            ) -> Pin<
                Box<
                    dyn Future<Output = Result<tokio::net::TcpStream, lattice_tunnel::Reply>>
                        + Send
                        + '_,
                >,
            > {
                Box::pin(async { Err(lattice_tunnel::Reply::Unavailable) })
            }
        }
        let handle = lattice_tunnel::client::spawn(opts, std::sync::Arc::new(NoDial)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let one: BTreeSet<Wanted> = [(addr, "lo".to_string(), "w-x-9000".to_string())].into();
        let mut l = Listeners::default();
        l.sync(&one, &handle.upstreams()).await;
        assert_eq!(l.addresses(), one);
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        l.sync(&BTreeSet::new(), &handle.upstreams()).await;
        assert!(l.addresses().is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener of an upstream that left the target still accepts"
        );
        handle.stop();
    }
}
