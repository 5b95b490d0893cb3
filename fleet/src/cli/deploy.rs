//! Workload commands: `deploy`, `update`, `workloads`, `workload show`, `delete`, `logs`.

use super::client::Client;
use super::config::{default_path, CliConfig};
use crate::kinds::s3::Credentials;
use crate::workloads::WorkloadView;
use anyhow::{bail, Context};
use std::collections::BTreeMap;

#[derive(Debug, clap::Subcommand)]
pub enum WorkloadCmd {
    /// Deploys a workload: `lattice deploy container NAME --image REF [--port P] [--plan P]`,
    /// or `lattice deploy s3 NAME [--plan P] [--bucket B ...]` (S3 storage with generated
    /// credentials).
    Deploy {
        /// The kind (`container` or `s3`).
        kind: String,
        /// Its name: 1 to 32 of a-z, 0-9 and '-', starting with a letter.
        name: String,
        /// micro, small (default), medium or large.
        #[arg(long)]
        plan: Option<String>,
        /// container: image pinned by digest (registry/repo@sha256:…).
        #[arg(long)]
        image: Option<String>,
        /// The port the service listens on.
        #[arg(long)]
        port: Option<u16>,
        /// Repeatable: KEY=VALUE.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Only nodes in this region (from the providers' offers).
        #[arg(long)]
        region: Option<String>,
        /// Repeatable: only nodes whose offer carries this label (KEY=VALUE).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// s3, repeatable: a bucket that exists when it first runs (at most 100; created at
        /// each start when missing, never deleted).
        #[arg(long = "bucket", value_name = "NAME")]
        buckets: Vec<String>,
        /// container, repeatable: another of your workloads this one connects to, wherever it
        /// runs; the container finds IP:PORT in VAR (default: WORKLOAD in capitals + _ADDR).
        #[arg(long = "upstream", value_name = "WORKLOAD[:PORT][=VAR]")]
        upstreams: Vec<String>,
        /// The command to run instead of the image's (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Changes a workload: another plan (resize), image version, port, command or environment.
    /// The new version starts on another node and replaces the old one once it runs (the old
    /// one keeps serving if it fails); with no other node able to take it, or with
    /// `--strategy in-place`, it is replaced where it runs.
    Update {
        name: String,
        /// micro, small, medium or large.
        #[arg(long)]
        plan: Option<String>,
        /// A new image, pinned by digest (registry/repo@sha256:…).
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// Repeatable: KEY=VALUE, added or replaced.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Repeatable: a variable to remove.
        #[arg(long = "unset-env", value_name = "KEY")]
        unset_env: Vec<String>,
        /// auto (rolling when another node can take it, else in place), rolling or in-place.
        #[arg(long, default_value = "auto")]
        strategy: String,
        /// Wait until the new version runs or the update fails, printing its events.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        /// A new command instead of the image's (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Lists your workloads.
    Workloads {
        /// Operators: every account's.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One workload.
    Workload {
        #[command(subcommand)]
        cmd: ShowCmd,
    },
    /// Deletes a workload everywhere (containers, volumes, routes).
    Delete { name: String },
    /// Prints a workload's logs (stdout and stderr), read on its node.
    Logs {
        name: String,
        /// Keep printing new output until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        /// Prefix each line with its time (RFC 3339).
        #[arg(long, short = 't')]
        timestamps: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ShowCmd {
    /// State, node, endpoint, events.
    Show {
        name: String,
        /// Also print its generated credentials (s3: access key id and secret); audited.
        #[arg(long)]
        credentials: bool,
        #[arg(long)]
        json: bool,
    },
    /// Operators: why the scheduler places it where it does, node by node (the chosen node and
    /// its score, every other node's score or the rule it broke, with the figures); without
    /// NAME, a would-be deploy.
    Explain(super::explain::ExplainArgs),
}

fn client() -> anyhow::Result<Client> {
    let path = default_path();
    let cfg = CliConfig::load(&path).with_context(|| {
        format!(
            "no CLI config at {} (run lattice up or login)",
            path.display()
        )
    })?;
    Client::new(&cfg)
}

fn print_one(w: &WorkloadView) {
    println!("name     {}", w.name);
    println!("kind     {} (plan {})", w.kind, w.plan);
    match &w.reason {
        Some(r) => println!("state    {} ({r})", w.state),
        None => println!("state    {}", w.state),
    }
    println!("node     {}", w.node.as_deref().unwrap_or("-"));
    if let Some(to) = &w.moving_to {
        println!("moving   to {to} (serves on the node above until it runs there)");
    }
    if let Some(n) = &w.next {
        println!("updating to plan {}, image {}", n.plan, n.image);
    }
    println!("image    {}", w.image);
    if let Some(p) = w.port {
        println!("port     {p}");
    }
    if let Some(e) = &w.endpoint {
        println!("endpoint {e}");
    }
    println!("restarts {}", w.restarts);
    for u in &w.upstreams {
        println!(
            "upstream {}:{} in {}",
            u.workload.as_deref().unwrap_or("(deleted)"),
            u.port,
            u.env
        );
    }
    if let Some(r) = &w.replication {
        println!(
            "replica  {} on {}",
            r.replica,
            r.replica_node.as_deref().unwrap_or("-")
        );
        match (&r.report, r.read_ms) {
            (Some(rep), Some(at)) => {
                let ago = lattice_wire::now_ms().saturating_sub(at) as f64 / 1000.0;
                println!(
                    "lag      {:.1} s, {} changes ({} bytes) pending; replica {} (read {ago:.0} s ago)",
                    rep.oldest_pending_age_ms as f64 / 1000.0,
                    rep.pending_changes,
                    rep.pending_bytes,
                    rep.replica,
                );
                if let Some(e) = rep.journal_error.as_ref().or(rep.last_error.as_ref()) {
                    println!("         last error: {e}");
                }
            }
            _ => println!("lag      not read yet"),
        }
    }
    for e in &w.events {
        println!("  {}  {:<10} {}", e.at_ms, e.kind, e.detail);
    }
}

/// `--upstream WORKLOAD[:PORT][=VAR]` as the API's upstream request.
fn parse_upstream(flag: &str) -> anyhow::Result<serde_json::Value> {
    let (target, env) = match flag.split_once('=') {
        Some((t, v)) => (t, Some(v)),
        None => (flag, None),
    };
    let (workload, port) = match target.split_once(':') {
        Some((w, p)) => {
            let port: u16 = p.parse().map_err(|_| {
                anyhow::anyhow!("--upstream {flag:?}: port {p:?} is not a number from 1 to 65535")
            })?;
            (w, Some(port))
        }
        None => (target, None),
    };
    if workload.is_empty() || env == Some("") {
        bail!("--upstream {flag:?}: expected WORKLOAD[:PORT][=VAR]");
    }
    Ok(serde_json::json!({"workload": workload, "port": port, "env": env}))
}

/// `KEY=VALUE` flags as a map.
fn env_map(flags: Vec<String>) -> anyhow::Result<BTreeMap<String, String>> {
    pairs("--env", flags)
}

/// `--flag KEY=VALUE` flags as a map.
pub(super) fn pairs(flag: &str, flags: Vec<String>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for kv in flags {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("{flag} {kv:?}: expected KEY=VALUE");
        };
        vars.insert(k.to_string(), v.to_string());
    }
    Ok(vars)
}

/// Polls `name` until no update or move is in progress, printing each new event; fails when
/// the update failed or `secs` ran out.
async fn wait_update(
    c: &Client,
    name: &str,
    seen: usize,
    secs: u64,
) -> anyhow::Result<WorkloadView> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut seen = seen;
    loop {
        let w: WorkloadView = c.get(&format!("/api/v1/workloads/{name}")).await?;
        for e in w.events.iter().skip(seen) {
            eprintln!("  {:<14} {}", e.kind, e.detail);
        }
        seen = w.events.len();
        if w.moving_to.is_none() && w.next.is_none() {
            if let Some(e) = w.events.iter().rev().find(|e| e.kind.starts_with("update")) {
                if e.kind == "update_failed" {
                    bail!("update of {name} failed: {}", e.detail);
                }
            }
            return Ok(w);
        }
        if std::time::Instant::now() >= deadline {
            bail!("{name} is still updating after {secs} s (lattice workload show {name})");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub async fn run(cmd: WorkloadCmd) -> anyhow::Result<()> {
    match cmd {
        WorkloadCmd::Deploy {
            kind,
            name,
            plan,
            image,
            port,
            env,
            region,
            labels,
            buckets,
            upstreams,
            command,
            json,
        } => {
            let vars = env_map(env)?;
            let upstreams = upstreams
                .iter()
                .map(|u| parse_upstream(u))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = serde_json::json!({
                "kind": kind, "name": name, "plan": plan, "image": image.unwrap_or_default(), "port": port,
                "env": vars, "command": command, "region": region, "labels": pairs("--label", labels)?,
                "buckets": buckets, "upstreams": upstreams,
            });
            let w: WorkloadView = client()?.post("/api/v1/workloads", &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&w)?);
            } else {
                print_one(&w);
                if w.kind == "s3" {
                    println!(
                        "credentials: lattice workload show {} --credentials",
                        w.name
                    );
                }
            }
        }
        WorkloadCmd::Update {
            name,
            plan,
            image,
            port,
            env,
            unset_env,
            strategy,
            wait,
            wait_secs,
            command,
            json,
        } => {
            let strategy = match strategy.as_str() {
                "auto" | "rolling" => strategy,
                "in-place" | "in_place" => "in_place".to_string(),
                other => bail!("--strategy {other:?}: expected auto, rolling or in-place"),
            };
            let mut body = serde_json::json!({
                "set_env": env_map(env)?, "unset_env": unset_env, "strategy": strategy,
            });
            if let Some(p) = plan {
                body["plan"] = p.into();
            }
            if let Some(i) = image {
                body["image"] = i.into();
            }
            if let Some(p) = port {
                body["port"] = p.into();
            }
            if !command.is_empty() {
                body["command"] = serde_json::to_value(&command)?;
            }
            let c = client()?;
            let before: WorkloadView = c.get(&format!("/api/v1/workloads/{name}")).await?;
            let mut w: WorkloadView = c.patch(&format!("/api/v1/workloads/{name}"), &body).await?;
            let changed = w.events.len() != before.events.len();
            if !changed {
                eprintln!("{name}: nothing to change");
            } else if let Some(to) = &w.moving_to {
                eprintln!(
                    "{name}: the new version is starting on {to}; the old one serves on {} until it runs",
                    w.node.as_deref().unwrap_or("-")
                );
            } else {
                eprintln!("{name}: replaced in place");
            }
            if wait && changed {
                w = wait_update(&c, &name, w.events.len(), wait_secs).await?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&w)?);
            } else {
                print_one(&w);
            }
        }
        WorkloadCmd::Workloads { all, json } => {
            let path = if all {
                "/api/v1/workloads?all=true"
            } else {
                "/api/v1/workloads"
            };
            let list: Vec<WorkloadView> = client()?.get(path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:<10} {:<7} {:<10} NODE",
                    "NAME", "KIND", "PLAN", "STATE"
                );
                for w in &list {
                    println!(
                        "{:<24} {:<10} {:<7} {:<10} {}",
                        w.name,
                        w.kind,
                        w.plan,
                        w.state,
                        w.node.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        WorkloadCmd::Workload {
            cmd:
                ShowCmd::Show {
                    name,
                    credentials,
                    json,
                },
        } => {
            let c = client()?;
            let w: WorkloadView = c.get(&format!("/api/v1/workloads/{name}")).await?;
            let creds: Option<Credentials> = if credentials {
                Some(
                    c.get(&format!("/api/v1/workloads/{name}/credentials"))
                        .await?,
                )
            } else {
                None
            };
            if json {
                let mut v = serde_json::to_value(&w)?;
                if let Some(cr) = &creds {
                    v["credentials"] = serde_json::to_value(cr)?;
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_one(&w);
                if let Some(cr) = creds {
                    println!("access key id     {}", cr.access_key_id);
                    println!("secret access key {}", cr.secret_access_key);
                    println!("region            {}", cr.region);
                }
            }
        }
        WorkloadCmd::Workload {
            cmd: ShowCmd::Explain(args),
        } => super::explain::run(&client()?, args).await?,
        WorkloadCmd::Delete { name } => {
            client()?
                .delete(&format!("/api/v1/workloads/{name}"))
                .await?;
            println!("deleted {name}");
        }
        WorkloadCmd::Logs {
            name,
            follow,
            tail,
            timestamps,
        } => {
            let mut path =
                format!("/api/v1/workloads/{name}/logs?follow={follow}&timestamps={timestamps}");
            if let Some(n) = tail {
                path.push_str(&format!("&tail={n}"));
            }
            let mut out = std::io::stdout();
            client()?.stream_to(&path, &mut out).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_flag_names_a_workload_and_maybe_a_port_and_a_variable() {
        assert_eq!(
            parse_upstream("db").unwrap(),
            serde_json::json!({"workload": "db", "port": null, "env": null})
        );
        assert_eq!(
            parse_upstream("db:5432=PG").unwrap(),
            serde_json::json!({"workload": "db", "port": 5432, "env": "PG"})
        );
        for bad in ["db:x", "db:70000", ":80", "db=", ""] {
            let e = parse_upstream(bad).unwrap_err().to_string();
            assert!(e.contains("--upstream"), "{bad}: {e}");
        }
    }
}
