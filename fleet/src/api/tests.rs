//! Router tests without a socket (tower::ServiceExt::oneshot).

use super::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use lattice_wire::msg::Inventory;
use lattice_wire::register::{RegisterRequest, RegisterResponse};
use lattice_wire::{EncryptionKey, IdentityKey};
use tower::ServiceExt;

const OP: &str = "lop_test";

async fn state() -> Arc<AppState> {
    state_with(Arc::new(crate::broker::StoreAccounts)).await
}

async fn state_with(accounts: Arc<dyn crate::broker::BrokerAccounts>) -> Arc<AppState> {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let metrics = Arc::new(Metrics::new());
    Arc::new(AppState {
        ingest: Arc::new(Ingest::new(store.clone(), metrics.clone())),
        store,
        metrics,
        outbound: Arc::new(Outbound::new(IdentityKey::generate(), 1)),
        operator_hash: crate::secrets::hash_secret(OP),
        public_url: "https://127.0.0.1:1".into(),
        broker_urls: vec!["mqtt://127.0.0.1:1".into()],
        public_hosts: vec!["127.0.0.1".into(), "10.0.2.2".into()],
        heartbeat_secs: 10,
        accounts,
        login_limits: Default::default(),
        signup: Default::default(),
        tunnels: Default::default(),
        kinds: Default::default(),
        node_registry: None,
        apps: Default::default(),
        link: None,
    })
}

async fn call(
    s: &Arc<AppState>,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<String>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into(),
    ));
    (status, json)
}

async fn new_token(s: &Arc<AppState>, body: &str) -> CreatedToken {
    let (st, v) = call(s, "POST", "/api/v1/tokens", Some(OP), Some(body.into())).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    serde_json::from_value(v).unwrap()
}

fn register_body(token: &str, id: &IdentityKey, enc: &EncryptionKey) -> String {
    let inv = Inventory {
        hostname: "box".into(),
        cpu_count: 2,
        ..Inventory::default()
    };
    serde_json::to_string(&RegisterRequest::new(
        token,
        id,
        &enc.public(),
        inv,
        "0.1.0",
    ))
    .unwrap()
}

/// Registers through `host` (the Host header) and returns the broker URLs the node got.
async fn broker_urls_through(s: &Arc<AppState>, host: &str) -> Vec<String> {
    let t = new_token(s, "{}").await;
    let p = lattice_wire::register::Provisioning::parse(&t.provisioning).unwrap();
    let (id, enc) = (IdentityKey::generate(), EncryptionKey::generate());
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/register")
        .header("host", host)
        .header("content-type", "application/json")
        .body(Body::from(register_body(&p.token, &id, &enc)))
        .unwrap();
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let resp: RegisterResponse = serde_json::from_slice(&bytes).unwrap();
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(resp.envelope)
        .unwrap();
    let opened = lattice_wire::envelope::decode(&sealed)
        .unwrap()
        .open(&p.fleet_public().unwrap(), Some(&enc))
        .unwrap();
    let lattice_wire::msg::Message::Registered(r) = opened.message else {
        panic!("not Registered")
    };
    r.broker_urls
}

#[tokio::test]
async fn a_node_gets_the_broker_at_the_public_host_it_registered_through() {
    let s = state().await;
    // A QEMU guest reaches the host's loopback at 10.0.2.2, a declared public host.
    assert_eq!(
        broker_urls_through(&s, "10.0.2.2:8443").await,
        ["mqtt://10.0.2.2:1"]
    );
    // The first public host, and names the fleet did not declare, get the URLs as they are.
    assert_eq!(
        broker_urls_through(&s, "127.0.0.1:8443").await,
        ["mqtt://127.0.0.1:1"]
    );
    assert_eq!(
        broker_urls_through(&s, "attacker.example").await,
        ["mqtt://127.0.0.1:1"]
    );
}

