//! Workloads end to end: a target sent by a real fleet becomes a hardened container in the
//! node's cgroup envelope on the machine's real Docker engine, its state comes back to the
//! fleet, a SIGKILLed latticed adopts it without restarting it, and a target without it
//! removes it. Needs root, Docker and the test image (`scripts/test-images`).

mod common;

use common::docker::*;
use common::*;

fn workload_state(f: &Fleet, node: &str, workload: &str) -> Option<String> {
    let n = f.node(node);
    let list: serde_json::Value = serde_json::from_str(n["workloads"].as_str()?).ok()?;
    list.as_array()?
        .iter()
        .find(|w| w["id"] == workload)
        .map(|w| w["state"].to_string())
}

#[test]
fn a_target_runs_as_a_hardened_container_adopted_across_a_supervisor_crash() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let (mut n, id, _cleanup) = online_node(&f, &dir.path().join("node"), "alice");

    let spec = serde_json::json!([{
        "id": "w-web", "name": "web", "image": image,
        "command": ["sh", "-c", "exec sleep 3600"],
        "cpu_millis": 100, "memory_bytes": 33554432, "pids_max": 64,
    }]);
    let db = format!("sqlite://{}", dir.path().join("fleet/fleet.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(lattice_fleet::store::Store::open(&db)).unwrap();
    let rev = rt
        .block_on(store.set_target(&id, &spec.to_string()))
        .unwrap();

    // The node runs it and says so; the fleet stores what it said.
    wait_for(60, "w-web running", || {
        (workload_state(&f, &id, "w-web").as_deref() == Some("\"Running\"")).then_some(())
    });
    assert_eq!(f.node(&id)["applied_revision"].as_u64(), Some(rev));
    let cid = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.lattice.node={id}"),
    ]);
    assert_eq!(cid.lines().count(), 1, "exactly one container: {cid}");
    let inspect = |fmt: &str| docker(&["inspect", "--format", fmt, &cid]);
    assert_eq!(
        inspect("{{.HostConfig.CgroupParent}}"),
        format!("/lattice-{id}")
    );
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect("{{.HostConfig.Privileged}}"), "false");
    assert_eq!(inspect("{{.HostConfig.CapDrop}}"), "[ALL]");
    let ports = inspect("{{json .HostConfig.PortBindings}}");
    assert!(
        ports == "null" || ports == "{}",
        "no published host ports: {ports}"
    );
    let started = inspect("{{.State.StartedAt}}");

    // SIGKILL the supervisor, start it again: the container is adopted, not restarted.
    n.kill9();
    let n = Node::start(&dir.path().join("node"), "unused: already registered");
    wait_for(30, "node back online", || {
        (f.node(&id)["online"] == true).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(5));
    let after = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.lattice.node={id}"),
    ]);
    assert_eq!(after, cid, "same single container after the restart");
    assert_eq!(inspect("{{.State.StartedAt}}"), started, "not restarted");
    assert!(
        n.log_text().contains("provider envelope ready"),
        "{}",
        n.log_text()
    );

    // A target without it removes it.
    rt.block_on(store.set_target(&id, "[]")).unwrap();
    wait_for(60, "w-web removed", || {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.lattice.node={id}"),
        ])
        .is_empty()
        .then_some(())
    });
}
