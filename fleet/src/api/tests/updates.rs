//! Workload updates (issue 5, item 5): a rolling update runs the new version on another node
//! while the old one serves, and either replaces it (it runs) or is dropped (it failed, the old
//! one keeps serving); with no other node, or when asked, it is replaced in place. Bad requests
//! say what was wrong; another tenant gets 404.

use super::accounts::account;
use super::node_lifecycle::node_of;
use super::*;
use crate::store::Effect;
use lattice_wire::msg::{Inventory, WorkloadSpec, WorkloadState, WorkloadStatus};
use serde_json::json;

const GRACE: std::time::Duration = std::time::Duration::from_secs(30);
const IMAGE_V1: &str = "127.0.0.1:5000/app@sha256:1111";
const IMAGE_V2: &str = "127.0.0.1:5000/app@sha256:2222";

/// A registered node that said hello with 4 CPUs and 4 GiB (it offers half of each).
async fn online_node(s: &Arc<AppState>) -> String {
    online_node_of(s, "prov").await
}

/// [`online_node`], owned by `owner`.
pub(super) async fn online_node_of(s: &Arc<AppState>, owner: &str) -> String {
    let id = node_of(s, owner).await;
    let inventory = Inventory {
        hostname: id.clone(),
        cpu_model: "test".into(),
        cpu_count: 4,
        memory_bytes: 4 << 30,
        disk_total_bytes: 100 << 30,
        disk_free_bytes: 50 << 30,
        kernel: "6".into(),
        arch: "x86_64".into(),
    };
    let hello = Effect::Hello {
        inventory_json: serde_json::to_string(&inventory).unwrap(),
        firmware_version: "test".into(),
        applied_revision: 0,
    };
    s.store
        .ingest(&id, 1, 1, hello, lattice_wire::now_ms())
        .await
        .unwrap();
    id
}

/// `node` reports `state` for the workload `id` (a heartbeat of connection epoch 1), having
/// applied its current target.
async fn report(s: &Arc<AppState>, node: &str, counter: u64, id: &str, state: WorkloadState) {
    let applied = s.store.node(node).await.unwrap().unwrap().target_revision;
    report_applied(s, node, counter, id, state, applied).await
}

/// [`report`], with the target revision the node says it has applied.
async fn report_applied(
    s: &Arc<AppState>,
    node: &str,
    counter: u64,
    id: &str,
    state: WorkloadState,
    applied: u64,
) {
    let statuses = vec![WorkloadStatus {
        id: id.into(),
        state,
        restarts: 0,
    }];
    let status = Effect::Status {
        usage_json: "{}".into(),
        applied_revision: applied,
        workloads_json: serde_json::to_string(&statuses).unwrap(),
    };
    s.store
        .ingest(node, 1, counter, status, lattice_wire::now_ms())
        .await
        .unwrap();
}

async fn target(s: &Arc<AppState>, node: &str) -> Vec<WorkloadSpec> {
    let n = s.store.node(node).await.unwrap().unwrap();
    serde_json::from_str(&n.target).unwrap_or_default()
}

