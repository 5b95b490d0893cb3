//! Workloads: a consumer deploys, lists, shows and deletes its own; another account's names
//! are 404 (never 403); operators see every account's with `?all=true`.

use super::{ApiError, AppState, Principal};
use crate::audit::{self, Action};
use crate::store::{NodeRow, NodeState};
use crate::workloads::{self, DeployRequest, FrameError, UpdateRequest, Updated, WorkloadView};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

impl From<FrameError> for ApiError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Invalid(m) => ApiError::BadRequest(m),
            FrameError::NotFound(m) => ApiError::NotFound(m),
            FrameError::Exists(m) => ApiError::Conflict(m),
            FrameError::NoCapacity(m) => ApiError::Conflict(m),
            FrameError::Unavailable(m) => ApiError::KindUnavailable(m),
            FrameError::Busy(m) => ApiError::Conflict(m),
            FrameError::Store(e) => e.into(),
        }
    }
}

/// Sends the nodes of `w` (both, during a move) their changed target now; otherwise the link's
/// re-send timer (up to 10 s with the default heartbeat) would delay every deploy and delete.
/// `written`: node rows as the write left them (their new targets), used instead of reading
/// them again.
async fn send_targets(s: &AppState, w: &crate::store::WorkloadRow, written: &[NodeRow]) {
    let Some(link) = &s.link else { return };
    for id in w.node_id.iter().chain(w.moving_to.iter()) {
        if let Some(n) = written.iter().find(|n| &n.id == id) {
            if n.online && !n.revoked {
                link.send_target(n).await;
            }
            continue;
        }
        match s.store.node(id).await {
            Ok(Some(n)) if n.online && !n.revoked => link.send_target(&n).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %id, error = %e, "cannot read node to send its target"),
        }
    }
}

/// Phase timings of a write at debug level (target `lattice_fleet::timing`): the store work
/// (with its targets' rewrite and audit row, one transaction), the target send and the
/// answer's view, in microseconds.
fn timing(what: &str, t0: std::time::Instant, marks: [std::time::Instant; 2]) {
    let us = |a: std::time::Instant, b: std::time::Instant| b.duration_since(a).as_micros() as u64;
    tracing::debug!(
        target: "lattice_fleet::timing",
        what,
        store_us = us(t0, marks[0]),
        send_us = us(marks[0], marks[1]),
        view_us = marks[1].elapsed().as_micros() as u64,
        "write"
    );
}

/// A written workload's view with its address through this process's gateway: its node's
/// state from `written` (the rows its write left) when there, else read.
async fn view(
    s: &AppState,
    w: &crate::store::WorkloadRow,
    written: &[NodeRow],
) -> Result<WorkloadView, ApiError> {
    let node = written
        .iter()
        .find(|n| Some(&n.id) == w.node_id.as_ref())
        .map(NodeState::from);
    let mut v = match node {
        Some(node) => workloads::view_with_node(&s.store, w, node).await?,
        None => workloads::view(&s.store, w).await?,
    };
    endpoint(s, w, &mut v);
    Ok(v)
}

/// Sets a view's address through this process's gateway, when it has a port and a public
/// route (an S3 replica has none: only its primary reaches it).
fn endpoint(s: &AppState, w: &crate::store::WorkloadRow, v: &mut WorkloadView) {
    if v.port.is_some() && crate::kinds::s3::primary_id(w).is_none() {
        v.endpoint = s.apps.get().map(|a| a.url(&w.name, &w.account_id));
    }
}

/// Deploys a workload (kind `container`: an image, a port, env and a plan; kind `s3`: a plan,
/// the rest is the kind's, with generated credentials).
#[utoipa::path(post, path = "/api/v1/workloads", security(("bearer" = [])),
    request_body = DeployRequest,
    responses((status = 201, body = WorkloadView),
        (status = 400, description = "invalid name, kind, plan, image or body", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody),
        (status = 409, description = "name taken, or no node has the capacity (the message names the resource)", body = super::ErrorBody),
        (status = 503, description = "the fleet is not configured for this kind (s3 without --s3-image)", body = super::ErrorBody)))]
pub async fn create(
    p: Principal,
    State(s): State<Arc<AppState>>,
    body: Result<Json<DeployRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<WorkloadView>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let t0 = std::time::Instant::now();
    let (w, written) = workloads::deploy(
        &s.store,
        &p.account_id,
        &req,
        &s.kinds,
        s.node_registry.as_ref(),
        lattice_wire::now_ms(),
    )
    .await?;
    let t1 = std::time::Instant::now();
    send_targets(&s, &w, &written).await;
    let t2 = std::time::Instant::now();
    let v = view(&s, &w, &written).await?;
    timing("deploy", t0, [t1, t2]);
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Operators: every account's workloads.
    #[serde(default)]
    pub all: bool,
}

