//! The fleet restarted in the middle of a rescheduling (issue 5, faults): a fleet process that
//! dies right after it stored a lost node's workload on another node, before it rewrote any
//! target (`LATTICE_FAILPOINT=reschedule-committed`), is restarted on the same store; the new
//! process finishes the job from the store: the workload runs on the new node, once, with one
//! `rescheduled` event, and the lost node's target no longer holds it.
//!
//! Its own test binary: the failpoint travels in this process's environment, which every fleet
//! started here inherits. Needs root, Docker and the test image (`scripts/test-images`).

mod common;

use common::docker::{can_run_workloads, containers_of, test_image, Cleanup};
use common::*;
use std::time::Duration;

#[test]
fn a_fleet_restarted_mid_reschedule_resumes_from_the_store_without_duplicates() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let (http, mqtt) = (free_port(), free_port());
    let args = ["--node-lost-grace-secs", "2"];
    let mut fleet = Fleet::start("fleet", &data, http, mqtt, &args);
    let mut a = Node::start(&dir.path().join("a"), &fleet.provisioning("alice"));
    let b = Node::start(&dir.path().join("b"), &fleet.provisioning("alice"));
    let a_id = wait_for(20, "a registered", || a.node_id());
    let b_id = wait_for(20, "b registered", || b.node_id());
    let _cleanup = (Cleanup(a_id.clone()), Cleanup(b_id.clone()));
    for id in [&a_id, &b_id] {
        wait_for(30, "node online", || {
            (fleet.node(id)["online"] == true).then_some(())
        });
    }
    fleet.cli_ok(&["node", "cordon", &b_id]);
    fleet.cli_ok(&[
        "deploy",
        "container",
        "web",
        "--image",
        &image,
        "--port",
        "8080",
        "--",
        "sh",
        "-c",
        "exec httpd -f -p 8080 -h /",
    ]);
    wait_for(90, "web running on a", || {
        let v: serde_json::Value =
            serde_json::from_str(&fleet.cli_ok(&["workload", "show", "web", "--json"])).ok()?;
        (v["state"] == "running").then_some(())
    });
    fleet.cli_ok(&["node", "uncordon", &b_id]);

    // Set only now, so only this fleet's restarts could see it: the running fleet read its
    // environment at start, so restart it with the failpoint armed first.
    std::env::set_var("LATTICE_FAILPOINT", "reschedule-committed");
    drop(fleet);
    fleet = Fleet::start("fleet", &data, http, mqtt, &args);
    std::env::remove_var("LATTICE_FAILPOINT");
    wait_for(30, "a online again", || {
        (fleet.node(&a_id)["online"] == true).then_some(())
    });
    a.kill9();
    let status = wait_for(60, "the fleet to stop at the failpoint", || {
        fleet.child.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(86), "{}", fleet.log_text());

    // Stored: placed on b, event written; but no target says so yet.
    let db = format!("sqlite://{}", data.join("fleet.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(lattice_fleet::store::Store::open(&db)).unwrap();
    let w = rt.block_on(store.workloads(None)).unwrap().remove(0);
    assert_eq!(w.node_id.as_deref(), Some(b_id.as_str()));
    let node = |id: &str| rt.block_on(store.node(id)).unwrap().unwrap();
    assert!(
        node(&a_id).target.contains(&w.id),
        "a's target still holds it"
    );
    assert!(
        !node(&b_id).target.contains(&w.id),
        "b's target does not yet"
    );
    drop(store);

    // The restarted fleet rebuilds the targets from the placements.
    let fleet = Fleet::start("fleet", &data, http, mqtt, &args);
    let v = wait_for(90, "web running on b", || {
        let v: serde_json::Value =
            serde_json::from_str(&fleet.cli_ok(&["workload", "show", "web", "--json"])).ok()?;
        (v["state"] == "running" && v["node"] == b_id.as_str()).then_some(v)
    });
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "rescheduled").count(),
        1,
        "{kinds:?}"
    );
    assert!(!fleet.node(&a_id)["target"]
        .as_str()
        .unwrap()
        .contains(&w.id));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(containers_of(&b_id).lines().count(), 1, "one copy on b");
    assert!(fleet
        .log_text()
        .contains("targets rebuilt from the placements"));
    let _ = &b;
}
