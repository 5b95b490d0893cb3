//! Node offers: the provider (or an operator) sets region, labels, price and 24/7-ness of its
//! node; the scheduler places on them, deploys select on region and labels, and a workload's
//! selection holds when it moves.

use super::accounts::account;
use super::updates::online_node_of;
use super::*;
use serde_json::json;

async fn offer(
    s: &Arc<AppState>,
    node: &str,
    token: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    call(
        s,
        "PUT",
        &format!("/api/v1/nodes/{node}/offer"),
        Some(token),
        Some(body.to_string()),
    )
    .await
}

async fn deploy(
    s: &Arc<AppState>,
    token: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    call(
        s,
        "POST",
        "/api/v1/workloads",
        Some(token),
        Some(body.to_string()),
    )
    .await
}

fn web(name: &str) -> serde_json::Value {
    json!({"kind": "container", "name": name, "image": "127.0.0.1:5000/app@sha256:aa", "port": 8080})
}

#[tokio::test]
async fn offers_are_the_owners_to_set_checked_and_audited() {
    let s = state().await;
    let (pa, ta) = account(&s, "pa@x.org", "provider").await;
    let (_, tb) = account(&s, "pb@x.org", "provider").await;
    let (_, tc) = account(&s, "c@x.org", "consumer").await;
    let node = online_node_of(&s, &pa).await;
    let body = json!({"region": "eu-west", "labels": {"net": "fiber"}, "price": 7});
    assert_eq!(
        offer(&s, &node, &tb, body.clone()).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        offer(&s, &node, &tc, body.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, v) = offer(&s, &node, &ta, body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let stored: serde_json::Value = serde_json::from_str(v["offer"].as_str().unwrap()).unwrap();
    assert_eq!(
        (stored["region"].as_str(), stored["price"].as_u64()),
        (Some("eu-west"), Some(7))
    );
    assert_eq!(
        stored["always_available"], true,
        "24/7 unless said otherwise"
    );
    for (body, why) in [
        (json!({"region": "EU West"}), "region"),
        (json!({"labels": {"Bad Key": "x"}}), "label name"),
        (
            json!({"storage_classes": ["tape"]}),
            "storage class \"tape\"",
        ),
        (json!({"price": -1}), "price"),
        (json!({"regoin": "x"}), "unknown field"),
    ] {
        let (st, v) = offer(&s, &node, &ta, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains(why),
            "{body}: {v}"
        );
    }
    let (_, audit) = call(
        &s,
        "GET",
        "/api/v1/audit?action=node.offer_changed",
        Some(OP),
        None,
    )
    .await;
    assert!(audit.to_string().contains("eu-west"), "{audit}");
    // An operator may set any node's.
    assert_eq!(
        offer(&s, &node, OP, json!({"price": 9})).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn placement_follows_offers_and_selections_and_a_move_keeps_them() {
    let s = state().await;
    let a = online_node_of(&s, "p1").await;
    let b = online_node_of(&s, "p2").await;
    let c = online_node_of(&s, "p3").await;
    let d = online_node_of(&s, "p4").await;
    offer(&s, &a, OP, json!({"region": "eu", "price": 50})).await;
    offer(&s, &b, OP, json!({"region": "eu", "price": 10})).await;
    offer(
        &s,
        &c,
        OP,
        json!({"region": "us", "price": 20, "labels": {"net": "fiber"}}),
    )
    .await;
    offer(
        &s,
        &d,
        OP,
        json!({"region": "eu", "price": 0, "always_available": false}),
    )
    .await;
    let (_, token) = account(&s, "c@x.org", "consumer").await;
    let node_of = |v: &serde_json::Value| v["node"].as_str().unwrap_or_default().to_string();

    // Always-on work never lands on the node that is not 24/7 (the cheapest); of the rest, the
    // cheapest wins.
    let (st, v) = deploy(&s, &token, web("one")).await;
    assert_eq!((st, node_of(&v)), (StatusCode::CREATED, b.clone()), "{v}");
    // A selection nobody offers: 409 with the reason; labels select.
    let mut body = web("two");
    body["region"] = "ap".into();
    let (st, v) = deploy(&s, &token, body).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("region"), "{v}");
    let mut body = web("three");
    body["labels"] = json!({"net": "fiber"});
    let (st, v) = deploy(&s, &token, body).await;
    assert_eq!((st, node_of(&v)), (StatusCode::CREATED, c.clone()), "{v}");
    let mut body = web("four");
    body["region"] = "Bad Region".into();
    let (st, v) = deploy(&s, &token, body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // Selected into eu; then its node drains: it moves within eu (to a, the dearer), never to
    // c in us (cheaper); the unselected one goes to the cheapest 24/7 node left, c.
    let mut body = web("five");
    body["region"] = "eu".into();
    let (st, v) = deploy(&s, &token, body).await;
    assert_eq!((st, node_of(&v)), (StatusCode::CREATED, b.clone()), "{v}");
    let (st, v) = call(
        &s,
        "POST",
        &format!("/api/v1/nodes/{b}/drain"),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = call(&s, "GET", "/api/v1/workloads/five", Some(&token), None).await;
    assert_eq!(v["moving_to"], a.as_str(), "{v}");
    let (_, v) = call(&s, "GET", "/api/v1/workloads/one", Some(&token), None).await;
    assert_eq!(v["moving_to"], c.as_str(), "{v}");
}

#[tokio::test]
async fn concurrent_deploys_never_over_commit_a_node() {
    let s = state().await;
    // 4 CPUs: the node offers 2,000 millicores, room for 8 small (250) workloads.
    let node = online_node_of(&s, "p1").await;
    let (_, token) = account(&s, "c@x.org", "consumer").await;
    let calls = (0..20).map(|i| {
        let (s, token) = (s.clone(), token.clone());
        async move { deploy(&s, &token, web(&format!("w{i}"))).await.0 }
    });
    let codes = futures_util::future::join_all(calls).await;
    let created = codes.iter().filter(|c| **c == StatusCode::CREATED).count();
    let refused = codes.iter().filter(|c| **c == StatusCode::CONFLICT).count();
    assert_eq!((created, refused), (8, 12), "{codes:?}");
    let reserved: u64 = s
        .store
        .workloads_on(&node)
        .await
        .unwrap()
        .iter()
        .map(|w| w.cpu_millis)
        .sum();
    assert_eq!(reserved, 2_000);
}
