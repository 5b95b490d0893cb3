//! The `lattice` command line: `up`, `fleet`, `broker`, `tokens`, `nodes`, `node`.

mod account;
mod client;
pub mod config;
mod deploy;
mod explain;
mod image;
mod images;
mod node_lifecycle;
mod qemu_node;
pub mod registry;
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

impl Command {
    /// The long-running servers (`up`, `fleet`, `gateway`), as against the commands that print
    /// and exit.
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            Command::Up { .. } | Command::Fleet { .. } | Command::Gateway { .. }
        )
    }
}

#[derive(Debug, clap::Args, Clone)]
pub struct ServeArgs {
    /// Data directory (database, keys, broker certificate).
    #[arg(long, default_value = "./lattice-data")]
    pub data: PathBuf,
    /// HTTPS API address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub http: SocketAddr,
    /// MQTT-over-TLS address nodes connect to (embedded broker).
    #[arg(long, default_value = "127.0.0.1:8883")]
    pub mqtt: SocketAddr,
    /// Plain MQTT listener on loopback (embedded broker; port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub mqtt_plain: SocketAddr,
    /// Use this external MQTT broker instead of the embedded one: mqtt://HOST:PORT, or
    /// mqtts://HOST:PORT (the broker must then serve the fleet's certificate). On Mosquitto the
    /// fleet manages node accounts through the dynamic-security plugin.
    #[arg(long, value_name = "URL", conflicts_with_all = ["mqtt", "mqtt_plain"],
        requires_all = ["broker_user", "broker_password_file"])]
    pub broker: Option<String>,
    /// The fleet's user on the external broker (with dynamic-security admin rights).
    #[arg(long, value_name = "USER", requires = "broker")]
    pub broker_user: Option<String>,
    /// File whose first line is that user's password (not readable by others).
    #[arg(long, value_name = "FILE", requires = "broker")]
    pub broker_password_file: Option<PathBuf>,
    /// Repeatable. Broker URLs handed to nodes at registration (default: the --broker URL).
    /// mqtts:// URLs must serve the fleet's certificate: nodes pin the fleet key.
    #[arg(long = "node-broker-url", value_name = "URL", requires = "broker")]
    pub node_broker_urls: Vec<String>,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long)]
    pub database: Option<String>,
    /// Host names/addresses nodes use to reach the fleet (first one goes into URLs).
    #[arg(long = "public-host")]
    pub public_hosts: Vec<String>,
    /// Seconds between node heartbeats (1 to 3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub heartbeat_secs: u32,
    /// Who may create accounts: `open` (anyone, as consumer or provider) or `operators`.
    #[arg(long, value_enum, default_value = "open")]
    pub signup: crate::accounts::SignupPolicy,
    /// Seconds a node may stay offline before its stateless workloads are rescheduled on
    /// other nodes.
    #[arg(long, default_value_t = crate::lifecycle::DEFAULT_GRACE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub node_lost_grace_secs: u64,
    /// API requests (under /api/v1) handled at once; past it a request is answered 503 with
    /// Retry-After at once instead of waiting in a queue. /healthz and /metrics never count.
    #[arg(long, default_value_t = crate::api::MAX_IN_FLIGHT as u32,
        value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_in_flight: u32,
    /// Image of the `s3` workload kind, pinned by digest (e.g. the `LATTICE_S3_IMAGE` that
    /// scripts/test-images writes); without it `lattice deploy s3` is refused.
    #[arg(long, value_name = "REF", env = "LATTICE_S3_IMAGE")]
    pub s3_image: Option<String>,
    #[command(flatten)]
    pub gateway: crate::gateway::GatewayArgs,
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
        #[command(flatten)]
        registry: registry::RegistryArgs,
        #[command(flatten)]
        qemu: qemu_node::QemuNodeArgs,
    },
    /// Runs the fleet manager and its embedded broker, or uses an external one with --broker
    /// (no local node).
    Fleet {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Runs the gateway alone (workload traffic and node tunnels), on the fleet's store and
    /// key (same --data and --database); run the fleet with --no-gateway.
    Gateway {
        #[arg(long, default_value = "./lattice-data")]
        data: PathBuf,
        #[arg(long)]
        database: Option<String>,
        /// UDP address of the tunnel listener: nodes use the fleet URL's host and port.
        #[arg(long, default_value = "127.0.0.1:8443")]
        tunnel: SocketAddr,
        /// Plain HTTP listener for /metrics (keep it private).
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics: SocketAddr,
        #[command(flatten)]
        gateway: crate::gateway::GatewayArgs,
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
    #[command(flatten)]
    Account(account::AccountCmd),
    #[command(flatten)]
    Workload(deploy::WorkloadCmd),
    /// The provider image: build, provision, inspect, boot in QEMU.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Workload images in the fleet's registry: push a local one, build the project's own.
    Images {
        #[command(subcommand)]
        cmd: images::ImagesCmd,
    },
    /// The fleet's signing key, the one every node pins: rotate it without re-provisioning.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Backs up a fleet, running or not: its database (SQLite snapshot) and the keys that make
    /// it the same fleet to its nodes, into a new directory with a checksummed manifest.
    Backup {
        /// The fleet's data directory.
        #[arg(long, default_value = "lattice-data")]
        data: PathBuf,
        /// The fleet's --database when not the SQLite default (PostgreSQL: keys only; back the
        /// database up with pg_dump).
        #[arg(long, env = "LATTICE_DATABASE", hide_env_values = true)]
        database: Option<String>,
        /// The backup directory to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restores a backup into a (stopped) fleet's data directory, after checking every file.
    Restore {
        /// The backup directory.
        #[arg(long, required_unless_present = "after_pg_restore")]
        from: Option<PathBuf>,
        /// The data directory to restore into.
        #[arg(long, default_value = "lattice-data")]
        data: PathBuf,
        /// If the directory holds a fleet already, move its files to pre-restore-<time>/.
        #[arg(long)]
        set_aside: bool,
        /// Only check the backup; change nothing.
        #[arg(long)]
        verify_only: bool,
        /// PostgreSQL: after `pg_restore` of the fleet's database, make it safe to run against
        /// nodes that went on after the backup (needs --database).
        #[arg(long, requires = "database")]
        after_pg_restore: bool,
        /// The fleet's PostgreSQL database, with --after-pg-restore.
        #[arg(long, env = "LATTICE_DATABASE", hide_env_values = true)]
        database: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Makes a new fleet key and the statement "new key, signed by the old one" (offline,
    /// against the data directory). Restart the fleet afterwards: its certificates then carry
    /// the whole chain and every node moves its pin at its next connection.
    Rotate {
        /// The fleet's data directory.
        #[arg(long, default_value = "lattice-data")]
        data: PathBuf,
    },
    /// Shows the fleet key and its rotation chain.
    Show {
        /// The fleet's data directory.
        #[arg(long, default_value = "lattice-data")]
        data: PathBuf,
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
    /// Cordons a node: no new work is placed on it; what runs keeps running.
    Cordon { id: String },
    /// Uncordons a node: it takes new work again (stops a drain or decommission).
    Uncordon { id: String },
    /// Drains a node: cordons it and moves its movable workloads to other nodes (each new copy
    /// runs before the old one is removed); waits, then lists what could not move and why.
    Drain {
        id: String,
        /// Seconds to wait for the moves (0: do not wait).
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Sets what you offer with a node (replaces the whole offer): region, labels, storage
    /// classes, 24/7 or not, and the asking price per core-hour.
    Offer {
        id: String,
        #[arg(long)]
        region: Option<String>,
        /// Repeatable: KEY=VALUE.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Repeatable: ssd, hdd or nvme.
        #[arg(long = "storage-class", value_name = "CLASS")]
        storage_classes: Vec<String>,
        /// The node keeps availability windows: it takes no always-on work.
        #[arg(long)]
        part_time: bool,
        /// Asking price per core-hour, in the fleet's smallest currency unit.
        #[arg(long, default_value_t = 0)]
        price: u64,
    },
    /// Decommissions a node: drains it, then revokes it once nothing is left on it.
    Decommission {
        id: String,
        /// Seconds to wait for the drain and the revocation (0: do not wait).
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
}

impl ServeArgs {
    pub fn fleet_config(&self) -> anyhow::Result<crate::server::FleetConfig> {
        let mut cfg = crate::server::FleetConfig::local(self.data.clone());
        if let Some(url) = &self.broker {
            // clap guarantees both with --broker.
            let (Some(user), Some(file)) = (&self.broker_user, &self.broker_password_file) else {
                anyhow::bail!("--broker needs --broker-user and --broker-password-file");
            };
            cfg.broker = Some(crate::broker::external::ExternalBroker::from_flags(
                url,
                user,
                file,
                &self.node_broker_urls,
            )?);
        }
        cfg.http = self.http;
        cfg.mqtts = self.mqtt;
        cfg.mqtt_plain = self.mqtt_plain;
        cfg.database = self.database.clone();
        if !self.public_hosts.is_empty() {
            cfg.public_hosts = self.public_hosts.clone();
        }
        cfg.heartbeat_secs = self.heartbeat_secs;
        cfg.signup = self.signup;
        cfg.node_lost_grace = std::time::Duration::from_secs(self.node_lost_grace_secs);
        cfg.max_in_flight = self.max_in_flight as usize;
        if let Some(image) = &self.s3_image {
            anyhow::ensure!(
                image.contains("@sha256:"),
                "--s3-image {image:?} must be pinned by digest (registry/repo@sha256:…)"
            );
        }
        cfg.kinds.s3_image = self.s3_image.clone();
        Ok(cfg)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up {
            serve,
            no_node,
            latticed,
            registry,
            qemu,
        } => up::up(serve, !no_node, latticed, registry, qemu).await,
        Command::Fleet { serve } => up::fleet_only(serve).await,
        Command::Gateway {
            data,
            database,
            tunnel,
            metrics,
            gateway,
        } => crate::gateway::run_alone(gateway, data, database, tunnel, metrics).await,
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
        Command::Account(cmd) => account::run(cmd).await,
        Command::Workload(cmd) => deploy::run(cmd).await,
        Command::Image { cmd } => tokio::task::block_in_place(|| image::run(cmd)),
        Command::Images { cmd } => images::run(cmd).await,
        Command::Keys {
            cmd: KeysCmd::Rotate { data },
        } => {
            let _lock = crate::data_lock::acquire(&data)?;
            let r = crate::rotation::rotate(&data)?;
            println!("old fleet key:    {}", r.old);
            println!("new fleet key:    {} (epoch {})", r.new.key, r.new.epoch);
            println!(
                "rotation chain:   {} statements in {}",
                r.chain_len,
                data.join(crate::rotation::CHAIN_FILE).display()
            );
            println!(
                "next: restart the fleet (every replica, with this fleet.key and {}), then back it up",
                crate::rotation::CHAIN_FILE
            );
            Ok(())
        }
        Command::Keys {
            cmd: KeysCmd::Show { data },
        } => {
            if !data.join("fleet.key").exists() {
                anyhow::bail!("{} holds no fleet (no fleet.key)", data.display());
            }
            let (key, chain) = crate::rotation::load(&data)?;
            println!(
                "fleet key: {} (epoch {})",
                key.public(),
                chain.statements.last().map_or(0, |s| s.epoch)
            );
            for s in &chain.statements {
                println!(
                    "epoch {}: {} -> {} (issued {} ms)",
                    s.epoch, s.old_key, s.new_key, s.issued_ms
                );
            }
            Ok(())
        }
        Command::Backup {
            data,
            database,
            out,
        } => {
            let m = crate::backup::backup(&data, database.as_deref(), &out).await?;
            println!(
                "backup {}: {} files, schema {}{}",
                out.display(),
                m.files.len(),
                m.schema_version,
                if m.files.contains_key(crate::backup::DB_FILE) {
                    ""
                } else {
                    " (keys only: back the PostgreSQL database up with pg_dump)"
                }
            );
            Ok(())
        }
        Command::Restore {
            after_pg_restore: true,
            database: Some(database),
            ..
        } => {
            let n = crate::backup::after_restore(&database).await?;
            println!("{n} nodes will be sent their restored targets");
            Ok(())
        }
        Command::Restore {
            from,
            data,
            set_aside,
            verify_only,
            ..
        } => {
            let from = anyhow::Context::context(from, "--from BACKUP_DIR is needed")?;
            let m = if verify_only {
                crate::backup::verify(&from).await?
            } else {
                crate::backup::restore(&from, &data, set_aside).await?
            };
            let what = if verify_only {
                "verified".to_string()
            } else {
                format!("restored into {}", data.display())
            };
            println!(
                "backup {} {what}: {} files, schema {}",
                from.display(),
                m.files.len(),
                m.schema_version
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fleet keys are base64url: one in 32 starts with `-` and must still parse as a value.
    #[test]
    fn a_fleet_key_starting_with_a_dash_is_a_value_not_a_flag() {
        let cli = Cli::try_parse_from([
            "lattice",
            "signup",
            "--email",
            "ann@example.org",
            "--fleet",
            "https://127.0.0.1:8443",
            "--fleet-key",
            "-vX0a9",
        ])
        .expect("parses");
        let Command::Account(account::AccountCmd::Signup { fleet, .. }) = cli.command else {
            panic!("not a signup: {:?}", cli.command);
        };
        assert_eq!(fleet.fleet_key.as_deref(), Some("-vX0a9"));
    }

    fn fleet_args(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["lattice", "fleet"].iter().chain(extra))?;
        let Command::Fleet { serve } = cli.command else {
            panic!("not fleet: {:?}", cli.command);
        };
        Ok(serve)
    }

    #[test]
    fn max_in_flight_defaults_to_the_constant_reaches_the_config_and_is_bounded() {
        let cfg = fleet_args(&[]).unwrap().fleet_config().unwrap();
        assert_eq!(cfg.max_in_flight, crate::api::MAX_IN_FLIGHT);
        let cfg = fleet_args(&["--max-in-flight", "32"])
            .unwrap()
            .fleet_config()
            .unwrap();
        assert_eq!(cfg.max_in_flight, 32);
        for bad in ["0", "65537", "many"] {
            let e = fleet_args(&["--max-in-flight", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--max-in-flight"), "{bad}: {e}");
        }
    }

    fn up_args(extra: &[&str]) -> Result<(ServeArgs, qemu_node::QemuNodeArgs), clap::Error> {
        let cli = Cli::try_parse_from(["lattice", "up"].iter().chain(extra))?;
        let Command::Up { serve, qemu, .. } = cli.command else {
            panic!("not up: {:?}", cli.command);
        };
        Ok((serve, qemu))
    }

    #[test]
    fn a_qemu_node_adds_the_guests_name_for_the_host_and_refuses_a_bad_image() {
        let (mut serve, qemu) = up_args(&[]).unwrap();
        assert!(qemu_node::prepare(&qemu, &mut serve).unwrap().is_none());
        // The QEMU flags mean nothing without an image.
        assert!(up_args(&["--qemu-fresh"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.img");
        std::fs::write(&junk, vec![7u8; 1 << 16]).unwrap();
        let (mut serve, qemu) = up_args(&["--qemu-node", junk.to_str().unwrap()]).unwrap();
        let e = format!("{:#}", qemu_node::prepare(&qemu, &mut serve).err().unwrap());
        assert!(e.contains("junk.img"), "{e}");
        let qcow = dir.path().join("x.qcow2");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
        let (mut serve, qemu) = up_args(&["--qemu-node", qcow.to_str().unwrap()]).unwrap();
        let e = format!("{:#}", qemu_node::prepare(&qemu, &mut serve).err().unwrap());
        assert!(e.contains("raw image"), "{e}");
        let (mut serve, qemu) =
            up_args(&["--qemu-node", "x.img", "--http", "192.168.1.5:8443"]).unwrap();
        let e = format!("{:#}", qemu_node::prepare(&qemu, &mut serve).err().unwrap());
        assert!(e.contains("loopback"), "{e}");
    }
}
