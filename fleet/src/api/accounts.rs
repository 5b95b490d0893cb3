//! Accounts over HTTP: sign-up, login (which hands out an API token), `me`, and the operators'
//! list of accounts.

use super::principal::OPERATOR_ACCOUNT;
use super::{ApiError, AppState, Principal, Role};
use crate::accounts::{self as acc, Refused};
use crate::audit::{self, Action, ANONYMOUS};
use crate::store::{AccountRow, ApiTokenRow};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The peer address of the connection (no proxy headers are trusted). `None` without a socket
/// (router tests).
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl ClientIp {
    fn label(&self) -> String {
        self.0.map_or_else(|| "unknown".into(), |ip| ip.to_string())
    }
}

fn throttled(r: Refused, what: &str, ip: &ClientIp) -> ApiError {
    tracing::warn!(ip = %ip.label(), limit = r.scope, "{what} refused by the rate limit");
    ApiError::TooManyRequests {
        retry_after_secs: r.retry_after.as_secs().max(1),
    }
}

pub(super) fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// A sign-up. Without a credential it makes a consumer (or, with `role: provider`, a provider)
/// account; `role: operator` needs an operator's credential.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// The login name; stored lower-cased.
    pub email: String,
    /// Display name (default: the part of the email before `@`).
    pub name: Option<String>,
    /// 10 characters to 1024 bytes.
    pub password: String,
    /// `consumer` (default), `provider`, or `operator` (operators only).
    pub role: Option<Role>,
}

impl std::fmt::Debug for SignUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignUp")
            .field("email", &self.email)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// Creates an account.
#[utoipa::path(post, path = "/api/v1/accounts", request_body = SignUp,
    security((), ("bearer" = [])),
    responses((status = 201, body = AccountRow),
        (status = 400, description = "a field is missing or invalid; the message names it", body = super::ErrorBody),
        (status = 403, description = "role operator asked without an operator's credential, or sign-up closed (--signup operators)", body = super::ErrorBody),
        (status = 409, description = "the email is taken", body = super::ErrorBody),
        (status = 429, description = "too many sign-ups from this address (Retry-After)", body = super::ErrorBody)))]
pub async fn signup(
    caller: Option<Principal>,
    ip: ClientIp,
    State(s): State<Arc<AppState>>,
    body: Result<Json<SignUp>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountRow>), ApiError> {
    let r = create_account(caller, ip, &s, body).await;
    s.metrics.auth.signup(match &r {
        Ok(_) => "success",
        Err(ApiError::TooManyRequests { .. }) => "throttled",
        Err(_) => "refused",
    });
    r
}

async fn create_account(
    caller: Option<Principal>,
    ip: ClientIp,
    s: &AppState,
    body: Result<Json<SignUp>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountRow>), ApiError> {
    let req = json(body)?;
    let is_operator = caller.as_ref().is_some_and(Principal::is_operator);
    let role = req.role.unwrap_or(Role::Consumer);
    if role == Role::Operator && !is_operator {
        return Err(ApiError::Forbidden(
            "only an operator can create an operator account".into(),
        ));
    }
    if s.signup == acc::SignupPolicy::Operators && !is_operator {
        return Err(ApiError::Forbidden(
            "sign-up is closed on this fleet: an operator creates accounts".into(),
        ));
    }
    if !is_operator {
        s.login_limits
            .signup(ip.0)
            .map_err(|r| throttled(r, "sign-up", &ip))?;
    }
    let email = acc::normalize_email(&req.email).map_err(ApiError::BadRequest)?;
    let name = req
        .name
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
    acc::check_name("name", &name).map_err(ApiError::BadRequest)?;
    acc::check_password(&req.password).map_err(ApiError::BadRequest)?;
    let password_hash = acc::hash_password(req.password)
        .await
        .map_err(ApiError::Internal)?;
    let row = AccountRow {
        id: acc::new_id("a"),
        email,
        name,
        role,
        password_hash,
        created_ms: lattice_wire::now_ms(),
        disabled: false,
    };
    if !s.store.create_account(&row).await? {
        return Err(ApiError::Conflict(
            "an account with this email exists".into(),
        ));
    }
    let actor = caller.as_ref().map_or(ANONYMOUS, |p| p.account_id.as_str());
    audit::record(
        &s.store,
        actor,
        Action::AccountCreated,
        &row.id,
        &format!("role={} email={} ip={}", row.role, row.email, ip.label()),
    )
    .await?;
    tracing::info!(account = %row.id, role = %row.role, "account created");
    Ok((StatusCode::CREATED, Json(row)))
}

