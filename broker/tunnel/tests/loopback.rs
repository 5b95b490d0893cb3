//! The tunnel on loopback: a real QUIC gateway end and node end, a TCP echo "workload".

use lattice_tunnel::{
    client, Authorizer, ClientOptions, Dialer, LogReader, LogsOpen, Open, OpenError, Reply,
    ServerOptions, TunnelServer, TunnelState,
};
use lattice_wire::{IdentityKey, IdentityPublic};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Keys(HashMap<[u8; 32], String>);

impl Authorizer for Keys {
    fn authorize(
        &self,
        key: IdentityPublic,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        let r = self
            .0
            .get(&key.to_bytes())
            .cloned()
            .ok_or_else(|| "unknown or revoked node".to_owned());
        Box::pin(async move { r })
    }
}

/// Dials `w-echo:7` to the echo server; refuses everything else the way the node does.
/// `w-echo`'s logs are two lines, or, when followed, whatever the test writes into the
/// writer left in `follow`.
struct EchoDialer(SocketAddr, Arc<Mutex<Option<tokio::io::DuplexStream>>>);

impl Dialer for EchoDialer {
    fn dial(
        &self,
        open: Open,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, Reply>> + Send + '_>> {
        Box::pin(async move {
            match (open.workload.as_str(), open.port) {
                ("w-echo", 7) => TcpStream::connect(self.0)
                    .await
                    .map_err(|_| Reply::ConnectFailed),
                ("w-echo", _) => Err(Reply::PortNotDeclared),
                _ => Err(Reply::UnknownWorkload),
            }
        })
    }

    fn logs(
        &self,
        logs: LogsOpen,
    ) -> Pin<Box<dyn Future<Output = Result<LogReader, Reply>> + Send + '_>> {
        Box::pin(async move {
            if logs.workload != "w-echo" {
                return Err(Reply::UnknownWorkload);
            }
            if !logs.follow {
                return Ok(
                    Box::pin(std::io::Cursor::new(b"line 1\nline 2\n".to_vec())) as LogReader
                );
            }
            let (writer, reader) = tokio::io::duplex(1024);
            *self.1.lock().unwrap() = Some(writer);
            Ok(Box::pin(reader) as LogReader)
        })
    }
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

struct Rig {
    follow: Arc<Mutex<Option<tokio::io::DuplexStream>>>,
    fleet: IdentityKey,
    node: IdentityKey,
    server: TunnelServer,
    echo: SocketAddr,
}

async fn rig() -> Rig {
    rig_with(ServerOptions::default()).await
}

async fn rig_with(opts: ServerOptions) -> Rig {
    let fleet = IdentityKey::generate();
    let node = IdentityKey::generate();
    let keys = Keys(HashMap::from([(
        node.public().to_bytes(),
        "n-1".to_owned(),
    )]));
    let server =
        TunnelServer::bind("127.0.0.1:0".parse().unwrap(), &fleet, Arc::new(keys), opts).unwrap();
    Rig {
        follow: Arc::default(),
        fleet,
        node,
        server,
        echo: echo_server().await,
    }
}

impl Rig {
    fn client(&self, node: &IdentityKey, fleet: IdentityPublic) -> lattice_tunnel::ClientHandle {
        let mut opts = ClientOptions::new(
            self.server.local_addr().unwrap().to_string(),
            node.clone(),
            fleet,
        );
        opts.backoff_base = Duration::from_millis(50);
        opts.backoff_cap = Duration::from_millis(200);
        client::spawn(opts, Arc::new(EchoDialer(self.echo, self.follow.clone()))).unwrap()
    }

