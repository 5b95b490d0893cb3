//! An account's own API tokens: create (shown once), list (never the secret), delete.
//! Scoped: an account sees and deletes only its own; another account's token id is 404.
//! Operators see and may delete every token.

use super::accounts::{json, new_api_token};
use super::principal::OPERATOR_ACCOUNT;
use super::{ApiError, AppState, Principal};
use crate::accounts as acc;
use crate::audit::{self, Action};
use crate::store::ApiTokenRow;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    /// What it is for (1 to 64 characters), e.g. `ci`.
    pub name: String,
    /// Seconds until it expires (default 7776000, 90 days; at most 31536000).
    pub ttl_secs: Option<u64>,
}

/// A new API token. `token` is shown once and never stored.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedApiToken {
    pub id: String,
    pub token: String,
    pub name: String,
    pub account_id: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// Creates an API token for the calling account.
#[utoipa::path(post, path = "/api/v1/api-tokens", security(("bearer" = [])),
    request_body = CreateApiToken,
    responses((status = 201, body = CreatedApiToken),
        (status = 400, description = "a field is missing or invalid; the message names it", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody),
        (status = 403, description = "the operator credential has no account to hold tokens", body = super::ErrorBody)))]
pub async fn create(
    p: Principal,
    State(s): State<Arc<AppState>>,
    body: Result<Json<CreateApiToken>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedApiToken>), ApiError> {
    let req = json(body)?;
    if p.account_id == OPERATOR_ACCOUNT {
        return Err(ApiError::Forbidden(
            "the operator credential has no account to hold API tokens; create an operator \
             account and log in with it"
                .into(),
        ));
    }
    acc::check_name("name", &req.name).map_err(ApiError::BadRequest)?;
    if req.name == acc::LOGIN_TOKEN_NAME {
        return Err(ApiError::BadRequest(format!(
            "name {:?} is reserved for the tokens login hands out",
            acc::LOGIN_TOKEN_NAME
        )));
    }
    let ttl = req.ttl_secs.unwrap_or(acc::API_TOKEN_TTL_SECS);
    if ttl == 0 || ttl > acc::API_TOKEN_MAX_TTL_SECS {
        return Err(ApiError::BadRequest(format!(
            "ttl_secs must be between 1 and {}",
            acc::API_TOKEN_MAX_TTL_SECS
        )));
    }
    let held = s
        .store
        .count_api_tokens(&p.account_id, acc::LOGIN_TOKEN_NAME)
        .await?;
    if held >= acc::API_TOKENS_MAX {
        return Err(ApiError::Conflict(format!(
            "this account already holds {held} API tokens (at most {}); delete some first",
            acc::API_TOKENS_MAX
        )));
    }
    let (token, row) = new_api_token(&p.account_id, &req.name, ttl);
    s.store.insert_api_token(&row).await?;
    audit::record(
        &s.store,
        &p.account_id,
        Action::ApiTokenCreated,
        &row.id,
        &format!("name={}", row.name),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiToken {
            id: row.id,
            token,
            name: row.name,
            account_id: row.account_id,
            created_ms: row.created_ms,
            expires_ms: row.expires_ms,
        }),
    ))
}

/// The calling account's API tokens (every account's for operators), never their secrets.
#[utoipa::path(get, path = "/api/v1/api-tokens", security(("bearer" = [])),
    responses((status = 200, body = [ApiTokenRow]), (status = 401, body = super::ErrorBody)))]
pub async fn list(
    p: Principal,
    State(s): State<Arc<AppState>>,
) -> Result<Json<Vec<ApiTokenRow>>, ApiError> {
    let scope = (!p.is_operator()).then_some(p.account_id.as_str());
    Ok(Json(s.store.api_tokens(scope).await?))
}

/// Deletes an API token: it stops working at once. Another account's token is 404.
#[utoipa::path(delete, path = "/api/v1/api-tokens/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "API token id")),
    responses((status = 204, description = "deleted"), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let scope = (!p.is_operator()).then_some(p.account_id.as_str());
    let Some(t) = s.store.delete_api_token(&id, scope).await? else {
        return Err(ApiError::NotFound(format!("no API token {id}")));
    };
    audit::record(
        &s.store,
        &p.account_id,
        Action::ApiTokenDeleted,
        &t.id,
        &format!("name={} account={}", t.name, t.account_id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
