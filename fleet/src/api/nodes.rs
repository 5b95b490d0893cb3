//! Operator routes for nodes.

use super::{ApiError, AppState, Operator};
use crate::store::NodeRow;
use axum::extract::{Path, State};
use axum::Json;
use std::sync::Arc;

/// All registered nodes.
#[utoipa::path(get, path = "/api/v1/nodes", security(("operator" = [])),
    responses((status = 200, body = [NodeRow]), (status = 401, body = super::ErrorBody)))]
pub async fn list(
    _: Operator,
    State(s): State<Arc<AppState>>,
) -> Result<Json<Vec<NodeRow>>, ApiError> {
    Ok(Json(s.store.nodes().await?))
}

/// One node.
#[utoipa::path(get, path = "/api/v1/nodes/{id}", security(("operator" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeRow), (status = 404, body = super::ErrorBody)))]
pub async fn show(
    _: Operator,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeRow>, ApiError> {
    s.store
        .node(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))
}

/// Revokes a node: its broker credential is refused from now on (an external broker also
/// disconnects it), and anything it publishes is rejected. Idempotent: when the broker could
/// not be told (503), the node is still revoked in the fleet; revoke it again.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/revoke", security(("operator" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeRow), (status = 404, body = super::ErrorBody),
        (status = 503, description = "revoked in the fleet, but the broker did not disable the account", body = super::ErrorBody)))]
pub async fn revoke(
    _: Operator,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeRow>, ApiError> {
    if !s.store.revoke_node(&id).await? {
        return Err(ApiError::NotFound(format!("no node {id}")));
    }
    s.ingest.forget(&id);
    if let Err(e) = s.accounts.revoke_node(&id).await {
        tracing::error!(node = %id, error = %e, "node revoked in the store, but not on the broker");
        return Err(ApiError::BrokerUnavailable(format!(
            "node {id} is revoked in the fleet (everything it publishes is refused), but the \
             broker did not disable its account: {e}; run the revoke again"
        )));
    }
    tracing::info!(node = %id, "node revoked");
    show(Operator, State(s), Path(id)).await
}
