//! `GET /api/v1/audit`: the audit log for operators, newest first, filtered and paged.

use super::{ApiError, AppState, Principal};
use crate::store::{AuditEntry, AuditFilter};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Default and largest page.
pub const PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only what this account did (its id; `operator`, `anonymous`).
    pub account: Option<String>,
    /// Only this action, e.g. `login.failure`.
    pub action: Option<String>,
    /// At or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Before this time (ms since the epoch).
    pub until_ms: Option<u64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub before: Option<String>,
}

/// One page of entries; `next` is set when there may be more.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next: Option<String>,
}

fn cursor(e: &AuditEntry) -> String {
    format!("{}.{}", e.at_ms, e.id)
}

fn parse_cursor(c: &str) -> Option<(u64, String)> {
    let (at, id) = c.split_once('.')?;
    Some((at.parse().ok()?, id.to_string()))
}

/// Reads the audit log (operators only).
#[utoipa::path(get, path = "/api/v1/audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditPage),
        (status = 400, description = "a parameter is invalid; the message names it", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody)))]
pub async fn list(
    p: Principal,
    State(s): State<Arc<AppState>>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    p.require_operator()?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let before = match q.before.as_deref() {
        None => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| {
            ApiError::BadRequest("before must be the `next` of a previous page".into())
        })?),
    };
    let entries = s
        .store
        .audit(&AuditFilter {
            actor: q.account,
            action: q.action,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            before,
            limit,
        })
        .await?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(cursor))
        .flatten();
    Ok(Json(AuditPage { entries, next }))
}