/// A login.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a login gives: an API token (`Authorization: Bearer <token>`), shown once.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoggedIn {
    pub token: String,
    pub token_id: String,
    pub account_id: String,
    pub role: Role,
    pub expires_ms: u64,
}

/// Logs in: checks the password and returns a new API token valid for 30 days. Rate-limited
/// per client address and per email; every attempt is audited (never the password).
#[utoipa::path(post, path = "/api/v1/login", request_body = Login,
    responses((status = 200, body = LoggedIn),
        (status = 400, description = "a field is missing or invalid; the message names it", body = super::ErrorBody),
        (status = 401, description = "wrong email or password", body = super::ErrorBody),
        (status = 429, description = "too many attempts for this address or account (Retry-After)", body = super::ErrorBody)))]
pub async fn login(
    ip: ClientIp,
    State(s): State<Arc<AppState>>,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Json<LoggedIn>, ApiError> {
    let r = log_in(ip, &s, body).await;
    s.metrics.auth.login(match &r {
        Ok(_) => "success",
        Err(ApiError::LoginFailed) => "failure",
        Err(ApiError::TooManyRequests { .. }) => "throttled",
        Err(_) => "error",
    });
    r
}

async fn log_in(
    ip: ClientIp,
    s: &AppState,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Json<LoggedIn>, ApiError> {
    let req = json(body)?;
    let email = acc::normalize_email(&req.email).map_err(ApiError::BadRequest)?;
    s.login_limits
        .login(ip.0, &email)
        .map_err(|r| throttled(r, "login", &ip))?;
    let account = s.store.account_by_email(&email).await?;
    let ok = acc::verify_password(
        req.password,
        account.as_ref().map(|a| a.password_hash.clone()),
    )
    .await;
    let account = match account {
        Some(a) if ok && !a.disabled => a,
        other => {
            let (actor, why) = match &other {
                None => (ANONYMOUS.to_string(), "no such account"),
                Some(a) if a.disabled => (a.id.clone(), "account disabled"),
                Some(a) => (a.id.clone(), "wrong password"),
            };
            let target = other.as_ref().map_or("-", |a| a.id.as_str());
            audit::record(
                &s.store,
                &actor,
                Action::LoginFailed,
                target,
                &format!("{why}; ip={}", ip.label()),
            )
            .await?;
            tracing::info!(ip = %ip.label(), account = target, "login failed: {why}");
            return Err(ApiError::LoginFailed);
        }
    };
    let (token, row) = new_api_token(
        &account.id,
        acc::LOGIN_TOKEN_NAME,
        acc::LOGIN_TOKEN_TTL_SECS,
    );
    s.store.insert_api_token(&row).await?;
    s.store
        .prune_api_tokens(
            &account.id,
            acc::LOGIN_TOKEN_NAME,
            acc::LOGIN_TOKENS_KEPT,
            lattice_wire::now_ms(),
        )
        .await?;
    audit::record(
        &s.store,
        &account.id,
        Action::LoginSucceeded,
        &account.id,
        &format!("token={}; ip={}", row.id, ip.label()),
    )
    .await?;
    Ok(Json(LoggedIn {
        token,
        token_id: row.id,
        account_id: account.id,
        role: account.role,
        expires_ms: row.expires_ms,
    }))
}

/// A new token for `account_id` and its row (holding only the token's hash).
pub(super) fn new_api_token(account_id: &str, name: &str, ttl_secs: u64) -> (String, ApiTokenRow) {
    let token = acc::new_token();
    let now = lattice_wire::now_ms();
    let row = ApiTokenRow {
        id: acc::new_id("k"),
        account_id: account_id.to_string(),
        name: name.to_string(),
        secret_hash: crate::secrets::hash_secret(&token),
        created_ms: now,
        expires_ms: now + ttl_secs * 1000,
    };
    (token, row)
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Me {
    pub account_id: String,
    pub role: Role,
    /// Absent for the operator credential, which has no account.
    pub email: Option<String>,
    pub name: Option<String>,
    pub created_ms: Option<u64>,
}

/// The calling account.
#[utoipa::path(get, path = "/api/v1/me", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = super::ErrorBody)))]
pub async fn me(p: Principal, State(s): State<Arc<AppState>>) -> Result<Json<Me>, ApiError> {
    let row = if p.account_id == OPERATOR_ACCOUNT {
        None
    } else {
        s.store.account(&p.account_id).await?
    };
    Ok(Json(Me {
        account_id: p.account_id,
        role: p.role,
        email: row.as_ref().map(|a| a.email.clone()),
        name: row.as_ref().map(|a| a.name.clone()),
        created_ms: row.map(|a| a.created_ms),
    }))
}

/// Every account (operators only).
#[utoipa::path(get, path = "/api/v1/accounts", security(("bearer" = [])),
    responses((status = 200, body = [AccountRow]), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)))]
