//! The node's rule for an incoming stream, without I/O: only a workload the fleet placed on
//! this node (it is in the node's current target), only a port that workload declares.
//! Where that workload's container actually is (its bridge address) is the dialer's business;
//! the gateway never names an address.

use crate::proto::{LogsOpen, Open, Reply, UpstreamOpen};
use lattice_wire::msg::WorkloadSpec;
use std::collections::BTreeMap;

/// Ok if `open` names a workload of `target` and one of its declared ports; else the refusal.
pub fn check_open(target: &[WorkloadSpec], open: &Open) -> Result<(), Reply> {
    let spec = target
        .iter()
        .find(|w| w.id == open.workload)
        .ok_or(Reply::UnknownWorkload)?;
    if !spec.ports.contains(&open.port) {
        return Err(Reply::PortNotDeclared);
    }
    Ok(())
}

/// Ok if `logs` names a workload of `target` (a stopped or crashed one included: its logs
/// are what its owner needs most); else the refusal.
pub fn check_logs(target: &[WorkloadSpec], logs: &LogsOpen) -> Result<(), Reply> {
    if target.iter().any(|w| w.id == logs.workload) {
        Ok(())
    } else {
        Err(Reply::UnknownWorkload)
    }
}

/// The gateway's rule for a stream a node opened: only an upstream the fleet declared, and
/// then only its declared address (the node never names one). `declared` maps names to
/// whatever the gateway connects to.
pub fn check_upstream<'a, A>(
    declared: &'a BTreeMap<String, A>,
    up: &UpstreamOpen,
) -> Result<&'a A, Reply> {
    declared.get(&up.name).ok_or(Reply::UpstreamNotDeclared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, ports: &[u16]) -> WorkloadSpec {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": id, "image": "img@sha256:00", "cpu_millis": 100,
            "memory_bytes": 1 << 25, "ports": ports,
        }))
        .unwrap()
    }

    fn open(id: &str, port: u16) -> Open {
        Open {
            workload: id.into(),
            port,
        }
    }

    #[test]
    fn only_declared_ports_of_placed_workloads() {
        let target = [spec("w-web", &[80, 8080]), spec("w-db", &[5432])];
        assert_eq!(check_open(&target, &open("w-web", 80)), Ok(()));
        assert_eq!(check_open(&target, &open("w-web", 8080)), Ok(()));
        assert_eq!(check_open(&target, &open("w-db", 5432)), Ok(()));
        assert_eq!(
            check_open(&target, &open("w-web", 22)),
            Err(Reply::PortNotDeclared)
        );
        assert_eq!(
            check_open(&target, &open("w-db", 80)),
            Err(Reply::PortNotDeclared)
        );
        assert_eq!(
            check_open(&target, &open("w-other", 80)),
            Err(Reply::UnknownWorkload)
        );
        assert_eq!(
            check_open(&[], &open("w-web", 80)),
            Err(Reply::UnknownWorkload)
        );
    }

    #[test]
    fn only_declared_upstreams_and_only_their_addresses() {
        let up = |n: &str| UpstreamOpen { name: n.into() };
        let addr: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let declared = BTreeMap::from([("registry".to_string(), addr)]);
        assert_eq!(check_upstream(&declared, &up("registry")), Ok(&addr));
        for other in [
            "backup",
            "registr",
            "registry2",
            "127.0.0.1:5000",
            "Registry",
        ] {
            assert_eq!(
                check_upstream(&declared, &up(other)),
                Err(Reply::UpstreamNotDeclared),
                "{other}"
            );
        }
        let none: BTreeMap<String, std::net::SocketAddr> = BTreeMap::new();
        assert_eq!(
            check_upstream(&none, &up("registry")),
            Err(Reply::UpstreamNotDeclared)
        );
    }

    #[test]
    fn logs_only_of_placed_workloads() {
        let target = [spec("w-web", &[80])];
        let logs = |id: &str| LogsOpen {
            workload: id.into(),
            follow: false,
            timestamps: false,
            tail: 10,
        };
        assert_eq!(check_logs(&target, &logs("w-web")), Ok(()));
        assert_eq!(
            check_logs(&target, &logs("w-other")),
            Err(Reply::UnknownWorkload)
        );
        assert_eq!(check_logs(&[], &logs("w-web")), Err(Reply::UnknownWorkload));
    }
}
