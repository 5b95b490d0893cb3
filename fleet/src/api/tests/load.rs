//! Under load: an in-place change that keeps its plan does not wait for placements, changes of
//! one workload still apply one after the other, placements never over-commit a node whatever
//! runs beside them, and requests past the bound in flight are shed with 503 + `Retry-After`.

use super::accounts::account;
use super::updates::online_node_of;
use super::*;
use serde_json::json;
use std::time::Duration;

fn web(name: &str) -> serde_json::Value {
    json!({"kind": "container", "name": name, "image": "127.0.0.1:5000/app@sha256:aa", "port": 8080})
}

/// A request through `router` (so a test can share one router's bound on requests in
/// flight): status, `Retry-After`, body.
async fn call_on(
    router: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, retry, json)
}

async fn deploy(s: &Arc<AppState>, token: &str, name: &str) -> (StatusCode, serde_json::Value) {
    call(
        s,
        "POST",
        "/api/v1/workloads",
        Some(token),
        Some(web(name).to_string()),
    )
    .await
}

async fn patch(
    s: &Arc<AppState>,
    token: &str,
    name: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    call(
        s,
        "PATCH",
        &format!("/api/v1/workloads/{name}"),
        Some(token),
        Some(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn an_in_place_change_of_the_same_plan_does_not_wait_for_placements() {
    let s = state().await;
    online_node_of(&s, "p1").await;
    let (_, token) = account(&s, "c@x.org", "consumer").await;
    assert_eq!(deploy(&s, &token, "web").await.0, StatusCode::CREATED);
    // Another placement (a deploy, a drain) is deciding.
    let placing = s.store.placement_guard().await.unwrap();
    let env = json!({"set_env": {"V": "2"}, "strategy": "in_place"});
    let (st, v) = tokio::time::timeout(Duration::from_secs(5), patch(&s, &token, "web", env))
        .await
        .expect("an env change in place waited for the placement lock");
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["plan"], "small");
    // A resize needs room: it waits for the placement in progress.
    let resize = tokio::spawn({
        let (s, token) = (s.clone(), token.clone());
        async move {
            let body = json!({"plan": "medium", "strategy": "in_place"});
            patch(&s, &token, "web", body).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !resize.is_finished(),
        "a resize placed beside another placement"
    );
    drop(placing);
    let (st, v) = resize.await.unwrap();
    assert_eq!(
        (st, v["plan"].as_str()),
        (StatusCode::OK, Some("medium")),
        "{v}"
    );
}

#[tokio::test]
async fn concurrent_changes_of_one_workload_all_apply_one_after_the_other() {
    let s = state().await;
    online_node_of(&s, "p1").await;
    let (account_id, token) = account(&s, "c@x.org", "consumer").await;
    assert_eq!(deploy(&s, &token, "web").await.0, StatusCode::CREATED);
    let calls = (0..20).map(|i| {
        let (s, token) = (s.clone(), token.clone());
        async move {
            let body = json!({"set_env": {format!("K{i}"): i.to_string()}, "strategy": "in_place"});
            patch(&s, &token, "web", body).await
        }
    });
    for (st, v) in futures_util::future::join_all(calls).await {
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let w = s.store.workload(&account_id, "web").await.unwrap().unwrap();
    let settings: crate::workloads::ContainerSettings = serde_json::from_str(&w.settings).unwrap();
    let keys: Vec<&str> = settings.env.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 20, "every change applied: {keys:?}");
    let updated = s
        .store
        .workload_events(&w.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "updated")
        .count();
    assert_eq!(updated, 20);
}

#[tokio::test]
async fn resizes_deploys_and_env_changes_at_once_never_over_commit_a_node() {
    let s = state().await;
    // 4 CPUs: the node offers 2,000 millicores, room for 8 small (250) workloads.
    let node = online_node_of(&s, "p1").await;
    let (_, token) = account(&s, "c@x.org", "consumer").await;
    for i in 0..4 {
        assert_eq!(
            deploy(&s, &token, &format!("s{i}")).await.0,
            StatusCode::CREATED
        );
    }
    let mut calls: Vec<futures_util::future::BoxFuture<'static, StatusCode>> = Vec::new();
    for i in 0..10 {
        let (s, token) = (s.clone(), token.clone());
        calls.push(Box::pin(async move {
            deploy(&s, &token, &format!("w{i}")).await.0
        }));
    }
    for i in 0..4 {
        for body in [
            json!({"plan": "large", "strategy": "in_place"}),
            json!({"set_env": {"V": "x"}, "strategy": "in_place"}),
        ] {
            let (s, token) = (s.clone(), token.clone());
            calls.push(Box::pin(async move {
                patch(&s, &token, &format!("s{i}"), body).await.0
            }));
        }
    }
    for st in futures_util::future::join_all(calls).await {
        assert!(
            st == StatusCode::CREATED || st == StatusCode::OK || st == StatusCode::CONFLICT,
            "{st}"
        );
    }
    let reserved: u64 = s
        .store
        .workloads_on(&node)
        .await
        .unwrap()
        .iter()
        .map(|w| w.cpu_millis)
        .sum();
    assert!(reserved <= 2_000, "{reserved} of 2,000 millicores reserved");
}

#[tokio::test]
async fn past_the_bound_in_flight_requests_are_shed_with_503_and_retry_after() {
    let s = state().await;
    online_node_of(&s, "p1").await;
    let (_, token) = account(&s, "c@x.org", "consumer").await;
    let router = app_with_limit(s.clone(), 1);
    // One deploy in flight, waiting for the placement lock.
    let placing = s.store.placement_guard().await.unwrap();
    let waiting = tokio::spawn({
        let (router, token) = (router.clone(), token.clone());
        async move {
            call_on(
                &router,
                "POST",
                "/api/v1/workloads",
                Some(&token),
                Some(web("web")),
            )
            .await
        }
    });
    let shed = async {
        loop {
            let r = call_on(&router, "GET", "/api/v1/me", Some(&token), None).await;
            if r.0 != StatusCode::OK {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // Let it reach the lock before anything else asks (a request ahead of it would take the
    // one slot, and the deploy would be the one shed).
    tokio::time::sleep(Duration::from_millis(200)).await;
    if waiting.is_finished() {
        panic!("the deploy did not wait: {:?}", waiting.await.unwrap());
    }
    let (st, retry, v) = tokio::time::timeout(Duration::from_secs(5), shed)
        .await
        .expect("a second request was not shed");
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(v["error"], "overloaded", "{v}");
    // Probes are never shed.
    let (st, _, _) = call_on(&router, "GET", "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    drop(placing);
    let (st, _, v) = waiting.await.unwrap();
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, _, _) = call_on(&router, "GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(st, StatusCode::OK, "the slot came back");
}
