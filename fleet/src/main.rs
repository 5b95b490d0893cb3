//! `lattice`: the fleet manager and operator CLI. All logic lives in the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,rumqttd=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = lattice_fleet::cli::Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(lattice_fleet::cli::run(cli))
}
