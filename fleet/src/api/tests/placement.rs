//! Placement, explained: operators only (a consumer or provider gets 403 before anything is
//! looked up), 404 for an unknown workload, 400 naming what was wrong in a body or when a name
//! is ambiguous across accounts, and for an operator the decision with every node's verdict
//! and the figures of a capacity rejection.

use super::accounts::account;
use super::node_lifecycle::node_of;
use super::updates::online_node_of;
use super::*;
use crate::scheduler;
use crate::store::WorkloadRow;
use serde_json::json;

fn web(name: &str) -> String {
    json!({"kind": "container", "name": name, "image": "127.0.0.1:5000/app@sha256:aa", "port": 8080})
        .to_string()
}

/// A workload of `account` holding 1.5 GiB of memory on `node`.
fn filler(account: &str, node: &str) -> WorkloadRow {
    WorkloadRow {
        id: format!("w-fill-{node}"),
        account_id: account.into(),
        name: "fill".into(),
        kind: "container".into(),
        plan: "large".into(),
        settings: r#"{"image":"r/a@sha256:aa","port":null,"env":{},"command":[]}"#.into(),
        node_id: Some(node.to_string()),
        moving_to: None,
        cpu_millis: 100,
        memory_bytes: 3 << 29,
        disk_bytes: 0,
        created_ms: 1,
        updated_ms: 1,
        next: None,
    }
}