pub async fn list(
    p: Principal,
    State(s): State<Arc<AppState>>,
) -> Result<Json<Vec<AccountRow>>, ApiError> {
    p.require_operator()?;
    Ok(Json(s.store.accounts().await?))
}

/// What an operator changes on an account; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeAccount {
    pub role: Option<Role>,
    /// A disabled account cannot log in and its API tokens stop working at once.
    pub disabled: Option<bool>,
}

/// Changes an account's role or disables it (operators only).
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "account id")), request_body = ChangeAccount,
    responses((status = 200, body = AccountRow),
        (status = 400, description = "a field is invalid; the message names it", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn change(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<ChangeAccount>, JsonRejection>,
) -> Result<Json<AccountRow>, ApiError> {
    p.require_operator()?;
    let req = json(body)?;
    if req.role.is_none() && req.disabled.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to change: give role and/or disabled".into(),
        ));
    }
    if id == p.account_id
        && (req.disabled == Some(true) || req.role.is_some_and(|r| r != Role::Operator))
    {
        return Err(ApiError::BadRequest(
            "an operator cannot disable or demote its own account (role, disabled)".into(),
        ));
    }
    let row = s
        .store
        .update_account(&id, req.role, req.disabled)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {id}")))?;
    let mut what = Vec::new();
    if let Some(r) = req.role {
        what.push(format!("role={r}"));
    }
    if let Some(d) = req.disabled {
        what.push(format!("disabled={d}"));
    }
    audit::record(
        &s.store,
        &p.account_id,
        Action::AccountChanged,
        &id,
        &what.join(" "),
    )
    .await?;
    Ok(Json(row))
}

/// A password change: the current password, and the new one.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    /// 10 characters to 1024 bytes.
    pub new_password: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangePassword { <redacted> }")
    }
}

/// Changes the caller's password. Every API token of the account is deleted (other sessions
/// and scripts stop at once) and a new login token is returned. Rate-limited like a login.
#[utoipa::path(put, path = "/api/v1/me/password", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 200, description = "changed; every earlier token is gone", body = LoggedIn),
        (status = 400, description = "a field is missing or invalid; the message names it", body = super::ErrorBody),
        (status = 401, description = "no credential, or the current password is wrong", body = super::ErrorBody),
        (status = 403, description = "the operator credential has no password", body = super::ErrorBody),
        (status = 429, description = "too many attempts (Retry-After)", body = super::ErrorBody)))]
pub async fn change_password(
    p: Principal,
    ip: ClientIp,
    State(s): State<Arc<AppState>>,
    body: Result<Json<ChangePassword>, JsonRejection>,
) -> Result<Json<LoggedIn>, ApiError> {
    let req = json(body)?;
    if p.account_id == OPERATOR_ACCOUNT {
        return Err(ApiError::Forbidden(
            "the operator credential has no password; rotate operator.token instead".into(),
        ));
    }
    acc::check_password(&req.new_password).map_err(|e| ApiError::BadRequest(format!("new_{e}")))?;
    let account = s
        .store
        .account(&p.account_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    s.login_limits
        .login(ip.0, &account.email)
        .map_err(|r| throttled(r, "password change", &ip))?;
    if !acc::verify_password(req.current_password, Some(account.password_hash)).await {
        audit::record(
            &s.store,
            &account.id,
            Action::LoginFailed,
            &account.id,
            &format!(
                "wrong current password at a password change; ip={}",
                ip.label()
            ),
        )
        .await?;
        return Err(ApiError::LoginFailed);
    }
    let hash = acc::hash_password(req.new_password)
        .await
        .map_err(ApiError::Internal)?;
    if !s.store.set_password(&account.id, &hash).await? {
        return Err(ApiError::Unauthorized);
    }
    let (token, row) = new_api_token(
        &account.id,
        acc::LOGIN_TOKEN_NAME,
        acc::LOGIN_TOKEN_TTL_SECS,
    );
    s.store.insert_api_token(&row).await?;
    audit::record(
        &s.store,
        &account.id,
        Action::PasswordChanged,
        &account.id,
        &format!(
            "every API token deleted; new token={}; ip={}",
            row.id,
            ip.label()
        ),
    )
    .await?;
    Ok(Json(LoggedIn {
        token,
        token_id: row.id,
        account_id: account.id,
        role: account.role,
        expires_ms: row.expires_ms,
    }))
}
