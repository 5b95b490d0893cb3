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
