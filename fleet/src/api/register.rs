//! `POST /api/v1/register`: a node spends a provisioning token and gets its id and broker
//! credential, sealed to its own key and signed by the fleet key it pinned.

use super::{ApiError, AppState};
use crate::secrets::{hash_secret, random_secret};
use crate::store::{NewNode, StoreError, TokenProblem};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri};
use axum::Json;
use base64::Engine;
use lattice_wire::msg::{Message, Registered};
use lattice_wire::register::{RegisterRequest, RegisterResponse};
use std::sync::Arc;

/// Registers a node.
#[utoipa::path(post, path = "/api/v1/register", request_body = RegisterRequest,
    responses((status = 200, body = RegisterResponse),
        (status = 400, description = "malformed request or bad proof of possession", body = super::ErrorBody),
        (status = 403, description = "token unknown, expired or used up", body = super::ErrorBody),
        (status = 409, description = "identity key already registered", body = super::ErrorBody),
        (status = 503, description = "the store or the MQTT broker is unavailable; retry later", body = super::ErrorBody)))]
pub async fn register(
    State(s): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let host = request_host(&uri, &headers);
    let broker_urls = broker_urls_for(&s.broker_urls, &s.public_hosts, host.as_deref());
    register_inner(&s, broker_urls, body)
        .await
        .map_err(|(reason, e)| {
            s.metrics.reject(reason);
            tracing::warn!(reason, error = %e, "registration refused");
            e
        })
}

/// The host (without port) the client named: HTTP/2's `:authority`, else the `Host` header.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let authority = match uri.authority() {
        Some(a) => a.clone(),
        None => headers
            .get(axum::http::header::HOST)?
            .to_str()
            .ok()?
            .parse::<Authority>()
            .ok()?,
    };
    Some(authority.host().to_string())
}

/// Host names compare without case and without IPv6 brackets.
fn same_host(a: &str, b: &str) -> bool {
    let bare = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_string();
    bare(a).eq_ignore_ascii_case(&bare(b))
}

/// The broker URLs a node gets at registration. A node reaches the broker the way it reached
/// the fleet: when it registered through `used`, one of the fleet's public hosts other than
/// the first (the one the fleet's URLs name), every broker URL naming that first host names
/// `used` instead. So one fleet serves a node on its own machine (127.0.0.1) and a QEMU guest
/// (which reaches the same loopback at 10.0.2.2) alike. Any other host, or none, gets the
/// URLs unchanged: the Host header chooses only among names the operator declared, and the
/// node pins the fleet's key whatever name it dials.
pub(crate) fn broker_urls_for(
    urls: &[String],
    public_hosts: &[String],
    used: Option<&str>,
) -> Vec<String> {
    let (Some(primary), Some(used)) = (public_hosts.first(), used) else {
        return urls.to_vec();
    };
    if same_host(primary, used) || !public_hosts.iter().any(|h| same_host(h, used)) {
        return urls.to_vec();
    }
    urls.iter()
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.clone();
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            match authority.parse::<Authority>() {
                Ok(a) if same_host(a.host(), primary) => {
                    let host = if used.contains(':') && !used.starts_with('[') {
                        format!("[{used}]")
                    } else {
                        used.to_string()
                    };
                    match a.port_u16() {
                        Some(port) => format!("{scheme}://{host}:{port}{path}"),
                        None => format!("{scheme}://{host}{path}"),
                    }
                }
                _ => url.clone(),
            }
        })
        .collect()
}

