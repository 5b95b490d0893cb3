//! Gateway + tunnel benchmark on loopback, side by side with Debian's nginx as a TLS reverse
//! proxy to the same upstream.
//!
//! A real `lattice fleet` process runs the gateway; a node (registered in its store, its
//! tunnel client in this process) dials a local HTTP upstream for every stream. Measured:
//! - 64 MiB downloads over HTTPS with curl: through gateway + tunnel, through nginx, direct;
//! - small HTTP requests: latency through gateway + tunnel minus direct (p50, p99);
//! - 1,000 concurrent connections through the one tunnel (errors counted);
//! - the fleet process's RSS (fleet + broker + gateway) idle and after the load.
//!
//! `cargo bench -p lattice-fleet --bench gateway` (needs Debian's nginx-light and curl). Writes `target/bench/gateway.json`.

use lattice_fleet::store::{NewNode, Store, TokenRow};
use lattice_tunnel::{client, ClientOptions, Dialer, Open, Reply};
use lattice_wire::IdentityKey;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIG: usize = 64 * 1024 * 1024;
const HOST: &str = "bench.lattice-apps.localhost";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A keep-alive HTTP/1.1 upstream: `/big` is 64 MiB, anything else is `ok`.
async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = Vec::new();
                loop {
                    let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&have[..end]).into_owned();
                    have.drain(..end + 4);
                    if head.starts_with("GET /big") {
                        let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                        if s.write_all(h.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = vec![b'x'; 256 * 1024];
                        for _ in 0..BIG / chunk.len() {
                            if s.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    } else if s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct To(SocketAddr);
impl Dialer for To {
    fn dial(
        &self,
        _o: Open,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, Reply>> + Send + '_>> {
        Box::pin(async move {
            TcpStream::connect(self.0)
                .await
                .map_err(|_| Reply::ConnectFailed)
        })
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// curl's download speed in bit/s for `url` (best of `runs`).
fn curl_speed(args: &[String], runs: usize) -> f64 {
    (0..runs)
        .map(|_| {
            let out = Command::new("curl")
                .args([
                    "-sk",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{speed_download} %{size_download}",
                ])
                .args(args)
                .output()
                .expect("curl");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut it = text.split_whitespace();
            let speed: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let size: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            assert_eq!(size, BIG, "short download: {text}");
            speed * 8.0
        })
        .fold(0.0, f64::max)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Latencies (µs) of `n` sequential small requests on one keep-alive connection.
async fn latencies(addr: SocketAddr, n: usize) -> Vec<f64> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let req = format!("GET /small HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut have = Vec::new();
        loop {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "connection closed");
            have.extend_from_slice(&buf[..k]);
            if have.ends_with(b"\r\n\r\nok") {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out.sort_by(f64::total_cmp);
    out
}

async fn concurrent(addr: SocketAddr, n: usize) -> (usize, Duration) {
    let t = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(TcpStream::connect(addr).await);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let mut s = c.ok()?;
                s.write_all(format!("GET /small HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                    .await
                    .ok()?;
                let mut buf = vec![0u8; 1024];
                let mut have = Vec::new();
                while !have.ends_with(b"ok") {
                    let k = s.read(&mut buf).await.ok()?;
                    if k == 0 {
                        return None;
                    }
                    have.extend_from_slice(&buf[..k]);
                }
                String::from_utf8_lossy(&have)
                    .starts_with("HTTP/1.1 200")
                    .then_some(s)
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(s) => ok.push(s),
            None => errors += 1,
        }
    }
    (errors, t.elapsed())
}

fn nginx(dir: &Path, port: u16, upstream: SocketAddr, cert: &Path, key: &Path) -> Child {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream app {{ server {upstream}; keepalive 32; }}\n\
               server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n\
                 location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
            d = dir.display(),
            c = cert.display(),
            k = key.display(),
        ),
    )
    .unwrap();
    Command::new("nginx")
        .args(["-c"])
        .arg(&conf)
        .args(["-p"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt install nginx-light)")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let (api, apps, apps_tls) = (free_port(), free_port(), free_port());
    let mut fleet = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["fleet", "--data"])
        .arg(&data)
        .args([
            "--http",
            &format!("127.0.0.1:{api}"),
            "--mqtt",
            "127.0.0.1:0",
        ])
        .args(["--apps-http", &format!("127.0.0.1:{apps}")])
        .args(["--apps-https", &format!("127.0.0.1:{apps_tls}")])
        .args(["--max-conns-per-workload", "4096"])
        .env("LATTICE_CLI_CONFIG", dir.path().join("cli.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("lattice fleet");
    {
        use std::io::BufRead;
        let out = std::io::BufReader::new(fleet.stdout.take().unwrap());
        for line in out.lines().map_while(Result::ok) {
            if line.starts_with("CLI config:") {
                break;
            }
        }
    }
    let fleet_pid = fleet.id();
    let result = rt.block_on(async {
        let store = Store::open(&format!("sqlite://{}", data.join("fleet.db").display()))
            .await
            .unwrap();
        let node = IdentityKey::generate();
        store
            .insert_token(&TokenRow {
                id: "t-bench".into(),
                secret_hash: "bench".into(),
                owner: None,
                max_uses: 1,
                uses: 0,
                expires_ms: u64::MAX / 2,
                created_ms: 1,
            })
            .await
            .unwrap();
        store
            .register_node(
                "bench",
                &NewNode {
                    id: "n-bench".into(),
                    identity_key: node.public().to_string(),
                    encryption_key: "unused".into(),
                    broker_secret_hash: "unused".into(),
                    inventory: "{}".into(),
                },
                1,
            )
            .await
            .unwrap();
        let spec = serde_json::json!([{"id": "w-bench", "name": "bench", "image": "i@sha256:0",
            "cpu_millis": 100, "memory_bytes": 33554432, "ports": [80]}]);
        store.set_target("n-bench", &spec.to_string()).await.unwrap();
        let fleet_key = IdentityKey::from_bytes(&std::fs::read(data.join("fleet.key")).unwrap())
            .unwrap()
            .public();
        let up = upstream().await;
        let _client = client::spawn(
            ClientOptions::new(format!("127.0.0.1:{api}"), node, fleet_key),
            Arc::new(To(up)),
        )
        .unwrap();
        let gw: SocketAddr = format!("127.0.0.1:{apps}").parse().unwrap();
        // Wait for the tunnel and the route.
        let t = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(gw).await {
                let _ = s
                    .write_all(format!("GET /small HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
                    .await;
                let mut text = String::new();
                let _ = s.read_to_string(&mut text).await;
                if text.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(30), "gateway never served");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rss_idle = rss_kib(fleet_pid);

        // Throughput: HTTPS, 64 MiB, curl; gateway vs nginx vs direct (plain HTTP).
        let nginx_port = free_port();
        let nginx_dir = dir.path().join("nginx");
        std::fs::create_dir_all(&nginx_dir).unwrap();
        let mut ng = nginx(
            &nginx_dir,
            nginx_port,
            up,
            &data.join("apps-cert.pem"),
            &data.join("apps-key.pem"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let url = |port: u16, scheme: &str| {
            vec![
                "--resolve".to_owned(),
                format!("{HOST}:{port}:127.0.0.1"),
                format!("{scheme}://{HOST}:{port}/big"),
            ]
        };
        let (gw_bps, nginx_bps, direct_bps) = tokio::task::spawn_blocking(move || {
            (
                curl_speed(&url(apps_tls, "https"), 3),
                curl_speed(&url(nginx_port, "https"), 3),
                curl_speed(&[format!("http://{up}/big")], 3),
            )
        })
        .await
        .unwrap();
        let _ = ng.kill();
        let _ = ng.wait();

        // Added latency: small requests, keep-alive, through gateway + tunnel vs direct.
        let _ = latencies(gw, 200).await;
        let via = latencies(gw, 2000).await;
        let direct = latencies(up, 2000).await;
        let (p50, p99) = (
            percentile(&via, 0.5) - percentile(&direct, 0.5),
            percentile(&via, 0.99) - percentile(&direct, 0.99),
        );

        // 1,000 concurrent connections through the one tunnel.
        let (errors, took) = concurrent(gw, 1000).await;
        let rss_loaded = rss_kib(fleet_pid);
        serde_json::json!({
            "machine": format!("{} cores, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().lines()
                    .find_map(|l| l.strip_prefix("model name\t: ")).unwrap_or("?")),
            "throughput_64mib_https_gbit": {"gateway_tunnel": gw_bps / 1e9, "nginx": nginx_bps / 1e9,
                "direct_plain_http": direct_bps / 1e9, "ratio_gateway_to_nginx": gw_bps / nginx_bps},
            "small_http_latency_us": {"direct_p50": percentile(&direct, 0.5), "direct_p99": percentile(&direct, 0.99),
                "gateway_p50": percentile(&via, 0.5), "gateway_p99": percentile(&via, 0.99),
                "added_p50": p50, "added_p99": p99},
            "concurrent_1000": {"errors": errors, "seconds": took.as_secs_f64()},
            "fleet_process_rss_kib": {"idle": rss_idle, "after_load": rss_loaded},
        })
    });
    let _ = fleet.kill();
    let _ = fleet.wait();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("gateway.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("written to {}", out.display());
}