fn env(spec: &WorkloadSpec, key: &str) -> Option<String> {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

async fn round(s: &Arc<AppState>) -> crate::lifecycle::Changes {
    let mut changes = crate::lifecycle::Changes::default();
    crate::lifecycle::round(s, GRACE, 0, lattice_wire::now_ms(), &mut changes)
        .await
        .unwrap();
    changes
}

async fn patch(
    s: &Arc<AppState>,
    token: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    call(
        s,
        "PATCH",
        "/api/v1/workloads/web",
        Some(token),
        Some(body.to_string()),
    )
    .await
}

/// A consumer with `web` (v1, env MSG=v1) deployed; returns (token, workload id, its node).
async fn deployed(s: &Arc<AppState>) -> (String, String, String) {
    let (_, token) = account(s, "c@example.org", "consumer").await;
    let body = json!({"kind": "container", "name": "web", "image": IMAGE_V1, "port": 8080,
        "env": {"MSG": "v1", "SECRET": "hunter2"}});
    let (st, v) = call(
        s,
        "POST",
        "/api/v1/workloads",
        Some(&token),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let node = v["node"].as_str().unwrap().to_string();
    let w = s.store.workloads(None).await.unwrap().pop().unwrap();
    (token, w.id, node)
}

/// The fleet's registry rewrite (ADR 0011) is the state's own (`FleetConfig::node_registry`),
/// not a process-wide setting: in one process, a state with it hands nodes the pinned image at
/// the proxy, a state without it the image as deployed; the workload keeps the canonical one.
#[tokio::test]
async fn targets_hand_pinned_images_at_the_proxy_only_when_the_fleet_is_set_up_for_it() {
    use crate::gateway::upstream::NodeRegistry;
    let digest = "ab".repeat(32);
    let image = format!("127.0.0.1:5000/app@sha256:{digest}");
    let rewrite = NodeRegistry {
        registry: "127.0.0.1:5000".into(),
        proxy: "127.0.0.1:5001".parse().unwrap(),
    };
    let at_proxy = format!("127.0.0.1:5001/app@sha256:{digest}");
    for (rewrite, handed) in [(Some(rewrite), at_proxy), (None, image.clone())] {
        let Ok(mut st) = Arc::try_unwrap(state().await) else {
            panic!("a fresh state has one owner")
        };
        st.node_registry = rewrite;
        let s = Arc::new(st);
        online_node(&s).await;
        let (_, token) = account(&s, "c@example.org", "consumer").await;
        let body = json!({"kind": "container", "name": "web", "image": image, "port": 8080});
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/workloads",
            Some(&token),
            Some(body.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let node = v["node"].as_str().unwrap().to_string();
        assert_eq!(target(&s, &node).await[0].image, handed);
        let w = s.store.workloads(None).await.unwrap().pop().unwrap();
        assert!(w.settings.contains(&image), "{}", w.settings);
        // Rebuilt from the placements (a fleet start), the target is the same.
        crate::workloads::retarget(&s.store, &node, s.node_registry.as_ref())
            .await
            .unwrap();
        assert_eq!(target(&s, &node).await[0].image, handed);
    }
}

fn event_kinds(v: &serde_json::Value) -> Vec<&str> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_rolling_update_serves_the_old_version_until_the_new_one_runs() {
    let s = state().await;
    let a = online_node(&s).await;
    let b = online_node(&s).await;
    let (token, id, from) = deployed(&s).await;
    let to = if from == a { b.clone() } else { a.clone() };
    report(&s, &from, 2, &id, WorkloadState::Running).await;

    let (st, v) = patch(
        &s,
        &token,
        json!({"set_env": {"MSG": "second-message"}, "plan": "medium"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["node"],
        from.as_str(),
        "the old version still serves: {v}"
    );
    assert_eq!(v["moving_to"], to.as_str(), "{v}");
    assert_eq!(
        (v["plan"].as_str(), v["next"]["plan"].as_str()),
        (Some("small"), Some("medium"))
    );
    assert_eq!(v["state"], "running", "{v}");
    // Each node runs its own version.
    let old = target(&s, &from).await;
    let new = target(&s, &to).await;
    assert_eq!(env(&old[0], "MSG").as_deref(), Some("v1"));
    assert_eq!(old[0].cpu_millis, 250);
    assert_eq!(env(&new[0], "MSG").as_deref(), Some("second-message"));
    assert_eq!(new[0].cpu_millis, 500, "the new plan on the new node");
    assert_eq!(
        env(&new[0], "SECRET").as_deref(),
        Some("hunter2"),
        "env kept"
    );
    // A second change waits for this one.
    let (st, v2) = patch(&s, &token, json!({"image": IMAGE_V2})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v2}");
    assert!(
        v2["message"]
            .as_str()
            .unwrap()
            .contains("in the middle of an update"),
        "{v2}"
    );

    // Not running yet: nothing changes.
    round(&s).await;
    let w = s.store.workloads(None).await.unwrap().pop().unwrap();
    assert_eq!(w.moving_to.as_deref(), Some(to.as_str()));
    // A report from before the node took the target with the new version (the same id ran
    // there before, say) settles nothing.
    let rev = s.store.node(&to).await.unwrap().unwrap().target_revision;
    report_applied(&s, &to, 3, &id, WorkloadState::Running, rev - 1).await;
    round(&s).await;
    let w = s.store.workloads(None).await.unwrap().pop().unwrap();
    assert_eq!(
        w.moving_to.as_deref(),
        Some(to.as_str()),
        "settled on a stale report"
    );
    // It runs on the new node: the update is done, the old node drops it after the switch.
    report(&s, &to, 4, &id, WorkloadState::Running).await;
    let changes = round(&s).await;
    assert_eq!(changes.retarget_later, vec![from.clone()]);
    let (_, v) = call(&s, "GET", "/api/v1/workloads/web", Some(&token), None).await;
    assert_eq!(
        (v["node"].as_str(), v["moving_to"].as_str()),
        (Some(to.as_str()), None),
        "{v}"
    );
    assert_eq!(v["plan"], "medium");
    assert!(v["next"].is_null(), "{v}");
    let kinds = event_kinds(&v);
    assert!(kinds.ends_with(&["updating", "updated"]), "{kinds:?}");
    crate::workloads::retarget(&s.store, &from, None)
        .await
        .unwrap();
    assert!(target(&s, &from).await.is_empty());
    assert_eq!(
        env(&target(&s, &to).await[0], "MSG").as_deref(),
        Some("second-message")
    );

    // Audited with what changed, never an env value.
    let (_, audit) = call(
        &s,
        "GET",
        "/api/v1/audit?action=workload.changed",
        Some(OP),
        None,
    )
    .await;
    let text = audit.to_string();
    assert!(
        text.contains("env set: MSG") && text.contains("plan small -> medium"),
        "{text}"
    );
    assert!(
        !text.contains("second-message") && !text.contains("hunter2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_new_version_is_dropped_and_the_old_one_keeps_serving() {
    let s = state().await;
    let a = online_node(&s).await;
    let b = online_node(&s).await;
    let (token, id, from) = deployed(&s).await;
    let to = if from == a { b.clone() } else { a.clone() };
    report(&s, &from, 2, &id, WorkloadState::Running).await;

    let (st, v) = patch(&s, &token, json!({"image": IMAGE_V2})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["next"]["image"], IMAGE_V2);
    report(
        &s,
        &to,
        3,
        &id,
        WorkloadState::ImageMissing {
            reason: "manifest unknown".into(),
        },
    )
    .await;
    round(&s).await;
    let (_, v) = call(&s, "GET", "/api/v1/workloads/web", Some(&token), None).await;
    assert_eq!(
        (v["node"].as_str(), v["moving_to"].as_str()),
        (Some(from.as_str()), None),
        "{v}"
    );
    assert_eq!(v["image"], IMAGE_V1, "{v}");
    assert_eq!(v["state"], "running", "{v}");
    let failed = v["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(failed["kind"], "update_failed", "{v}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("manifest unknown") && detail.contains(&format!("keeps serving on {from}")),
        "{detail}"
    );
    assert!(target(&s, &to).await.is_empty(), "the new node dropped it");
    assert_eq!(target(&s, &from).await[0].image, IMAGE_V1);
}

#[tokio::test]
async fn with_no_other_node_an_update_is_in_place_unless_rolling_was_asked_for() {
    let s = state().await;
    let a = online_node(&s).await;
    let (token, id, from) = deployed(&s).await;
    assert_eq!(from, a);

    // Rolling only: refused, with why and what else would work.
    let (st, v) = patch(
        &s,
        &token,
        json!({"image": IMAGE_V2, "strategy": "rolling"}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("no node besides") && m.contains("in_place"),
        "{m}"
    );

    // Auto: in place, and the event says why it was not rolling.
    let (st, v) = patch(&s, &token, json!({"image": IMAGE_V2, "plan": "large"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["node"].as_str(), v["moving_to"].as_str()),
        (Some(a.as_str()), None)
    );
    assert_eq!(
        (v["image"].as_str(), v["plan"].as_str()),
        (Some(IMAGE_V2), Some("large"))
    );
    let last = v["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "updated");
    let detail = last["detail"].as_str().unwrap();
    assert!(
        detail.contains("in place") && detail.contains("no other node"),
        "{detail}"
    );
    let spec = &target(&s, &a).await[0];
    assert_eq!((spec.image.as_str(), spec.cpu_millis), (IMAGE_V2, 1000));
    assert_eq!(spec.id, id);

    // The same again: nothing to do, no event.
    let before = event_kinds(&v).len();
    let (st, v) = patch(&s, &token, json!({"image": IMAGE_V2})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(event_kinds(&v).len(), before);

    // Bigger than the node can hold (it offers 2 CPUs, 2 GiB; large is 1 CPU, 1 GiB): a
    // second large workload fits, a third does not, and resizing in place says which resource.
    for name in ["two", "three"] {
        let body = json!({"kind": "container", "name": name, "image": IMAGE_V1, "plan": "small"});
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/workloads",
            Some(&token),
            Some(body.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = call(
        &s,
        "PATCH",
        "/api/v1/workloads/two",
        Some(&token),
        Some(json!({"plan": "large"}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(&format!("not enough CPU on node {a}")),
        "{v}"
    );
}

#[tokio::test]
async fn bad_updates_say_what_was_wrong_and_other_tenants_get_404() {
    let s = state().await;
    online_node(&s).await;
    let (token, _, _) = deployed(&s).await;
    let (_, other) = account(&s, "b@example.org", "consumer").await;
    for (body, why) in [
        (json!({}), "nothing to change"),
        (json!({"plan": "huge"}), "unknown plan \"huge\""),
        (json!({"image": "busybox:latest"}), "pinned by digest"),
        (json!({"port": 0}), "port must be 1 to 65535"),
        (json!({"set_env": {"A=B": "x"}}), "env name"),
        (json!({"strategy": "yolo"}), "unknown variant"),
        (json!({"imagee": IMAGE_V2}), "unknown field"),
    ] {
        let (st, v) = patch(&s, &token, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let m = v["message"].as_str().unwrap_or_default();
        assert!(m.contains(why), "{body}: {v}");
    }
    let (st, _) = patch(&s, &other, json!({"image": IMAGE_V2})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(
        &s,
        "PATCH",
        "/api/v1/workloads/web",
        None,
        Some("{}".into()),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, v) = call(&s, "GET", "/api/v1/workloads/web", Some(&token), None).await;
    assert_eq!(
        (v["image"].as_str(), v["plan"].as_str()),
        (Some(IMAGE_V1), Some("small"))
    );
}

#[tokio::test]
async fn an_update_whose_new_version_never_runs_is_given_up_at_the_deadline() {
    let s = state().await;
    online_node(&s).await;
    online_node(&s).await;
    let (token, id, from) = deployed(&s).await;
    report(&s, &from, 2, &id, WorkloadState::Running).await;
    let (st, v) = patch(&s, &token, json!({"image": IMAGE_V2})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let to = v["moving_to"].as_str().unwrap().to_string();
    // The new node never reports it (a pull that hangs): nothing changes before the deadline…
    let started = s
        .store
        .workloads(None)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .updated_ms;
    let deadline = crate::lifecycle::MOVE_DEADLINE.as_millis() as u64;
    at(&s, started + deadline - 1).await;
    let w = s.store.workloads(None).await.unwrap().pop().unwrap();
    assert_eq!(w.moving_to.as_deref(), Some(to.as_str()));
    // …and it is given up after it, the old version still serving.
    at(&s, started + deadline).await;
    let (_, v) = call(&s, "GET", "/api/v1/workloads/web", Some(&token), None).await;
    assert_eq!(
        (v["node"].as_str(), v["moving_to"].as_str()),
        (Some(from.as_str()), None),
        "{v}"
    );
    assert_eq!(v["image"], IMAGE_V1);
    let last = v["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "update_failed", "{v}");
    assert!(
        last["detail"].as_str().unwrap().contains("not running on"),
        "{v}"
    );
}

/// One lifecycle round at `ms`.
async fn at(s: &Arc<AppState>, ms: u64) {
    crate::lifecycle::round(s, GRACE, 0, ms, &mut Default::default())
        .await
        .unwrap();
}

/// A workload's change, its nodes' new target and its audit row are one transaction: when the
/// audit row cannot be stored, a deploy, an update and a delete each answer an error and store
/// nothing (no workload, event or target revision that the audit log does not account for);
/// once it can, the update is stored with exactly one audit row.
#[tokio::test]
async fn a_write_whose_audit_row_is_refused_stores_nothing() {
    let s = state().await;
    online_node(&s).await;
    let (token, id, node) = deployed(&s).await;
    let before = s.store.workload_by_id(&id).await.unwrap().unwrap();
    let events = s.store.workload_events(&id).await.unwrap();
    let revision = s.store.node(&node).await.unwrap().unwrap().target_revision;
    let changed = crate::store::AuditFilter {
        action: Some("workload.changed".into()),
        limit: 100,
        ..Default::default()
    };
    sqlx::query(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
    )
    .execute(s.store.pool())
    .await
    .unwrap();
    let patch = json!({"set_env": {"MSG": "v2"}, "strategy": "in_place"}).to_string();
    let other = json!({"kind": "container", "name": "other", "image": IMAGE_V1, "port": 8080});
    for (method, path, body) in [
        ("PATCH", "/api/v1/workloads/web", Some(patch.clone())),
        ("DELETE", "/api/v1/workloads/web", None),
        ("POST", "/api/v1/workloads", Some(other.to_string())),
    ] {
        let (st, v) = call(&s, method, path, Some(&token), body).await;
        assert!(st.is_server_error(), "{method}: {st} {v}");
    }
    assert_eq!(s.store.workloads(None).await.unwrap(), vec![before.clone()]);
    assert_eq!(s.store.workload_events(&id).await.unwrap(), events);
    assert_eq!(
        s.store.node(&node).await.unwrap().unwrap().target_revision,
        revision
    );
    assert!(s.store.audit(&changed).await.unwrap().is_empty());

    sqlx::query("DROP TRIGGER no_audit")
        .execute(s.store.pool())
        .await
        .unwrap();
    let (st, v) = call(
        &s,
        "PATCH",
        "/api/v1/workloads/web",
        Some(&token),
        Some(patch),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let after = s.store.workload_by_id(&id).await.unwrap().unwrap();
    assert!(after.settings.contains("v2"), "{}", after.settings);
    assert_eq!(
        s.store.node(&node).await.unwrap().unwrap().target_revision,
        revision + 1
    );
    let audited = s.store.audit(&changed).await.unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].target, id);
    assert!(
        audited[0].detail.starts_with("name=web in place: "),
        "{audited:?}"
    );
}
