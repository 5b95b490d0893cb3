//! A workload's logs, read on its node and carried back through the node's tunnel.
//!
//! The node keeps each container's output bounded (the engine's json-file logs, `max-size` ×
//! `max-file`); nothing is copied to the fleet ahead of time. A request opens one tunnel stream
//! to the node holding the workload, which checks that the workload is in its current target
//! and reads the logs of its own container only. Following keeps that stream open: the answer
//! is a chunked `text/plain` body that ends when the caller goes away (the node then stops
//! reading) or the container's log ends.

use super::{ApiError, AppState, Principal};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::Response;
use lattice_tunnel::proto::TAIL_ALL;
use lattice_tunnel::{LogsOpen, OpenError, Reply, TunnelStream};
use serde::Deserialize;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogsQuery {
    /// Keep the answer open and send new output as the workload writes it.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines (default: everything the node keeps).
    pub tail: Option<u32>,
    /// Prefix each line with the engine's RFC 3339 timestamp.
    #[serde(default)]
    pub timestamps: bool,
}

/// One of the caller's workloads' logs (stdout and stderr as the container wrote them).
#[utoipa::path(get, path = "/api/v1/workloads/{name}/logs", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name"), LogsQuery),
    responses((status = 200, description = "the logs, streamed", content_type = "text/plain"),
        (status = 401, body = super::ErrorBody),
        (status = 404, description = "no such workload of the caller's, or it has no container yet", body = super::ErrorBody),
        (status = 503, description = "its node is offline or unreachable (the message says which)", body = super::ErrorBody)))]
pub async fn logs(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let w = s
        .store
        .workload(&p.account_id, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no workload named {name:?}")))?;
    let node = w.node_id.ok_or_else(|| {
        ApiError::NodeUnavailable(format!(
            "workload {name:?} is not placed on a node yet, so it has no logs"
        ))
    })?;
    let tunnels = s.tunnels.get().ok_or_else(|| {
        ApiError::NodeUnavailable(
            "this fleet runs without its gateway (--no-gateway): logs travel from the node \
             through its tunnel to the gateway"
                .into(),
        )
    })?;
    let open = LogsOpen {
        workload: w.id.clone(),
        follow: q.follow,
        timestamps: q.timestamps,
        tail: q.tail.unwrap_or(TAIL_ALL),
    };
    let stream = tunnels
        .open_logs(&node, &open)
        .await
        .map_err(|e| refusal(&name, e))?;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(chunks(stream)))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Why the node could not send the logs, in the caller's terms (node ids and addresses are
/// the fleet's business).
fn refusal(name: &str, e: OpenError) -> ApiError {
    match e {
        OpenError::NodeOffline(_) => ApiError::NodeUnavailable(format!(
            "the node running {name:?} is offline; its logs stay on that node until it is back"
        )),
        OpenError::Refused {
            reply: Reply::NotRunning,
            ..
        } => ApiError::NotFound(format!(
            "{name:?} has no container on its node yet (it is still being created)"
        )),
        OpenError::Refused {
            reply: Reply::UnknownWorkload,
            ..
        } => ApiError::NodeUnavailable(format!(
            "the node has not applied the target holding {name:?} yet; try again shortly"
        )),
        OpenError::Refused { reply, .. } => {
            ApiError::NodeUnavailable(format!("the node could not read {name:?}'s logs ({reply})"))
        }
        OpenError::Timeout(_) => {
            ApiError::NodeUnavailable(format!("the node running {name:?} did not answer in time"))
        }
        e @ (OpenError::Stream { .. } | OpenError::Proto(_)) => {
            tracing::warn!(workload = %name, error = %e, "logs stream failed");
            ApiError::NodeUnavailable(format!("the tunnel to the node running {name:?} failed"))
        }
    }
}

/// The stream's bytes as body chunks; dropping the body drops the stream (the node stops).
fn chunks(
    stream: TunnelStream,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        let mut buf = vec![0u8; 16 * 1024];
        match stream.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(stream)))
            }
            // The body ends with the error: the client sees a truncated answer.
            Err(e) => Some((Err(e), None)),
        }
    })
}
