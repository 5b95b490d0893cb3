//! Workload upstreams (ADR 0011): the connections a workload may open to another workload.
//!
//! For every upstream of every workload in the node's target, latticed listens on that
//! workload's bridge address on the host (the network's gateway) at
//! `hardening::UPSTREAM_PORT_BASE + i`, the address the container finds in the upstream's
//! variable, and carries each connection through the tunnel as upstream `name`
//! (`upstream::serve`). The firewall lets the workload reach exactly those ports on the host
//! (`firewall::plan`); the gateway lets the stream through only because the node's target
//! declares it. Nothing listens for a workload whose container does not exist yet, and a
//! listener whose upstream left the target is closed.

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

/// A workload's bridge address on the host.
pub trait NetworkGateways: Send + Sync + 'static {
    /// `Ok(None)` while the workload has no container (and so perhaps no network yet).
    fn gateway<'a>(
        &'a self,
        workload: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Ipv4Addr>, String>> + Send + 'a>>;
}

/// One listener: where, and the upstream it carries.
pub type Wanted = (SocketAddrV4, String);

/// The listeners `workloads` need, given each workload's bridge address (`gateways`;
/// workloads without one are left out until they have it). Pure.
pub fn wanted(
    workloads: &[WorkloadSpec],
    gateways: &HashMap<String, Ipv4Addr>,
) -> BTreeSet<Wanted> {
    workloads
        .iter()
        .filter_map(|w| Some((w, *gateways.get(&w.id)?)))
        .flat_map(|(w, gw)| {
            upstream_addrs(w, gw)
                .into_iter()
                .map(|(name, _, addr)| (addr, name))
        })
        .collect()
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
                tracing::info!(addr = %key.0, upstream = %key.1, "workload upstream listener closed");
                task.abort();
            }
            keep
        });
        self.failed.retain(|k| wanted.contains(k));
        for key in wanted {
            if self.running.contains_key(key) {
                continue;
            }
            match crate::upstream::bind(SocketAddr::V4(key.0)).await {
                Ok(listener) => {
                    tracing::info!(addr = %key.0, upstream = %key.1, "workload upstream listening");
                    self.failed.remove(key);
                    let task = tokio::spawn(crate::upstream::serve(
                        listener,
                        std::sync::Arc::<str>::from(key.1.as_str()),
                        opener.clone(),
                    ));
                    self.running.insert(key.clone(), task);
                }
                Err(e) => {
                    if self.failed.insert(key.clone()) {
                        tracing::warn!(addr = %key.0, upstream = %key.1, error = %e, "workload upstream cannot listen yet; retrying");
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
pub async fn run<G: NetworkGateways>(target: TargetFile, gateways: G, opener: UpstreamOpener) {
    let mut listeners = Listeners::default();
    loop {
        let workloads = target.workloads();
        let mut addrs = HashMap::new();
        for w in workloads.iter().filter(|w| !w.upstreams.is_empty()) {
            match gateways.gateway(&w.id).await {
                Ok(Some(gw)) => {
                    addrs.insert(w.id.clone(), gw);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(workload = %w.id, error = %e, "no bridge address for the workload's upstreams")
                }
            }
        }
        listeners.sync(&wanted(&workloads, &addrs), &opener).await;
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
    fn each_upstream_gets_a_port_on_its_own_workloads_bridge_once_it_has_one() {
        let ws = [
            spec("w-a", &[("w-x-9000", "X"), ("w-y-80", "Y")]),
            spec("w-b", &[("w-x-9000", "X")]),
            spec("w-c", &[]),
        ];
        let gw_a: Ipv4Addr = "10.201.0.1".parse().unwrap();
        let got = wanted(&ws, &HashMap::from([("w-a".to_string(), gw_a)]));
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                (SocketAddrV4::new(gw_a, 7700), "w-x-9000".to_string()),
                (SocketAddrV4::new(gw_a, 7701), "w-y-80".to_string()),
            ]
        );
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
        let one: BTreeSet<Wanted> = [(addr, "w-x-9000".to_string())].into();
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
