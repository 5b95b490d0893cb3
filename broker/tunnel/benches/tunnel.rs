//! Raw tunnel throughput on loopback: 64 MiB from the gateway end through one QUIC stream to
//! the node end and into a TCP sink, then back from a TCP source. Prints Gbit/s.
//!
//! `cargo bench -p lattice-tunnel --bench tunnel`

use lattice_tunnel::{client, Authorizer, ClientOptions, Dialer, Open, Reply, ServerOptions};
use lattice_wire::{IdentityKey, IdentityPublic};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOTAL: usize = 64 * 1024 * 1024;

struct Any;
impl Authorizer for Any {
    fn authorize(
        &self,
        _key: IdentityPublic,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async { Ok("n-bench".to_owned()) })
    }
}

struct To(std::net::SocketAddr);
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A TCP "workload" that discards what it reads (upload) or sends TOTAL bytes (download),
        // chosen by the first byte.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut mode = [0u8; 1];
                    s.read_exact(&mut mode).await.unwrap();
                    if mode[0] == b'u' {
                        let mut sink = tokio::io::sink();
                        let n = tokio::io::copy(&mut s, &mut sink).await.unwrap();
                        s.write_all(&n.to_be_bytes()).await.unwrap();
                    } else {
                        let buf = vec![0u8; 256 * 1024];
                        for _ in 0..TOTAL / buf.len() {
                            s.write_all(&buf).await.unwrap();
                        }
                    }
                });
            }
        });
        let fleet = IdentityKey::generate();
        let server = lattice_tunnel::TunnelServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            &fleet,
            Arc::new(Any),
            ServerOptions::default(),
        )
        .unwrap();
        let opts = ClientOptions::new(
            server.local_addr().unwrap().to_string(),
            IdentityKey::generate(),
            fleet.public(),
        );
        let _client = client::spawn(opts, Arc::new(To(addr))).unwrap();
        while !server.is_connected("n-bench") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let open = Open {
            workload: "w-bench".into(),
            port: 9,
        };
        for round in 0..3 {
            let mut s = server.open("n-bench", &open).await.unwrap();
            let t = Instant::now();
            s.write_all(b"u").await.unwrap();
            let buf = vec![0u8; 256 * 1024];
            for _ in 0..TOTAL / buf.len() {
                s.write_all(&buf).await.unwrap();
            }
            s.shutdown().await.unwrap();
            let mut n = [0u8; 8];
            s.read_exact(&mut n).await.unwrap();
            let up = t.elapsed();
            let mut s = server.open("n-bench", &open).await.unwrap();
            let t = Instant::now();
            s.write_all(b"d").await.unwrap();
            let mut got = 0usize;
            let mut buf = vec![0u8; 256 * 1024];
            while got < TOTAL {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got += n;
            }
            let down = t.elapsed();
            let gbit = |d: Duration| (TOTAL as f64 * 8.0) / d.as_secs_f64() / 1e9;
            println!(
                "round {round}: 64 MiB gateway->node {:.2} Gbit/s, node->gateway {:.2} Gbit/s",
                gbit(up),
                gbit(down)
            );
        }
    });
}
