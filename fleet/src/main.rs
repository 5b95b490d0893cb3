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
    } else {
        raise_open_file_limit();
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(lattice_fleet::cli::run(cli))
}

/// Every node is a socket, three through the embedded broker's TLS front end (device socket,
/// loopback hop, rumqttd's side): take the hard open-file limit instead of the usual soft
/// 1,024, as a server that holds thousands of connections should. Says so when it stays low.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let now = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            hard
        } else {
            soft
        };
        if now < 32_768 {
            eprintln!(
                "note: this process may open {now} files; a node connected to the embedded \
                 broker takes three, so it can hold about {} nodes (raise `ulimit -n` or \
                 systemd's LimitNOFILE, or use an external broker)",
                now.saturating_sub(1_000) / 3
            );
        }
    }
}