    async fn wait_connected(&self) {
        for _ in 0..200 {
            if self.server.is_connected("n-1") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("node never connected");
    }
}

fn echo_open() -> Open {
    Open {
        workload: "w-echo".into(),
        port: 7,
    }
}

async fn wait_down(h: &lattice_tunnel::ClientHandle) -> String {
    let mut rx = h.state();
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| matches!(s, TunnelState::Down { .. })),
    )
    .await
    .expect("client goes down")
    .unwrap()
    .clone();
    match s {
        TunnelState::Down { reason } => reason,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn streams_reach_only_declared_workload_ports() {
    let rig = rig().await;
    let _client = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;

    let mut s = rig.server.open("n-1", &echo_open()).await.unwrap();
    s.write_all(b"hello through the tunnel").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello through the tunnel");

    let refused = |workload: &str, port| {
        let server = rig.server.clone();
        let open = Open {
            workload: workload.into(),
            port,
        };
        async move { server.open("n-1", &open).await }
    };
    assert!(matches!(
        refused("w-echo", 22).await,
        Err(OpenError::Refused {
            reply: Reply::PortNotDeclared,
            ..
        })
    ));
    assert!(matches!(
        refused("w-other", 7).await,
        Err(OpenError::Refused {
            reply: Reply::UnknownWorkload,
            ..
        })
    ));
    // An address is never a workload: the gateway cannot even encode it.
    assert!(matches!(
        refused("127.0.0.1", 7).await,
        Err(OpenError::Proto(_))
    ));
    assert!(matches!(
        rig.server.open("n-2", &echo_open()).await,
        Err(OpenError::NodeOffline(_))
    ));
}

#[tokio::test]
async fn unknown_node_keys_are_refused_with_a_reason() {
    let rig = rig().await;
    let stranger = IdentityKey::generate();
    let h = rig.client(&stranger, rig.fleet.public());
    let reason = wait_down(&h).await;
    assert!(reason.contains("unknown or revoked node"), "{reason}");
    assert!(rig.server.connected().is_empty());
}

#[tokio::test]
async fn a_gateway_without_the_pinned_fleet_key_is_refused() {
    let rig = rig().await;
    let h = rig.client(&rig.node, IdentityKey::generate().public());
    let reason = wait_down(&h).await;
    assert!(reason.contains("pinned fleet key"), "{reason}");
    assert!(rig.server.connected().is_empty());
}

#[tokio::test]
async fn a_dropped_tunnel_closes_its_streams_and_the_node_reconnects() {
    let rig = rig().await;
    let _client = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;
    let mut s = rig.server.open("n-1", &echo_open()).await.unwrap();
    s.write_all(&[7u8; 100_000]).await.unwrap();
    let mut got = vec![0u8; 100_000];
    s.read_exact(&mut got).await.unwrap();

    rig.server.disconnect("n-1", "test drop");
    // The stream in flight ends (error or EOF), it does not hang.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "stream still open after the tunnel dropped");

    // The node comes back and new streams work.
    rig.wait_connected().await;
    let mut s = rig.server.open("n-1", &echo_open()).await.unwrap();
    s.write_all(b"again").await.unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"again");
}

