//! `POST /api/v1/register`: a node spends a provisioning token and gets its id and broker
//! credential, sealed to its own key and signed by the fleet key it pinned.

use super::{ApiError, AppState};
use crate::secrets::{hash_secret, random_secret};
use crate::store::{NewNode, StoreError};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
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
        (status = 409, description = "identity key already registered", body = super::ErrorBody)))]
pub async fn register(
    State(s): State<Arc<AppState>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<RegisterResponse>, ApiError> {
    register_inner(&s, body).await.map_err(|(reason, e)| {
        s.metrics.reject(reason);
        tracing::warn!(reason, error = %e, "registration refused");
        e
    })
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

async fn register_inner(
    s: &AppState,
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
    s.store
        .register_node(&hash_secret(&req.token), &node, lattice_wire::now_ms())
        .await
        .map_err(store_refusal)?;
    let msg = Message::Registered(Registered {
        node_id: node_id.clone(),
        broker_password,
        broker_urls: s.broker_urls.clone(),
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
    Ok(Json(RegisterResponse {
        envelope: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
    }))
}
