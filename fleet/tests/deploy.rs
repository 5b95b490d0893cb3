//! The workload frame end to end: `lattice deploy container` on a real fleet places the
//! workload on a real latticed node, which runs it on the machine's Docker engine; its state
//! comes back through `lattice workload show`; bad requests are refused with the reason and
//! change nothing; no capacity says which resource was short; `lattice delete` removes it from
//! the node. Needs root, Docker and the test image (`scripts/test-images`).

mod common;

use common::docker::*;
use common::*;

#[test]
fn deploy_show_refuse_and_delete_a_container_workload() {
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
    // Before any node: nothing can be placed, and the answer says so.
    let (ok, _, err) = f.cli(&[
        "deploy",
        "container",
        "early",
        "--image",
        &image,
        "--port",
        "8080",
    ]);
    assert!(!ok && err.contains("no nodes have registered"), "{err}");

    let (_n, id, _cleanup) = online_node(&f, &dir.path().join("node"), "alice");

    let out = f.cli_ok(&[
        "deploy",
        "container",
        "web",
        "--image",
        &image,
        "--port",
        "8080",
        "--json",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    ]);
    let w: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(w["node"], id.as_str(), "{w}");
    assert_eq!(w["plan"], "small");

    let shown = wait_for(90, "web running", || {
        let (ok, out, _) = f.cli(&["workload", "show", "web", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v["state"] == "running").then_some(v)
    });
    let events: Vec<String> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(events.iter().any(|e| e.contains(&id)), "{events:?}");
    assert_eq!(containers_of(&id).lines().count(), 1);
    let list = f.cli_ok(&["workloads"]);
    assert!(list.contains("web") && list.contains("running"), "{list}");

    // Refusals, each with its reason; none leaves anything behind.
    for (args, why) in [
        (vec!["deploy", "container", "Web"], "lower-case"),
        (vec!["deploy", "container", "api"], "reserved"),
        (vec!["deploy", "vm", "thing"], "unknown kind"),
        (vec!["deploy", "container", "web"], "exists already"),
        (
            vec!["deploy", "container", "big", "--plan", "huge"],
            "unknown plan",
        ),
        // The node offers 1 core (half of 2); web holds 250 millicores.
        (
            vec!["deploy", "container", "big", "--plan", "large"],
            "not enough CPU",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--image", image.as_str()]);
        let (ok, _, err) = f.cli(&all);
        assert!(!ok && err.contains(why), "{args:?}: {err}");
    }
    let (ok, _, err) = f.cli(&["deploy", "container", "bad", "--image", "busybox:latest"]);
    assert!(!ok && err.contains("pinned by digest"), "{err}");
    let (ok, _, err) = f.cli(&["workload", "show", "nothing"]);
    assert!(!ok && err.contains("no workload named"), "{err}");
    assert_eq!(
        containers_of(&id).lines().count(),
        1,
        "refusals made nothing"
    );

    f.cli_ok(&["delete", "web"]);
    wait_for(60, "web's container removed", || {
        containers_of(&id).is_empty().then_some(())
    });
    let (ok, _, _) = f.cli(&["workload", "show", "web"]);
    assert!(!ok, "deleted workloads are gone");
}