#[tokio::test]
async fn a_stalled_stream_does_not_stall_the_others() {
    let rig = rig().await;
    let _client = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;

    // A consumer that sends a lot and never reads the echo: its stream fills its own window.
    let mut stalled = rig.server.open("n-1", &echo_open()).await.unwrap();
    let junk = vec![1u8; 256 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            stalled.write_all(&junk).await.unwrap();
        }
    })
    .await;

    // Meanwhile 16 MiB go through another stream in good time.
    let mut s = rig.server.open("n-1", &echo_open()).await.unwrap();
    let (mut r, mut w) = tokio::io::split(&mut s);
    let total = 16 * 1024 * 1024;
    let t = tokio::time::timeout(Duration::from_secs(20), async {
        let writer = async {
            let chunk = vec![2u8; 64 * 1024];
            for _ in 0..total / chunk.len() {
                w.write_all(&chunk).await.unwrap();
            }
        };
        let reader = async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0;
            while n < total {
                n += r.read(&mut buf).await.unwrap();
            }
        };
        tokio::join!(writer, reader);
    })
    .await;
    assert!(t.is_ok(), "the second stream stalled behind the first");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams() {
    let rig = rig().await;
    let _client = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        streams.push(rig.server.open("n-1", &echo_open()).await.unwrap());
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            tokio::spawn(async move {
                let msg = format!("stream {i}");
                s.write_all(msg.as_bytes()).await.unwrap();
                let mut b = vec![0u8; msg.len()];
                s.read_exact(&mut b).await.unwrap();
                assert_eq!(b, msg.as_bytes());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn early_streams_carry_data_and_report_refusals_on_read() {
    let rig = rig().await;
    let _client = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;
    let mut s = rig.server.open_early("n-1", &echo_open()).await.unwrap();
    s.write_all(b"sent before the reply").await.unwrap();
    let mut b = vec![0u8; 21];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(b, b"sent before the reply");

    let open = Open {
        workload: "w-echo".into(),
        port: 22,
    };
    let mut s = rig.server.open_early("n-1", &open).await.unwrap();
    let _ = s.write_all(b"x").await;
    let e = s.read(&mut b).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(e.to_string().contains("port_not_declared"), "{e}");
}

#[tokio::test]
async fn logs_come_whole_or_followed_until_the_gateway_stops_reading() {
    let rig = rig().await;
    let _h = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;
    let logs = |id: &str, follow: bool| LogsOpen {
        workload: id.into(),
        follow,
        timestamps: false,
        tail: lattice_tunnel::proto::TAIL_ALL,
    };

    // Not following: everything, then the end of the stream.
    let mut s = rig
        .server
        .open_logs("n-1", &logs("w-echo", false))
        .await
        .unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "line 1\nline 2\n");

    // A workload the node does not hold: refused with the node's reason.
    match rig.server.open_logs("n-1", &logs("w-other", false)).await {
        Err(OpenError::Refused { reply, .. }) => assert_eq!(reply, Reply::UnknownWorkload),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Following: new output arrives as it is written ...
    let mut s = rig
        .server
        .open_logs("n-1", &logs("w-echo", true))
        .await
        .unwrap();
    let mut writer = rig.follow.lock().unwrap().take().expect("the node follows");
    for line in ["one\n", "two\n"] {
        writer.write_all(line.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; line.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, line.as_bytes());
    }
    // ... and the node stops reading the engine's logs once the gateway drops the stream,
    // without waiting for more output.
    drop(s);
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1];
        // The reader end is dropped by the node: the duplex reports EOF to this side.
        writer.read(&mut buf).await
    })
    .await
    .expect("the node stops following within 5 s");
    assert_eq!(stopped.unwrap(), 0);
}

/// The gateway's upstreams for the test: `registry` is the echo server, for node `n-1` only;
/// at most `limit` streams at once (a permit rides with each connection). How streams ended
/// is recorded in `ended`.
struct EchoUpstreams {
    echo: SocketAddr,
    limit: Arc<tokio::sync::Semaphore>,
    ended: Arc<Mutex<Vec<lattice_tunnel::UpstreamEnd>>>,
}

struct Held<T> {
    io: T,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Held<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Held<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl lattice_tunnel::Upstreams for EchoUpstreams {
    fn connect<'a>(
        &'a self,
        node: &'a str,
        up: &'a lattice_tunnel::UpstreamOpen,
    ) -> Pin<Box<dyn Future<Output = Result<lattice_tunnel::UpstreamConn, Reply>> + Send + 'a>>
    {
        Box::pin(async move {
            let declared = std::collections::BTreeMap::from([("registry".to_string(), self.echo)]);
            let addr = lattice_tunnel::policy::check_upstream(&declared, up)?;
            assert_eq!(node, "n-1");
            let permit = self
                .limit
                .clone()
                .try_acquire_owned()
                .map_err(|_| Reply::Unavailable)?;
            let io = TcpStream::connect(addr)
                .await
                .map_err(|_| Reply::ConnectFailed)?;
            Ok(Box::new(Held {
                io,
                _permit: permit,
            }) as lattice_tunnel::UpstreamConn)
        })
    }

