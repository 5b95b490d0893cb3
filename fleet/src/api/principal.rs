//! Who is calling: [`Principal`], the extractor every scoped handler takes.
//!
//! Today one credential exists, the operator's (`Authorization: Bearer <operator credential>`),
//! which is [`Role::Operator`] with the account id [`OPERATOR_ACCOUNT`]. Accounts with their
//! own API tokens (consumers, providers) come with the accounts module; they resolve to the
//! same type, so handlers are written once against it: a handler scopes every lookup by
//! [`Principal::account_id`] (another tenant's ids are 404, never 403) unless
//! [`Principal::is_operator`].

use super::{ApiError, AppState};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The account id the operator credential acts as.
pub const OPERATOR_ACCOUNT: &str = "operator";

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Deploys and owns workloads.
    Consumer,
    /// Owns nodes.
    Provider,
    /// Fleet-wide (OTA is an operator permission).
    Operator,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account_id: String,
    pub role: Role,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// 403 unless the caller is an operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("operators only".into()))
        }
    }
}

/// The bearer token of a request, trimmed.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let given = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if crate::secrets::same_hash(&crate::secrets::hash_secret(given), &state.operator_hash) {
            return Ok(Principal {
                account_id: OPERATOR_ACCOUNT.to_string(),
                role: Role::Operator,
            });
        }
        Err(ApiError::Unauthorized)
    }
}
