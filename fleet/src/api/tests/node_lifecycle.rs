//! Node lifecycle routes: scoped like the other node routes (a provider acts on its own nodes,
//! another provider gets 404, a consumer 403), audited, and a drain lists what cannot move.

use super::accounts::account;
use super::*;
use crate::store::WorkloadRow;
use serde_json::json;

const GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A node owned by `owner`, registered through the API; returns its id.
pub(super) async fn node_of(s: &Arc<AppState>, owner: &str) -> String {
    let t = new_token(s, &json!({ "owner": owner }).to_string()).await;
    let p = lattice_wire::register::Provisioning::parse(&t.provisioning).unwrap();
    let (st, v) = register(
        s,
        &p.token,
        &IdentityKey::generate(),
        &EncryptionKey::generate(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let nodes = s.store.nodes().await.unwrap();
    nodes.last().unwrap().id.clone()
}

/// A movable `container` workload "web" placed on `node`.
fn container_on(node: &str) -> WorkloadRow {
    WorkloadRow {
        id: "w-web".into(),
        account_id: "acct".into(),
        name: "web".into(),
        kind: "container".into(),
        plan: "small".into(),
        settings: r#"{"image":"r/a@sha256:aa","port":8080,"env":{},"command":[]}"#.into(),
        node_id: Some(node.to_string()),
        moving_to: None,
        cpu_millis: 250,
        memory_bytes: 256 << 20,
        disk_bytes: 0,
        created_ms: 1,
        updated_ms: 1,
        next: None,
    }
}

#[tokio::test]
async fn lifecycle_routes_are_scoped_to_the_nodes_owner_and_audited() {
    let s = state().await;
    let (pa, ta) = account(&s, "pa@x.org", "provider").await;
    let (_, tb) = account(&s, "pb@x.org", "provider").await;
    let (_, tc) = account(&s, "c@x.org", "consumer").await;
    let id = node_of(&s, &pa).await;
    for op in ["cordon", "uncordon", "drain", "decommission"] {
        let uri = format!("/api/v1/nodes/{id}/{op}");
        assert_eq!(
            call(&s, "POST", &uri, Some(&tb), None).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&s, "POST", &uri, Some(&tc), None).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&s, "POST", &uri, None, None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let uri = format!("/api/v1/nodes/{id}/lifecycle");
    assert_eq!(
        call(&s, "GET", &uri, Some(&tb), None).await.0,
        StatusCode::NOT_FOUND
    );

    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/nodes/{id}/cordon"),
        Some(&ta),
        None,
    )
    .await;
    assert_eq!(
        (st, v["lifecycle"].as_str()),
        (StatusCode::OK, Some("cordoned")),
        "{v}"
    );
    assert_eq!(
        s.store.node(&id).await.unwrap().unwrap().lifecycle,
        "cordoned"
    );
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/nodes/{id}/uncordon"),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(
        (st, v["lifecycle"].as_str()),
        (StatusCode::OK, Some("active")),
        "{v}"
    );

    let (_, audit) = call(
        &s,
        "GET",
        "/api/v1/audit?action=node.cordoned",
        Some(OP),
        None,
    )
    .await;
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["actor"] == pa.as_str()
            && e["target"] == id.as_str()
            && e["detail"] == "active -> cordoned"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_stateful_workload_blocks_a_drain_with_the_reason_and_decommission_waits_for_it() {
    let s = state().await;
    let id = node_of(&s, "someone").await;
    // A kind that keeps state on its node (the storage/database issues fill its hook).
    let w = WorkloadRow {
        id: "w-db".into(),
        name: "db".into(),
        kind: "postgres".into(),
        settings: "{}".into(),
        ..container_on(&id)
    };
    assert!(s.store.insert_workload(&w, "test").await.unwrap());
    // A movable one with nowhere to go (the only node is the one being drained, and it never
    // connected).
    let web = container_on(&id);
    assert!(s.store.insert_workload(&web, "test").await.unwrap());

    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/nodes/{id}/decommission"),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["lifecycle"], "decommissioning");
    let listed = |v: &serde_json::Value, name: &str| {
        v["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {v}"))
    };
    let db = listed(&v, "db");
    assert_eq!(db["status"], "blocked");
    assert!(
        db["detail"].as_str().unwrap().contains("not movable"),
        "{v}"
    );
    let web_listed = listed(&v, "web");
    assert_eq!(web_listed["status"], "blocked", "{v}");
    let why = web_listed["detail"].as_str().unwrap();
    assert!(
        why.contains("cannot move: no node can take it (rejected: 1 offline)"),
        "{why}"
    );
    // Rounds of the background task leave it there, say why once, and keep the node.
    for _ in 0..3 {
        crate::lifecycle::round(
            &s,
            GRACE,
            0,
            lattice_wire::now_ms(),
            &mut Default::default(),
        )
        .await
        .unwrap();
    }
    let events = s.store.workload_events("w-db").await.unwrap();
    let not_movable: Vec<_> = events.iter().filter(|e| e.kind == "not_movable").collect();
    assert_eq!(not_movable.len(), 1, "{events:?}");
    assert!(
        not_movable[0].detail.contains("kind \"postgres\""),
        "{events:?}"
    );
    let node = s.store.node(&id).await.unwrap().unwrap();
    assert!(
        !node.revoked && node.lifecycle == "decommissioning",
        "{node:?}"
    );

    // Once they are gone, the next round revokes the node for good.
    s.store.delete_workload("w-db").await.unwrap();
    s.store.delete_workload("w-web").await.unwrap();
    crate::lifecycle::round(
        &s,
        GRACE,
        0,
        lattice_wire::now_ms(),
        &mut Default::default(),
    )
    .await
    .unwrap();
    let node = s.store.node(&id).await.unwrap().unwrap();
    assert!(
        node.revoked && node.lifecycle == "decommissioned",
        "{node:?}"
    );
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/nodes/{id}/uncordon"),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("decommissioned"),
        "{v}"
    );
}