    fn ended(
        &self,
        _node: &str,
        _up: &lattice_tunnel::UpstreamOpen,
        end: lattice_tunnel::UpstreamEnd,
    ) {
        self.ended.lock().unwrap().push(end);
    }
}

#[tokio::test]
async fn nodes_reach_only_declared_upstreams_within_their_limit() {
    use lattice_tunnel::UpstreamError;
    let rig = rig().await;
    let client = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;
    let opener = client.upstreams();
    let wait = Duration::from_secs(5);

    // No upstreams served yet: refused as not declared.
    assert!(matches!(
        opener.open("registry", wait).await,
        Err(UpstreamError::Refused {
            reply: Reply::UpstreamNotDeclared,
            ..
        })
    ));
    rig.server.serve_upstreams(Arc::new(EchoUpstreams {
        echo: rig.echo,
        limit: Arc::new(tokio::sync::Semaphore::new(2)),
        ended: Arc::default(),
    }));

    let mut s = opener.open("registry", wait).await.unwrap();
    s.write_all(b"GET /v2/ through the tunnel").await.unwrap();
    let mut back = [0u8; 27];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"GET /v2/ through the tunnel");

    // Another name is refused with its code; an address cannot even be written.
    assert!(matches!(
        opener.open("backup", wait).await,
        Err(UpstreamError::Refused {
            reply: Reply::UpstreamNotDeclared,
            ..
        })
    ));
    assert!(matches!(
        opener.open("127.0.0.1:22", wait).await,
        Err(UpstreamError::Proto(_))
    ));

    // The limit: a second stream is fine, a third waits for one of the first two to go.
    let s2 = opener.open("registry", wait).await.unwrap();
    assert!(matches!(
        opener.open("registry", wait).await,
        Err(UpstreamError::Refused {
            reply: Reply::Unavailable,
            ..
        })
    ));
    drop(s2);
    let mut again = None;
    for _ in 0..100 {
        if let Ok(s) = opener.open("registry", wait).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a closed stream gives its slot back");
    drop(s);

    // Without a tunnel, opening fails with NoTunnel after its wait.
    let mut state = client.state();
    client.stop();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == TunnelState::Stopped),
    )
    .await
    .unwrap()
    .unwrap();
    let down = tokio::time::timeout(
        Duration::from_secs(5),
        opener.open("registry", Duration::from_millis(300)),
    )
    .await
    .expect("gives up after its wait");
    assert!(matches!(down, Err(UpstreamError::NoTunnel)), "{down:?}");
}

