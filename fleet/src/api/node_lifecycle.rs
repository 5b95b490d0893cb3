//! Node lifecycle routes: cordon, uncordon, drain, decommission, and the lifecycle view.
//! Operators act on every node, providers on the nodes they own (another provider's node is
//! 404), consumers get 403 (as the other node routes). Every request is audit-logged.
//!
//! A state an operator set is the operator's to lift: the provider may take its node further
//! (drain, decommission) but not back (uncordon is 403), so a node an operator took out of
//! placement stays out until an operator says otherwise.

use super::nodes::node_scope;
use super::{ApiError, AppState, Principal};
use crate::lifecycle::{self, NodeLifecycle, NodeLifecycleView, Op};
use crate::store::NodeRow;
use axum::extract::{Path, State};
use axum::Json;
use std::sync::Arc;

async fn scoped_node(p: &Principal, s: &AppState, id: &str) -> Result<NodeRow, ApiError> {
    let scope = node_scope(p)?;
    s.store
        .node(id)
        .await?
        .filter(|n| scope.is_none_or(|o| n.owner.as_deref() == Some(o)))
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))
}

async fn change(
    p: Principal,
    s: Arc<AppState>,
    id: String,
    op: Op,
) -> Result<Json<NodeLifecycleView>, ApiError> {
    let node = scoped_node(&p, &s, &id).await?;
    let from = NodeLifecycle::parse(&node.lifecycle);
    let to = lifecycle::transition(from, node.revoked, op)
        .map_err(|why| ApiError::Conflict(format!("node {id}: {why}")))?;
    let by = lifecycle::holder(&node.lifecycle_by, p.is_operator(), to)
        .map_err(|why| ApiError::Forbidden(format!("node {id}: {why}")))?;
    if (to, by) != (from, node.lifecycle_by.as_str())
        && !s
            .store
            .set_node_lifecycle(&id, (&node.lifecycle, &node.lifecycle_by), to.as_str(), by)
            .await?
    {
        return Err(ApiError::Conflict(format!(
            "node {id} changed meanwhile (it is no longer {from}); look at it again and retry"
        )));
    }
    crate::audit::record(
        &s.store,
        &p.account_id,
        op.audit_action(),
        &id,
        &format!("{from} -> {to}"),
    )
    .await?;
    tracing::info!(node = %id, %from, %to, "node lifecycle");
    if matches!(to, NodeLifecycle::Draining | NodeLifecycle::Decommissioning) {
        // The first moves start now, so the answer lists them; the background task finishes.
        lifecycle::drain_now(&s, &id, lattice_wire::now_ms()).await?;
    }
    let node = scoped_node(&p, &s, &id).await?;
    Ok(Json(lifecycle::view(&s.store, &node).await?))
}

/// Cordons a node: it takes no new work; what runs on it keeps running.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/cordon", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeLifecycleView), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "the node is revoked or decommissioned", body = super::ErrorBody)))]
pub async fn cordon(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeLifecycleView>, ApiError> {
    change(p, s, id, Op::Cordon).await
}

/// Uncordons a node: it takes new work again (a drain or decommission in progress stops;
/// moves already started finish).
#[utoipa::path(post, path = "/api/v1/nodes/{id}/uncordon", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeLifecycleView), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "the node is revoked or decommissioned", body = super::ErrorBody)))]
pub async fn uncordon(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeLifecycleView>, ApiError> {
    change(p, s, id, Op::Uncordon).await
}

/// Drains a node: cordons it and moves every movable (stateless `container`) workload to
/// other nodes, each new copy running before the old one is removed. The answer lists what is
/// still on the node: `moving`, `waiting`, or `blocked` with the reason.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/drain", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeLifecycleView), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "the node is revoked or decommissioned", body = super::ErrorBody)))]
pub async fn drain(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeLifecycleView>, ApiError> {
    change(p, s, id, Op::Drain).await
}

/// Decommissions a node: drains it, then revokes it (its broker account and tunnel are cut)
/// once nothing is left on it; it is never placed on again.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/decommission", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeLifecycleView), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "the node is revoked or decommissioned", body = super::ErrorBody)))]
pub async fn decommission(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeLifecycleView>, ApiError> {
    change(p, s, id, Op::Decommission).await
}

/// A node's lifecycle state and the workloads still on it (what a drain waits for).
#[utoipa::path(get, path = "/api/v1/nodes/{id}/lifecycle", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeLifecycleView), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn show(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeLifecycleView>, ApiError> {
    let node = scoped_node(&p, &s, &id).await?;
    Ok(Json(lifecycle::view(&s.store, &node).await?))
}
