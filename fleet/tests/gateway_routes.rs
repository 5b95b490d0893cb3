//! Route ownership and tunnel admission, in process: a real gateway on a real store, with
//! tunnel clients holding registered node keys. A node whose dialer would serve anything (it
//! "claims" every route) still only ever receives streams for workloads the fleet placed on
//! it; unknown and revoked keys hold no tunnel.

use lattice_fleet::gateway::{self, GatewayArgs};
#[path = "common/store_nodes.rs"]
mod store_nodes;

use lattice_fleet::store::Store;
use lattice_tunnel::{client, ClientHandle, ClientOptions, Dialer, Open, Reply, TunnelState};
use lattice_wire::IdentityKey;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use store_nodes::register;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP server that answers every request with `who`.
async fn answering(who: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{who}",
                    who.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// Serves every stream it is asked for, whatever the workload: a node claiming every route.
struct Greedy(SocketAddr);

impl Dialer for Greedy {
    fn dial(
        &self,
        _open: Open,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, Reply>> + Send + '_>> {
        Box::pin(async move {
            TcpStream::connect(self.0)
                .await
                .map_err(|_| Reply::ConnectFailed)
        })
    }
}

fn target(id: &str, name: &str) -> String {
    serde_json::json!([{"id": id, "name": name, "image": "i@sha256:0", "cpu_millis": 100,
        "memory_bytes": 33554432, "ports": [80]}])
    .to_string()
}

fn connect(
    gw: &gateway::RunningGateway,
    fleet: &IdentityKey,
    key: &IdentityKey,
    to: SocketAddr,
) -> ClientHandle {
    let mut opts = ClientOptions::new(gw.tunnel_addr.to_string(), key.clone(), fleet.public());
    opts.backoff_base = Duration::from_millis(50);
    opts.backoff_cap = Duration::from_millis(200);
    client::spawn(opts, Arc::new(Greedy(to))).unwrap()
}

async fn get(addr: SocketAddr, host: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
}

async fn wait<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_only_serve_what_the_fleet_placed_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("fleet.db").display()
    ))
    .await
    .unwrap();
    let fleet = IdentityKey::generate();
    let (a, b, stranger) = (
        IdentityKey::generate(),
        IdentityKey::generate(),
        IdentityKey::generate(),
    );
    register(&store, "n-a", &a).await;
    register(&store, "n-b", &b).await;
    store
        .set_target("n-a", &target("w-a", "shop"))
        .await
        .unwrap();
    store
        .set_target("n-b", &target("w-b", "blog"))
        .await
        .unwrap();

    let metrics = lattice_fleet::metrics::Metrics::new();
    let args = GatewayArgs {
        apps_http: Some("127.0.0.1:0".parse().unwrap()),
        apps_https: Some("127.0.0.1:0".parse().unwrap()),
        apps_domain: "apps.test".into(),
        header_timeout_secs: 1,
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

    // Both nodes would serve anything.
    let (srv_a, srv_b) = (answering("from-a").await, answering("from-b").await);
    let ca = connect(&gw, &fleet, &a, srv_a);
    let _cb = connect(&gw, &fleet, &b, srv_b);
    let tunnels = gw.gateway.tunnels().clone();
    wait("both tunnels", || {
        let t = tunnels.clone();
        async move { t.is_connected("n-a") && t.is_connected("n-b") }
    })
    .await;

    assert_eq!(
        get(gw.http_addr, "shop.apps.test").await,
        (200, "from-a".into())
    );
    assert_eq!(
        get(gw.http_addr, "blog.apps.test").await,
        (200, "from-b".into())
    );

    // A keep-alive client that goes quiet after its answer is closed by the header timeout.
    let mut s = TcpStream::connect(gw.http_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop.apps.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let quiet = std::time::Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "an idle keep-alive connection stayed open");
    assert!(
        quiet.elapsed() >= Duration::from_millis(700),
        "closed after {:?}: kept alive, then cut by the timeout, not at once",
        quiet.elapsed()
    );

    // A client that opens a TLS connection and never says hello is cut too.
    let mut s = TcpStream::connect(gw.https_addr).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS client was kept: {cut:?}"
    );

    // Node A goes away: its workload is unavailable, never served by the greedy node B.
    ca.stop();
    drop(ca);
    gw.gateway.tunnels().disconnect("n-a", "test");
    let (status, body) = get(gw.http_addr, "shop.apps.test").await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("from-b"), "{body}");

    // A key the fleet does not know holds no tunnel.
    let h = connect(&gw, &fleet, &stranger, srv_b);
    let mut st = h.state();
    let reason = tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| matches!(s, TunnelState::Down { .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert!(
        format!("{reason:?}").contains("unknown or revoked node"),
        "{reason:?}"
    );

    // Revoking B cuts its tunnel, removes its routes and keeps it out.
    store.revoke_node("n-b").await.unwrap();
    wait("B cut", || {
        let t = tunnels.clone();
        async move { !t.is_connected("n-b") }
    })
    .await;
    assert_eq!(get(gw.http_addr, "blog.apps.test").await.0, 404);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!tunnels.is_connected("n-b"), "a revoked node reconnected");
}

