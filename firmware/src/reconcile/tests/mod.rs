//! Tests of the pure reconciler: unit tests ([`plan`]) and property tests ([`prop`]) against
//! [`Model`], an in-memory engine holding several nodes' containers.

mod model;
mod plan;
mod prop;

use lattice_wire::msg::{RestartPolicy, WorkloadClass, WorkloadSpec};
pub(crate) use model::Model;

/// A valid spec with id `id`.
pub(crate) fn spec(id: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.to_string(),
        name: "web".to_string(),
        image: "127.0.0.1:5000/web@sha256:00".to_string(),
        command: vec![],
        env: vec![("A".to_string(), "1".to_string())],
        volumes: vec![],
        cpu_millis: 500,
        memory_bytes: 64 << 20,
        pids_max: 64,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::AlwaysOn,
        egress: false,
        capabilities: vec![],
        ports: vec![8080],
        upstreams: Vec::new(),
    }
}
