//! `lattice-sim`: N simulated nodes against a real fleet and broker (see the library docs).
//!
//! ```sh
//! lattice tokens create --owner ACCOUNT --uses 1000 --json | jq -r .provisioning > prov
//! lattice-sim --provisioning-file prov --nodes 1000
//! ```
//!
//! Progress goes to stderr every `--progress-secs`; with `--json`, stdout gets one JSON object
//! per progress tick and a last one with `"final": true`. Ctrl-C or SIGTERM (or `--secs`) ends
//! the run: every node disconnects cleanly, so the fleet sees no last wills.

use clap::Parser;
use lattice_sim::{run, Counters, SimConfig, Snapshot};
use lattice_wire::broker_url::BrokerUrl;
use lattice_wire::register::Provisioning;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "lattice-sim",
    version,
    about = "Runs simulated Lattice nodes (real keys, registration and MQTT) against a fleet"
)]
struct Args {
    /// File holding a provisioning string (`lattice tokens create --uses N`) with at least
    /// --nodes uses left.
    #[arg(long, env = "LATTICE_SIM_PROVISIONING_FILE")]
    provisioning_file: PathBuf,
    /// How many nodes to run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    nodes: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Seconds between heartbeats, instead of the fleet's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3600))]
    heartbeat_secs: Option<u32>,
    /// CPUs each node offers.
    #[arg(long, default_value_t = 4)]
    cpus: u32,
    /// Memory each node offers, in MiB.
    #[arg(long, default_value_t = 8192)]
    memory_mib: u64,
    /// Disk each node offers, in GiB.
    #[arg(long, default_value_t = 100)]
    disk_gib: u64,
    /// Connect to this broker (mqtt:// or mqtts://) instead of the URLs the fleet hands out.
    #[arg(long, value_name = "URL")]
    broker_url: Option<String>,
    /// MQTT keep-alive of each node, in seconds.
    #[arg(long, default_value_t = 60)]
    keep_alive_secs: u64,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long)]
    secs: Option<u64>,
    /// Seconds between progress reports.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// Progress and the final report as JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    #[serde(rename = "final")]
    last: bool,
    elapsed_secs: f64,
    nodes: u64,
    #[serde(flatten)]
    counters: &'a Snapshot,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATTICE_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lattice-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let text = std::fs::read_to_string(&args.provisioning_file).with_context(|| {
        format!(
            "reading the provisioning file {}",
            args.provisioning_file.display()
        )
    })?;
    let provisioning = Provisioning::parse(text.trim()).with_context(|| {
        format!(
            "the provisioning file {} does not hold a provisioning string",
            args.provisioning_file.display()
        )
    })?;
    let nofile = raise_nofile();
    let needed = args.nodes + 64;
    if nofile < needed {
        eprintln!(
            "lattice-sim: warning: {} nodes need about {needed} open files; this process may \
             open {nofile} (raise `ulimit -n`)",
            args.nodes
        );
    }
    let mut cfg = SimConfig::new(provisioning, args.nodes as usize);
    cfg.concurrency = args.concurrency as usize;
    cfg.cpus = args.cpus;
    cfg.memory_bytes = args.memory_mib << 20;
    cfg.disk_bytes = args.disk_gib << 30;
    cfg.heartbeat_override = args.heartbeat_secs;
    cfg.keep_alive = Duration::from_secs(args.keep_alive_secs.max(5));
    cfg.broker_override = args
        .broker_url
        .as_deref()
        .map(BrokerUrl::parse)
        .transpose()
        .context("--broker-url")?;

    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let counters = Arc::new(Counters::new());
        let (trigger, shutdown) = latticed::shutdown::channel();
        let started = Instant::now();
        let sim = tokio::spawn(run(cfg, counters.clone(), shutdown));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        let deadline = args.secs.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let mut tick = tokio::time::interval(Duration::from_secs(args.progress_secs.max(1)));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let s = counters.snapshot();
                    report(&args, started, &s, false);
                    if s.registration_failures == args.nodes {
                        eprintln!("lattice-sim: no node could register");
                        break;
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            }
        }
        trigger.trigger();
        // Nodes close their connections cleanly (bounded by latticed's link close).
        let _ = tokio::time::timeout(Duration::from_secs(10), sim).await;
        let s = counters.snapshot();
        report(&args, started, &s, true);
        Ok(if s.registered < args.nodes {
            if let Some(e) = &s.first_error {
                eprintln!("lattice-sim: first error: {e}");
            }
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn report(args: &Args, started: Instant, s: &Snapshot, last: bool) {
    let elapsed = started.elapsed().as_secs_f64();
    let rate = s.registrations_per_sec;
    if args.json {
        let r = Report {
            last,
            elapsed_secs: elapsed,
            nodes: args.nodes,
            counters: s,
        };
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    }
    let line = format!(
        "[{elapsed:>6.0} s] registered {}/{} ({rate:.0}/s, mean {:.1} ms){} · connected {} · \
         statuses {} · targets {} applied, {} refused{}",
        s.registered,
        args.nodes,
        s.registration_mean_ms,
        if s.registration_failures > 0 {
            format!(", {} failed", s.registration_failures)
        } else {
            String::new()
        },
        s.connected,
        s.statuses,
        s.targets_applied,
        s.targets_refused,
        if s.disconnects > 0 {
            format!(" · {} disconnects", s.disconnects)
        } else {
            String::new()
        },
    );
    if last {
        eprintln!("{line} (final)");
        if let Some(e) = &s.first_error {
            eprintln!("first error: {e}");
        }
    } else {
        eprintln!("{line}");
    }
}

/// Raises this process's open-file limit to its hard limit; returns the soft limit now.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}
