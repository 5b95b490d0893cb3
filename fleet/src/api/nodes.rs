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

/// Revokes a node: its broker credential is refused from now on, and anything it publishes
/// is rejected.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/revoke", security(("operator" = [])),
    params(("id" = String, Path, description = "node id")),
    responses((status = 200, body = NodeRow), (status = 404, body = super::ErrorBody)))]
pub async fn revoke(
    _: Operator,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeRow>, ApiError> {
    if !s.store.revoke_node(&id).await? {
        return Err(ApiError::NotFound(format!("no node {id}")));
    }
    s.ingest.forget(&id);
    tracing::info!(node = %id, "node revoked");
    show(Operator, State(s), Path(id)).await
}
