//! The `s3` kind's routes: a fleet without `--s3-image` refuses the deploy naming the flag;
//! credentials are the owner's only, audited without the secret, and never in the view.

use super::accounts::account;
use super::*;
use crate::store::WorkloadRow;
use crate::workloads::DeployRequest;

/// An `s3` workload of `account` as a deploy stores it (no node needed for these routes).
async fn stored_s3(s: &Arc<AppState>, account: &str, name: &str) -> crate::kinds::s3::S3Settings {
    let req = DeployRequest {
        kind: "s3".into(),
        name: name.into(),
        plan: None,
        image: String::new(),
        port: None,
        env: Default::default(),
        command: vec![],
        ..Default::default()
    };
    let (p, settings) =
        crate::kinds::s3::prepare(&req, Some("127.0.0.1:5000/lattice/s3@sha256:aa")).unwrap();
    let w = WorkloadRow {
        id: format!("w-{name}-{account}"),
        account_id: account.into(),
        name: name.into(),
        kind: "s3".into(),
        plan: p.name.into(),
        settings: serde_json::to_string(&settings).unwrap(),
        node_id: None,
        moving_to: None,
        cpu_millis: p.cpu_millis.into(),
        memory_bytes: p.memory_bytes,
        disk_bytes: settings.volume_bytes,
        created_ms: 1,
        updated_ms: 1,
        next: None,
    };
    assert!(s.store.insert_workload(&w, "test").await.unwrap());
    settings
}

