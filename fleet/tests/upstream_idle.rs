//! Idle upstream streams (ADR 0011), in process: a real gateway on a real store declaring an
//! echo server as upstream `registry`, with `--upstream-idle-timeout-secs 1` and
//! `--max-upstreams-per-node 2`, and a real tunnel client holding a registered node key.
//!
//! A stream that goes quiet is closed by the gateway after the timeout, its slot comes back
//! (streams open up to the limit again) and the closure is counted with reason
//! `idle_timeout`; a stream that trickles a byte more often than the timeout lives on.
//! The bytes are registry reads (`HEAD /v2/`), which the `registry` upstream's read-only gate
//! lets through; the echo server sends them back.

use lattice_fleet::gateway::{self, metrics::RefusalLabel, GatewayArgs};
#[path = "common/store_nodes.rs"]
mod store_nodes;

use lattice_fleet::store::Store;
use lattice_tunnel::{client, ClientOptions, Dialer, Open, Reply, UpstreamError};
use lattice_wire::IdentityKey;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store_nodes::register;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The node serves no workload streams in this test.
struct Nothing;

impl Dialer for Nothing {
    fn dial(
        &self,
        _open: Open,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, Reply>> + Send + '_>> {
        Box::pin(async { Err(Reply::UnknownWorkload) })
    }
}

/// A TCP server that sends back whatever it receives.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_streams_are_closed_counted_and_give_their_slot_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("fleet.db").display()
    ))
    .await
    .unwrap();
    let fleet = IdentityKey::generate();
    let node = IdentityKey::generate();
    register(&store, "n-1", &node).await;
    let metrics = lattice_fleet::metrics::Metrics::new();
    let idle = Duration::from_secs(1);
    let args = GatewayArgs {
        apps_http: Some("127.0.0.1:0".parse().unwrap()),
        apps_https: Some("127.0.0.1:0".parse().unwrap()),
        apps_domain: "apps.test".into(),
        upstream_registry: Some(echo_server().await),
        max_upstreams_per_node: 2,
        upstream_idle_timeout_secs: idle.as_secs(),
        ..GatewayArgs::default()
    };
    let gw = gateway::start(
        args,
        dir.path().to_path_buf(),
        store.clone(),
        metrics.gateway.clone(),
        &fleet,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut opts = ClientOptions::new(gw.tunnel_addr.to_string(), node.clone(), fleet.public());
    opts.backoff_base = Duration::from_millis(50);
    opts.backoff_cap = Duration::from_millis(200);
    let client = client::spawn(opts, Arc::new(Nothing)).unwrap();
    for _ in 0..200 {
        if gw.gateway.tunnels().is_connected("n-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gw.gateway.tunnels().is_connected("n-1"), "no tunnel");
    let opener = client.upstreams();
    let wait = Duration::from_secs(5);
    let closed = |reason: &str| {
        metrics
            .gateway
            .upstream_closed
            .get_or_create(&RefusalLabel {
                reason: reason.into(),
            })
            .get()
    };
    // The registry upstream only lets reads through: a request line per exchange, answered
    // by the echo server with the same bytes.
    let request = b"HEAD /v2/ HTTP/1.1\r\nHost: r\r\n\r\n";
    async fn exchange(s: &mut lattice_tunnel::TunnelStream, request: &[u8]) {
        s.write_all(request).await.unwrap();
        let mut back = vec![0u8; request.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, request);
    }

    // Both slots taken: one stream goes quiet after an exchange, the other trickles.
    let mut busy = opener.open("registry", wait).await.unwrap();
    let mut quiet = opener.open("registry", wait).await.unwrap();
    exchange(&mut quiet, request).await;
    let quiet_since = Instant::now();
    assert!(matches!(
        opener.open("registry", wait).await,
        Err(UpstreamError::Refused {
            reply: Reply::Unavailable,
            ..
        })
    ));

    // A byte more often than the timeout: the bytes of one request, a few at a time.
    let trickle = async {
        let start = Instant::now();
        while start.elapsed() < idle * 4 {
            exchange(&mut busy, request).await;
            for chunk in request.chunks(8) {
                tokio::time::sleep(idle / 4).await;
                busy.write_all(chunk).await.unwrap();
            }
            let mut back = vec![0u8; request.len()];
            busy.read_exact(&mut back).await.unwrap();
        }
    };
    let quiet_closes = async {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(idle * 3, quiet.read(&mut buf))
            .await
            .expect("the quiet stream is closed by the gateway");
        assert_eq!(n.unwrap_or(0), 0);
        let after = quiet_since.elapsed();
        // Not before the timeout (less what the last byte took to reach the node).
        assert!(
            after >= idle * 9 / 10,
            "closed after {after:?}, before the timeout"
        );
        let mut again = None;
        for _ in 0..100 {
            if let Ok(s) = opener.open("registry", wait).await {
                again = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut again = again.expect("the closed stream's slot is free again");
        exchange(&mut again, request).await;
        // Up to the limit again, not past it.
        assert!(matches!(
            opener.open("registry", wait).await,
            Err(UpstreamError::Refused {
                reply: Reply::Unavailable,
                ..
            })
        ));
        again
    };
    let ((), again) = tokio::join!(trickle, quiet_closes);
    drop(again);

    // The trickling stream outlived the timeout four times over and still carries bytes.
    exchange(&mut busy, request).await;
    assert!(closed("idle_timeout") >= 1);
    assert_eq!(closed("error"), 0);
    let text = metrics.render();
    assert!(
        text.contains("lattice_gateway_upstream_closed_total{reason=\"idle_timeout\"}"),
        "{text}"
    );
}
