//! `lattice image build|provision|inspect|qemu`: thin wrappers around `lattice-image`.

use anyhow::Context;
use clap::Subcommand;
use lattice_image::arch::Arch;
use lattice_image::layout::Sizes;
use lattice_image::plan::{self, BuildSpec};
use lattice_image::tools::SystemRunner;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Builds the provider image (raw .img and compressed .qcow2) from Debian packages.
    /// Needs root (no loop mounts are used) and the tools named if missing.
    Build {
        /// Target architecture (x86_64, arm64).
        #[arg(long, default_value_t = Arch::host().unwrap_or(Arch::X86_64))]
        arch: Arch,
        /// Work directory (root tree, partition images, the package cache).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Output directory (default: WORK_DIR/out).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The latticed binary to install (default: next to this one).
        #[arg(long)]
        latticed: Option<PathBuf>,
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Size of each root slot (A and B).
        #[arg(long, default_value_t = Sizes::default().root_mib)]
        root_mib: u64,
        /// Size of the data partition.
        #[arg(long, default_value_t = Sizes::default().data_mib)]
        data_mib: u64,
        /// Seed for the disk identifiers (default: random).
        #[arg(long)]
        seed: Option<String>,
        /// Print the plan and exit.
        #[arg(long)]
        dry_run: bool,
    },
    /// Writes the provisioning string (from `lattice tokens create`) into the config partition
    /// of a raw image, without rebuilding it.
    Provision {
        image: PathBuf,
        #[arg(
            long,
            value_name = "STRING",
            env = "LATTICE_PROVISIONING",
            hide_env_values = true
        )]
        provisioning: String,
        /// SSH public keys (authorized_keys format): turns SSH on, keys only.
        #[arg(long, value_name = "FILE")]
        ssh_key: Option<PathBuf>,
        /// A Wi-Fi network for the node to join (with --wifi-psk-file, --wifi-psk or
        /// --wifi-open).
        #[arg(long, value_name = "SSID")]
        wifi_ssid: Option<String>,
        /// File whose first line is the Wi-Fi passphrase (8 to 63 characters).
        #[arg(long, value_name = "FILE", requires = "wifi_ssid", conflicts_with_all = ["wifi_psk", "wifi_open"])]
        wifi_psk_file: Option<PathBuf>,
        /// The Wi-Fi passphrase (prefer the environment variable LATTICE_WIFI_PSK or
        /// --wifi-psk-file: command lines are visible to other local users).
        #[arg(
            long,
            value_name = "PASSPHRASE",
            requires = "wifi_ssid",
            conflicts_with = "wifi_open"
        )]
        wifi_psk: Option<String>,
        /// The Wi-Fi network has no password.
        #[arg(long, requires = "wifi_ssid")]
        wifi_open: bool,
        /// Where the node is (ISO 3166 code such as DE or US): the radio's legal channels.
        #[arg(long, value_name = "CC", requires = "wifi_ssid")]
        wifi_country: Option<String>,
    },
    /// Lists what an image contains (latticed's version, every package), from its manifest.
    Inspect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Boots an image in QEMU with the serial console here (Ctrl-A X quits). The image is not
    /// written: the VM writes to an overlay kept in --state-dir.
    Qemu {
        image: PathBuf,
        #[arg(long, default_value_t = Arch::host().unwrap_or(Arch::X86_64))]
        arch: Arch,
        /// Overlay and UEFI variables (default: ./lattice-qemu).
        #[arg(long, default_value = "lattice-qemu")]
        state_dir: PathBuf,
        /// Start from the image again (drop the overlay: a new node).
        #[arg(long)]
        fresh: bool,
        /// kvm, tcg, or auto (probe KVM, fall back to software emulation).
        #[arg(long, default_value = "auto")]
        accel: String,
        #[arg(long, default_value_t = 2048)]
        memory_mib: u32,
        /// Forward 127.0.0.1:PORT to the guest's SSH (when a key was provisioned).
        #[arg(long)]
        ssh_port: Option<u16>,
        /// The VM's disk in GiB (at least the image's size), as if the image were written to
        /// a stick this large: the data partition grows into the rest at boot. Set when the
        /// overlay is made (the first run, or with --fresh).
        #[arg(long, value_name = "GIB")]
        disk_gib: Option<u64>,
    },
}

