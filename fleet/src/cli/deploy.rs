//! Workload commands: `deploy`, `workloads`, `workload show`, `delete`, `logs`.

use super::client::Client;
use super::config::{default_path, CliConfig};
use crate::kinds::s3::Credentials;
use crate::workloads::WorkloadView;
use anyhow::{bail, Context};
use std::collections::BTreeMap;

#[derive(Debug, clap::Subcommand)]
pub enum WorkloadCmd {
    /// Deploys a workload: `lattice deploy container NAME --image REF [--port P] [--plan P]`,
    /// or `lattice deploy s3 NAME [--plan P]` (S3 storage with generated credentials).
    Deploy {
        /// The kind (`container` or `s3`).
        kind: String,
        /// Its name: 1 to 32 of a-z, 0-9 and '-', starting with a letter.
        name: String,
        /// small (default), medium or large.
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
        /// The command to run instead of the image's (after `--`).
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
    println!("image    {}", w.image);
    if let Some(p) = w.port {
        println!("port     {p}");
    }
    if let Some(e) = &w.endpoint {
        println!("endpoint {e}");
    }
    println!("restarts {}", w.restarts);
    for e in &w.events {
        println!("  {}  {:<10} {}", e.at_ms, e.kind, e.detail);
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
            command,
            json,
        } => {
            let mut vars = BTreeMap::new();
            for kv in env {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--env {kv:?}: expected KEY=VALUE");
                };
                vars.insert(k.to_string(), v.to_string());
            }
            let body = serde_json::json!({
                "kind": kind, "name": name, "plan": plan, "image": image.unwrap_or_default(), "port": port,
                "env": vars, "command": command,
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
