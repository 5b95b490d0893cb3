//! Workload routes are per tenant: another account's workload is 404 on every route, listing
//! shows only the caller's, and only operators list every account's.

use super::accounts::account;
use super::*;
use crate::store::WorkloadRow;

async fn stored(s: &Arc<AppState>, account: &str, name: &str) -> WorkloadRow {
    let w = WorkloadRow {
        id: format!("w-{name}-{account}"),
        account_id: account.into(),
        name: name.into(),
        kind: "container".into(),
        plan: "small".into(),
        settings: r#"{"image":"r/a@sha256:aa","port":8080,"env":{},"command":[]}"#.into(),
        node_id: None,
        moving_to: None,
        cpu_millis: 250,
        memory_bytes: 256 << 20,
        disk_bytes: 0,
        created_ms: 1,
        updated_ms: 1,
        next: None,
    };
    assert!(s.store.insert_workload(&w, "test").await.unwrap());
    w
}

#[tokio::test]
async fn another_tenants_workloads_are_404_on_every_route() {
    let s = state().await;
    let (a, token_a) = account(&s, "a@example.org", "consumer").await;
    let (_b, token_b) = account(&s, "b@example.org", "consumer").await;
    stored(&s, &a, "web").await;

    let (st, v) = call(&s, "GET", "/api/v1/workloads/web", Some(&token_a), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["state"].as_str()),
        (Some("web"), Some("pending"))
    );

    let (st, _) = call(&s, "GET", "/api/v1/workloads/web", Some(&token_b), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(&s, "DELETE", "/api/v1/workloads/web", Some(&token_b), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = call(&s, "GET", "/api/v1/workloads", Some(&token_b), None).await;
    assert_eq!((st, v), (StatusCode::OK, serde_json::json!([])));
    let (st, _) = call(
        &s,
        "GET",
        "/api/v1/workloads?all=true",
        Some(&token_b),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // B may use the same name: names are per account.
    stored(&s, &_b, "web").await;

    let (st, v) = call(&s, "GET", "/api/v1/workloads?all=true", Some(OP), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");

    // A's delete works and is audited.
    let (st, _) = call(&s, "DELETE", "/api/v1/workloads/web", Some(&token_a), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&s, "GET", "/api/v1/workloads/web", Some(&token_a), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, audit) = call(
        &s,
        "GET",
        "/api/v1/audit?action=workload.deleted",
        Some(OP),
        None,
    )
    .await;
    assert!(audit.to_string().contains("w-web-"), "{audit}");
}

#[tokio::test]
async fn a_bad_deploy_body_is_400_naming_the_problem_and_no_capacity_is_409() {
    let s = state().await;
    let (_, token) = account(&s, "c@example.org", "consumer").await;
    for (body, why) in [
        (r#"{"kind":"container"}"#, "name"),
        (
            r#"{"kind":"container","name":"x","image":"r@sha256:a","colour":"red"}"#,
            "colour",
        ),
        (
            r#"{"kind":"container","name":"Bad","image":"r@sha256:a"}"#,
            "lower-case",
        ),
    ] {
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/workloads",
            Some(&token),
            Some(body.into()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v.to_string().contains(why), "{body}: {v}");
    }
    let body = r#"{"kind":"container","name":"web","image":"r/a@sha256:aa"}"#;
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/workloads",
        Some(&token),
        Some(body.into()),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("no nodes"), "{v}");
    let (st, _) = call(&s, "POST", "/api/v1/workloads", None, Some(body.into())).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// Upstreams name the caller's own workloads only, at a port they declare, in a variable
/// of their own; each mistake is a 400 that says which.
#[tokio::test]
async fn upstreams_are_to_your_own_workloads_and_bad_ones_are_400() {
    let s = state().await;
    let (a, token_a) = account(&s, "up-a@example.org", "consumer").await;
    let (_, token_b) = account(&s, "up-b@example.org", "consumer").await;
    stored(&s, &a, "web").await;
    let deploy = |upstreams: &str, env: &str| {
        format!(
            r#"{{"kind":"container","name":"client","image":"r/a@sha256:aa","env":{env},"upstreams":{upstreams}}}"#
        )
    };
    for (token, body, why) in [
        (
            &token_b,
            deploy(r#"[{"workload":"web"}]"#, "{}"),
            "no workload of that name",
        ),
        (
            &token_a,
            deploy(r#"[{"workload":"nope"}]"#, "{}"),
            "no workload of that name",
        ),
        (
            &token_a,
            deploy(r#"[{"workload":"web","port":9}]"#, "{}"),
            "port 9",
        ),
        (
            &token_a,
            deploy(r#"[{"workload":"web","env":"1X"}]"#, "{}"),
            "1X",
        ),
        (
            &token_a,
            deploy(r#"[{"workload":"client"}]"#, "{}"),
            "its own upstream",
        ),
        (
            &token_a,
            deploy(r#"[{"workload":"web"}]"#, r#"{"WEB_ADDR":"x"}"#),
            "set twice",
        ),
        (
            &token_a,
            r#"{"kind":"s3","name":"b","upstreams":[{"workload":"web"}]}"#.to_string(),
            "upstreams",
        ),
    ] {
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/workloads",
            Some(token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v.to_string().contains(why), "{body}: {v}");
    }
    // A good one gets past the upstreams to placement (no node here).
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/workloads",
        Some(&token_a),
        Some(deploy(r#"[{"workload":"web"}]"#, "{}")),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("cannot place"), "{v}");
}

#[tokio::test]
async fn logs_are_the_owners_only_and_say_why_they_cannot_be_read() {
    let s = state().await;
    let (a, token_a) = account(&s, "la@example.org", "consumer").await;
    let (_b, token_b) = account(&s, "lb@example.org", "consumer").await;
    stored(&s, &a, "web").await;

    let (st, v) = call(
        &s,
        "GET",
        "/api/v1/workloads/web/logs",
        Some(&token_b),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = call(&s, "GET", "/api/v1/workloads/web/logs", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Not placed yet: no node holds any logs.
    let (st, v) = call(
        &s,
        "GET",
        "/api/v1/workloads/web/logs",
        Some(&token_a),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "node_unavailable");
    assert!(v["message"].as_str().unwrap().contains("not placed"), "{v}");
    let (st, v) = call(
        &s,
        "GET",
        "/api/v1/workloads/web/logs?tail=many",
        Some(&token_a),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}
