//! `lattice`: the fleet manager and operator CLI. All logic lives in the library.

use clap::Parser;

/// rumqttd's router logs a duplicate CONNECT, password included, at WARN: never let it through,
/// whatever `RUST_LOG` says.
const ALWAYS: &str = "rumqttd::router::routing=error";

fn main() -> anyhow::Result<()> {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "info,sqlx=warn,rumqttd=warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{base},{ALWAYS}"))
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("info,{ALWAYS}")))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = lattice_fleet::cli::Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(lattice_fleet::cli::run(cli))
}