pub fn run(cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Build {
            arch,
            work_dir,
            out,
            latticed,
            mirror,
            suite,
            root_mib,
            data_mib,
            seed,
            dry_run,
        } => {
            let latticed = match latticed {
                Some(p) => p,
                None => sibling("latticed")?,
            };
            let version = latticed_version(&latticed)?;
            let mut spec = BuildSpec::new(arch, latticed, &version);
            if let Some(w) = work_dir {
                spec.out_dir = w.join("out");
                spec.work_dir = w;
            }
            if let Some(o) = out {
                spec.out_dir = o;
            }
            spec.mirror = mirror;
            spec.suite = suite;
            spec.sizes.root_mib = root_mib;
            spec.sizes.data_mib = data_mib;
            spec.seed = match seed {
                Some(s) => s.into_bytes(),
                None => rand::random::<[u8; 16]>().to_vec(),
            };
            let plan = plan::plan(&spec)?;
            if dry_run {
                for s in &plan.steps {
                    println!("{s:?}");
                }
                return Ok(());
            }
            if !lattice_image::build::is_root() {
                return Err(lattice_image::build::BuildError::NotRoot.into());
            }
            let artifacts = lattice_image::build::execute(&plan, &mut SystemRunner::new())?;
            for a in artifacts {
                println!(
                    "{}  {} bytes ({} MiB allocated)  sha256 {}",
                    a.path.display(),
                    a.bytes,
                    a.allocated / (1024 * 1024),
                    a.sha256
                );
            }
            Ok(())
        }
        ImageCmd::Provision {
            image,
            provisioning,
            ssh_key,
            wifi_ssid,
            wifi_psk_file,
            wifi_psk,
            wifi_open,
            wifi_country,
        } => {
            let wifi = match wifi_ssid {
                None => None,
                Some(ssid) => {
                    let psk = match (wifi_psk_file, wifi_psk) {
                        (Some(p), _) => Some(
                            std::fs::read_to_string(&p)
                                .with_context(|| format!("reading {}", p.display()))?
                                .trim_start_matches('\u{feff}')
                                .lines()
                                .next()
                                .unwrap_or("")
                                .trim_end_matches('\r')
                                .to_string(),
                        ),
                        (None, Some(psk)) => Some(psk),
                        // Read here, not through clap's `env`: clap would count the variable
                        // as the flag, and an exported one would break wired-only runs.
                        (None, None) if !wifi_open => std::env::var("LATTICE_WIFI_PSK").ok(),
                        (None, None) => None,
                    };
                    if psk.is_none() && !wifi_open {
                        anyhow::bail!(
                            "--wifi-ssid needs the network's passphrase (--wifi-psk-file or \
                             LATTICE_WIFI_PSK), or --wifi-open for a network without one"
                        );
                    }
                    Some(lattice_wire::wifi::WifiConfig::new(
                        &ssid,
                        psk.as_deref(),
                        wifi_country.as_deref(),
                    )?)
                }
            };
            let authorized_keys = match ssh_key {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                ),
                None => None,
            };
            let req = lattice_image::provision::Provision {
                provisioning,
                authorized_keys,
                wifi,
            };
            lattice_image::provision::provision(&image, &req, &mut SystemRunner::new())?;
            println!(
                "provisioned {} (config partition: provisioning{}{})",
                image.display(),
                if req.authorized_keys.is_some() {
                    ", authorized_keys"
                } else {
                    ""
                },
                match &req.wifi {
                    Some(w) => format!(", wifi for {:?}", w.ssid),
                    None => String::new(),
                }
            );
            Ok(())
        }
        ImageCmd::Inspect { image, json } => {
            let r = lattice_image::inspect::inspect(&image, &mut SystemRunner::new())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for (k, v) in &r.fields {
                    println!("{k}: {v}");
                }
                println!("packages ({}):", r.packages.len());
                for (p, v) in &r.packages {
                    println!("  {p} {v}");
                }
            }
            Ok(())
        }
        ImageCmd::Qemu {
            image,
            arch,
            state_dir,
            fresh,
            accel,
            memory_mib,
            ssh_port,
            disk_gib,
        } => {
            use lattice_image::qemu::{self, QemuSpec};
            let mut spec = QemuSpec::new(arch, &image, &state_dir);
            spec.memory_mib = memory_mib;
            spec.disk_bytes = disk_gib.map(|g| g.saturating_mul(1 << 30));
            spec.accel = super::qemu_node::accel("--accel", &accel, arch)?;
            if let Some(p) = ssh_port {
                spec.forwards.push((p, 22));
            }
            qemu::prepare(&spec, fresh, &mut SystemRunner::new())?;
            eprintln!(
                "booting {} with {} (overlay {}); the guest reaches this host at {}; Ctrl-A X quits",
                image.display(),
                spec.accel.name(),
                spec.overlay.display(),
                qemu::HOST_FROM_GUEST
            );
            let status = spec.command().status().context("starting QEMU")?;
            anyhow::ensure!(status.success(), "QEMU exited with {status}");
            Ok(())
        }
    }
}

