//! The API's one error type. Each variant maps to a status and a stable code in one exhaustive
//! match; internal details are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong credential (operator credential or API token)")]
    Unauthorized,
    /// A login with a wrong email or password (which of the two is not said).
    #[error("wrong email or password")]
    LoginFailed,
    /// A rate limit refused the request; `Retry-After` carries the seconds.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// More requests are in flight than the fleet takes at once: shed at once rather than
    /// queued; `Retry-After` carries the seconds.
    #[error(
        "the fleet is handling as many requests as it takes at once; retry in {retry_after_secs} s"
    )]
    Overloaded { retry_after_secs: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error")]
    Internal(String),
    #[error("the fleet's database is unavailable; retry later")]
    Unavailable(String),
    /// The broker did not make the account change; the text says what happened (no secrets,
    /// no broker internals for unauthenticated callers).
    #[error("{0}")]
    BrokerUnavailable(String),
    /// A workload's node cannot be reached now (offline, no tunnel); the text says which.
    #[error("{0}")]
    NodeUnavailable(String),
    /// This fleet is not configured for a workload kind (`s3` without `--s3-image`); the text
    /// names the flag.
    #[error("{0}")]
    KindUnavailable(String),
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error: String,
    /// A sentence for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::LoginFailed => (StatusCode::UNAUTHORIZED, "login_failed"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            ApiError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::BrokerUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
            }
            ApiError::NodeUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "node_unavailable"),
            ApiError::KindUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "kind_unavailable"),
        };
        let body = ErrorBody {
            error: code.to_string(),
            message: self.to_string(),
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after_secs }
        | ApiError::Overloaded { retry_after_secs } = self
        {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::Token(p) => ApiError::Forbidden(format!("registration refused: {p}")),
            S::DuplicateIdentity(id) => {
                ApiError::Conflict(format!("this identity key is already registered as {id}"))
            }
            S::Db(e) => ApiError::Unavailable(e.to_string()),
            e @ (S::Open { .. } | S::Migrate(_) | S::Corrupt(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}
