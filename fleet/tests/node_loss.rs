//! Nodes and node loss end to end (issue 5, item 5): real `lattice fleet` (gateway included),
//! real latticed processes, real containers on the machine's Docker engine.
//!
//! * cordon keeps new work off a node; drain moves a workload with no failed request through
//!   the gateway (the new copy runs before the old is removed); decommission revokes the node;
//! * a node lost (latticed SIGKILLed: its tunnel is cut, its container keeps running but is
//!   unreachable) past the grace period: the same URL serves again from the other node, and the
//!   returning node removes its old copy;
//! * a node SIGKILLed in the middle of a deployment ends in a clear state with events that say
//!   why, and its work starts elsewhere once a node can take it.
//!
//! Needs root, Docker and the test image (`scripts/test-images`).

mod common;

use common::docker::{can_run_workloads, containers_of, test_image};
use common::rig::{event, event_kinds, http_get, rig, Rig};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operator deploys it: its host carries the account (`{name}--{account}`).
const HOST: &str = "web--operator.lattice-apps.localhost";
const HTTPD: &str =
    "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";

impl Rig {
    /// Deploys `web` onto node a and waits until it runs.
    fn web_on_a(&self, image: &str) {
        let args = ["--image", image, "--port", "8080", "--", "sh", "-c", HTTPD];
        self.deploy_on_a("web", &args);
    }

    fn serving(&self) -> bool {
        matches!(http_get(self.apps, HOST), Some((200, b)) if b.trim() == "hello-from-web")
    }

    fn wait_serving(&self, secs: u64) {
        wait_for(secs, "web served through the gateway", || {
            self.serving().then_some(())
        });
    }
}

#[test]
fn cordon_drain_and_decommission_move_work_without_a_failed_request() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let r = rig();
    r.web_on_a(&image);
    r.wait_serving(60);

    // Both cordoned: nothing can be placed, and the answer says why.
    r.fleet.cli_ok(&["node", "cordon", &r.a_id]);
    r.fleet.cli_ok(&["node", "cordon", &r.b_id]);
    let (ok, _, err) = r
        .fleet
        .cli(&["deploy", "container", "more", "--image", &image]);
    assert!(!ok && err.contains("2 cordoned"), "{err}");
    r.fleet.cli_ok(&["node", "uncordon", &r.b_id]);
    assert_eq!(
        containers_of(&r.a_id).lines().count(),
        1,
        "cordon keeps what runs"
    );

    // Requests through the gateway all through the drain.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok_n, bad_n) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let poller = {
        let (stop, ok_n, bad_n, apps) = (stop.clone(), ok_n.clone(), bad_n.clone(), r.apps);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match http_get(apps, HOST) {
                    Some((200, _)) => ok_n.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("during the drain: {other:?}");
                        bad_n.fetch_add(1, Ordering::SeqCst)
                    }
                };
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = r
        .fleet
        .cli_ok(&["node", "drain", &r.a_id, "--wait-secs", "120", "--json"]);
    let drained: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(drained["lifecycle"], "draining", "{drained}");
    assert_eq!(drained["workloads"], serde_json::json!([]), "{drained}");
    let w = r.wait_running("web", &r.b_id);
    // The old copy goes once the gateway has switched (a few seconds after the move).
    wait_for(60, "old copy removed from a", || {
        containers_of(&r.a_id).is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    let (good, bad) = (ok_n.load(Ordering::SeqCst), bad_n.load(Ordering::SeqCst));
    assert!(good > 20, "only {good} requests made it");
    assert_eq!(
        bad,
        0,
        "{bad} of {} requests failed during the drain",
        good + bad
    );
    let kinds = event_kinds(&w);
    assert!(
        kinds.contains(&"moving".into()) && kinds.contains(&"moved".into()),
        "{kinds:?}"
    );
    assert!(
        event(&w, "moving").unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("draining"),
        "{w}"
    );

    // Decommission: a is empty, so it is revoked at once and never placed on again.
    let out = r
        .fleet
        .cli_ok(&["node", "decommission", &r.a_id, "--wait-secs", "30"]);
    assert!(
        out.contains("decommissioned") && out.contains("revoked"),
        "{out}"
    );
    let a = r.fleet.node(&r.a_id);
    assert_eq!(
        (a["revoked"].as_bool(), a["lifecycle"].as_str()),
        (Some(true), Some("decommissioned"))
    );
    let (ok, _, err) = r.fleet.cli(&["node", "uncordon", &r.a_id]);
    assert!(!ok && err.contains("decommissioned"), "{err}");
    let audit = r.fleet.cli_ok(&["audit", "--json"]);
    for action in [
        "node.cordoned",
        "node.uncordoned",
        "node.drain_started",
        "node.decommission_started",
    ] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
    assert!(r.serving(), "web still served from b");
    let _ = (&r.a, &r.b);
}

#[test]
fn a_lost_node_s_workload_serves_again_at_the_same_url_and_the_node_drops_it_on_return() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let mut r = rig();
    r.web_on_a(&image);
    r.wait_serving(60);

    // The node is gone for consumers: latticed (and with it the tunnel) killed. Its container
    // keeps running on the engine, unreachable.
    r.a.kill9();
    let t = Instant::now();
    assert_eq!(containers_of(&r.a_id).lines().count(), 1);
    r.wait_serving(90);
    let took = t.elapsed();
    eprintln!("served again after {took:?}");
    let w = r.wait_running("web", &r.b_id);
    let ev = event(&w, "rescheduled").unwrap_or_else(|| panic!("no rescheduled event: {w}"));
    let detail = ev["detail"].as_str().unwrap();
    assert!(
        detail.contains(&r.a_id) && detail.contains("offline") && detail.contains("grace"),
        "{detail}"
    );
    assert!(ev["at_ms"].as_u64().unwrap() > 0);

    // The node comes back: its target no longer holds web, so it removes its copy.
    let data = r.a.data.clone();
    let prov = std::fs::read_to_string(data.join("provisioning")).unwrap();
    r.a = Node::start(&data, &prov);
    wait_for(60, "a online again", || {
        (r.fleet.node(&r.a_id)["online"] == true).then_some(())
    });
    wait_for(60, "a removed its old copy", || {
        containers_of(&r.a_id).is_empty().then_some(())
    });
    let a = r.fleet.node(&r.a_id);
    assert_eq!(a["applied_revision"], a["target_revision"], "{a}");
    assert!(!a["target"].as_str().unwrap().contains("\"web\""), "{a}");
    assert_eq!(
        containers_of(&r.b_id).lines().count(),
        1,
        "exactly one copy, on b"
    );
    assert!(r.serving());
    assert_eq!(r.show("web")["node"], r.b_id.as_str(), "it stays on b");
}

