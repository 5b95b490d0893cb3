//! The HTTP side: a TCP listener (TCP_NODELAY on every connection: without it small GETs wait
//! for Nagle's algorithm, ~43 ms), hyper's HTTP/1.1, and s3s's service behind a thin layer that
//! answers CORS preflights and adds CORS headers from the bucket's stored rules.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, HttpError, HttpRequest, HttpResponse};
use tokio::net::TcpListener;

use crate::auth::OneKey;
use crate::config::Credentials;
use crate::cors;
use crate::replication::{Replication, Status};
use crate::s3::Backend;
use crate::store::Store;

/// s3s's service on the store with the deployment's key.
pub fn service(store: Arc<Store>, credentials: &Credentials) -> S3Service {
    let mut builder = S3ServiceBuilder::new(Backend::new(store));
    builder.set_auth(OneKey::new(credentials));
    builder.build()
}

/// How long requests in flight may take to finish after a shutdown signal.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until `shutdown` completes; then stops accepting, lets requests in flight finish
/// (idle keep-alive connections close at once) for up to [`DRAIN`], and returns.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    service: S3Service,
    replication: Option<Arc<Replication>>,
    status_token: Option<crate::config::StatusToken>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, %peer, "could not set TCP_NODELAY");
        }
        let (store, service, replication) = (store.clone(), service.clone(), replication.clone());
        let token = status_token.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (store, service, replication, token) = (
                        store.clone(),
                        service.clone(),
                        replication.clone(),
                        token.clone(),
                    );
                    async move {
                        handle(
                            &store,
                            &service,
                            replication.as_deref(),
                            token.as_ref(),
                            req.map(Body::from),
                        )
                        .await
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let in_flight = connections.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "waiting for open connections to finish");
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "requests still running after the drain time; cut"
        );
        connections.abort_all();
    }
}

/// The bucket a path-style request names (the gateway forwards path-style requests).
fn bucket_of(path: &str) -> Option<String> {
    let first = path.trim_start_matches('/').split('/').next()?;
    let decoded = percent_decode(first)?;
    (!decoded.is_empty()).then_some(decoded)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn rules_for(store: &Store, path: &str) -> Vec<cors::CorsRule> {
    bucket_of(path)
        .and_then(|b| tokio::task::block_in_place(|| store.get_cors(&b)).ok())
        .unwrap_or_default()
}

fn set_headers(resp: &mut HttpResponse, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
}

/// Where the node-side supervisor reads the replication lag (no bucket can be called
/// `_lattice`: S3 bucket names have no underscore).
pub const REPLICATION_STATUS_PATH: &str = "/_lattice/replication";

/// The replication status as JSON: counts and times, no object names; behind a bearer token
/// when one is configured (`LATTICE_S3_STATUS_TOKEN`).
fn replication_status(replication: Option<&Replication>) -> HttpResponse {
    let status = replication.map_or_else(Status::standalone, Replication::status);
    let body = serde_json::to_vec(&status).unwrap_or_default();
    let mut resp = HttpResponse::new(Body::from(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(
    store: &Store,
    service: &S3Service,
    replication: Option<&Replication>,
    status_token: Option<&crate::config::StatusToken>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    if req.method() == Method::GET && req.uri().path() == REPLICATION_STATUS_PATH {
        if let Some(t) = status_token {
            if !t.allows(header(&req, "authorization")) {
                let mut resp = HttpResponse::new(Body::from(Bytes::from_static(
                    b"{\"error\":\"the replication status needs its bearer token\"}",
                )));
                *resp.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                return Ok(resp);
            }
        }
        return Ok(replication_status(replication));
    }
    let origin = header(&req, "origin").map(str::to_owned);
    // A CORS preflight carries no credentials: answered here from the stored rules.
    if req.method() == Method::OPTIONS {
        if let (Some(origin), Some(method)) = (
            origin.as_deref(),
            header(&req, "access-control-request-method"),
        ) {
            let requested: Vec<String> = header(&req, "access-control-request-headers")
                .map(|h| {
                    h.split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let requested: Vec<&str> = requested.iter().map(String::as_str).collect();
            let rules = rules_for(store, req.uri().path());
            let mut resp = HttpResponse::new(Body::empty());
            match cors::find_rule(&rules, origin, method, &requested) {
                Some(rule) => set_headers(
                    &mut resp,
                    cors::allow_headers(rule, origin, Some((method, &requested))),
                ),
                None => {
                    *resp.status_mut() = StatusCode::FORBIDDEN;
                    *resp.body_mut() = Body::from(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessForbidden</Code>\
                         <Message>CORSResponse: This CORS request is not allowed.</Message></Error>"
                            .to_owned(),
                    );
                }
            }
            return Ok(resp);
        }
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let mut resp = service.call(req).await?;
    if let Some(origin) = origin {
        let rules = rules_for(store, &path);
        if let Some(rule) = cors::find_rule(&rules, &origin, method.as_str(), &[]) {
            set_headers(&mut resp, cors::allow_headers(rule, &origin, None));
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_of_a_path_style_request() {
        assert_eq!(bucket_of("/photos/a/b.jpg").as_deref(), Some("photos"));
        assert_eq!(bucket_of("/photos").as_deref(), Some("photos"));
        assert_eq!(bucket_of("/"), None);
        assert_eq!(bucket_of("/%ZZ"), None);
    }
}
