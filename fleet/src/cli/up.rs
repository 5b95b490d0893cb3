//! `lattice up`: fleet, embedded broker (or `--broker`) and a local node on this machine.

use super::config::{default_path, CliConfig};
use super::qemu_node::{self, QemuNodeArgs};
use super::registry::{self, Registry, RegistryArgs};
use super::ServeArgs;
use crate::server::{self, RunningFleet};
use anyhow::Context;
use std::path::PathBuf;
use tokio::process::{Child, Command};

/// `registry`: the registry `lattice up` runs (or reuses); it is the gateway's upstream
/// `registry` unless `--upstream-registry` names another.
async fn start_fleet(
    serve: &ServeArgs,
    registry: Option<std::net::SocketAddr>,
) -> anyhow::Result<(RunningFleet, Option<crate::gateway::RunningGateway>)> {
    let mut gateway_args = serve.gateway.clone();
    if gateway_args.upstream_registry.is_none() {
        gateway_args.upstream_registry = registry;
    }
    // Nodes get the fleet registry's pinned images at their registry proxy (ADR 0011).
    let mut config = serve.fleet_config()?;
    config.node_registry = crate::gateway::upstream::NodeRegistry::from_flags(&gateway_args);
    let fleet = server::start(config).await?;
    let data = std::fs::canonicalize(&serve.data).unwrap_or_else(|_| serve.data.clone());
    let cfg = CliConfig {
        fleet_url: fleet.https_url.clone(),
        fleet_key: fleet.fleet_key.to_string(),
        operator_token_file: data.join("operator.token"),
        api_token: None,
        api_token_id: None,
    };
    // The instance's own copy, always; the default path only when it is free or already ours,
    // so a second instance beside the first does not take over the first one's CLI.
    cfg.save(&data.join("cli.toml"))?;
    let default = default_path();
    // Ours when absent, unreadable-and-absent, already pointing here, or left by an instance
    // whose data directory is gone.
    let ours = match CliConfig::load(&default) {
        Ok(existing) => {
            existing.operator_token_file == cfg.operator_token_file
                || !existing.operator_token_file.exists()
        }
        Err(_) => !default.exists(),
    };
    let cli_path = if ours {
        cfg.save(&default)?;
        default
    } else {
        println!(
            "note:             {} belongs to another instance; use LATTICE_CLI_CONFIG={}",
            default.display(),
            data.join("cli.toml").display()
        );
        data.join("cli.toml")
    };
    println!("fleet API:        {}", fleet.https_url);
    match &fleet.external_broker {
        None => println!("MQTT (TLS):       {}", fleet.mqtts_url),
        Some(broker) => {
            println!("MQTT broker:      {broker} (external)");
            println!("MQTT (nodes):     {}", fleet.node_broker_urls.join(", "));
        }
    }
    println!("fleet key:        {}", fleet.fleet_key);
    println!(
        "operator secret:  {} (mode 0600)",
        fleet.operator_token_path.display()
    );
    let gateway = if serve.gateway.no_gateway {
        None
    } else {
        // The tunnel listens on the API's address over UDP: nodes find it from the fleet URL.
        let gw = crate::gateway::start(
            gateway_args.clone(),
            serve.data.clone(),
            fleet.state.store.clone(),
            fleet.state.metrics.gateway.clone(),
            &crate::secrets::fleet_key(&serve.data)?,
            fleet.http_addr,
        )
        .await?;
        println!("apps (HTTP):      {}", gw.http_url("NAME--ACCOUNT"));
        println!(
            "apps (HTTPS):     https://NAME--ACCOUNT.{}:{} (certificate: {})",
            serve.gateway.apps_domain,
            gw.https_addr.port(),
            serve
                .gateway
                .apps_cert
                .clone()
                .unwrap_or_else(|| serve.data.join(crate::gateway::certs::CERT_FILE))
                .display()
        );
        println!("tunnel (QUIC):    udp://{}", gw.tunnel_addr);
        if let Some(registry) = gateway_args.upstream_registry {
            match gateway_args.node_registry_proxy {
                Some(proxy) => println!(
                    "upstreams:        registry -> {registry} (nodes pull its pinned images at {proxy})"
                ),
                None => println!("upstreams:        registry -> {registry}"),
            }
        }
        // Workload logs come through the nodes' tunnels: the API reads them via the gateway.
        let _ = fleet.state.tunnels.set(gw.gateway.tunnels().clone());
        // Views show each workload's HTTPS address.
        let _ = fleet.state.apps.set(crate::kinds::AppsEndpoint {
            domain: serve.gateway.apps_domain.clone(),
            https_port: gw.https_addr.port(),
        });
        Some(gw)
    };
    // Last: tests and scripts take this line to mean "started".
    println!("CLI config:       {}", cli_path.display());
    Ok((fleet, gateway))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

pub async fn fleet_only(serve: ServeArgs) -> anyhow::Result<()> {
    let (fleet, _gateway) = start_fleet(&serve, None).await?;
    wait_for_signal().await?;
    fleet.shutdown();
    Ok(())
}

pub async fn broker_only(
    data: &std::path::Path,
    database: Option<String>,
    mqtt: std::net::SocketAddr,
    mqtt_plain: std::net::SocketAddr,
    public_hosts: &[String],
) -> anyhow::Result<()> {
    let broker = server::start_broker_only(data, database, mqtt_plain, mqtt, public_hosts).await?;
    println!(
        "MQTT (TLS):       mqtts://{}",
        broker.tls_local_addr().unwrap_or(mqtt)
    );
    println!("MQTT (plain):     mqtt://{}", broker.local_addr());
    println!("ready");
    wait_for_signal().await?;
    broker.shutdown();
    Ok(())
}

fn latticed_path(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the lattice binary")?;
    let p = exe.with_file_name("latticed");
    anyhow::ensure!(
        p.exists(),
        "latticed not found next to {} (build it: cargo build --release --workspace, or pass --latticed PATH)",
        exe.display()
    );
    Ok(p)
}

async fn start_node(
    fleet: &RunningFleet,
    data: &std::path::Path,
    bin: PathBuf,
) -> anyhow::Result<Child> {
    let node_dir = data.join("node");
    server::prepare_data_dir(&node_dir)?;
    let provisioning_file = node_dir.join("provisioning");
    if !node_dir.join("registration.json").exists() {
        let t = crate::api::issue_token(&fleet.state, Some("local".into()), 1, 3600)
            .await
            .map_err(|e| anyhow::anyhow!("creating the local node's token: {e}"))?;
        crate::secrets::write_secret(&provisioning_file, t.provisioning.as_bytes())?;
    }
    let child = Command::new(&bin)
        .arg("--data-dir")
        .arg(&node_dir)
        .arg("--provisioning-file")
        .arg(&provisioning_file)
        .env_remove("LATTICED_PROVISIONING")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    println!(
        "local node:       {} (data in {})",
        bin.display(),
        node_dir.display()
    );
    Ok(child)
}

/// The fleet's registry: ours (or one already answering at the address), or the external one
/// named with `--registry-url`, or none.
async fn start_registry(
    args: &RegistryArgs,
    data: &std::path::Path,
) -> anyhow::Result<Option<Registry>> {
    if args.no_registry {
        match &args.registry_url {
            Some(url) => println!("registry:         {url} (external)"),
            None => println!("registry:         none (--no-registry)"),
        }
        return Ok(None);
    }
    server::prepare_data_dir(data)?;
    match registry::ensure(args.addr, &data.join("registry"), &args.registry_bin).await {
        Ok(registry) => {
            println!("registry:         {}", registry.describe());
            Ok(Some(registry))
        }
        // A fresh machine without Debian's docker-registry still gets a whole Lattice: the
        // registry is what `lattice images` and local images need, not the fleet itself.
        Err(e) if !args.registry_bin.exists() => {
            println!("registry:         none ({e:#})");
            tracing::warn!(error = %format!("{e:#}"), "running without the fleet's registry");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub async fn up(
    mut serve: ServeArgs,
    with_node: bool,
    latticed: Option<PathBuf>,
    registry_args: RegistryArgs,
    qemu_args: QemuNodeArgs,
) -> anyhow::Result<()> {
    let bin = if with_node {
        Some(latticed_path(latticed)?)
    } else {
        None
    };
    let qemu = qemu_node::prepare(&qemu_args, &mut serve)?;
    // Before the fleet: an address held by something else fails at once, with nothing to undo.
    let registry = start_registry(&registry_args, &serve.data).await?;
    let (fleet, _gateway) = start_fleet(&serve, registry.as_ref().map(Registry::addr)).await?;
    let mut child = match bin {
        Some(bin) => Some(start_node(&fleet, &serve.data, bin).await?),
        None => None,
    };
    let mut vm = match qemu {
        Some(p) => Some(qemu_node::start(p, &fleet).await?),
        None => None,
    };
    println!("ready: try `lattice nodes`");
    let exited = async {
        match child.as_mut() {
            Some(c) => c.wait().await,
            None => std::future::pending().await,
        }
    };
    let vm_exited = async {
        match vm.as_mut() {
            Some(v) => v.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = wait_for_signal() => r?,
        status = exited => eprintln!("local node exited: {status:?}"),
        status = vm_exited => eprintln!("QEMU node exited: {status:?}"),
    }
    if let Some(v) = vm {
        v.stop().await;
    }
    if let Some(mut c) = child {
        if let Some(pid) = c.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.wait()).await;
    }
    fleet.shutdown();
    if let Some(r) = registry {
        r.stop().await;
    }
    Ok(())
}