#[tokio::test]
async fn a_fleet_back_from_downtime_gives_silent_nodes_the_grace_before_calling_them_lost() {
    let s = state().await;
    let id = node_of(&s, "someone").await;
    let web = container_on(&id);
    assert!(s.store.insert_workload(&web, "test").await.unwrap());
    // Long after the node was last heard of, but the fleet itself only started a second ago
    // (it was down): not lost yet, nothing is moved or said.
    let now = lattice_wire::now_ms() + GRACE.as_millis() as u64 * 10;
    crate::lifecycle::round(&s, GRACE, now - 1_000, now, &mut Default::default())
        .await
        .unwrap();
    let events = s.store.workload_events("w-web").await.unwrap();
    assert!(
        events.iter().all(|e| !e.kind.contains("reschedule")),
        "{events:?}"
    );
    // Once the grace has passed since the fleet came back too, it is lost.
    crate::lifecycle::round(
        &s,
        GRACE,
        now - GRACE.as_millis() as u64 - 1,
        now,
        &mut Default::default(),
    )
    .await
    .unwrap();
    let events = s.store.workload_events("w-web").await.unwrap();
    assert!(
        events.iter().any(|e| e.kind.contains("reschedule")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_provider_cannot_lift_an_operators_cordon_but_may_go_further() {
    let s = state().await;
    let (pa, ta) = account(&s, "pa@x.org", "provider").await;
    let id = node_of(&s, &pa).await;
    let post = |op: &'static str, token: String| {
        let s = s.clone();
        let id = id.clone();
        async move {
            call(
                &s,
                "POST",
                &format!("/api/v1/nodes/{id}/{op}"),
                Some(&token),
                None,
            )
            .await
        }
    };
    // The provider's own cordon is the provider's to lift.
    assert_eq!(post("cordon", ta.clone()).await.0, StatusCode::OK);
    assert_eq!(post("uncordon", ta.clone()).await.0, StatusCode::OK);

    // An operator's is not.
    let (st, v) = post("cordon", OP.to_string()).await;
    assert_eq!(
        (st, v["lifecycle"].as_str()),
        (StatusCode::OK, Some("cordoned"))
    );
    let (st, v) = post("uncordon", ta.clone()).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("only an operator"),
        "{v}"
    );
    // Further out is fine, and still not the provider's to undo.
    let (st, v) = post("drain", ta.clone()).await;
    assert_eq!(
        (st, v["lifecycle"].as_str()),
        (StatusCode::OK, Some("draining"))
    );
    assert_eq!(post("uncordon", ta.clone()).await.0, StatusCode::FORBIDDEN);
    let node = s.store.node(&id).await.unwrap().unwrap();
    assert_eq!(
        (node.lifecycle.as_str(), node.lifecycle_by.as_str()),
        ("draining", "operator")
    );
    // The operator lifts it; then the provider is free again.
    assert_eq!(post("uncordon", OP.to_string()).await.0, StatusCode::OK);
    assert_eq!(post("cordon", ta.clone()).await.0, StatusCode::OK);
    assert_eq!(post("uncordon", ta).await.0, StatusCode::OK);
}
