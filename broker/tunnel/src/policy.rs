//! The node's rule for an incoming stream, without I/O: only a workload the fleet placed on
//! this node (it is in the node's current target), only a port that workload declares.
//! Where that workload's container actually is (its bridge address) is the dialer's business;
//! the gateway never names an address.

use crate::proto::{Open, Reply};
use lattice_wire::msg::WorkloadSpec;

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
}
