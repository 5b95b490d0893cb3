//! `lattice`: the fleet manager and operator CLI. All logic lives in the library.

use clap::Parser;

/// rumqttd's router logs a duplicate CONNECT, password included, at WARN: never let it through,
/// whatever `RUST_LOG` says.
const ALWAYS: &str = "rumqttd::router::routing=error";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause (`a: b: c`), not anyhow's debug form, which adds a stack
            // backtrace whenever RUST_BACKTRACE is set in the user's environment.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
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
    if !cli.command.is_server() {
        // `lattice nodes | head -1`: end quietly like other Unix tools when the reader goes
        // away, instead of panicking on the broken pipe. Not for the servers, whose writes to a
        // closed Unix socket must stay errors, not a fatal signal.
        sigpipe::reset();
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(lattice_fleet::cli::run(cli))
}