/// A binary next to the running `lattice`.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the lattice binary")?;
    let p = exe.parent().unwrap_or(Path::new(".")).join(name);
    anyhow::ensure!(
        p.exists(),
        "{} not found: build it (cargo build --release -p latticed) or pass --latticed",
        p.display()
    );
    Ok(p)
}

/// `latticed --version` prints `latticed X.Y.Z`.
fn latticed_version(latticed: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(latticed)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", latticed.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("{} --version printed {text:?}", latticed.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ImageCmd,
    }

    fn provision(extra: &[&str]) -> Result<ImageCmd, clap::Error> {
        let mut args = vec![
            "image",
            "provision",
            "/nonexistent/lattice.img",
            "--provisioning",
            "lattice1:x",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|c| c.cmd)
    }

    /// Wi-Fi mistakes are named before the image is opened, and the passphrase is never
    /// repeated back.
    #[test]
    fn wifi_flags_are_checked_first_and_name_the_mistake() {
        let e = run(provision(&["--wifi-ssid", "Home"]).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("--wifi-psk-file"), "{e:#}");
        let e =
            run(provision(&["--wifi-ssid", "Home", "--wifi-psk", "hunter2"]).unwrap()).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("8 to 63") && !e.contains("hunter2"), "{e}");
        let e =
            run(provision(&["--wifi-ssid", &"x".repeat(33), "--wifi-open"]).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("1 to 32 bytes"), "{e:#}");
        let e = run(
            provision(&["--wifi-ssid", "Home", "--wifi-psk-file", "/nonexistent/psk"]).unwrap(),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("reading /nonexistent/psk"),
            "{e:#}"
        );
        // Past the Wi-Fi checks, the provisioning string is what fails (before the image is
        // read).
        let e = run(provision(&["--wifi-ssid", "Home", "--wifi-psk", "correct horse"]).unwrap())
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("invalid provisioning string") && !e.contains("Wi-Fi"),
            "{e}"
        );
        // The passphrase may come from LATTICE_WIFI_PSK (read in this one test: tests share
        // the environment); an exported one changes nothing for a wired-only or open run.
        std::env::set_var("LATTICE_WIFI_PSK", "hunter2");
        let wired = provision(&[]);
        let open = provision(&["--wifi-ssid", "Cafe", "--wifi-open"]);
        let e = provision(&["--wifi-ssid", "Home"]).map(|c| run(c).unwrap_err());
        std::env::remove_var("LATTICE_WIFI_PSK");
        assert!(wired.is_ok(), "{wired:?}");
        assert!(open.is_ok(), "{open:?}");
        // Taken from the environment: too short, and said so without repeating it.
        let e = format!("{:#}", e.unwrap());
        assert!(e.contains("8 to 63") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn wifi_flags_need_an_ssid_and_one_kind_of_security() {
        for extra in [
            &["--wifi-psk", "correct horse"][..],
            &["--wifi-open"],
            &["--wifi-country", "DE"],
            &[
                "--wifi-ssid",
                "Home",
                "--wifi-open",
                "--wifi-psk",
                "correct horse",
            ],
        ] {
            assert!(provision(extra).is_err(), "{extra:?} was accepted");
        }
    }
}