/// A refusal: the metric's reason label and the answer.
type Refusal = (&'static str, ApiError);

fn store_refusal(e: StoreError) -> Refusal {
    let reason = match &e {
        StoreError::Token(p) => p.reason(),
        StoreError::DuplicateIdentity(_) => "duplicate_identity",
        _ => "store_error",
    };
    (reason, ApiError::from(e))
}

/// Audits a refusal of a known token, naming the token (never its secret) and the machine.
async fn audit_refusal(s: &AppState, token_hash: &str, problem: TokenProblem, hostname: &str) {
    let token_id = match s.store.token_by_secret_hash(token_hash).await {
        Ok(Some(t)) => t.id,
        _ => "-".into(),
    };
    if let Err(e) = crate::audit::record(
        &s.store,
        crate::audit::ANONYMOUS,
        crate::audit::Action::NodeRegistrationRefused,
        &token_id,
        &format!(
            "reason={} hostname={}",
            problem.reason(),
            printable(hostname)
        ),
    )
    .await
    {
        tracing::error!(error = %e, "cannot audit a refused registration");
    }
}

/// A node-supplied name made safe for one line of the audit log: at most 64 printable ASCII
/// characters, others replaced by `?`.
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

async fn register_inner(
    s: &AppState,
    broker_urls: Vec<String>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<RegisterResponse>, Refusal> {
    let Json(req) = body.map_err(|e| ("bad_request", ApiError::BadRequest(e.body_text())))?;
    let (identity, encryption) = req
        .verify()
        .map_err(|e| ("bad_proof", ApiError::BadRequest(e.to_string())))?;
    let node_id = format!("n-{}", hex::encode(rand::random::<[u8; 16]>()));
    let broker_password = random_secret();
    let inventory = serde_json::to_string(&req.inventory)
        .map_err(|e| ("internal", ApiError::Internal(e.to_string())))?;
    let node = NewNode {
        id: node_id.clone(),
        identity_key: identity.to_string(),
        encryption_key: encryption.to_string(),
        broker_secret_hash: hash_secret(&broker_password),
        inventory,
    };
    let token_hash = hash_secret(&req.token);
    // The broker account comes first, so a stored node always has one. A token that cannot
    // register is refused before the broker is asked for anything.
    let token = match s
        .store
        .check_token(&token_hash, lattice_wire::now_ms())
        .await
    {
        Ok(t) => t,
        Err(e) => {
            if let StoreError::Token(problem @ (TokenProblem::Expired | TokenProblem::UsedUp)) = &e
            {
                audit_refusal(s, &token_hash, *problem, &req.inventory.hostname).await;
            }
            return Err(store_refusal(e));
        }
    };
    if let Err(e) = s.accounts.add_node(&node_id, &broker_password).await {
        tracing::error!(node = %node_id, error = %e, "cannot create the node's broker account");
        return Err((
            "broker_error",
            ApiError::BrokerUnavailable(
                "the MQTT broker could not create this node's account; try again later".into(),
            ),
        ));
    }
    if let Err(e) = s
        .store
        .register_node(&token_hash, &node, lattice_wire::now_ms())
        .await
    {
        // Not registered after all: take the account back (nobody holds its password, so
        // one left behind by a failure here is unusable, only untidy).
        if let Err(undo) = s.accounts.remove_node(&node_id).await {
            tracing::warn!(node = %node_id, error = %undo, "cannot remove the broker account of a refused registration");
        }
        return Err(store_refusal(e));
    }
    let msg = Message::Registered(Registered {
        node_id: node_id.clone(),
        broker_password,
        broker_urls,
        heartbeat_secs: s.heartbeat_secs,
        identity,
        encryption: encryption.clone(),
    });
    let sealed = s
        .outbound
        .seal(None, &msg, Some(&encryption))
        .map_err(|e| ("internal", ApiError::Internal(e.to_string())))?;
    s.metrics.registrations.inc();
    tracing::info!(node = %node_id, hostname = %req.inventory.hostname, "node registered");
    // Registered already: a store hiccup here is logged by `record`, not a reason to refuse.
    if let Err(e) = crate::audit::record(
        &s.store,
        &format!("token:{}", token.id),
        crate::audit::Action::NodeRegistered,
        &node_id,
        &format!(
            "hostname={} owner={}",
            printable(&req.inventory.hostname),
            token.owner.as_deref().unwrap_or("-")
        ),
    )
    .await
    {
        tracing::error!(node = %node_id, error = %e, "cannot audit the registration");
    }
    Ok(Json(RegisterResponse {
        envelope: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        ["127.0.0.1", "localhost", "10.0.2.2", "::1"]
            .map(String::from)
            .to_vec()
    }

    fn urls() -> Vec<String> {
        ["mqtts://127.0.0.1:8883", "mqtts://broker.example:8884/x"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_node_that_came_through_another_public_host_gets_the_broker_there() {
        assert_eq!(
            broker_urls_for(&urls(), &hosts(), Some("10.0.2.2")),
            ["mqtts://10.0.2.2:8883", "mqtts://broker.example:8884/x"]
        );
        assert_eq!(
            broker_urls_for(&urls(), &hosts(), Some("LOCALHOST")),
            ["mqtts://LOCALHOST:8883", "mqtts://broker.example:8884/x"]
        );
        assert_eq!(
            broker_urls_for(&urls(), &hosts(), Some("[::1]")),
            ["mqtts://[::1]:8883", "mqtts://broker.example:8884/x"]
        );
        assert_eq!(
            broker_urls_for(&urls(), &hosts(), Some("::1")),
            ["mqtts://[::1]:8883", "mqtts://broker.example:8884/x"]
        );
    }

    #[test]
    fn the_first_host_an_undeclared_host_or_none_changes_nothing() {
        for used in [
            Some("127.0.0.1"),
            Some("evil.example"),
            Some("10.0.2.3"),
            None,
        ] {
            assert_eq!(broker_urls_for(&urls(), &hosts(), used), urls(), "{used:?}");
        }
        // No public hosts at all: as given.
        assert_eq!(broker_urls_for(&urls(), &[], Some("10.0.2.2")), urls());
        // Not a URL: left alone rather than mangled.
        let odd = vec!["127.0.0.1:8883".to_string()];
        assert_eq!(broker_urls_for(&odd, &hosts(), Some("10.0.2.2")), odd);
    }

    #[test]
    fn the_host_comes_from_the_authority_or_the_host_header() {
        let mut h = HeaderMap::new();
        let plain: Uri = "/api/v1/register".parse().unwrap();
        assert_eq!(request_host(&plain, &h), None);
        h.insert("host", "10.0.2.2:8443".parse().unwrap());
        assert_eq!(request_host(&plain, &h).as_deref(), Some("10.0.2.2"));
        let h2: Uri = "https://[::1]:8443/api/v1/register".parse().unwrap();
        assert_eq!(request_host(&h2, &h).as_deref(), Some("[::1]"));
        h.insert("host", "not a host".parse().unwrap());
        assert_eq!(request_host(&plain, &h), None);
    }
}
