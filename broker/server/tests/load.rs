//! Load check, ignored by default: many authenticated nodes, bursts of status messages into
//! the fleet, then one target message to every node, each twice (the first time a topic or
//! filter is seen costs rumqttd's router O(filters) or O(topics); later ones are cached).
//! Prints timings; asserts nothing is lost.
//!
//! ```text
//! LATTICE_BROKER_LOAD_NODES=9000 cargo test -p lattice-broker --release --test load \
//!     -- --ignored --nocapture
//! ```
//!
//! Client and broker share the process, so each plain node costs two file descriptors here
//! (three with `LATTICE_BROKER_LOAD_TLS=1`). Other knobs: `LATTICE_BROKER_LOAD_KEEPALIVE`
//! (seconds, default 15 like the fleet and firmware), `LATTICE_BROKER_LOAD_FILTER` (the
//! fleet's subscription, default the status channel).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{connect, loopback_config, options, self_signed, start, tls_transport, Client};
use common::{Nodes, TestCert};
use lattice_broker::BrokerConfig;
use tokio::task::JoinSet;

const BATCH: usize = 500;
const PATIENCE: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentiles(times: &mut [Duration]) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:?} p90 {:?} p99 {:?} max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

struct Setup {
    addr: SocketAddr,
    cert: Option<TestCert>,
    keep_alive: Duration,
}

async fn connect_node(setup: &Setup, i: usize) -> anyhow::Result<(Client, Duration)> {
    let id = format!("n-{i}");
    let mut options = options(setup.addr, &id, &id, &format!("pw-{i}"));
    options.set_keep_alive(setup.keep_alive);
    if let Some(cert) = &setup.cert {
        options.set_transport(tls_transport(cert));
    }
    let started = Instant::now();
    let mut client = connect(options).await?;
    let connecting = started.elapsed();
    client
        .subscribe(&format!("lattice/v1/nodes/{id}/target"))
        .await?;
    Ok((client, connecting))
}

async fn status_burst(nodes: &[Client], fleet: &mut Client, label: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        node.publish(&format!("lattice/v1/nodes/n-{i}/status"), vec![0x5a; 1024])
            .await?;
    }
    let mut seen = HashSet::new();
    while seen.len() < nodes.len() {
        match fleet.next_publish(PATIENCE).await {
            Ok(publish) => {
                seen.insert(publish.topic);
            }
            Err(error) => {
                println!("fleet stopped receiving: {error}");
                break;
            }
        }
    }
    let count = nodes.len();
    println!(
        "{label} burst: fleet received {}/{count} status messages in {:?}",
        seen.len(),
        started.elapsed()
    );
    anyhow::ensure!(seen.len() == count, "status messages lost");
    Ok(())
}

async fn fan_out(nodes: &mut [Client], fleet: &Client, label: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    for i in 0..nodes.len() {
        fleet
            .publish(&format!("lattice/v1/nodes/n-{i}/target"), vec![0xa5; 1024])
            .await?;
    }
    let mut received = 0;
    for node in nodes.iter_mut() {
        match node.next_publish(PATIENCE).await {
            Ok(_) => received += 1,
            Err(error) if received == 0 => println!("node lost: {error}"),
            Err(_) => {}
        }
    }
    let count = nodes.len();
    println!(
        "{label} fan-out: {received}/{count} nodes received their target in {:?}",
        started.elapsed()
    );
    anyhow::ensure!(received == count, "target messages lost");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run explicitly with --ignored"]
async fn many_nodes_burst_and_fan_out() -> anyhow::Result<()> {
    let count: usize = env_or("LATTICE_BROKER_LOAD_NODES", 2000);
    let filter: String = env_or(
        "LATTICE_BROKER_LOAD_FILTER",
        "lattice/v1/nodes/+/status".to_string(),
    );
    let keep_alive = Duration::from_secs(env_or("LATTICE_BROKER_LOAD_KEEPALIVE", 15));
    let cert =
        (env_or("LATTICE_BROKER_LOAD_TLS", 0) == 1).then(|| self_signed(&rcgen::PKCS_ED25519));

    let creds: Vec<(String, String)> = (0..count)
        .map(|i| (format!("n-{i}"), format!("pw-{i}")))
        .chain([("fleet".to_string(), "pw-fleet".to_string())])
        .collect();
    let pairs: Vec<(&str, &str)> = creds
        .iter()
        .map(|(id, pw)| (id.as_str(), pw.as_str()))
        .collect();
    let mut config = loopback_config();
    if let Some(cert) = &cert {
        config = BrokerConfig {
            tls_listen: Some("127.0.0.1:0".parse()?),
            tls_cert_pem: Some(cert.cert_pem.clone()),
            tls_key_pem: Some(cert.key_pem.clone()),
            ..config
        };
    }
    let broker = start(config, Nodes::with(&pairs));
    let mut fleet_options = options(broker.local_addr(), "fleet", "fleet", "pw-fleet");
    fleet_options.set_keep_alive(keep_alive);
    let mut fleet = connect(fleet_options).await?;
    fleet.subscribe(&filter).await?;

    let setup = std::sync::Arc::new(Setup {
        addr: broker.tls_local_addr().unwrap_or(broker.local_addr()),
        cert,
        keep_alive,
    });
    let started = Instant::now();
    let mut nodes: Vec<Option<Client>> = (0..count).map(|_| None).collect();
    let mut connect_times = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(BATCH) {
        let mut set = JoinSet::new();
        for &i in batch {
            let setup = setup.clone();
            set.spawn(async move { (i, connect_node(&setup, i).await) });
        }
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined?;
            let (client, connecting) = result?;
            nodes[i] = Some(client);
            connect_times.push(connecting);
        }
    }
    let mut nodes: Vec<Client> = nodes.into_iter().flatten().collect();
    println!(
        "{count} nodes connected and subscribed in {:?}; CONNECT {}",
        started.elapsed(),
        percentiles(&mut connect_times)
    );

    status_burst(&nodes, &mut fleet, "cold").await?;
    status_burst(&nodes, &mut fleet, "warm").await?;
    fan_out(&mut nodes, &fleet, "cold").await?;
    fan_out(&mut nodes, &fleet, "warm").await?;
    Ok(())
}
