//! Operator commands that talk to a running fleet.

use super::client::Client;
use super::config::{default_path, CliConfig};
use super::{NodeCmd, TokensCmd};
use crate::api::CreatedToken;
use crate::store::{NodeRow, TokenRow};

fn client() -> anyhow::Result<Client> {
    Client::new(&CliConfig::load(&default_path())?)
}

fn ago(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let s = lattice_wire::now_ms().saturating_sub(ms) / 1000;
    format!("{s}s ago")
}

pub async fn tokens(cmd: TokensCmd) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        TokensCmd::Create {
            owner,
            uses,
            ttl_secs,
            json,
        } => {
            let body = serde_json::json!({ "owner": owner, "uses": uses, "ttl_secs": ttl_secs });
            let t: CreatedToken = c.post("/api/v1/tokens", &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                eprintln!(
                    "token {} (uses: {}, owner: {})",
                    t.id,
                    t.max_uses,
                    t.owner.as_deref().unwrap_or("-")
                );
                eprintln!("provisioning string (give it to the node: latticed --provisioning …):");
                println!("{}", t.provisioning);
            }
        }
        TokensCmd::List { json } => {
            let ts: Vec<TokenRow> = c.get("/api/v1/tokens").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ts)?);
            } else {
                println!(
                    "{:<16} {:<12} {:>5}/{:<5} EXPIRES",
                    "ID", "OWNER", "USED", "MAX"
                );
                for t in ts {
                    let left = t.expires_ms.saturating_sub(lattice_wire::now_ms()) / 1000;
                    println!(
                        "{:<16} {:<12} {:>5}/{:<5} in {left}s",
                        t.id,
                        t.owner.as_deref().unwrap_or("-"),
                        t.uses,
                        t.max_uses
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn nodes(json: bool) -> anyhow::Result<()> {
    let ns: Vec<NodeRow> = client()?.get("/api/v1/nodes").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ns)?);
        return Ok(());
    }
    println!(
        "{:<36} {:<16} {:<16} {:<10} {:<9} SEEN",
        "ID", "STATE", "HOSTNAME", "OWNER", "REVISION"
    );
    for n in ns {
        let host = serde_json::from_str::<serde_json::Value>(&n.inventory)
            .ok()
            .and_then(|v| v["hostname"].as_str().map(str::to_string))
            .unwrap_or_default();
        let state = match (n.revoked, n.online, n.lifecycle.as_str()) {
            (true, _, _) => "revoked".to_string(),
            (false, true, "active") => "online".to_string(),
            (false, false, "active") => "offline".to_string(),
            (false, on, other) => format!("{}/{other}", if on { "online" } else { "offline" }),
        };
        println!(
            "{:<36} {:<16} {:<16} {:<10} {:<9} {}",
            n.id,
            state,
            host,
            n.owner.as_deref().unwrap_or("-"),
            format!("{}/{}", n.applied_revision, n.target_revision),
            ago(n.last_seen_ms)
        );
    }
    Ok(())
}

pub async fn node(cmd: NodeCmd) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        NodeCmd::Show { id, json } => {
            let n: NodeRow = c.get(&format!("/api/v1/nodes/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&n)?);
            } else {
                println!("id:         {}", n.id);
                println!(
                    "state:      {}",
                    if n.revoked {
                        "revoked"
                    } else if n.online {
                        "online"
                    } else {
                        "offline"
                    }
                );
                if !n.online {
                    println!("reason:     {}", n.offline_reason);
                }
                println!("lifecycle:  {}", n.lifecycle);
                println!("owner:      {}", n.owner.as_deref().unwrap_or("-"));
                println!("firmware:   {}", n.firmware_version);
                println!("last seen:  {}", ago(n.last_seen_ms));
                println!(
                    "revision:   applied {} / target {}",
                    n.applied_revision, n.target_revision
                );
                println!("inventory:  {}", n.inventory);
                println!("usage:      {}", n.usage);
            }
        }
        NodeCmd::Revoke { id } => {
            let n: NodeRow = c
                .post(
                    &format!("/api/v1/nodes/{id}/revoke"),
                    &serde_json::json!({}),
                )
                .await?;
            println!("revoked {}", n.id);
        }
        other => super::node_lifecycle::run(&c, other).await?,
    }
    Ok(())
}
