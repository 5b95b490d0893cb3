//! The `latticed` binary: parse flags, load and validate the configuration, set up logging
//! and signal handling, then hand over to [`latticed::daemon::run`].

use anyhow::Context;
use clap::Parser;
use latticed::config::{Config, Overrides};
use std::path::PathBuf;
use std::time::Instant;

/// The Lattice node supervisor.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); every key is optional.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for keys, registration and queued messages.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Provisioning string from `lattice tokens create` (prefer the environment variable
    /// or a file: command lines are visible to other local users).
    #[arg(
        long,
        value_name = "STRING",
        env = "LATTICED_PROVISIONING",
        hide_env_values = true
    )]
    provisioning: Option<String>,
    /// File holding the provisioning string.
    #[arg(long, value_name = "FILE", conflicts_with = "provisioning")]
    provisioning_file: Option<PathBuf>,
    /// Print the default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Write wpa_supplicant's configuration (to TO) from the config partition's Wi-Fi file
    /// (FROM) and exit; the image's `lattice-wifi@.service` runs this.
    #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
    write_wpa_config: Option<Vec<PathBuf>>,
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", Config::default_toml());
        return Ok(());
    }
    if let Some([from, to]) = cli.write_wpa_config.as_deref() {
        match latticed::wifi::write_wpa_config(from, to) {
            Ok(wifi) => {
                println!("Wi-Fi: network {:?} written to {}", wifi.ssid, to.display());
                return Ok(());
            }
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(latticed::wifi::EXIT_CONFIG);
            }
        }
    }
    let mut config = Config::load(cli.config.as_deref())?;
    config.apply(Overrides {
        data_dir: cli.data_dir,
        provisioning: cli.provisioning,
        provisioning_file: cli.provisioning_file,
    });
    let settings = config.validate()?;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => settings.log.clone(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).context("log filter")?)
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %settings.data_dir.display(),
        "latticed starting"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (trigger, shutdown) = latticed::shutdown::channel();
        let signals = tokio::spawn(on_signals(trigger));
        let result = latticed::daemon::run(&settings, started, shutdown).await;
        signals.abort();
        result
    })?;
    tracing::info!("latticed stopped");
    Ok(())
}

/// SIGINT or SIGTERM: shut down cleanly. A second one: exit at once.
async fn on_signals(trigger: latticed::shutdown::ShutdownTrigger) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n > 0 {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
        tracing::info!("shutting down");
        trigger.trigger();
    }
    Ok(())
}