/// An HTTP server that streams `len` bytes slowly enough to be cut mid-way.
async fn big(len: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < len {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_dropped_mid_transfer_closes_the_client_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("fleet.db").display()
    ))
    .await
    .unwrap();
    let fleet = IdentityKey::generate();
    let a = IdentityKey::generate();
    register(&store, "n-a", &a).await;
    store
        .set_target("n-a", &target("w-a", "big"))
        .await
        .unwrap();
    let metrics = lattice_fleet::metrics::Metrics::new();
    let args = GatewayArgs {
        apps_http: Some("127.0.0.1:0".parse().unwrap()),
        apps_https: Some("127.0.0.1:0".parse().unwrap()),
        apps_domain: "apps.test".into(),
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
    let total = 64 * 1024 * 1024;
    let _client = connect(&gw, &fleet, &a, big(total).await);
    let tunnels = gw.gateway.tunnels().clone();
    let up = || {
        let t = tunnels.clone();
        async move { t.is_connected("n-a") }
    };
    wait("tunnel", up).await;

    let mut s = TcpStream::connect(gw.http_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: big.apps.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < 1024 * 1024 {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "ended early");
        got += n;
    }
    gw.gateway
        .tunnels()
        .disconnect("n-a", "test: tunnel dropped");
    // The consumer sees its connection end well before the body is complete.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    })
    .await
    .expect("the consumer connection was left hanging");
    assert!(
        end < total,
        "the whole body arrived ({end} bytes) despite the drop"
    );
    // The node reconnects and new requests work.
    wait("tunnel back", up).await;
    let mut s = TcpStream::connect(gw.http_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: big.apps.test\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// A missing or expired apps certificate stops `lattice fleet` at start-up with a clear error.
#[test]
fn a_missing_or_expired_apps_certificate_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = |cert: &std::path::Path, key: &std::path::Path| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(["fleet", "--data"])
            .arg(dir.path().join("data"))
            .args([
                "--http",
                &format!("127.0.0.1:{port}"),
                "--mqtt",
                "127.0.0.1:0",
            ])
            .args(["--apps-http", "127.0.0.1:0", "--apps-https", "127.0.0.1:0"])
            .arg("--apps-cert")
            .arg(cert)
            .arg("--apps-key")
            .arg(key)
            .env("LATTICE_CLI_CONFIG", dir.path().join("cli.toml"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("missing-cert.pem");
    let err = run(&missing, &missing);
    assert!(
        err.contains("missing-cert.pem") && err.contains("cannot read"),
        "{err}"
    );

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["*.apps.test".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.path().join("old-cert.pem"),
        dir.path().join("old-key.pem"),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let err = run(&c, &k);
    assert!(
        err.contains("old-cert.pem") && err.contains("expired"),
        "{err}"
    );
}

/// Starts `lattice ARGS`, returns it once a stdout line starts with `until`.
fn lattice(args: &[String], until: &str, cli: &std::path::Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(args)
        .env("LATTICE_CLI_CONFIG", cli)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in out.lines().map_while(Result::ok) {
        if line.starts_with(until) {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("lattice {args:?} ended before printing {until:?}");
}

/// `lattice gateway` as its own process beside `lattice fleet --no-gateway`: it takes the
/// node's tunnel on the fleet's API address (UDP), routes from the shared store, and serves
/// its own /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_as_its_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (api, apps, metrics) = (port(0), port(1), port(2));
    let cli = dir.path().join("cli.toml");
    let s = |v: &str| v.to_owned();
    let mut fleet = lattice(
        &[
            s("fleet"),
            s("--data"),
            data.display().to_string(),
            s("--http"),
            format!("127.0.0.1:{api}"),
            s("--mqtt"),
            s("127.0.0.1:0"),
            s("--no-gateway"),
        ],
        "CLI config:",
        &cli,
    );
    let mut gateway = lattice(
        &[
            s("gateway"),
            s("--data"),
            data.display().to_string(),
            s("--tunnel"),
            format!("127.0.0.1:{api}"),
            s("--metrics"),
            format!("127.0.0.1:{metrics}"),
            s("--apps-http"),
            format!("127.0.0.1:{apps}"),
            s("--apps-https"),
            s("127.0.0.1:0"),
        ],
        "ready",
        &cli,
    );
    let store = Store::open(&format!("sqlite://{}", data.join("fleet.db").display()))
        .await
        .unwrap();
    let node = IdentityKey::generate();
    register(&store, "n-a", &node).await;
    store
        .set_target("n-a", &target("w-a", "shop"))
        .await
        .unwrap();
    let fleet_key =
        IdentityKey::from_bytes(&std::fs::read(data.join("fleet.key")).unwrap()).unwrap();
    let mut opts = ClientOptions::new(format!("127.0.0.1:{api}"), node, fleet_key.public());
    opts.backoff_base = Duration::from_millis(50);
    opts.backoff_cap = Duration::from_millis(200);
    let _client = client::spawn(opts, Arc::new(Greedy(answering("from-a").await))).unwrap();
    let gw: SocketAddr = format!("127.0.0.1:{apps}").parse().unwrap();
    let mut last = (0, String::new());
    for _ in 0..100 {
        last = get(gw, "shop.lattice-apps.localhost").await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, (200, "from-a".into()));
    let (status, text) = get(format!("127.0.0.1:{metrics}").parse().unwrap(), "localhost").await;
    assert_eq!(status, 404, "only /metrics is served: {text}");
    let mut s = TcpStream::connect(format!("127.0.0.1:{metrics}"))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(
        text.contains("lattice_gateway_bytes_out_total{workload=\"w-a\"}"),
        "{text}"
    );
    let _ = gateway.kill();
    let _ = gateway.wait();
    let _ = fleet.kill();
    let _ = fleet.wait();
}
