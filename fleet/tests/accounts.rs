//! Accounts, roles and the audit log against a real `lattice fleet` over HTTPS (pinned), driven
//! through the CLI and raw HTTP.

mod common;

use common::lattice_as as lattice;
use common::*;
use serde_json::{json, Value};

/// Raw HTTPS to the fleet, pinned to its key.
struct Api {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(f: &Fleet) -> (Api, String) {
        let cfg: toml::Value =
            toml::from_str(&std::fs::read_to_string(&f.cli_config).unwrap()).unwrap();
        let key_text = cfg["fleet_key"].as_str().unwrap().to_string();
        let key = lattice_wire::IdentityPublic::parse(&key_text).unwrap();
        let http = lattice_wire::pin::pinned_http_client(&key, std::time::Duration::from_secs(30))
            .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        (
            Api {
                rt,
                http,
                base: f.url.clone(),
            },
            key_text,
        )
    }

    /// (status, Retry-After, JSON body).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Option<String>, Value) {
        self.rt.block_on(async {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = self.http.request(m, format!("{}{path}", self.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let bytes = resp.bytes().await.unwrap();
            let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, retry, v)
        })
    }

    fn login(&self, email: &str, password: &str) -> String {
        let (st, _, v) = self.call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"email": email, "password": password})),
        );
        assert_eq!(st, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

const ANN_PW: &str = "ann's long passphrase 1";
const ANN_PW2: &str = "ann's new passphrase 5";
const BOB_PW: &str = "bob's long passphrase 2";
const OPS_PW: &str = "operator passphrase 3";
const WRONG_PW: &str = "not ann's passphrase 4";

#[test]
fn accounts_roles_tenancy_and_audit_on_a_real_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let (api, key) = Api::new(&f);
    let ann_cfg = dir.path().join("ann.toml");

    // A consumer signs up and logs in from a machine with no CLI config.
    let (ok, out, err) = lattice(
        &ann_cfg,
        &[
            "signup",
            "--email",
            "ann@example.org",
            "--fleet",
            &f.url,
            "--fleet-key",
            &key,
        ],
        &format!("{ANN_PW}\n"),
    );
    assert!(ok, "signup: {out}{err}");
    let (ok, out, err) = lattice(
        &ann_cfg,
        &[
            "login",
            "--email",
            "ann@example.org",
            "--fleet",
            &f.url,
            "--fleet-key",
            &key,
        ],
        &format!("{ANN_PW}\n"),
    );
    assert!(ok, "login: {out}{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ann_cfg).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the CLI config holds a token");
    let (ok, who, err) = lattice(&ann_cfg, &["whoami", "--json"], "");
    assert!(ok, "{err}");
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        (who["role"].as_str(), who["email"].as_str()),
        (Some("consumer"), Some("ann@example.org"))
    );
    let ann_id = who["account_id"].as_str().unwrap().to_string();

    // A consumer gets 403 on operator routes, through the CLI and over HTTP.
    for args in [&["nodes"][..], &["tokens", "list"], &["audit"]] {
        let (ok, _, err) = lattice(&ann_cfg, args, "");
        assert!(!ok && err.contains("403"), "{args:?}: {err}");
    }
    let ann = api.login("ann@example.org", ANN_PW);
    for (m, path) in [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/accounts"),
        ("POST", "/api/v1/nodes/n-1/revoke"),
    ] {
        let body = (m == "POST").then(|| json!({}));
        assert_eq!(api.call(m, path, Some(&ann), body).0, 403, "{m} {path}");
    }

    // API tokens through the CLI: made, listed (without the secret), usable, deleted.
    let (ok, ci_token, err) = lattice(&ann_cfg, &["api-tokens", "create", "deploy-bot"], "");
    assert!(ok, "{err}");
    let ci_token = ci_token.trim().to_string();
    assert!(ci_token.starts_with("lat_"), "{ci_token}");
    assert_eq!(api.call("GET", "/api/v1/me", Some(&ci_token), None).0, 200);
    let (ok, list, err) = lattice(&ann_cfg, &["api-tokens", "list", "--json"], "");
    assert!(ok, "{err}");
    assert!(!list.contains(&ci_token), "{list}");
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    let bot = list.iter().find(|t| t["name"] == "deploy-bot").unwrap();
    let (ok, _, err) = lattice(
        &ann_cfg,
        &["api-tokens", "delete", bot["id"].as_str().unwrap()],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(api.call("GET", "/api/v1/me", Some(&ci_token), None).0, 401);

    // A password change through the CLI: the old login token is gone, the CLI keeps the new.
    // (Ann's logins so far: 2 of the per-account burst of 5.)
    let old = ann.clone();
    let (ok, out, err) = lattice(&ann_cfg, &["passwd"], &format!("{ANN_PW}\n{ANN_PW2}\n"));
    assert!(ok, "{out}{err}");
    assert_eq!(api.call("GET", "/api/v1/me", Some(&old), None).0, 401);
    let (ok, _, err) = lattice(&ann_cfg, &["whoami"], "");
    assert!(ok, "{err}");
    let ann = api.login("ann@example.org", ANN_PW2);

    // Tenancy: Bob cannot see or delete Ann's API token (404), which keeps working.
    let (st, _, _) = api.call(
        "POST",
        "/api/v1/accounts",
        None,
        Some(json!({"email": "bob@example.org", "password": BOB_PW, "role": "provider"})),
    );
    assert_eq!(st, 201);
    let bob = api.login("bob@example.org", BOB_PW);
    let (st, _, made) = api.call(
        "POST",
        "/api/v1/api-tokens",
        Some(&ann),
        Some(json!({"name": "ci"})),
    );
    assert_eq!(st, 201, "{made}");
    let kid = made["id"].as_str().unwrap();
    let (_, _, bobs) = api.call("GET", "/api/v1/api-tokens", Some(&bob), None);
    assert!(!bobs.to_string().contains(kid), "{bobs}");
    let path = format!("/api/v1/api-tokens/{kid}");
    assert_eq!(api.call("DELETE", &path, Some(&bob), None).0, 404);
    let ci = made["token"].as_str().unwrap();
    assert_eq!(api.call("GET", "/api/v1/me", Some(ci), None).0, 200);
    assert_eq!(api.call("DELETE", &path, Some(&ann), None).0, 204);
    assert_eq!(api.call("GET", "/api/v1/me", Some(ci), None).0, 401);

    // Malformed bodies: 400 naming the field.
    let (st, _, v) = api.call(
        "POST",
        "/api/v1/accounts",
        None,
        Some(json!({"email": "c@example.org", "password": "short"})),
    );
    assert_eq!(st, 400);
    assert!(v["message"].as_str().unwrap().contains("password"), "{v}");
    let (st, _, v) = api.call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"email": "x@y.z"})),
    );
    assert_eq!(st, 400);
    assert!(v["message"].as_str().unwrap().contains("password"), "{v}");

    // A wrong password: the CLI fails, the fleet answers 401, and the audit log says so.
    let (ok, _, err) = lattice(
        &ann_cfg,
        &["login", "--email", "ann@example.org"],
        &format!("{WRONG_PW}\n"),
    );
    assert!(!ok && err.contains("401"), "{err}");

    // The operator (credential from `lattice fleet`) makes an operator account, whose token
    // is accepted on operator routes.
    let (ok, out, err) = lattice(
        &f.cli_config,
        &["signup", "--email", "ops@example.org", "--role", "operator"],
        &format!("{OPS_PW}\n"),
    );
    assert!(ok, "{out}{err}");
    let ops = api.login("ops@example.org", OPS_PW);
    assert_eq!(api.call("GET", "/api/v1/nodes", Some(&ops), None).0, 200);
    assert_eq!(
        api.call("POST", "/api/v1/tokens", Some(&ops), Some(json!({})))
            .0,
        201
    );
    let (ok, audit, err) = lattice(&f.cli_config, &["audit", "--json", "--limit", "1000"], "");
    assert!(ok, "{err}");
    let entries: Vec<Value> = serde_json::from_str(&audit).unwrap();
    let has = |actor: &str, action: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action)
    };
    assert!(has(&ann_id, "login.failure"), "{audit}");
    assert!(has(&ann_id, "login.success"), "{audit}");
    assert!(has("anonymous", "account.created"), "{audit}");
    assert!(has("operator", "account.created"), "{audit}");
    assert!(
        has(&ann_id, "api_token.created") && has(&ann_id, "api_token.deleted"),
        "{audit}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "provisioning_token.created"),
        "{audit}"
    );
    let (ok, table, _) = lattice(&f.cli_config, &["audit", "--action", "login.failure"], "");
    assert!(
        ok && table.contains("login.failure") && !table.contains("login.success"),
        "{table}"
    );

    // Operators list accounts and disable one: its tokens stop at once.
    let (ok, list, err) = lattice(&f.cli_config, &["accounts", "list", "--json"], "");
    assert!(ok, "{err}");
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(!format!("{list:?}").contains("argon2"));
    let bob_id = list
        .iter()
        .find(|a| a["email"] == "bob@example.org")
        .and_then(|a| a["id"].as_str())
        .unwrap()
        .to_string();
    assert_eq!(api.call("GET", "/api/v1/me", Some(&bob), None).0, 200);
    let (ok, out, err) = lattice(
        &f.cli_config,
        &["accounts", "set", &bob_id, "--disable"],
        "",
    );
    assert!(ok && out.contains("disabled"), "{out}{err}");
    assert_eq!(api.call("GET", "/api/v1/me", Some(&bob), None).0, 401);
    let (ok, _, err) = lattice(&ann_cfg, &["accounts", "set", &bob_id, "--enable"], "");
    assert!(!ok && err.contains("403"), "{err}");

    // Rate limit per IP: past the burst, 429 with Retry-After (also for a right password).
    let mut refused = None;
    for i in 0..30 {
        let (st, retry, v) = api.call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"email": format!("nobody{i}@example.org"), "password": WRONG_PW})),
        );
        if st == 429 {
            refused = Some(retry);
            break;
        }
        assert_eq!(st, 401, "{v}");
    }
    let retry = refused
        .expect("no 429 after 30 logins from one address")
        .expect("Retry-After");
    assert!(retry.parse::<u64>().unwrap() >= 1, "{retry}");
    let (st, _, _) = api.call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"email": "bob@example.org", "password": BOB_PW})),
    );
    assert_eq!(st, 429);

    // No password ever reached the fleet's log (RUST_LOG=info,lattice_fleet=debug), nor the
    // audit log.
    let log = f.log_text();
    assert!(log.contains("login failed"), "the log has the login lines");
    for pw in [ANN_PW, ANN_PW2, BOB_PW, OPS_PW, WRONG_PW] {
        assert!(!log.contains(pw), "a password is in the fleet's log");
        assert!(!audit.contains(pw), "a password is in the audit log");
    }
}

#[test]
fn signup_operators_closes_sign_up_to_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &["--signup", "operators"],
    );
    let (api, _) = Api::new(&f);
    let body = json!({"email": "ann@example.org", "password": ANN_PW});
    let (st, _, v) = api.call("POST", "/api/v1/accounts", None, Some(body));
    assert_eq!(st, 403, "{v}");
    let (ok, out, err) = lattice(
        &f.cli_config,
        &["signup", "--email", "ann@example.org"],
        &format!("{ANN_PW}\n"),
    );
    assert!(ok, "{out}{err}");
    api.login("ann@example.org", ANN_PW);
}
