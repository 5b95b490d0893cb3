//! Workload updates end to end (issue 5, item 5): real `lattice fleet` (gateway included), two
//! real latticed processes, real containers on the machine's Docker engine, driven through the
//! CLI as a consumer would.
//!
//! * `lattice update --wait` with a new configuration and plan: the new version starts on the
//!   other node while the old one serves, the gateway switches, not one request fails, and the
//!   container has the new plan's memory limit;
//! * a new image that cannot be pulled: the update fails with the reason, the old version keeps
//!   serving at the same address;
//! * `--strategy in-place`: replaced where it runs.
//!
//! Needs root, Docker and the test image (`scripts/test-images`).

mod common;

use common::docker::{can_run_workloads, containers_of, docker, test_image};
use common::rig::{event_kinds, http_get, rig};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOST: &str = "web--operator.lattice-apps.localhost";
/// Serves `$MSG` as its index page.
const HTTPD: &str =
    "mkdir -p /tmp/www && echo \"$MSG\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";

#[test]
fn updates_roll_without_a_failed_request_fail_safely_and_go_in_place_when_asked() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let r = rig();
    let args = [
        "--image", &image, "--port", "8080", "--env", "MSG=v1", "--", "sh", "-c", HTTPD,
    ];
    r.deploy_on_a("web", &args);
    let body = || http_get(r.apps, HOST).map(|(st, b)| (st, b.trim().to_string()));
    wait_for(60, "v1 served through the gateway", || {
        (body() == Some((200, "v1".into()))).then_some(())
    });

    // Every answer through the gateway during the rolling update, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let poller = {
        let (stop, seen, apps) = (stop.clone(), seen.clone(), r.apps);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let answer = match http_get(apps, HOST) {
                    Some((200, b)) => b.trim().to_string(),
                    other => format!("FAILED {other:?}"),
                };
                seen.lock().unwrap().push(answer);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = r.fleet.cli_ok(&[
        "update", "web", "--env", "MSG=v2", "--plan", "medium", "--wait", "--json",
    ]);
    let w: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        w["node"],
        r.b_id.as_str(),
        "rolled onto the other node: {w}"
    );
    assert_eq!(
        (w["plan"].as_str(), w["state"].as_str()),
        (Some("medium"), Some("running"))
    );
    let kinds = event_kinds(&w);
    assert!(
        kinds.ends_with(&["updating".into(), "updated".into()]),
        "{kinds:?}"
    );
    wait_for(60, "old version removed from a", || {
        containers_of(&r.a_id).is_empty().then_some(())
    });
    wait_for(30, "v2 served", || {
        (body() == Some((200, "v2".into()))).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    let failed: Vec<&String> = seen.iter().filter(|s| s.starts_with("FAILED")).collect();
    assert!(seen.len() > 20, "only {} requests made", seen.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    // v1 until the switch, then v2 only.
    let switch = seen.iter().position(|s| s == "v2").expect("v2 was served");
    assert!(seen[..switch].iter().all(|s| s == "v1"), "{seen:?}");
    assert!(
        seen[switch..].iter().all(|s| s == "v2"),
        "flapped back: {seen:?}"
    );
    // The new plan's limit on the container that runs it.
    let id = containers_of(&r.b_id);
    assert_eq!(id.lines().count(), 1, "{id}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.Memory}}", id.trim()]),
        (512u64 << 20).to_string()
    );

    // An image that is not in the registry: the update fails with the reason, v2 keeps serving.
    let (repo, _) = image.split_once("@sha256:").unwrap();
    let missing = format!("{repo}@sha256:{}", "0".repeat(64));
    let (ok, _, err) = r
        .fleet
        .cli(&["update", "web", "--image", &missing, "--wait"]);
    assert!(!ok, "a failed update must fail the command");
    assert!(
        err.contains("update of web failed") && err.contains("keeps serving"),
        "{err}"
    );
    let w = r.show("web");
    assert_eq!(
        (w["node"].as_str(), w["image"].as_str()),
        (Some(r.b_id.as_str()), Some(image.as_str()))
    );
    assert!(w["next"].is_null() && w["moving_to"].is_null(), "{w}");
    assert_eq!(body(), Some((200, "v2".into())));
    wait_for(60, "a dropped the failed version", || {
        containers_of(&r.a_id).is_empty().then_some(())
    });

    // In place, when asked: it stays on b and serves the new configuration.
    let out = r.fleet.cli_ok(&[
        "update",
        "web",
        "--env",
        "MSG=v3",
        "--strategy",
        "in-place",
        "--wait",
        "--json",
    ]);
    let w: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(w["node"], r.b_id.as_str(), "{w}");
    let last = w["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "updated", "{w}");
    assert!(last["detail"].as_str().unwrap().contains("in place"), "{w}");
    wait_for(60, "v3 served", || {
        (body() == Some((200, "v3".into()))).then_some(())
    });
    assert_eq!(
        containers_of(&r.b_id).lines().count(),
        1,
        "one copy, replaced"
    );
    let _ = (&r.a, &r.b);
}
