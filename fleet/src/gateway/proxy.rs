//! HTTP and HTTPS to workloads, routed by `Host` (hyper, HTTP/1.1).
//!
//! Each request gets its own tunnel stream (opening one costs no round trip beyond the node's
//! dial to the container). Protections: a client must send each request's headers within
//! `header_timeout_secs` (slowloris, and idle keep-alive connections), a TLS handshake within
//! the same time, and a proxied exchange that moves no byte for `idle_timeout_secs` is cut.
//! Our own answers (404, 503, 502) are small fixed pages that name nothing internal.

use super::count::Counted;
use super::{Gateway, Unavailable};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lattice_tunnel::TunnelStream;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

type Body = BoxBody<Bytes, hyper::Error>;

/// Accepts consumer connections on `listener` (TLS when `tls` is set) until aborted.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let gateway = gateway.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_secs(gateway.args.header_timeout_secs.max(1));
            match tls {
                None => connection(gateway, tcp, peer, "http").await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => connection(gateway, s, peer, "https").await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        gateway.metrics().refuse("tls_handshake_timeout");
                    }
                },
            }
        });
    }
}

async fn connection<S>(gateway: Arc<Gateway>, io: S, peer: SocketAddr, scheme: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = Duration::from_secs(gateway.args.header_timeout_secs.max(1));
    let g = gateway.clone();
    let service = hyper::service::service_fn(move |req| {
        let g = g.clone();
        async move { Ok::<_, Infallible>(handle(&g, req, peer, scheme).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        if e.is_timeout() {
            gateway.metrics().refuse("header_timeout");
        }
        tracing::debug!(%peer, error = %e, "consumer connection ended");
    }
}

/// Headers that describe one hop and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

async fn handle(
    gateway: &Gateway,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let Some(route) = gateway.route(&host) else {
        gateway.metrics().refuse("unknown_host");
        return page(
            StatusCode::NOT_FOUND,
            "No such app",
            "Nothing is deployed under this name.",
        );
    };
    let stream = match gateway.open(&route, true).await {
        Ok(s) => s,
        Err(why) => return unavailable(why),
    };
    let activity = stream.activity.clone();
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(_) => return unavailable(Unavailable::NotRunning),
        };
    let idle = gateway.idle_timeout();
    tokio::spawn(drive(conn, activity, idle));

    // Origin-form URI, our forwarding headers, no hop-by-hop headers.
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = path
        .parse()
        .unwrap_or_else(|_| hyper::Uri::from_static("/"));
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.append(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(scheme),
    );
    match sender.send_request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) if refused(&e) => {
            gateway.metrics().refuse(Unavailable::NotRunning.as_str());
            unavailable(Unavailable::NotRunning)
        }
        Err(e) => {
            tracing::debug!(workload = %route.workload, error = %e, "workload did not answer");
            page(
                StatusCode::BAD_GATEWAY,
                "The app did not answer",
                "The app closed the connection without an answer.",
            )
        }
    }
}

/// Runs the upstream HTTP connection until it ends or moves no byte for `idle`.
async fn drive(
    conn: hyper::client::conn::http1::Connection<TokioIo<Counted<TunnelStream>>, Incoming>,
    activity: super::count::Activity,
    idle: Duration,
) {
    tokio::select! {
        _ = conn => {}
        _ = super::tcp::idle_watch(activity, idle) => {}
    }
}

/// True if the node refused the stream (see `lattice_tunnel::TunnelServer::open_early`).
fn refused(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

fn unavailable(why: Unavailable) -> Response<Body> {
    let (title, text) = match why {
        Unavailable::NodeOffline => (
            "App unavailable",
            "The machine running this app is offline. Try again later.",
        ),
        Unavailable::NotRunning => ("App unavailable", "This app is not running right now."),
        Unavailable::TooMany => (
            "App busy",
            "This app has too many open connections. Try again shortly.",
        ),
        Unavailable::Timeout => (
            "App unavailable",
            "The machine running this app did not answer in time.",
        ),
    };
    let mut r = page(StatusCode::SERVICE_UNAVAILABLE, title, text);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// A small fixed HTML page.
pub fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{code} {title}</h1><p>{text}</p>\
         <p><small>Lattice gateway</small></p></body></html>\n",
        code = status.as_u16()
    );
    let mut r = Response::new(Full::new(Bytes::from(html)).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
