//! Health, metrics and the OpenAPI document.

use super::{ApiDoc, AppState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use std::sync::Arc;
use utoipa::OpenApi;

/// Liveness and readiness: 200 when the store answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "healthy"), (status = 503, description = "store unavailable")))]
pub async fn healthz(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    if s.store.ping().await {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }
}

/// How long `/metrics` waits for the node counts: the rest (`lattice_fleet_leader` among
/// them) is answered even while the database does not answer.
const NODE_COUNTS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "metrics", content_type = "text/plain")))]
pub async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    // Without the database the node gauges keep their last values.
    if let Ok(Ok((on, off))) = tokio::time::timeout(NODE_COUNTS_WAIT, s.store.node_counts()).await {
        s.metrics.set_nodes(on, off);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