#[tokio::test]
async fn operator_routes_need_the_credential() {
    let s = state().await;
    for (m, uri) in [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/nodes/x/revoke"),
        ("GET", "/api/v1/nodes/x"),
    ] {
        assert_eq!(
            call(&s, m, uri, None, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(
            call(&s, m, uri, Some("wrong"), None).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn a_node_registers_once_with_a_token_and_gets_a_sealed_credential() {
    let s = state().await;
    let t = new_token(&s, r#"{"owner":"alice"}"#).await;
    let p = lattice_wire::register::Provisioning::parse(&t.provisioning).unwrap();
    assert_eq!(p.fleet_public().unwrap(), s.outbound.key().public());
    let (id, enc) = (IdentityKey::generate(), EncryptionKey::generate());
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/register",
        None,
        Some(register_body(&p.token, &id, &enc)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let resp: RegisterResponse = serde_json::from_value(v).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(resp.envelope)
        .unwrap();
    let opened = lattice_wire::envelope::decode(&bytes)
        .unwrap()
        .open(&p.fleet_public().unwrap(), Some(&enc))
        .unwrap();
    let lattice_wire::msg::Message::Registered(r) = opened.message else {
        panic!("not Registered")
    };
    assert_eq!(r.identity, id.public());
    let (st, node) = call(
        &s,
        "GET",
        &format!("/api/v1/nodes/{}", r.node_id),
        Some(OP),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(node["owner"], "alice");
    assert!(
        node.get("broker_secret_hash").is_none(),
        "secret hash leaked: {node}"
    );
    // The token was single-use.
    let (id2, enc2) = (IdentityKey::generate(), EncryptionKey::generate());
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/register",
        None,
        Some(register_body(&p.token, &id2, &enc2)),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(v["message"].as_str().unwrap().contains("used up"), "{v}");
    assert_eq!(s.metrics.rejected_count("token_used_up"), 1);
    assert_eq!(s.store.nodes().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_registrations_name_the_problem_and_store_nothing() {
    let s = state().await;
    let t = new_token(&s, r#"{"uses":5}"#).await;
    let (id, enc) = (IdentityKey::generate(), EncryptionKey::generate());
    // Unknown field.
    let (st, v) = call(
        &s,
        "POST",
        "/api/v1/register",
        None,
        Some(r#"{"token":"x","bogus":1}"#.into()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "bad_request");
    // Signature made for another token (no proof of possession).
    let mut req: serde_json::Value =
        serde_json::from_str(&register_body("other", &id, &enc)).unwrap();
    req["token"] = t.token.clone().into();
    let (st, v) = call(&s, "POST", "/api/v1/register", None, Some(req.to_string())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("signature"), "{v}");
    assert_eq!(s.metrics.rejected_count("bad_proof"), 1);
    // Unknown token.
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/register",
        None,
        Some(register_body("t-0.nope", &id, &enc)),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(s.store.nodes().await.unwrap().is_empty());
    // The same key twice.
    assert_eq!(
        call(
            &s,
            "POST",
            "/api/v1/register",
            None,
            Some(register_body(&t.token, &id, &enc))
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &s,
            "POST",
            "/api/v1/register",
            None,
            Some(register_body(&t.token, &id, &enc))
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
}

/// A registration and a refused known token are audited (naming the token, never its
/// secret); an unknown token is not, so anonymous floods cannot fill the audit table.
#[tokio::test]
async fn registrations_and_refusals_of_known_tokens_are_audited() {
    let s = state().await;
    let t = new_token(&s, r#"{"uses":1,"owner":"alice"}"#).await;
    let (id, enc) = (IdentityKey::generate(), EncryptionKey::generate());
    let (st, v) = register(&s, &t.token, &id, &enc).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (id2, enc2) = (IdentityKey::generate(), EncryptionKey::generate());
    assert_eq!(
        register(&s, &t.token, &id2, &enc2).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        register(&s, "t-0.nope", &id2, &enc2).await.0,
        StatusCode::FORBIDDEN
    );
    let all = s
        .store
        .audit(&crate::store::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let node = s.store.nodes().await.unwrap().remove(0);
    let registered: Vec<_> = all
        .iter()
        .filter(|e| e.action == "node.registered")
        .collect();
    assert_eq!(registered.len(), 1, "{all:?}");
    assert_eq!(registered[0].actor, format!("token:{}", t.id));
    assert_eq!(registered[0].target, node.id);
    assert!(registered[0].detail.contains("owner=alice"), "{all:?}");
    let refused: Vec<_> = all
        .iter()
        .filter(|e| e.action == "node.registration_refused")
        .collect();
    assert_eq!(refused.len(), 1, "only the known token: {all:?}");
    assert_eq!(refused[0].target, t.id);
    assert!(
        refused[0]
            .detail
            .starts_with("reason=token_used_up hostname="),
        "{all:?}"
    );
    assert!(!all.iter().any(|e| e.detail.contains(&t.token)
        || e.target.contains(&t.token)
        || e.actor.contains(&t.token)));
}

#[tokio::test]
async fn token_requests_are_validated() {
    let s = state().await;
    for body in [
        r#"{"uses":0}"#,
        r#"{"ttl_secs":0}"#,
        r#"{"owner":""}"#,
        r#"{"nope":1}"#,
        "not json",
    ] {
        let (st, v) = call(&s, "POST", "/api/v1/tokens", Some(OP), Some(body.into())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
}

#[tokio::test]
async fn revoking_an_unknown_node_is_404() {
    let s = state().await;
    let (st, v) = call(&s, "POST", "/api/v1/nodes/n-missing/revoke", Some(OP), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "not_found");
}

#[tokio::test]
async fn openapi_documents_every_route_and_metrics_render() {
    let s = state().await;
    let (st, doc) = call(&s, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    for p in [
        "/api/v1/register",
        "/api/v1/nodes",
        "/api/v1/nodes/{id}",
        "/api/v1/nodes/{id}/revoke",
        "/api/v1/nodes/{id}/cordon",
        "/api/v1/nodes/{id}/uncordon",
        "/api/v1/nodes/{id}/drain",
        "/api/v1/nodes/{id}/decommission",
        "/api/v1/nodes/{id}/lifecycle",
        "/api/v1/nodes/{id}/offer",
        "/api/v1/tokens",
        "/api/v1/accounts",
        "/api/v1/accounts/{id}",
        "/api/v1/login",
        "/api/v1/me",
        "/api/v1/me/password",
        "/api/v1/api-tokens",
        "/api/v1/api-tokens/{id}",
        "/api/v1/audit",
        "/api/v1/workloads",
        "/api/v1/workloads/{name}",
        "/api/v1/workloads/{name}/logs",
        "/api/v1/workloads/{name}/placement",
        "/api/v1/placement",
        "/healthz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from OpenAPI");
    }
    let (st, m) = call(&s, "GET", "/metrics", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let text = m.as_str().unwrap();
    assert!(text.contains("lattice_nodes{state=\"online\"} 0"), "{text}");
    assert_eq!(
        call(&s, "GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
}

/// Broker accounts that record every call and fail when told to.
#[derive(Default)]
struct FakeAccounts {
    calls: std::sync::Mutex<Vec<String>>,
    fail: std::sync::atomic::AtomicBool,
}

impl FakeAccounts {
    fn record(&self, what: String) -> Result<(), crate::broker::AccountsError> {
        self.calls.lock().unwrap().push(what);
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Err(crate::broker::AccountsError::NotConnected {
                broker: "mqtt://broker.invalid:1883".into(),
            })
        } else {
            Ok(())
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn set_failing(&self, fail: bool) {
        self.fail.store(fail, std::sync::atomic::Ordering::SeqCst);
    }
}

impl crate::broker::BrokerAccounts for FakeAccounts {
    fn add_node<'a>(&'a self, id: &'a str, password: &'a str) -> crate::broker::AccountsFuture<'a> {
        assert!(!password.is_empty());
        Box::pin(async move { self.record(format!("add {id}")) })
    }

    fn remove_node<'a>(&'a self, id: &'a str) -> crate::broker::AccountsFuture<'a> {
        Box::pin(async move { self.record(format!("remove {id}")) })
    }

    fn revoke_node<'a>(&'a self, id: &'a str) -> crate::broker::AccountsFuture<'a> {
        Box::pin(async move { self.record(format!("revoke {id}")) })
    }
}

async fn register(
    s: &Arc<AppState>,
    token: &str,
    id: &IdentityKey,
    enc: &EncryptionKey,
) -> (StatusCode, serde_json::Value) {
    call(
        s,
        "POST",
        "/api/v1/register",
        None,
        Some(register_body(token, id, enc)),
    )
    .await
}

#[tokio::test]
async fn a_broker_that_cannot_make_the_account_refuses_registration_with_503_and_nothing_stored() {
    let accounts = Arc::new(FakeAccounts::default());
    let s = state_with(accounts.clone()).await;
    let t = new_token(&s, "{}").await;
    let (id, enc) = (IdentityKey::generate(), EncryptionKey::generate());
    accounts.set_failing(true);
    let (st, v) = register(&s, &t.token, &id, &enc).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "broker_unavailable");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("MQTT broker") && msg.contains("try again"),
        "{msg}"
    );
    assert!(
        !msg.contains("broker.invalid"),
        "broker internals stay in the log: {msg}"
    );
    assert_eq!(s.metrics.rejected_count("broker_error"), 1);
    // Nothing half-registered: no node, the token's use not spent.
    assert!(s.store.nodes().await.unwrap().is_empty());
    assert_eq!(s.store.tokens().await.unwrap()[0].uses, 0);
    assert_eq!(accounts.calls().len(), 1);
    // The node retries (latticed retries 5xx) once the broker is back: same token, same key.
    accounts.set_failing(false);
    let (st, v) = register(&s, &t.token, &id, &enc).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let nodes = s.store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(accounts.calls()[1], format!("add {}", nodes[0].id));
}

#[tokio::test]
async fn the_broker_is_asked_only_for_a_usable_token_and_a_refused_store_takes_the_account_back() {
    let accounts = Arc::new(FakeAccounts::default());
    let s = state_with(accounts.clone()).await;
    let (id, enc) = (IdentityKey::generate(), EncryptionKey::generate());
    // An unknown token never reaches the broker.
    let (st, _) = register(&s, "t-0.nope", &id, &enc).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(accounts.calls().is_empty());
    // A duplicate identity is found by the store after the account was made: it is removed.
    let t = new_token(&s, r#"{"uses":2}"#).await;
    assert_eq!(register(&s, &t.token, &id, &enc).await.0, StatusCode::OK);
    assert_eq!(
        register(&s, &t.token, &id, &enc).await.0,
        StatusCode::CONFLICT
    );
    let calls = accounts.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let second = calls[1].strip_prefix("add ").unwrap();
    assert_eq!(calls[2], format!("remove {second}"));
    assert_eq!(s.store.nodes().await.unwrap().len(), 1);
}

#[tokio::test]
async fn revoke_tells_the_broker_and_says_so_when_it_could_not() {
    let accounts = Arc::new(FakeAccounts::default());
    let s = state_with(accounts.clone()).await;
    let t = new_token(&s, "{}").await;
    let (id, enc) = (IdentityKey::generate(), EncryptionKey::generate());
    assert_eq!(register(&s, &t.token, &id, &enc).await.0, StatusCode::OK);
    let node = s.store.nodes().await.unwrap().remove(0).id;
    let uri = format!("/api/v1/nodes/{node}/revoke");
    accounts.set_failing(true);
    let (st, v) = call(&s, "POST", &uri, Some(OP), None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(&node) && msg.contains("revoke again"), "{msg}");
    assert!(
        s.store.node(&node).await.unwrap().unwrap().revoked,
        "revoked in the store anyway"
    );
    accounts.set_failing(false);
    let (st, v) = call(&s, "POST", &uri, Some(OP), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revoked"], true);
    assert_eq!(accounts.calls().last().unwrap(), &format!("revoke {node}"));
}

mod accounts;
mod load;
mod node_lifecycle;
mod offers;
mod placement;
mod s3;
mod updates;
mod workloads;
