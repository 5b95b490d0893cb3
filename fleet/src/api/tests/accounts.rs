//! Accounts, roles and tenancy through the router, route by route.

use super::*;
use serde_json::json;

/// Signs up and logs in; returns (account id, token).
pub(super) async fn account(s: &Arc<AppState>, email: &str, role: &str) -> (String, String) {
    let auth = (role == "operator").then_some(OP);
    let (st, v) = call(
        s,
        "POST",
        "/api/v1/accounts",
        auth,
        Some(json!({"email": email, "password": "correct horse", "role": role}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["role"], role);
    assert!(v.get("password_hash").is_none(), "{v}");
    let (st, v) = call(
        s,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"email": email, "password": "correct horse"}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["account_id"], id.as_str());
    (id, v["token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_login_token_is_the_account_and_me_says_who() {
    let s = state().await;
    let (id, token) = account(&s, "Ann@Example.org", "consumer").await;
    let (st, me) = call(&s, "GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["account_id"], id.as_str());
    assert_eq!(me["role"], "consumer");
    assert_eq!(me["email"], "ann@example.org");
    let (_, me) = call(&s, "GET", "/api/v1/me", Some(OP), None).await;
    assert_eq!(
        (&me["account_id"], &me["role"]),
        (&json!("operator"), &json!("operator"))
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/me", Some("lat_nope"), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // The same email again, in another case: 409.
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/accounts",
        None,
        Some(json!({"email": "ANN@example.org", "password": "0123456789"}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn api_tokens_are_per_tenant_and_another_tenants_ids_are_404() {
    let s = state().await;
    let (a, ta) = account(&s, "a@x.org", "consumer").await;
    let (_, tb) = account(&s, "b@x.org", "provider").await;
    let (st, made) = call(
        &s,
        "POST",
        "/api/v1/api-tokens",
        Some(&ta),
        Some(json!({"name": "ci"}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    assert_eq!(made["account_id"], a.as_str());
    let kid = made["id"].as_str().unwrap();
    let ci = made["token"].as_str().unwrap();
    // The new token works as A.
    let (_, me) = call(&s, "GET", "/api/v1/me", Some(ci), None).await;
    assert_eq!(me["account_id"], a.as_str());
    // B sees none of A's tokens and cannot delete them: 404, and the token still works.
    let (_, list_b) = call(&s, "GET", "/api/v1/api-tokens", Some(&tb), None).await;
    assert!(list_b
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["account_id"] != a.as_str()));
    let (st, v) = call(
        &s,
        "DELETE",
        &format!("/api/v1/api-tokens/{kid}"),
        Some(&tb),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        call(&s, "GET", "/api/v1/me", Some(ci), None).await.0,
        StatusCode::OK
    );
    // A lists its two (login + ci), never a secret, and deletes one: it stops working.
    let (_, list_a) = call(&s, "GET", "/api/v1/api-tokens", Some(&ta), None).await;
    assert_eq!(list_a.as_array().unwrap().len(), 2, "{list_a}");
    assert!(!list_a.to_string().contains(ci) && !list_a.to_string().contains("secret_hash"));
    let (st, _) = call(
        &s,
        "DELETE",
        &format!("/api/v1/api-tokens/{kid}"),
        Some(&ta),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&s, "GET", "/api/v1/me", Some(ci), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Operators see every token; the operator credential itself holds none.
    let (_, all) = call(&s, "GET", "/api/v1/api-tokens", Some(OP), None).await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/api-tokens",
        Some(OP),
        Some(json!({"name": "x"}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn consumers_get_403_on_operator_routes_and_operator_accounts_get_in() {
    let s = state().await;
    let (_, consumer) = account(&s, "c@x.org", "consumer").await;
    let (_, operator) = account(&s, "op@x.org", "operator").await;
    for (m, uri, body) in [
        ("GET", "/api/v1/nodes", None),
        ("GET", "/api/v1/nodes/n-x", None),
        ("POST", "/api/v1/nodes/n-x/revoke", None),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", Some("{}".to_string())),
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/accounts", None),
    ] {
        let (st, v) = call(&s, m, uri, Some(&consumer), body.clone()).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{m} {uri}: {v}");
        let (st, v) = call(&s, m, uri, Some(&operator), body).await;
        assert!(
            st == StatusCode::OK || st == StatusCode::CREATED || st == StatusCode::NOT_FOUND,
            "operator account on {m} {uri}: {st} {v}"
        );
    }
    // Without an operator's credential nobody makes an operator account.
    for auth in [None, Some(consumer.as_str())] {
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/accounts",
            auth,
            Some(
                json!({"email": "evil@x.org", "password": "0123456789", "role": "operator"})
                    .to_string(),
            ),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    }
}

#[tokio::test]
async fn providers_see_only_their_own_nodes() {
    let s = state().await;
    let (pa, ta) = account(&s, "pa@x.org", "provider").await;
    let (_, tb) = account(&s, "pb@x.org", "provider").await;
    let t = new_token(&s, &json!({"owner": pa}).to_string()).await;
    let p = lattice_wire::register::Provisioning::parse(&t.provisioning).unwrap();
    let (st, v) = register(
        &s,
        &p.token,
        &IdentityKey::generate(),
        &EncryptionKey::generate(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, nodes) = call(&s, "GET", "/api/v1/nodes", Some(&ta), None).await;
    let nodes = nodes.as_array().unwrap().clone();
    assert_eq!(nodes.len(), 1);
    let id = nodes[0]["id"].as_str().unwrap();
    assert_eq!(
        call(&s, "GET", &format!("/api/v1/nodes/{id}"), Some(&ta), None)
            .await
            .0,
        StatusCode::OK
    );
    let (_, others) = call(&s, "GET", "/api/v1/nodes", Some(&tb), None).await;
    assert_eq!(others, json!([]));
    assert_eq!(
        call(&s, "GET", &format!("/api/v1/nodes/{id}"), Some(&tb), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Revoking stays with operators, even for the owner.
    assert_eq!(
        call(
            &s,
            "POST",
            &format!("/api/v1/nodes/{id}/revoke"),
            Some(&ta),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_wrong_password_is_401_and_audited_without_the_password() {
    let s = state().await;
    let (id, _) = account(&s, "ann@x.org", "consumer").await;
    for (email, pw) in [
        ("ann@x.org", "wrong-password-1"),
        ("nobody@x.org", "wrong-password-2"),
    ] {
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"email": email, "password": pw}).to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
        // Which of the two was wrong is not said.
        assert_eq!(v["message"], "wrong email or password");
    }
    let (_, m) = call(&s, "GET", "/metrics", None, None).await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains("lattice_logins_total{result=\"failure\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("lattice_logins_total{result=\"success\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("lattice_signups_total{result=\"success\"} 1"),
        "{m}"
    );
    let (st, page) = call(
        &s,
        "GET",
        "/api/v1/audit?action=login.failure",
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{page}");
    assert_eq!(entries[1]["actor"], id.as_str());
    assert_eq!(entries[0]["actor"], "anonymous");
    let (_, all) = call(&s, "GET", "/api/v1/audit?limit=1000", Some(OP), None).await;
    let text = all.to_string();
    for secret in ["correct horse", "wrong-password-1", "wrong-password-2"] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
    }
    for action in ["account.created", "login.success", "login.failure"] {
        assert!(text.contains(action), "{action} not audited: {text}");
    }
    // Filter by account, and page through.
    let (_, mine) = call(
        &s,
        "GET",
        &format!("/api/v1/audit?account={id}&limit=1"),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(mine["entries"].as_array().unwrap().len(), 1);
    let next = mine["next"].as_str().unwrap();
    let (_, more) = call(
        &s,
        "GET",
        &format!("/api/v1/audit?account={id}&limit=1&before={next}"),
        Some(OP),
        None,
    )
    .await;
    assert_ne!(more["entries"][0]["id"], mine["entries"][0]["id"]);
    assert_eq!(more["entries"][0]["actor"], id.as_str());
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let s = state().await;
    for (uri, body, field) in [
        (
            "/api/v1/accounts",
            json!({"password": "0123456789"}),
            "email",
        ),
        ("/api/v1/accounts", json!({"email": "a@b.c"}), "password"),
        (
            "/api/v1/accounts",
            json!({"email": "a@b.c", "password": 5}),
            "password",
        ),
        (
            "/api/v1/accounts",
            json!({"email": "a@b.c", "password": "0123456789", "role": "admin"}),
            "role",
        ),
        (
            "/api/v1/accounts",
            json!({"email": "a@b.c", "password": "0123456789", "admin": true}),
            "admin",
        ),
        (
            "/api/v1/accounts",
            json!({"email": "not an email", "password": "0123456789"}),
            "email",
        ),
        (
            "/api/v1/accounts",
            json!({"email": "a@b.c", "password": "short"}),
            "password",
        ),
        (
            "/api/v1/accounts",
            json!({"email": "a@b.c", "password": "0123456789", "name": ""}),
            "name",
        ),
        ("/api/v1/login", json!({"email": "a@b.c"}), "password"),
        ("/api/v1/login", json!({"password": "x"}), "email"),
    ] {
        let (st, v) = call(&s, "POST", uri, None, Some(body.to_string())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri} {body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{uri} {body}: {v}"
        );
    }
    let (_, t) = account(&s, "a@x.org", "consumer").await;
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": "login"}), "name"),
        (json!({"name": "x", "ttl_secs": 0}), "ttl_secs"),
        (json!({"name": "x", "ttl_secs": -1}), "ttl_secs"),
    ] {
        let (st, v) = call(
            &s,
            "POST",
            "/api/v1/api-tokens",
            Some(&t),
            Some(body.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    for (q, field) in [
        ("limit=0", "limit"),
        ("since_ms=soon", "since_ms"),
        ("before=x", "before"),
    ] {
        let (st, v) = call(&s, "GET", &format!("/api/v1/audit?{q}"), Some(OP), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["message"].as_str().unwrap().contains(field), "{q}: {v}");
    }
}

#[tokio::test]
async fn logins_past_the_account_limit_are_429_with_retry_after() {
    let s = state().await;
    account(&s, "ann@x.org", "consumer").await; // one login spent
    let body = json!({"email": "ann@x.org", "password": "wrong password"}).to_string();
    let mut last = None;
    for _ in 0..10 {
        let req = Request::post("/api/v1/login")
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let resp = app(s.clone()).oneshot(req).await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            last = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = last.expect("no 429 after 10 attempts");
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // Even the right password waits now.
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"email": "ann@x.org", "password": "correct horse"}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn operators_change_roles_and_disable_accounts_at_once() {
    let s = state().await;
    let (id, token) = account(&s, "ann@x.org", "consumer").await;
    let (_, other) = account(&s, "bob@x.org", "consumer").await;
    let path = format!("/api/v1/accounts/{id}");
    let promote = Some(json!({"role": "provider"}).to_string());
    assert_eq!(
        call(&s, "PATCH", &path, Some(&other), promote.clone())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/nodes", Some(&token), None).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, v) = call(&s, "PATCH", &path, Some(OP), promote).await;
    assert_eq!(
        (st, &v["role"]),
        (StatusCode::OK, &json!("provider")),
        "{v}"
    );
    // The same token has the new role at once.
    assert_eq!(
        call(&s, "GET", "/api/v1/nodes", Some(&token), None).await.0,
        StatusCode::OK
    );
    let off = Some(json!({"disabled": true}).to_string());
    assert_eq!(
        call(&s, "PATCH", &path, Some(OP), off).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/me", Some(&token), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"email": "ann@x.org", "password": "correct horse"}).to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, page) = call(
        &s,
        "GET",
        &format!("/api/v1/audit?account={id}"),
        Some(OP),
        None,
    )
    .await;
    assert!(page.to_string().contains("account disabled"), "{page}");
    let (_, page) = call(
        &s,
        "GET",
        "/api/v1/audit?action=account.changed",
        Some(OP),
        None,
    )
    .await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2, "{page}");
    for (uri, body, want) in [
        (
            "/api/v1/accounts/a-nope",
            json!({"disabled": true}),
            StatusCode::NOT_FOUND,
        ),
        (path.as_str(), json!({}), StatusCode::BAD_REQUEST),
        (
            path.as_str(),
            json!({"role": "root"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (st, v) = call(&s, "PATCH", uri, Some(OP), Some(body.to_string())).await;
        assert_eq!(st, want, "{uri} {body}: {v}");
    }
}

#[tokio::test]
async fn closed_signup_leaves_account_creation_to_operators() {
    let Some(mut st) = Arc::try_unwrap(state().await).ok() else {
        panic!("state is shared")
    };
    st.signup = crate::accounts::SignupPolicy::Operators;
    let s = Arc::new(st);
    let body = json!({"email": "ann@x.org", "password": "correct horse"}).to_string();
    let (st, v) = call(&s, "POST", "/api/v1/accounts", None, Some(body.clone())).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("closed"), "{v}");
    let (st, v) = call(&s, "POST", "/api/v1/accounts", Some(OP), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn a_password_change_needs_the_current_one_and_ends_every_token() {
    let s = state().await;
    let (id, old) = account(&s, "ann@x.org", "consumer").await;
    let (_, ci) = call(
        &s,
        "POST",
        "/api/v1/api-tokens",
        Some(&old),
        Some(json!({"name": "ci"}).to_string()),
    )
    .await;
    let ci = ci["token"].as_str().unwrap().to_string();
    let change = |current: &str, new: &str| {
        Some(json!({"current_password": current, "new_password": new}).to_string())
    };
    let (st, v) = call(
        &s,
        "PUT",
        "/api/v1/me/password",
        Some(&old),
        change("nope nope nope", "new passphrase"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = call(
        &s,
        "PUT",
        "/api/v1/me/password",
        Some(&old),
        change("correct horse", "short"),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("new_password"),
        "{v}"
    );
    assert_eq!(
        call(
            &s,
            "PUT",
            "/api/v1/me/password",
            Some(OP),
            change("x", "new passphrase")
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (st, v) = call(
        &s,
        "PUT",
        "/api/v1/me/password",
        Some(&old),
        change("correct horse", "new passphrase"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let fresh = v["token"].as_str().unwrap();
    for t in [old.as_str(), ci.as_str()] {
        assert_eq!(
            call(&s, "GET", "/api/v1/me", Some(t), None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (_, me) = call(&s, "GET", "/api/v1/me", Some(fresh), None).await;
    assert_eq!(me["account_id"], id.as_str());
    let login = |pw: &str| Some(json!({"email": "ann@x.org", "password": pw}).to_string());
    assert_eq!(
        call(&s, "POST", "/api/v1/login", None, login("correct horse"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&s, "POST", "/api/v1/login", None, login("new passphrase"))
            .await
            .0,
        StatusCode::OK
    );
    let (_, page) = call(
        &s,
        "GET",
        "/api/v1/audit?action=account.password_changed",
        Some(OP),
        None,
    )
    .await;
    assert_eq!(page["entries"][0]["actor"], id.as_str());
    assert!(!page.to_string().contains("passphrase"), "{page}");
}