#[tokio::test]
async fn idle_upstream_streams_are_closed_and_give_their_slot_back_while_trickling_ones_live() {
    use lattice_tunnel::{UpstreamEnd, UpstreamError};
    let idle = Duration::from_millis(800);
    let rig = rig_with(ServerOptions {
        upstream_idle_timeout: idle,
        ..ServerOptions::default()
    })
    .await;
    let ended = Arc::new(Mutex::new(Vec::new()));
    rig.server.serve_upstreams(Arc::new(EchoUpstreams {
        echo: rig.echo,
        limit: Arc::new(tokio::sync::Semaphore::new(2)),
        ended: ended.clone(),
    }));
    let client = rig.client(&rig.node, rig.fleet.public());
    rig.wait_connected().await;
    let opener = client.upstreams();
    let wait = Duration::from_secs(5);
    let mut one = [0u8; 1];

    // Two streams fill the node's limit: one that trickles a byte four times per timeout, one
    // that goes quiet after its first exchange.
    let mut busy = opener.open("registry", wait).await.unwrap();
    let mut quiet = opener.open("registry", wait).await.unwrap();
    quiet.write_all(b"q").await.unwrap();
    quiet.read_exact(&mut one).await.unwrap();
    let quiet_since = std::time::Instant::now();
    assert!(matches!(
        opener.open("registry", wait).await,
        Err(UpstreamError::Refused {
            reply: Reply::Unavailable,
            ..
        })
    ));

    let trickle = async {
        let start = std::time::Instant::now();
        while start.elapsed() < idle * 4 {
            busy.write_all(b"t").await.unwrap();
            busy.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(idle / 4).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(idle * 3, quiet.read(&mut buf))
            .await
            .expect("the quiet stream is closed by the gateway");
        // The gateway finished the stream: the node reads its end.
        assert_eq!(n.unwrap_or(0), 0);
        let after = quiet_since.elapsed();
        // Not before the timeout (less what the last byte took to reach the node).
        assert!(
            after >= idle * 9 / 10,
            "closed after {after:?}, before the timeout"
        );
        // Its slot is free again: up to the limit, with the trickling stream still open.
        let mut again = None;
        for _ in 0..100 {
            if let Ok(s) = opener.open("registry", wait).await {
                again = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = again.expect("an idle stream closed by the gateway gives its slot back");
        assert!(matches!(
            opener.open("registry", wait).await,
            Err(UpstreamError::Refused {
                reply: Reply::Unavailable,
                ..
            })
        ));
        again
    };
    let ((), _again) = tokio::join!(trickle, closed);

    // The trickling stream outlived the timeout several times over and still carries bytes.
    busy.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    busy.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
    // Only idle streams ended: the quiet one (and the reopened one, if it went quiet too).
    let ended = ended.lock().unwrap().clone();
    assert!(!ended.is_empty(), "{ended:?}");
    assert!(
        ended.iter().all(|e| *e == UpstreamEnd::IdleTimeout),
        "{ended:?}"
    );
}

#[tokio::test]
async fn a_node_pinning_the_old_fleet_key_follows_the_rotation_to_the_gateway() {
    use lattice_wire::pin::{MemoryPin, PinHolder};
    use lattice_wire::rotation::{FleetPin, RotationChain};
    let old = IdentityKey::generate();
    let new = IdentityKey::generate();
    let node = IdentityKey::generate();
    let keys = Keys(HashMap::from([(
        node.public().to_bytes(),
        "n-1".to_owned(),
    )]));
    let chain = RotationChain::default().extend(&old, &new.public(), 1);
    let server = TunnelServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        &new,
        Arc::new(keys),
        ServerOptions {
            rotation_chain: chain,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let pin = Arc::new(MemoryPin::new(FleetPin::provisioned(old.public())));
    let mut opts = ClientOptions::new(
        server.local_addr().unwrap().to_string(),
        node.clone(),
        old.public(),
    );
    opts.fleet_pin = Some(pin.clone() as Arc<dyn PinHolder>);
    let _h = client::spawn(
        opts,
        Arc::new(EchoDialer(echo_server().await, Arc::default())),
    )
    .unwrap();
    for _ in 0..200 {
        if server.is_connected("n-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(server.is_connected("n-1"), "node never connected");
    assert_eq!(
        pin.pin(),
        FleetPin {
            key: new.public(),
            epoch: 1
        }
    );

    // A gateway with a forged chain (the statement signed by its own key) is refused.
    let evil = IdentityKey::generate();
    let mut forged = RotationChain::default().extend(&evil, &evil.public(), 1);
    forged.statements[0].old_key = old.public();
    let keys = Keys(HashMap::from([(
        node.public().to_bytes(),
        "n-1".to_owned(),
    )]));
    let server = TunnelServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        &evil,
        Arc::new(keys),
        ServerOptions {
            rotation_chain: forged,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let pin = Arc::new(MemoryPin::new(FleetPin::provisioned(old.public())));
    let mut opts = ClientOptions::new(server.local_addr().unwrap().to_string(), node, old.public());
    opts.fleet_pin = Some(pin.clone() as Arc<dyn PinHolder>);
    let h = client::spawn(
        opts,
        Arc::new(EchoDialer(echo_server().await, Arc::default())),
    )
    .unwrap();
    let reason = wait_down(&h).await;
    assert!(reason.contains("bad_signature"), "{reason}");
    assert_eq!(pin.pin(), FleetPin::provisioned(old.public()));
}