#[tokio::test]
async fn only_operators_see_placement_detail() {
    let s = state().await;
    let (a, consumer) = account(&s, "c@example.org", "consumer").await;
    let (pa, provider) = account(&s, "p@example.org", "provider").await;
    online_node_of(&s, &pa).await;
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/workloads",
        Some(&consumer),
        Some(web("web")),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for token in [&consumer, &provider] {
        // Its own workload, or a name that does not exist: 403 alike (nothing is looked up).
        for uri in [
            "/api/v1/workloads/web/placement",
            "/api/v1/workloads/nope/placement",
            format!("/api/v1/workloads/web/placement?account={a}").as_str(),
        ] {
            let (st, v) = call(&s, "GET", uri, Some(token), None).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{uri}: {v}");
            assert_eq!(v["error"], "forbidden");
            assert!(v.get("nodes").is_none(), "{v}");
        }
        for body in [r#"{"plan":"small"}"#, r#"{"colour":"red"}"#] {
            let (st, v) = call(
                &s,
                "POST",
                "/api/v1/placement",
                Some(token),
                Some(body.into()),
            )
            .await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{body}: {v}");
        }
    }
    let (st, _) = call(&s, "GET", "/api/v1/workloads/web/placement", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call(&s, "POST", "/api/v1/placement", None, Some("{}".into())).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = call(&s, "GET", "/api/v1/workloads/web/placement", Some(OP), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn unknown_workloads_are_404_and_bad_input_is_400_naming_it() {
    let s = state().await;
    let (a, ta) = account(&s, "a@example.org", "consumer").await;
    let (b, tb) = account(&s, "b@example.org", "consumer").await;
    online_node_of(&s, "p1").await;
    for (uri, why) in [
        ("/api/v1/workloads/nope/placement", "\"nope\""),
        (
            &format!("/api/v1/workloads/nope/placement?account={a}") as &str,
            "\"nope\"",
        ),
    ] {
        let (st, v) = call(&s, "GET", uri, Some(OP), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{uri}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }
    for token in [&ta, &tb] {
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/workloads",
            Some(token),
            Some(web("web")),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    // Two accounts have a "web": the operator is asked to name one.
    let (st, v) = call(&s, "GET", "/api/v1/workloads/web/placement", Some(OP), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("?account=") && m.contains(&a) && m.contains(&b),
        "{m}"
    );
    let (st, v) = call(
        &s,
        "GET",
        &format!("/api/v1/workloads/web/placement?account={b}"),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["account_id"], b.as_str());
    // Another account's name in the account given is 404, not the other one's workload.
    let (st, _) = call(
        &s,
        "GET",
        "/api/v1/workloads/web/placement?account=someone",
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    for (body, why) in [
        (r#"{"plan":"huge"}"#, "huge"),
        (r#"{"kind":"vm"}"#, "vm"),
        (r#"{"colour":"red"}"#, "colour"),
        (r#"{"region":""}"#, "region"),
        (r#"{"plan":7}"#, "plan"),
        ("not json", "JSON"),
    ] {
        let (st, v) = call(&s, "POST", "/api/v1/placement", Some(OP), Some(body.into())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{body}: {v}");
    }
}

#[tokio::test]
async fn an_operator_sees_every_nodes_verdict_with_the_figures() {
    let s = state().await;
    let (a, token) = account(&s, "c@example.org", "consumer").await;
    let n1 = online_node_of(&s, "p1").await;
    let n2 = online_node_of(&s, "p2").await;
    // Registered, never connected: offline.
    let n3 = node_of(&s, "p3").await;
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/workloads",
        Some(&token),
        Some(web("web")),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let on = v["node"].as_str().unwrap().to_string();

    let (st, v) = call(&s, "GET", "/api/v1/workloads/web/placement", Some(OP), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let e: PlacementExplanation = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(e.workload.as_deref(), Some("web"));
    assert_eq!(e.account_id.as_deref(), Some(a.as_str()));
    assert_eq!(e.current_node.as_deref(), Some(on.as_str()));
    assert_eq!((e.kind.as_str(), e.plan.as_str()), ("container", "small"));
    assert_eq!(e.needs.memory_bytes, 256 << 20);
    assert_eq!(e.nodes.len(), 3, "{v}");
    // The chosen node comes first and is the decision's; the offline node is counted and
    // described.
    assert_eq!(e.chosen.as_deref(), Some(e.nodes[0].node.as_str()));
    assert_eq!(
        e.nodes[0].verdict,
        scheduler::Verdict::Fits {
            score: e.score,
            chosen: true
        }
    );
    assert_eq!(e.rejected, [(scheduler::Reason::Offline, 1)].into());
    let last = &e.nodes[2];
    assert_eq!(last.node, n3);
    assert_eq!(last.provider, "p3");
    assert_eq!(v["nodes"][2]["verdict"], "rejected");
    assert_eq!(v["nodes"][2]["reason"], "offline");
    assert_eq!(v["nodes"][2]["detail"], "offline");
    assert_eq!(v["rejected"]["offline"], 1);

    // n2 holds 1.5 GiB of its 2 GiB: a large plan (1 GiB) fits only on n1.
    assert!(s
        .store
        .insert_workload(&filler("other", &n2), "test")
        .await
        .unwrap());
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/placement",
        Some(OP),
        Some(r#"{"plan":"large"}"#.into()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let e: PlacementExplanation = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(e.workload, None);
    assert_eq!(e.chosen.as_deref(), Some(n1.as_str()), "{v}");
    assert_eq!(
        e.rejected,
        [
            (scheduler::Reason::Offline, 1),
            (scheduler::Reason::Memory, 1)
        ]
        .into()
    );
    let short = e.nodes.iter().find(|n| n.node == n2).unwrap();
    let scheduler::Verdict::Rejected {
        reason: scheduler::Reason::Memory,
        shortfall: Some(f),
        detail,
    } = &short.verdict
    else {
        panic!("{short:?}");
    };
    let web_there = if on == n2 { 256 << 20 } else { 0 };
    assert_eq!(f.needed, 1 << 30);
    assert_eq!(f.capacity, 2 << 30);
    assert_eq!(f.reserved, (3 << 29) + web_there);
    assert_eq!(f.free, f.capacity - f.reserved);
    assert!(detail.starts_with("needs 1 GiB memory, "), "{detail}");
    // Turned away in the order of the rules: offline before short of memory.
    assert_eq!(
        (e.nodes[1].node.as_str(), e.nodes[2].node.as_str()),
        (n3.as_str(), n2.as_str()),
        "{v}"
    );

    // A would-be s3 workload needs disk (its volume), nothing else changes.
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/placement",
        Some(OP),
        Some(r#"{"kind":"s3","plan":"small"}"#.into()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["needs"]["disk_bytes"],
        crate::kinds::s3::volume_bytes("small")
    );
}
