//! The `lattice` command line: `up`, `fleet`, `broker`, `tokens`, `nodes`, `node`.

mod client;
pub mod config;
mod show;
mod up;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lattice",
    version,
    about = "Lattice: turn spare machines into a cloud"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args, Clone)]
pub struct ServeArgs {
    /// Data directory (database, keys, broker certificate).
    #[arg(long, default_value = "./lattice-data")]
    pub data: PathBuf,
    /// HTTPS API address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub http: SocketAddr,
    /// MQTT-over-TLS address nodes connect to.
    #[arg(long, default_value = "127.0.0.1:8883")]
    pub mqtt: SocketAddr,
    /// Plain MQTT listener on loopback (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub mqtt_plain: SocketAddr,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long)]
    pub database: Option<String>,
    /// Host names/addresses nodes use to reach the fleet (first one goes into URLs).
    #[arg(long = "public-host")]
    pub public_hosts: Vec<String>,
    /// Seconds between node heartbeats (1 to 3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub heartbeat_secs: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs fleet, embedded broker and a local node on this machine.
    Up {
        #[command(flatten)]
        serve: ServeArgs,
        /// Do not start the local node.
        #[arg(long)]
        no_node: bool,
        /// Path of the latticed binary (default: next to this one).
        #[arg(long)]
        latticed: Option<PathBuf>,
    },
    /// Runs the fleet manager and its embedded broker (no local node).
    Fleet {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Runs the embedded MQTT broker alone, authenticating nodes against the fleet's store
    /// (same --data and --database as the fleet).
    Broker {
        #[arg(long, default_value = "./lattice-data")]
        data: PathBuf,
        #[arg(long)]
        database: Option<String>,
        /// MQTT-over-TLS address.
        #[arg(long, default_value = "127.0.0.1:8883")]
        mqtt: SocketAddr,
        /// Plain MQTT address (keep it on loopback: passwords cross it in clear).
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt_plain: SocketAddr,
        #[arg(long = "public-host", default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
        public_hosts: Vec<String>,
    },
    /// Provisioning tokens.
    Tokens {
        #[command(subcommand)]
        cmd: TokensCmd,
    },
    /// Lists nodes.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// One node.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Creates a token and prints the provisioning string (fleet URL, token, fleet key).
    Create {
        /// The provider (owner) the node will belong to.
        #[arg(long)]
        owner: Option<String>,
        /// How many nodes may use it.
        #[arg(long, default_value_t = 1)]
        uses: u64,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Lists tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Shows one node.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revokes a node.
    Revoke { id: String },
}

impl ServeArgs {
    pub fn fleet_config(&self) -> crate::server::FleetConfig {
        let mut cfg = crate::server::FleetConfig::local(self.data.clone());
        cfg.http = self.http;
        cfg.mqtts = self.mqtt;
        cfg.mqtt_plain = self.mqtt_plain;
        cfg.database = self.database.clone();
        if !self.public_hosts.is_empty() {
            cfg.public_hosts = self.public_hosts.clone();
        }
        cfg.heartbeat_secs = self.heartbeat_secs;
        cfg
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up {
            serve,
            no_node,
            latticed,
        } => up::up(serve, !no_node, latticed).await,
        Command::Fleet { serve } => up::fleet_only(serve).await,
        Command::Broker {
            data,
            database,
            mqtt,
            mqtt_plain,
            public_hosts,
        } => up::broker_only(&data, database, mqtt, mqtt_plain, &public_hosts).await,
        Command::Tokens { cmd } => show::tokens(cmd).await,
        Command::Nodes { json } => show::nodes(json).await,
        Command::Node { cmd } => show::node(cmd).await,
    }
}
