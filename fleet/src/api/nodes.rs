//! Routes for nodes: operators see and revoke every node; providers see the nodes they own
//! (`owner` = their account id; another provider's node is 404); consumers get 403.

use super::{ApiError, AppState, Principal, Role};
use crate::store::NodeRow;
use axum::extract::{Path, State};
use axum::Json;
use std::sync::Arc;

/// 403 for consumers; the owner a provider is limited to; `None` for operators.
pub(super) fn node_scope(p: &Principal) -> Result<Option<&str>, ApiError> {
    match p.role {
        Role::Operator => Ok(None),
        Role::Provider => Ok(Some(p.account_id.as_str())),
        Role::Consumer => Err(ApiError::Forbidden(
            "nodes are for operators and their providers".into(),
        )),
    }
}

/// A node as the API shows it: the values of its workloads' environment are replaced, since
/// they hold generated credentials (an `s3` workload's secret) that reach the node sealed and
/// that their owner reads through the audited credentials route, not through a node's view.
pub(super) fn without_secrets(mut n: NodeRow) -> NodeRow {
    n.target = match serde_json::from_str::<Vec<lattice_wire::msg::WorkloadSpec>>(&n.target) {
        Ok(mut specs) => {
            for spec in &mut specs {
                for (_, v) in &mut spec.env {
                    *v = "<redacted>".into();
                }
            }
            serde_json::to_string(&specs).unwrap_or_default()
        }
        Err(e) => format!("<target not shown: {e}>"),
    };
    n
}

/// Registered nodes: all of them for operators, a provider's own for providers.
#[utoipa::path(get, path = "/api/v1/nodes", security(("bearer" = [])),
    responses((status = 200, body = [NodeRow]), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)))]
pub async fn list(
    p: Principal,
    State(s): State<Arc<AppState>>,
) -> Result<Json<Vec<NodeRow>>, ApiError> {
    let scope = node_scope(&p)?;
    let mut nodes = s.store.nodes().await?;
    if let Some(owner) = scope {
        nodes.retain(|n| n.owner.as_deref() == Some(owner));
    }
    Ok(Json(nodes.into_iter().map(without_secrets).collect()))
}

/// One node (a provider's own, for providers).
#[utoipa::path(get, path = "/api/v1/nodes/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeRow), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn show(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeRow>, ApiError> {
    let scope = node_scope(&p)?;
    s.store
        .node(&id)
        .await?
        .filter(|n| scope.is_none_or(|o| n.owner.as_deref() == Some(o)))
        .map(|n| Json(without_secrets(n)))
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))
}

/// Revokes a node: its broker credential is refused from now on (an external broker also
/// disconnects it), and anything it publishes is rejected. Idempotent: when the broker could
/// not be told (503), the node is still revoked in the fleet; revoke it again.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/revoke", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeRow), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 503, description = "revoked in the fleet, but the broker did not disable the account", body = super::ErrorBody)))]
pub async fn revoke(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeRow>, ApiError> {
    p.require_operator()?;
    if !s.store.revoke_node(&id).await? {
        return Err(ApiError::NotFound(format!("no node {id}")));
    }
    crate::audit::record(
        &s.store,
        &p.account_id,
        crate::audit::Action::NodeRevoked,
        &id,
        "",
    )
    .await?;
    s.ingest.forget(&id);
    if let Err(e) = s.accounts.revoke_node(&id).await {
        tracing::error!(node = %id, error = %e, "node revoked in the store, but not on the broker");
        return Err(ApiError::BrokerUnavailable(format!(
            "node {id} is revoked in the fleet (everything it publishes is refused), but the \
             broker did not disable its account: {e}; run the revoke again"
        )));
    }
    tracing::info!(node = %id, "node revoked");
    show(p, State(s), Path(id)).await
}

/// Sets what the provider offers with a node: region, labels, storage classes, whether it runs
/// 24/7, and its asking price per core-hour. Replaces the whole offer (fields left out take
/// their defaults). The scheduler uses it from the next placement on; what runs stays.
#[utoipa::path(put, path = "/api/v1/nodes/{id}/offer", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    request_body = crate::offers::NodeOffer,
    responses((status = 200, body = NodeRow),
        (status = 400, description = "an invalid region, label, storage class or body (the message names it)", body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn set_offer(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<crate::offers::NodeOffer>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<NodeRow>, ApiError> {
    let scope = node_scope(&p)?;
    let node = s
        .store
        .node(&id)
        .await?
        .filter(|n| scope.is_none_or(|o| n.owner.as_deref() == Some(o)))
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))?;
    let Json(offer) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    offer.check().map_err(ApiError::BadRequest)?;
    let json = serde_json::to_string(&offer).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    s.store.set_node_offer(&node.id, &json).await?;
    crate::audit::record(
        &s.store,
        &p.account_id,
        crate::audit::Action::NodeOfferChanged,
        &node.id,
        &json,
    )
    .await?;
    let node = s
        .store
        .node(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))?;
    Ok(Json(without_secrets(node)))
}
