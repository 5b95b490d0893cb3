//! The gateway end to end: a real `lattice fleet` (gateway included), a real latticed with its
//! tunnel, real containers on the machine's Docker engine (busybox httpd and an nc echo
//! server from the test image). Consumers reach them only through the gateway: HTTP by host
//! name, HTTPS, TCP by gateway port; unknown hosts get 404, stopped workloads 503; limits and
//! timeouts hold; the traffic is counted on /metrics and in the store.
//! Needs root, Docker and the test image (`scripts/test-images`).

mod common;

use common::docker::{can_run_workloads, test_image, Cleanup};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// One raw HTTP/1.1 request; returns (status, body). `None` if the connection failed.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn echo(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    Ok(got)
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub fleet: Fleet,
    pub node: Node,
    pub node_id: String,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub tcp_first: u16,
    pub rt: tokio::runtime::Runtime,
    pub store: lattice_fleet::store::Store,
    _cleanup: Cleanup,
}

impl Rig {
    pub fn start(extra: &[&str]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tcp_first = 21000 + (std::process::id() % 500) as u16 * 20;
        let range = format!("{tcp_first}-{}", tcp_first + 19);
        let (h, s) = (http.to_string(), https.to_string());
        let mut args = vec![
            "--apps-http",
            &h,
            "--apps-https",
            &s,
            "--apps-tcp-ports",
            &range,
        ];
        args.extend_from_slice(extra);
        let fleet = Fleet::start(
            "fleet",
            &dir.path().join("fleet"),
            free_port(),
            free_port(),
            &args,
        );
        let node = Node::start(&dir.path().join("node"), &fleet.provisioning("alice"));
        let node_id = wait_for(20, "registration", || node.node_id());
        let cleanup = Cleanup(node_id.clone());
        let db = format!("sqlite://{}", dir.path().join("fleet/fleet.db").display());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = rt.block_on(lattice_fleet::store::Store::open(&db)).unwrap();
        Rig {
            dir,
            fleet,
            node,
            node_id,
            http,
            https,
            tcp_first,
            rt,
            store,
            _cleanup: cleanup,
        }
    }

    pub fn set_target(&self, spec: serde_json::Value) {
        self.rt
            .block_on(self.store.set_target(&self.node_id, &spec.to_string()))
            .unwrap();
    }

    pub fn tcp_port(&self, workload: &str, port: u16) -> u16 {
        self.rt
            .block_on(self.store.gateway_port(
                workload,
                port,
                (self.tcp_first, self.tcp_first + 19),
                0,
            ))
            .unwrap()
            .unwrap()
    }

    /// Waits until `host` answers 200 through the gateway.
    pub fn wait_serving(&self, host: &str) -> String {
        wait_for(
            90,
            &format!("{host} served through the gateway"),
            || match http_get(self.http, host, "/") {
                Some((200, body)) => Some(body),
                _ => None,
            },
        )
    }
}

pub fn web(image: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "w-web", "name": "web", "image": image,
        "command": ["sh", "-c", "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
        "cpu_millis": 200, "memory_bytes": 33554432, "pids_max": 64, "ports": [8080],
    })
}

pub fn echo_spec(image: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "w-echo", "name": "echo", "image": image,
        "command": ["nc", "-ll", "-p", "7000", "-e", "cat"],
        "cpu_millis": 200, "memory_bytes": 33554432, "pids_max": 64, "ports": [7000],
    })
}