/// The caller's workloads, each with its newest 10 events (`GET /api/v1/workloads/{name}` has
/// all it keeps, up to 100).
#[utoipa::path(get, path = "/api/v1/workloads", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = [WorkloadView]), (status = 401, body = super::ErrorBody),
        (status = 403, description = "all=true for a non-operator", body = super::ErrorBody)))]
pub async fn list(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<WorkloadView>>, ApiError> {
    let account = if q.all {
        p.require_operator()?;
        None
    } else {
        Some(p.account_id.as_str())
    };
    let mut out = Vec::new();
    for (w, mut v) in workloads::views(&s.store, account).await? {
        endpoint(&s, &w, &mut v);
        out.push(v);
    }
    Ok(Json(out))
}

/// One of the caller's workloads: state, node, events.
#[utoipa::path(get, path = "/api/v1/workloads/{name}", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name")),
    responses((status = 200, body = WorkloadView), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn show(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<WorkloadView>, ApiError> {
    let (w, mut v) = workloads::show(&s.store, &p.account_id, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no workload named {name:?}")))?;
    endpoint(&s, &w, &mut v);
    Ok(Json(v))
}

/// The generated credentials of one of the caller's workloads (kind `s3`: access key id and
/// secret). Each call is audited as `credentials_revealed`.
#[utoipa::path(get, path = "/api/v1/workloads/{name}/credentials", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name")),
    responses((status = 200, body = crate::kinds::s3::Credentials),
        (status = 401, body = super::ErrorBody),
        (status = 404, description = "no such workload, or its kind has no credentials", body = super::ErrorBody)))]
pub async fn credentials(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<crate::kinds::s3::Credentials>, ApiError> {
    let w = s
        .store
        .workload(&p.account_id, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no workload named {name:?}")))?;
    if w.kind != "s3" {
        return Err(ApiError::NotFound(format!(
            "workload {name:?} (kind {}) has no generated credentials",
            w.kind
        )));
    }
    let endpoint = s
        .apps
        .get()
        .filter(|_| crate::kinds::s3::primary_id(&w).is_none())
        .map(|a| a.url(&w.name, &w.account_id));
    let c = crate::kinds::s3::credentials(&w, endpoint)?;
    audit::record(
        &s.store,
        &p.account_id,
        Action::CredentialsRevealed,
        &w.id,
        &format!("name={} access_key_id={}", w.name, c.access_key_id),
    )
    .await?;
    Ok(Json(c))
}

/// Changes one of the caller's workloads: another plan (resize), image version, port, command
/// or environment. By default the new version starts on another node while the old one keeps
/// serving, and replaces it once it runs (the answer shows `moving_to` and `next`; events tell
/// the outcome, `update_failed` leaves the old version serving); with no other node able to
/// take it, or with `strategy: in_place`, it is replaced where it runs.
#[utoipa::path(patch, path = "/api/v1/workloads/{name}", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name")),
    request_body = UpdateRequest,
    responses((status = 200, body = WorkloadView),
        (status = 400, description = "invalid plan, image, port, env or body; nothing to change; a kind that cannot be changed", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "a move or update is in progress, or no node has room (the message names the resource)", body = super::ErrorBody)))]
pub async fn update(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<UpdateRequest>, JsonRejection>,
) -> Result<Json<WorkloadView>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let t0 = std::time::Instant::now();
    let (w, done, written) = workloads::update(
        &s.store,
        &p.account_id,
        &name,
        &req,
        s.node_registry.as_ref(),
        lattice_wire::now_ms(),
    )
    .await?;
    let t1 = std::time::Instant::now();
    if !matches!(done, Updated::Unchanged) {
        send_targets(&s, &w, &written).await;
    }
    let t2 = std::time::Instant::now();
    let v = view(&s, &w, &written).await?;
    timing("update", t0, [t1, t2]);
    Ok(Json(v))
}

/// Deletes one of the caller's workloads everywhere (its node removes the container, network
/// and volumes).
#[utoipa::path(delete, path = "/api/v1/workloads/{name}", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name")),
    responses((status = 204), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let t0 = std::time::Instant::now();
    let (w, written) =
        workloads::delete(&s.store, &p.account_id, &name, s.node_registry.as_ref()).await?;
    let t1 = std::time::Instant::now();
    send_targets(&s, &w, &written).await;
    timing("delete", t0, [t1, std::time::Instant::now()]);
    Ok(StatusCode::NO_CONTENT)
}