#[test]
fn a_node_killed_mid_deployment_ends_clear_and_its_work_starts_elsewhere() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let mut r = rig();
    r.fleet.cli_ok(&["node", "cordon", &r.b_id]);
    r.fleet.cli_ok(&[
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
        HTTPD,
    ]);
    // SIGKILL as soon as the node has taken the deployment (it is pulling/starting it).
    wait_for(30, "a took the target", || {
        let n = r.fleet.node(&r.a_id);
        (n["applied_revision"] == n["target_revision"] && n["target"].as_str()?.contains("web"))
            .then_some(())
    });
    r.a.kill9();

    // b is cordoned: the workload stays degraded, the reason names the node, and an event says
    // why it cannot be rescheduled (once, not every second).
    let w = wait_for(30, "cannot_reschedule event", || {
        let w = r.show("web");
        event(&w, "cannot_reschedule").is_some().then_some(w)
    });
    assert_eq!(w["state"], "degraded", "{w}");
    let reason = w["reason"].as_str().unwrap();
    assert!(
        reason.contains(&r.a_id) && reason.contains("offline"),
        "{reason}"
    );
    let detail = event(&w, "cannot_reschedule").unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("lost") && detail.contains("cordoned"),
        "{detail}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let kinds = event_kinds(&r.show("web"));
    assert_eq!(
        kinds.iter().filter(|k| *k == "cannot_reschedule").count(),
        1,
        "{kinds:?}"
    );

    // A node that can take it: it starts there.
    r.fleet.cli_ok(&["node", "uncordon", &r.b_id]);
    let w = r.wait_running("web", &r.b_id);
    assert!(event_kinds(&w).contains(&"rescheduled".into()), "{w}");
    r.wait_serving(60);
}
