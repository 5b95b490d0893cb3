//! Reads the replication lag of every S3 primary that has a replica (issue 6): every
//! [`INTERVAL`], `GET /_lattice/replication` from the primary's container, through its node's
//! tunnel like any request to it (not counted as the consumer's traffic), and keeps the report
//! in the store with the time it was read ([`crate::store::Store::record_replication`]).
//! `lattice workload show` gives it, and when the primary's node is lost the last one read is
//! what the consumer is told at the replica's promotion ([`crate::lifecycle`]).
//!
//! A primary that does not answer keeps its last report (its read time shows its age); a body
//! that is not a report is logged and not stored.

use super::Gateway;
use crate::kinds::{s3, s3_replication};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use lattice_tunnel::Open;
use std::time::Duration;

/// How often each primary is read.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long one read may take (open, request, answer).
const READ_TIMEOUT: Duration = Duration::from_secs(4);

/// At most this many primaries are read at once: one that accepts and never answers holds
/// one slot for [`READ_TIMEOUT`], not the whole round.
const CONCURRENT_READS: usize = 16;

/// Reads every S3 primary's report once and stores those that came back.
pub async fn poll_once(gw: &Gateway) -> anyhow::Result<()> {
    use futures_util::stream::{self, StreamExt};
    let table = gw.table();
    let primaries: Vec<(String, String, Option<String>)> = gw
        .store
        .workloads(None)
        .await?
        .into_iter()
        .filter_map(|w| {
            let settings = s3::settings(&w).ok().filter(|s| s.replica.is_some())?;
            let node = table.tcp(&w.id, s3::PORT)?.node.clone();
            Some((w.id, node, settings.status_token))
        })
        .collect();
    let reads = stream::iter(primaries)
        .map(|(id, node, token)| async move {
            let read = read_report(gw, &node, &id, token.as_deref());
            let read = tokio::time::timeout(READ_TIMEOUT, read).await;
            (id, read, lattice_wire::now_ms())
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect::<Vec<_>>()
        .await;
    for (id, read, read_ms) in reads {
        let body = match read {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                tracing::debug!(workload = %id, error = %e, "replication report not read");
                continue;
            }
            Err(_) => {
                tracing::debug!(workload = %id, "replication report not read: timed out");
                continue;
            }
        };
        match s3_replication::parse(&body) {
            Ok(report) => {
                let json = serde_json::to_string(&report)?;
                gw.store.record_replication(&id, &json, read_ms).await?;
            }
            Err(e) => tracing::warn!(workload = %id, error = %e, "replication report refused"),
        }
    }
    Ok(())
}

/// One `GET /_lattice/replication` to workload `id` on `node`; the body of a 200.
async fn read_report(
    gw: &Gateway,
    node: &str,
    id: &str,
    token: Option<&str>,
) -> anyhow::Result<Bytes> {
    let open = Open {
        workload: id.to_string(),
        port: s3::PORT,
    };
    let stream = gw
        .tunnels()
        .open(node, &open)
        .await
        .map_err(|e| anyhow::anyhow!("opening a stream: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(s3_replication::REPORT_PATH)
        .header(hyper::header::HOST, "replication.lattice.internal");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), s3_replication::MAX_REPORT_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    conn.abort();
    anyhow::ensure!(status == hyper::StatusCode::OK, "answered {status}");
    Ok(body)
}

/// The background task: [`poll_once`] every [`INTERVAL`].
pub async fn run(gw: std::sync::Arc<Gateway>) {
    loop {
        if let Err(e) = poll_once(&gw).await {
            tracing::warn!(error = %e, "reading replication reports failed");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
