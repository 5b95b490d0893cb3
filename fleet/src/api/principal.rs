//! Who is calling: [`Principal`], the extractor every scoped handler takes.
//!
//! Two kinds of bearer credential (`Authorization: Bearer …`) resolve to a principal:
//!
//! - the operator credential (`DATA/operator.token`): [`Role::Operator`] with the account id
//!   [`OPERATOR_ACCOUNT`], compared in constant time against its SHA-256;
//! - an account's API token (from `POST /api/v1/login` or `POST /api/v1/api-tokens`): looked
//!   up by its SHA-256 in `api_tokens`, giving that account's id and role, unless the token
//!   has expired or the account is disabled.
//!
//! Handlers are written once against [`Principal`]: a handler scopes every lookup by
//! [`Principal::account_id`] (another tenant's ids are 404, never 403) unless
//! [`Principal::is_operator`], and operator-only routes call [`Principal::require_operator`].

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

impl Role {
    /// The name stored and shown: `consumer`, `provider`, `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Consumer => "consumer",
            Role::Provider => "provider",
            Role::Operator => "operator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "consumer" => Ok(Role::Consumer),
            "provider" => Ok(Role::Provider),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role {other:?} (consumer, provider or operator)"
            )),
        }
    }
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

/// The bearer token of a request, trimmed (the scheme name is case-insensitive, RFC 9110).
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let given = bearer(parts).ok_or(ApiError::Unauthorized)?;
        resolve(state, given).await
    }
}

/// `Option<Principal>`: `None` without an `Authorization` header; a header that does not
/// resolve is still 401 (a caller who sent a wrong token learns it).
impl axum::extract::OptionalFromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Option<Self>, ApiError> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Ok(None);
        }
        let given = bearer(parts).ok_or(ApiError::Unauthorized)?;
        resolve(state, given).await.map(Some)
    }
}

/// The principal a bearer credential stands for.
async fn resolve(state: &AppState, given: &str) -> Result<Principal, ApiError> {
    let hash = crate::secrets::hash_secret(given);
    if crate::secrets::same_hash(&hash, &state.operator_hash) {
        return Ok(Principal {
            account_id: OPERATOR_ACCOUNT.to_string(),
            role: Role::Operator,
        });
    }
    // Looked up by the hash of a 256-bit random value: timing of the index lookup tells an
    // attacker nothing usable about a token.
    match state
        .store
        .token_principal(&hash, lattice_wire::now_ms())
        .await?
    {
        Some((account_id, role)) => Ok(Principal { account_id, role }),
        None => Err(ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: &str) -> Parts {
        let (parts, _) = axum::http::Request::builder()
            .header("authorization", auth)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer(&parts("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&parts("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&parts("Basic abc")), None);
        assert_eq!(bearer(&parts("Bearer ")), None);
        assert_eq!(bearer(&parts("Bearerabc")), None);
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in [Role::Consumer, Role::Provider, Role::Operator] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