#[test]
fn workloads_are_reached_only_through_the_gateway() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let rig = Rig::start(&[
        "--max-conns-per-workload",
        "8",
        "--header-timeout-secs",
        "2",
    ]);
    let host = "web.lattice-apps.localhost";

    // Before any target: unknown hosts are 404 and leak nothing.
    let (status, body) = http_get(rig.http, host, "/").expect("gateway answers");
    assert_eq!(status, 404, "{body}");
    assert!(
        !body.contains("172.") && !body.contains("127.0.0.1"),
        "{body}"
    );

    rig.set_target(serde_json::json!([web(&image), echo_spec(&image)]));
    let body = rig.wait_serving(host);
    assert_eq!(body.trim(), "hello-from-web");
    // Host matching ignores case and port.
    let (status, _) = http_get(rig.http, "WEB.lattice-apps.localhost:80", "/").unwrap();
    assert_eq!(status, 200);
    // Another name under the apps domain, and a foreign domain: 404.
    assert_eq!(
        http_get(rig.http, "nope.lattice-apps.localhost", "/")
            .unwrap()
            .0,
        404
    );
    assert_eq!(http_get(rig.http, "web.example.com", "/").unwrap().0, 404);

    // HTTPS with the generated certificate (curl, as a consumer would).
    let cert = rig.dir.path().join("fleet/apps-cert.pem");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&cert)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", rig.https.port()))
        .arg(format!("https://{host}:{}/", rig.https.port()))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-from-web",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // TCP: the echo workload on its own gateway port.
    let port = rig.tcp_port("w-echo", 7000);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let got = wait_for(30, "echo through the TCP route", || {
        echo(addr, b"ping").ok()
    });
    assert_eq!(got, b"ping");

    // Idle client: a connection that sends nothing is closed after the header timeout.
    let mut idle = TcpStream::connect(rig.http).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    let _ = n;
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "idle client kept {:?}",
        t.elapsed()
    );

    // Slowloris: headers dribbled one byte at a time never finish within the timeout.
    let mut slow = TcpStream::connect(rig.http).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    let t = Instant::now();
    let mut closed = false;
    for b in req.bytes().chain(std::iter::repeat(b'a')).take(200) {
        if slow.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if t.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    assert!(
        closed,
        "slowloris connection still open after {:?}",
        t.elapsed()
    );

    // Flood one workload: past its limit it gets 503 (or closed TCP), the other still works.
    let held: Vec<TcpStream> = (0..8)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            s.write_all(b"x").ok()?;
            let mut b = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.read_exact(&mut b).ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(held.len(), 8, "the first 8 connections are carried");
    assert!(
        echo(addr, b"over").is_err(),
        "the 9th connection is refused"
    );
    assert_eq!(
        http_get(rig.http, host, "/").map(|r| r.0),
        Some(200),
        "the other workload is unaffected"
    );
    drop(held);
    wait_for(10, "echo usable again", || echo(addr, b"back").ok());

    // Traffic is on /metrics (through the fleet API) and stored for billing.
    let metrics = wait_for(20, "gateway metrics", || {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5"])
            .arg(format!("{}/metrics", rig.fleet.url))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("lattice_gateway_bytes_out_total{workload=\"w-web\"}")
            .then_some(text)
    });
    assert!(
        metrics.contains("lattice_gateway_connections_total{workload=\"w-echo\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reason=\"too_many_connections\""),
        "{metrics}"
    );
    let traffic = wait_for(20, "stored traffic", || {
        let t = rig.rt.block_on(rig.store.gateway_traffic()).ok()?;
        t.iter()
            .find(|t| t.workload_id == "w-web" && t.bytes_out > 0)
            .cloned()
    });
    assert!(traffic.connections >= 3, "{traffic:?}");

    // The workload stopped (left the target): 503 with a page, no internal address.
    rig.set_target(serde_json::json!([echo_spec(&image)]));
    let body = wait_for(60, "web gone", || match http_get(rig.http, host, "/") {
        Some((404, b)) => Some(b),
        _ => None,
    });
    assert!(!body.contains("172."), "{body}");
    // The node is down: its workloads are 503, not 404.
    let mut node = rig.node;
    node.kill9();
    let (status, body) = wait_for(60, "503 while the node is offline", || {
        match http_get(rig.http, "echo.lattice-apps.localhost", "/") {
            // First "did not answer in time", then, once the tunnel timed out, "offline".
            Some((503, b)) if b.contains("offline") => Some((503, b)),
            _ => None,
        }
    });
    assert_eq!(status, 503);
    assert!(body.contains("offline"), "{body}");
    assert!(
        !body.contains("172.") && !body.contains(&rig.node_id),
        "{body}"
    );
}
