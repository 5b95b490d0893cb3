//! Provisioning tokens: created by operators, printed as one provisioning string.

use super::{ApiError, AppState, Principal};
use crate::secrets::{hash_secret, random_secret};
use crate::store::TokenRow;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use lattice_wire::register::Provisioning;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Default life of a token: 24 hours.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The provider (owner) the registered nodes will belong to.
    pub owner: Option<String>,
    /// How many nodes may register with it (default 1).
    pub uses: Option<u64>,
    /// Seconds until it expires (default 86400).
    pub ttl_secs: Option<u64>,
}

/// A new token. `token` and `provisioning` are shown once and never stored.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
    /// `lattice1:…`: the fleet URL, the token and the fleet's public key, for the node.
    pub provisioning: String,
    pub owner: Option<String>,
    pub max_uses: u64,
    pub expires_ms: u64,
}

/// Creates a provisioning token.
#[utoipa::path(post, path = "/api/v1/tokens", security(("bearer" = [])), request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
        (status = 403, description = "operators only", body = super::ErrorBody)))]
pub async fn create(
    p: Principal,
    State(s): State<Arc<AppState>>,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<CreatedToken>), ApiError> {
    p.require_operator()?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let uses = req.uses.unwrap_or(1);
    if uses == 0 || uses > 100_000 {
        return Err(ApiError::BadRequest(
            "uses must be between 1 and 100000".into(),
        ));
    }
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > 365 * 24 * 3600 {
        return Err(ApiError::BadRequest(
            "ttl_secs must be between 1 and 31536000".into(),
        ));
    }
    if let Some(o) = &req.owner {
        if o.is_empty() || o.len() > 128 || o.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(
                "owner must be 1 to 128 printable characters".into(),
            ));
        }
    }
    let t = issue(&s, req.owner, uses, ttl).await?;
    crate::audit::record(
        &s.store,
        &p.account_id,
        crate::audit::Action::ProvisioningTokenCreated,
        &t.id,
        &format!("owner={} uses={uses}", t.owner.as_deref().unwrap_or("-")),
    )
    .await?;
    Ok((axum::http::StatusCode::CREATED, Json(t)))
}

/// Stores a new token and builds its provisioning string.
pub async fn issue(
    s: &AppState,
    owner: Option<String>,
    uses: u64,
    ttl_secs: u64,
) -> Result<CreatedToken, ApiError> {
    let now = lattice_wire::now_ms();
    let id = format!("t-{}", &hex::encode(rand::random::<[u8; 6]>()));
    let token = format!("{id}.{}", random_secret());
    let row = TokenRow {
        id: id.clone(),
        secret_hash: hash_secret(&token),
        owner: owner.clone(),
        max_uses: uses,
        uses: 0,
        expires_ms: now + ttl_secs * 1000,
        created_ms: now,
    };
    s.store.insert_token(&row).await?;
    let provisioning = Provisioning {
        url: s.public_url.clone(),
        token: token.clone(),
        fleet_key: s.outbound.key().public().to_string(),
    }
    .encode();
    tracing::info!(token_id = %id, owner = ?owner, uses, "provisioning token created");
    Ok(CreatedToken {
        id,
        token,
        provisioning,
        owner,
        max_uses: uses,
        expires_ms: row.expires_ms,
    })
}

/// Lists tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", security(("bearer" = [])),
    responses((status = 200, body = [TokenRow]), (status = 401, body = super::ErrorBody),
        (status = 403, description = "operators only", body = super::ErrorBody)))]
pub async fn list(
    p: Principal,
    State(s): State<Arc<AppState>>,
) -> Result<Json<Vec<TokenRow>>, ApiError> {
    p.require_operator()?;
    Ok(Json(s.store.tokens().await?))
}