#[tokio::test]
async fn without_an_s3_image_the_deploy_is_503_naming_the_flag() {
    let s = state().await;
    let (_, token) = account(&s, "a@example.org", "consumer").await;
    let body = r#"{"kind":"s3","name":"files"}"#.to_string();
    let (st, v) = call(&s, "POST", "/api/v1/workloads", Some(&token), Some(body)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "kind_unavailable");
    assert!(v["message"].as_str().unwrap().contains("--s3-image"), "{v}");
    assert!(s.store.workloads(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_deploy_time_bucket_is_400_naming_it_and_containers_take_none() {
    let s = state().await;
    let (_, token) = account(&s, "a@example.org", "consumer").await;
    let body = r#"{"kind":"s3","name":"files","buckets":["photos","Bad_Name"]}"#.to_string();
    let (st, v) = call(&s, "POST", "/api/v1/workloads", Some(&token), Some(body)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("\"Bad_Name\"") && m.contains("naming rules"),
        "{v}"
    );
    let body = r#"{"kind":"container","name":"web","image":"r/x@sha256:aa","buckets":["photos"]}"#;
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/workloads",
        Some(&token),
        Some(body.into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("kind s3"), "{v}");
    assert!(s.store.workloads(None).await.unwrap().is_empty());
    // The API's reference documents the field.
    let (st, doc) = call(&s, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let field = &doc["components"]["schemas"]["DeployRequest"]["properties"]["buckets"];
    assert_eq!(field["type"], "array", "{field}");
    assert!(
        field["description"]
            .as_str()
            .unwrap_or_default()
            .contains("s3"),
        "{field}"
    );
}

#[tokio::test]
async fn credentials_are_the_owners_audited_without_the_secret_and_not_in_the_view() {
    let s = state().await;
    let (a, token_a) = account(&s, "a@example.org", "consumer").await;
    let (_, token_b) = account(&s, "b@example.org", "consumer").await;
    let settings = stored_s3(&s, &a, "files").await;

    let (st, view) = call(&s, "GET", "/api/v1/workloads/files", Some(&token_a), None).await;
    assert_eq!(st, StatusCode::OK, "{view}");
    assert_eq!(view["kind"], "s3");
    assert_eq!(view["port"], crate::kinds::s3::PORT);
    assert!(
        !view.to_string().contains(&settings.secret_access_key),
        "{view}"
    );

    let uri = "/api/v1/workloads/files/credentials";
    let (st, c) = call(&s, "GET", uri, Some(&token_a), None).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["access_key_id"], settings.access_key_id.as_str());
    assert_eq!(c["secret_access_key"], settings.secret_access_key.as_str());
    let (st, _) = call(&s, "GET", uri, Some(&token_b), None).await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "another tenant's name does not exist"
    );
    let (st, _) = call(&s, "GET", uri, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let (_, audit) = call(
        &s,
        "GET",
        "/api/v1/audit?action=credentials.revealed",
        Some(OP),
        None,
    )
    .await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one reveal, one entry: {audit}");
    assert_eq!(entries[0]["actor"], a.as_str());
    assert!(!audit.to_string().contains(&settings.secret_access_key));

    // A container has no generated credentials.
    let c = r#"{"image":"r/a@sha256:aa","port":8080,"env":{},"command":[]}"#;
    let mut w = s.store.workload(&a, "files").await.unwrap().unwrap();
    w.id = "w-web".into();
    w.name = "web".into();
    w.kind = "container".into();
    w.settings = c.into();
    assert!(s.store.insert_workload(&w, "test").await.unwrap());
    let (st, v) = call(
        &s,
        "GET",
        "/api/v1/workloads/web/credentials",
        Some(&token_a),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(v.to_string().contains("no generated credentials"), "{v}");
}

const S3_IMAGE: &str = "127.0.0.1:5000/lattice/s3@sha256:aa";

/// A fleet state that can deploy `s3`.
async fn s3_state() -> Arc<AppState> {
    let mut s = state().await;
    Arc::get_mut(&mut s).unwrap().kinds.s3_image = Some(S3_IMAGE.into());
    s
}

/// One lifecycle round at `at` (ms), with the default 30 s grace, as the fleet's task runs it.
async fn round_at(s: &Arc<AppState>, at: u64) {
    crate::lifecycle::round(
        s,
        std::time::Duration::from_secs(30),
        0,
        at,
        &mut Default::default(),
    )
    .await
    .unwrap()
}

fn target_of(node: &crate::store::NodeRow) -> Vec<lattice_wire::msg::WorkloadSpec> {
    serde_json::from_str(&node.target).unwrap_or_default()
}

async fn node_row(s: &Arc<AppState>, id: &str) -> crate::store::NodeRow {
    s.store.node(id).await.unwrap().unwrap()
}

async fn deploy_files(s: &Arc<AppState>, token: &str) -> serde_json::Value {
    let body = r#"{"kind":"s3","name":"files","buckets":["photos"]}"#.to_string();
    let (st, v) = call(s, "POST", "/api/v1/workloads", Some(token), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

#[tokio::test]
async fn a_deploy_places_a_replica_on_another_providers_node_and_the_primary_reaches_it() {
    let s = s3_state().await;
    let (a, token) = account(&s, "a@example.org", "consumer").await;
    let alice = [
        super::updates::online_node_of(&s, "alice").await,
        super::updates::online_node_of(&s, "alice").await,
    ];
    let bob = super::updates::online_node_of(&s, "bob").await;
    deploy_files(&s, &token).await;

    let primary = s.store.workload(&a, "files").await.unwrap().unwrap();
    let replica = s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .expect("a replica is stored beside the primary");
    let (pn, rn) = (
        primary.node_id.clone().unwrap(),
        replica.node_id.clone().unwrap(),
    );
    let owner = |id: &str| {
        if alice.contains(&id.to_string()) {
            "alice"
        } else {
            "bob"
        }
    };
    assert_ne!(owner(&pn), owner(&rn), "on another provider's node");
    assert!(pn == bob || rn == bob);
    // The same key and volume; the replica makes no buckets of its own.
    let (ps, rs) = (
        crate::kinds::s3::settings(&primary).unwrap(),
        crate::kinds::s3::settings(&replica).unwrap(),
    );
    assert_eq!(ps.replica.as_deref(), Some(replica.id.as_str()));
    assert_eq!(rs.replica_of.as_deref(), Some(primary.id.as_str()));
    assert_eq!(
        (&rs.access_key_id, &rs.secret_access_key, rs.volume_bytes),
        (&ps.access_key_id, &ps.secret_access_key, ps.volume_bytes)
    );
    assert_eq!(ps.buckets, ["photos"]);
    assert!(rs.buckets.is_empty());
    assert_eq!(
        replica.disk_bytes, primary.disk_bytes,
        "it reserves its volume"
    );

    // Each node's target: the primary declares the replica as its upstream, in the server's
    // variable; the replica declares nothing.
    let pt = target_of(&node_row(&s, &pn).await);
    let spec = pt.iter().find(|w| w.id == primary.id).unwrap();
    assert_eq!(spec.upstreams.len(), 1, "{spec:?}");
    let up = &spec.upstreams[0];
    assert_eq!(
        (up.workload.as_str(), up.port, up.env.as_str()),
        (replica.id.as_str(), 9000, "LATTICE_S3_REPLICA_ADDR")
    );
    assert!(
        spec.env
            .iter()
            .any(|(k, v)| k == "LATTICE_S3_REPLICA_ID" && *v == replica.id),
        "the primary knows which replica it ships to: {spec:?}"
    );
    let rt = target_of(&node_row(&s, &rn).await);
    let rspec = rt.iter().find(|w| w.id == replica.id).unwrap();
    assert!(rspec.upstreams.is_empty());
    assert_eq!(rspec.name, "files--replica");
    assert!(rspec.env.iter().all(|(k, _)| k != "LATTICE_S3_BUCKETS"));

    // The owner sees where it is and that no lag was read yet; the event says where.
    let (st, v) = call(&s, "GET", "/api/v1/workloads/files", Some(&token), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["replication"]["replica"], "files--replica", "{v}");
    assert_eq!(v["replication"]["replica_node"], rn.as_str(), "{v}");
    assert!(v["replication"]["report"].is_null(), "{v}");
    let created = v["events"][0]["detail"].as_str().unwrap();
    assert!(
        created.contains(&format!("replica files--replica on {rn}"))
            && created.contains("another provider's node"),
        "{created}"
    );

    // The replica is not the consumer's to delete, nor anyone's upstream; the primary takes it.
    let (st, v) = call(
        &s,
        "DELETE",
        "/api/v1/workloads/files--replica",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("replica of \"files\""),
        "{v}"
    );
    let body = r#"{"kind":"container","name":"web","image":"r/a@sha256:aa","port":80,
        "upstreams":[{"workload":"files--replica"}]}"#;
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/workloads",
        Some(&token),
        Some(body.into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("S3 replica"), "{v}");
    // Nor can a consumer take its name for one of theirs.
    let body = r#"{"kind":"s3","name":"other--replica"}"#;
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/workloads",
        Some(&token),
        Some(body.into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("'--'"), "{v}");

    let (st, v) = call(&s, "DELETE", "/api/v1/workloads/files", Some(&token), None).await;
    assert!(st.is_success(), "{st} {v}");
    assert!(s.store.workloads(Some(&a)).await.unwrap().is_empty());
    for n in [&pn, &rn] {
        assert!(target_of(&node_row(&s, n).await).is_empty(), "{n}");
    }
}

#[tokio::test]
async fn without_another_provider_the_replica_shares_a_provider_and_alone_there_is_none() {
    let s = s3_state().await;
    let (a, token) = account(&s, "a@example.org", "consumer").await;
    let first = super::updates::online_node_of(&s, "alice").await;
    deploy_files(&s, &token).await;
    assert!(s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .is_none());
    let (_, v) = call(&s, "GET", "/api/v1/workloads/files", Some(&token), None).await;
    let created = v["events"][0]["detail"].as_str().unwrap();
    assert!(
        created.contains(&format!("placed on {first}"))
            && created.contains("no replica (")
            && created.contains("kept on this node only"),
        "{created}"
    );
    assert!(v.get("replication").is_none(), "{v}");
    call(&s, "DELETE", "/api/v1/workloads/files", Some(&token), None).await;

    let second = super::updates::online_node_of(&s, "alice").await;
    deploy_files(&s, &token).await;
    let r = s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .unwrap();
    let p = s.store.workload(&a, "files").await.unwrap().unwrap();
    let mut pair = [p.node_id.unwrap(), r.node_id.unwrap()];
    pair.sort();
    let mut both = [first, second];
    both.sort();
    assert_eq!(pair, both, "on two different nodes");
    let (_, v) = call(&s, "GET", "/api/v1/workloads/files", Some(&token), None).await;
    let created = v["events"][0]["detail"].as_str().unwrap();
    assert!(
        created.contains("the same provider's node: no other provider's node can take it"),
        "{created}"
    );
}

#[tokio::test]
async fn losing_the_primarys_node_promotes_the_replica_and_tells_the_lag_last_read() {
    let s = s3_state().await;
    let (a, token) = account(&s, "a@example.org", "consumer").await;
    super::updates::online_node_of(&s, "alice").await;
    super::updates::online_node_of(&s, "bob").await;
    deploy_files(&s, &token).await;
    let primary = s.store.workload(&a, "files").await.unwrap().unwrap();
    let replica = s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .unwrap();
    let (pn, rn) = (
        primary.node_id.clone().unwrap(),
        replica.node_id.clone().unwrap(),
    );

    // What the gateway last read from the primary: 3 changes behind.
    let now = lattice_wire::now_ms();
    let report = r#"{"role":"primary","replica":"reachable","pending_changes":3,
        "pending_bytes":2048,"oldest_pending_age_ms":1500,"last_error":null}"#;
    s.store
        .record_replication(&primary.id, report, now - 2_000)
        .await
        .unwrap();
    let (_, v) = call(&s, "GET", "/api/v1/workloads/files", Some(&token), None).await;
    assert_eq!(v["replication"]["report"]["pending_changes"], 3, "{v}");

    // A round while both nodes are there changes nothing.
    round_at(&s, now).await;
    assert!(s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .is_some());

    s.store.revoke_node(&pn).await.unwrap();
    round_at(&s, now).await;
    // The replica is "files" now: same name (so the same address), on its own node, with
    // the primary's buckets and no replica; the primary and its report are gone.
    let all = s.store.workloads(Some(&a)).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let promoted = &all[0];
    assert_eq!(
        (
            promoted.id.as_str(),
            promoted.name.as_str(),
            promoted.node_id.as_deref()
        ),
        (replica.id.as_str(), "files", Some(rn.as_str()))
    );
    let ps = crate::kinds::s3::settings(promoted).unwrap();
    assert_eq!((ps.replica.as_ref(), ps.replica_of.as_ref()), (None, None));
    assert_eq!(ps.buckets, ["photos"]);
    assert!(s.store.replication(&primary.id).await.unwrap().is_none());
    let rt = target_of(&node_row(&s, &rn).await);
    assert_eq!(rt.len(), 1);
    assert_eq!(rt[0].name, "files");
    assert!(rt[0]
        .env
        .iter()
        .any(|(k, v)| k == "LATTICE_S3_BUCKETS" && v == "photos"));
    assert!(target_of(&node_row(&s, &pn).await).is_empty());

    // The consumer is told, in the workload's history (which it keeps), with the lag.
    let (st, v) = call(&s, "GET", "/api/v1/workloads/files", Some(&token), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(
        events[0]["kind"], "created",
        "the primary's history is kept: {v}"
    );
    let last = events
        .iter()
        .find(|e| e["kind"] == "promoted")
        .unwrap_or_else(|| panic!("no promoted event: {v}"));
    let told = last["detail"].as_str().unwrap();
    assert!(
        told.contains(&format!("node {pn} lost"))
            && told.contains(&format!("the replica on node {rn} now serves \"files\""))
            && told.contains("replication lag 1.5 s: 3 changes (2.0 KiB)")
            && told.contains("2.0 s before the promotion"),
        "{told}"
    );
    assert!(v.get("replication").is_none(), "no replica now: {v}");
    // Another round finds nothing to do.
    round_at(&s, now + 1_000).await;
    assert_eq!(s.store.workloads(Some(&a)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn losing_the_replicas_node_keeps_the_primary_and_says_so() {
    let s = s3_state().await;
    let (a, token) = account(&s, "a@example.org", "consumer").await;
    super::updates::online_node_of(&s, "alice").await;
    super::updates::online_node_of(&s, "bob").await;
    deploy_files(&s, &token).await;
    let primary = s.store.workload(&a, "files").await.unwrap().unwrap();
    let replica = s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .unwrap();
    // Its connection lost (not revoked: it may come back), past the grace period.
    assert!(s
        .store
        .accept_will(replica.node_id.as_deref().unwrap(), 1, "connection lost")
        .await
        .unwrap());
    for _ in 0..2 {
        round_at(&s, lattice_wire::now_ms() + 60_000).await;
    }
    let now = s.store.workload(&a, "files").await.unwrap().unwrap();
    assert_eq!(now.node_id, primary.node_id, "the primary stays");
    assert_eq!(
        crate::kinds::s3::settings(&now).unwrap().replica.as_deref(),
        Some(replica.id.as_str()),
        "and keeps its replica, which catches up when its node is back"
    );
    let events = s.store.workload_events(&primary.id).await.unwrap();
    let lost: Vec<_> = events.iter().filter(|e| e.kind == "replica_lost").collect();
    assert_eq!(lost.len(), 1, "said once: {events:?}");
    assert!(
        lost[0].detail.contains("keeps the changes for the replica"),
        "{events:?}"
    );
}

#[tokio::test]
async fn primaries_get_a_replica_when_a_node_can_take_one_and_a_new_one_for_a_revoked_node() {
    let s = s3_state().await;
    let (a, token) = account(&s, "a@example.org", "consumer").await;
    let alice = super::updates::online_node_of(&s, "alice").await;
    deploy_files(&s, &token).await;
    let pair = || {
        let (s, a) = (s.clone(), a.clone());
        async move {
            let w = s.store.workload(&a, "files").await.unwrap().unwrap();
            let r = s.store.workload(&a, "files--replica").await.unwrap();
            (w, r)
        }
    };
    let spec_env = |node: String, id: String| {
        let s = s.clone();
        async move {
            let spec = target_of(&node_row(&s, &node).await)
                .into_iter()
                .find(|w| w.id == id)
                .unwrap();
            (spec.env, spec.upstreams)
        }
    };
    // Alone: no replica, said once however many rounds.
    round_at(&s, lattice_wire::now_ms()).await;
    round_at(&s, lattice_wire::now_ms()).await;
    let (p, r) = pair().await;
    assert!(r.is_none());
    let events = s.store.workload_events(&p.id).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.kind == "no_replica").count(),
        1,
        "{events:?}"
    );

    // Another provider's node joins: the next round places the replica there, and the
    // primary's target names it.
    let bob = super::updates::online_node_of(&s, "bob").await;
    round_at(&s, lattice_wire::now_ms()).await;
    let (p, r) = pair().await;
    let first = r.expect("a replica once a node can take it");
    assert_eq!(first.node_id.as_deref(), Some(bob.as_str()));
    assert_eq!(
        crate::kinds::s3::settings(&p).unwrap().replica.as_deref(),
        Some(first.id.as_str())
    );
    let (env, ups) = spec_env(alice.clone(), p.id.clone()).await;
    assert_eq!(ups[0].workload, first.id);
    assert!(env
        .iter()
        .any(|(k, v)| k == "LATTICE_S3_REPLICA_ID" && *v == first.id));
    let events = s.store.workload_events(&p.id).await.unwrap();
    let placed = events.iter().find(|e| e.kind == "replica_placed").unwrap();
    assert!(
        placed.detail.contains(&format!("on {bob}")) && placed.detail.contains("full copy"),
        "{placed:?}"
    );

    // Bob's node is revoked: it will not be back, so the replica is dropped...
    s.store.revoke_node(&bob).await.unwrap();
    round_at(&s, lattice_wire::now_ms()).await;
    let (p, r) = pair().await;
    assert!(r.is_none(), "{r:?}");
    assert!(crate::kinds::s3::settings(&p).unwrap().replica.is_none());
    let events = s.store.workload_events(&p.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "replica_dropped" && e.detail.contains(&bob)),
        "{events:?}"
    );
    assert!(
        events.iter().all(|e| e.kind != "replica_lost"),
        "{events:?}"
    );
    let (_, ups) = spec_env(alice.clone(), p.id.clone()).await;
    assert!(ups.is_empty());
    // ...and a new one, with a new id (so the server copies everything to it), goes on the
    // next node that can take it.
    let carol = super::updates::online_node_of(&s, "carol").await;
    round_at(&s, lattice_wire::now_ms()).await;
    let (p, r) = pair().await;
    let second = r.unwrap();
    assert_eq!(second.node_id.as_deref(), Some(carol.as_str()));
    assert_ne!(second.id, first.id);
    let (env, _) = spec_env(alice.clone(), p.id.clone()).await;
    assert!(env
        .iter()
        .any(|(k, v)| k == "LATTICE_S3_REPLICA_ID" && *v == second.id));

    // The primary's node is revoked: carol's replica is promoted, and the promoted workload
    // gets a replica of its own once another node can take it.
    s.store.revoke_node(&alice).await.unwrap();
    round_at(&s, lattice_wire::now_ms()).await;
    let (p, r) = pair().await;
    assert_eq!(
        (p.id.as_str(), p.node_id.as_deref()),
        (second.id.as_str(), Some(carol.as_str()))
    );
    assert!(r.is_none());
    let dave = super::updates::online_node_of(&s, "dave").await;
    round_at(&s, lattice_wire::now_ms()).await;
    let (p, r) = pair().await;
    let third = r.unwrap();
    assert_eq!(third.node_id.as_deref(), Some(dave.as_str()));
    assert_eq!(
        crate::kinds::s3::settings(&p).unwrap().replica.as_deref(),
        Some(third.id.as_str())
    );
    assert_eq!(s.store.workloads(Some(&a)).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_replica_not_known_to_be_close_behind_is_not_promoted_and_it_is_said_once() {
    let s = s3_state().await;
    let (a, token) = account(&s, "a@example.org", "consumer").await;
    super::updates::online_node_of(&s, "alice").await;
    super::updates::online_node_of(&s, "bob").await;
    deploy_files(&s, &token).await;
    let primary = s.store.workload(&a, "files").await.unwrap().unwrap();
    let replica = s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .unwrap();
    let pn = primary.node_id.clone().unwrap();
    // The primary last said its replica was unreachable, 500 changes behind.
    let report = r#"{"role":"primary","replica":"unreachable","pending_changes":500,
        "pending_bytes":1048576,"oldest_pending_age_ms":900000,"last_error":"PUT object: 503"}"#;
    s.store
        .record_replication(&primary.id, report, lattice_wire::now_ms())
        .await
        .unwrap();
    // Its node's connection is lost (it may come back), past the grace period.
    assert!(s
        .store
        .accept_will(&pn, 1, "connection lost")
        .await
        .unwrap());
    let later = lattice_wire::now_ms() + 60_000;
    for i in 0..4 {
        round_at(&s, later + i).await;
    }
    // Nothing is deleted: the primary waits for its node, with its data.
    let still = s.store.workload(&a, "files").await.unwrap().unwrap();
    assert_eq!(still.id, primary.id);
    assert!(s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .is_some());
    let events = s.store.workload_events(&primary.id).await.unwrap();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "cannot_promote")
        .collect();
    assert_eq!(refused.len(), 1, "said once: {events:?}");
    assert!(
        refused[0]
            .detail
            .contains("the primary last reported its replica unreachable"),
        "{refused:?}"
    );
    assert!(events.iter().all(|e| e.kind != "not_movable"), "{events:?}");

    // The replica's node goes too: both conditions are said once each, not every round.
    let rn = replica.node_id.clone().unwrap();
    assert!(s
        .store
        .accept_will(&rn, 1, "connection lost")
        .await
        .unwrap());
    for i in 0..4 {
        round_at(&s, later + 10 + i).await;
    }
    let events = s.store.workload_events(&primary.id).await.unwrap();
    let count = |k: &str| events.iter().filter(|e| e.kind == k).count();
    assert_eq!(
        (count("cannot_promote"), count("replica_lost")),
        (2, 1),
        "{events:?}"
    );
    assert!(events.len() <= 5, "{events:?}");
}

#[tokio::test]
async fn draining_a_node_replaces_the_replica_on_it() {
    let s = s3_state().await;
    let (a, token) = account(&s, "a@example.org", "consumer").await;
    super::updates::online_node_of(&s, "alice").await;
    super::updates::online_node_of(&s, "bob").await;
    deploy_files(&s, &token).await;
    let primary = s.store.workload(&a, "files").await.unwrap().unwrap();
    let first = s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .unwrap();
    let carol = super::updates::online_node_of(&s, "carol").await;
    let rn = first.node_id.clone().unwrap();
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/nodes/{rn}/decommission"),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for _ in 0..3 {
        round_at(&s, lattice_wire::now_ms()).await;
    }
    let second = s
        .store
        .workload(&a, "files--replica")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(second.id, first.id, "a new replica (a full copy)");
    assert_eq!(second.node_id.as_deref(), Some(carol.as_str()));
    let p = s.store.workload(&a, "files").await.unwrap().unwrap();
    assert_eq!(p.node_id, primary.node_id, "the primary did not move");
    // Nothing is left on the decommissioned node, so it finished.
    let node = node_row(&s, &rn).await;
    assert!(
        node.revoked && node.lifecycle == "decommissioned",
        "{node:?}"
    );
    let events = s.store.workload_events(&p.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "replica_dropped" && e.detail.contains("decommissioning")),
        "{events:?}"
    );
}
