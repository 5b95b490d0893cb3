//! `lattice node cordon|uncordon|drain|decommission|offer ID`.

use super::client::Client;
use super::NodeCmd;
use crate::lifecycle::NodeLifecycleView;
use std::time::{Duration, Instant};

fn print_view(v: &NodeLifecycleView) {
    println!(
        "node {}: {}{}",
        v.node,
        v.lifecycle,
        if v.revoked { " (revoked)" } else { "" }
    );
    for w in &v.workloads {
        if w.detail.is_empty() {
            println!("  {:<24} {:<8}", w.name, w.status);
        } else {
            println!("  {:<24} {:<8} {}", w.name, w.status, w.detail);
        }
    }
}

/// Posts `op`, then (for drain and decommission) polls the node's lifecycle until nothing is
/// moving or waiting (and, for a decommission, the node is revoked), or `wait_secs` pass.
async fn act(
    c: &Client,
    id: &str,
    op: &str,
    wait_secs: u64,
    json: bool,
) -> anyhow::Result<NodeLifecycleView> {
    let mut v: NodeLifecycleView = c
        .post(&format!("/api/v1/nodes/{id}/{op}"), &serde_json::json!({}))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let done = |v: &NodeLifecycleView| match op {
        "decommission" => v.revoked || (v.settled() && !v.workloads.is_empty()),
        "drain" => v.settled(),
        _ => true,
    };
    while !done(&v) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        v = c.get(&format!("/api/v1/nodes/{id}/lifecycle")).await?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_view(&v);
        if !done(&v) {
            println!(
                "still {} after {wait_secs} s; follow it with `lattice node show {id}`",
                v.lifecycle
            );
        }
    }
    Ok(v)
}

pub async fn run(c: &Client, cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Cordon { id } => {
            act(c, &id, "cordon", 0, false).await?;
        }
        NodeCmd::Uncordon { id } => {
            act(c, &id, "uncordon", 0, false).await?;
        }
        NodeCmd::Drain {
            id,
            wait_secs,
            json,
        } => {
            act(c, &id, "drain", wait_secs, json).await?;
        }
        NodeCmd::Decommission {
            id,
            wait_secs,
            json,
        } => {
            act(c, &id, "decommission", wait_secs, json).await?;
        }
        NodeCmd::Offer {
            id,
            region,
            labels,
            storage_classes,
            part_time,
            price,
        } => {
            let body = serde_json::json!({
                "region": region.unwrap_or_default(),
                "labels": super::deploy::pairs("--label", labels)?,
                "storage_classes": storage_classes,
                "always_available": !part_time,
                "price": price,
            });
            let n: crate::store::NodeRow =
                c.put(&format!("/api/v1/nodes/{id}/offer"), &body).await?;
            println!("node {}: offer {}", n.id, n.offer);
        }
        NodeCmd::Show { .. } | NodeCmd::Revoke { .. } => {
            anyhow::bail!("node show and revoke are handled by cli::show")
        }
    }
    Ok(())
}
