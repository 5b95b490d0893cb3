//! `lattice up --qemu-node IMAGE`: a provider image booted in QEMU as one more node of the
//! local fleet, the hobbyist's way to try the image without a spare machine.
//!
//! The image itself is never written: the first run copies it (sparse) into
//! `DATA/qemu-node/node.img` and provisions the copy with a token of this fleet whose URL
//! names [`HOST_FROM_GUEST`], the address at which a QEMU user-mode guest reaches the host's
//! loopback. The guest writes to an overlay beside it, so later runs boot the same node (its
//! identity is on the overlay's data partition) until `--qemu-fresh`. The fleet lists
//! `HOST_FROM_GUEST` among its public hosts, so the node's broker URL names it too
//! (`api::register::broker_urls_for`); the tunnel is found from the fleet URL.

use crate::server::RunningFleet;
use anyhow::Context;
use lattice_image::arch::Arch;
use lattice_image::qemu::{self, Accel, QemuSpec, Serial, HOST_FROM_GUEST};
use lattice_image::tools::SystemRunner;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Child;

/// How long the provisioning token of a QEMU node stays valid: long enough that a first run
/// stopped before the guest registered still registers on the next one.
const TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// How long an orderly power-off may take before QEMU is killed (about 25 s under software
/// emulation was measured; the rest is margin for a loaded machine).
const POWER_OFF_WAIT: Duration = Duration::from_secs(120);
/// The guest's disk unless `--qemu-disk-gib` says otherwise (room for an `s3` workload's
/// volume: the fleet offers half of a node's free disk; the overlay stays sparse).
const DEFAULT_DISK_GIB: u64 = 16;

#[derive(Debug, clap::Args, Clone, Default)]
pub struct QemuNodeArgs {
    /// Also boot this provider image (the raw .img `lattice image build` writes) in QEMU as a
    /// node of this fleet. The image is not written: it is copied to DATA/qemu-node once and
    /// provisioned there; the serial console goes to DATA/qemu-node/serial.log.
    #[arg(long, value_name = "IMAGE")]
    pub qemu_node: Option<PathBuf>,
    /// kvm, tcg, or auto (probe KVM, fall back to software emulation).
    #[arg(long, default_value = "auto", requires = "qemu_node")]
    pub qemu_accel: String,
    /// The QEMU node's memory.
    #[arg(long, default_value_t = 2048, requires = "qemu_node")]
    pub qemu_memory_mib: u32,
    /// The QEMU node's disk in GiB (default 16, or the image's size if larger), set when its
    /// overlay is made (the first run, or with --qemu-fresh).
    #[arg(long, value_name = "GIB", requires = "qemu_node")]
    pub qemu_disk_gib: Option<u64>,
    /// Start the QEMU node from the image again: a new copy, a new token, a new node (the old
    /// one stays in the fleet until revoked).
    #[arg(long, requires = "qemu_node")]
    pub qemu_fresh: bool,
}

/// A QEMU node's files under the fleet's data directory.
struct Paths {
    dir: PathBuf,
    copy: PathBuf,
    serial: PathBuf,
    monitor: PathBuf,
}

impl Paths {
    fn new(data: &Path) -> Paths {
        let dir = data.join("qemu-node");
        Paths {
            copy: dir.join("node.img"),
            serial: dir.join("serial.log"),
            monitor: dir.join("monitor.sock"),
            dir,
        }
    }
}

/// Checked before the fleet starts, so a wrong image or a missing tool fails at once.
pub struct Prepared {
    image: PathBuf,
    spec: QemuSpec,
    paths: Paths,
    fresh: bool,
}

/// The accelerator `flag` asked for: kvm, tcg, or auto (probe KVM, else software emulation).
/// Shared by `lattice image qemu --accel` and `lattice up --qemu-accel`.
pub(super) fn accel(flag: &str, name: &str, arch: Arch) -> anyhow::Result<Accel> {
    Ok(match name {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        "auto" if qemu::probe_kvm(arch, Duration::from_secs(8)) => Accel::Kvm,
        "auto" => Accel::Tcg,
        other => anyhow::bail!("{flag} must be kvm, tcg or auto, not {other}"),
    })
}

/// The fleet must be reachable from the guest: QEMU's user-mode network sends what the guest
/// addresses to `HOST_FROM_GUEST` to the host's loopback.
fn check_reachable(http: std::net::SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        http.ip().is_loopback() || http.ip().is_unspecified(),
        "--qemu-node needs the fleet API on loopback or 0.0.0.0 (the guest reaches the host's \
         loopback at {HOST_FROM_GUEST}), not {http}"
    );
    Ok(())
}

/// The monitor's Unix socket path must fit `sun_path` (108 bytes with its NUL) and pass
/// through QEMU's option syntax (a comma would end the option).
fn check_monitor_path(p: &Path) -> anyhow::Result<()> {
    let len = p.as_os_str().len();
    anyhow::ensure!(
        len <= 100 && !p.to_string_lossy().contains(','),
        "--qemu-node keeps its QEMU monitor socket at {} ({len} bytes), which a Unix socket \
         cannot use (at most 100 bytes, no comma): use a shorter --data",
        p.display()
    );
    Ok(())
}

/// Checks the image and QEMU's tools; adds `HOST_FROM_GUEST` to the fleet's public hosts.
pub fn prepare(
    args: &QemuNodeArgs,
    serve: &mut super::ServeArgs,
) -> anyhow::Result<Option<Prepared>> {
    let Some(image) = args.qemu_node.clone() else {
        return Ok(None);
    };
    check_reachable(serve.http)?;
    anyhow::ensure!(
        !lattice_image::gpt::is_qcow2(&image),
        "--qemu-node needs the raw image (IMAGE.img), not a qcow2: its config partition is \
         written with this fleet's token"
    );
    // The same checks `lattice image qemu` makes, on the image as given.
    let table = lattice_image::gpt::GptTable::read(&image)
        .with_context(|| format!("--qemu-node {}", image.display()))?;
    table
        .find(lattice_image::layout::Role::RootA.part_label(), &image)
        .with_context(|| format!("--qemu-node {}", image.display()))?;
    use lattice_image::tools::Runner;
    let arch = Arch::host().unwrap_or(Arch::X86_64);
    SystemRunner::new().require(&["qemu-img", arch.qemu_binary().0, "mcopy"])?;
    let (code, vars, package) = arch.uefi_firmware();
    for f in [&code, &vars] {
        anyhow::ensure!(
            f.exists(),
            "--qemu-node needs the UEFI firmware {} (Debian package {package})",
            f.display()
        );
    }
    let paths = Paths::new(&serve.data);
    check_monitor_path(&paths.monitor)?;
    let mut spec = QemuSpec::new(arch, &paths.copy, &paths.dir);
    spec.accel = accel("--qemu-accel", &args.qemu_accel, arch)?;
    spec.memory_mib = args.qemu_memory_mib;
    let image_bytes = std::fs::metadata(&image)?.len();
    spec.disk_bytes = Some(match args.qemu_disk_gib {
        Some(g) => g.saturating_mul(1 << 30),
        None => (DEFAULT_DISK_GIB << 30).max(image_bytes),
    });
    spec.serial = Serial::File(paths.serial.clone());
    spec.monitor = Some(paths.monitor.clone());
    if serve.public_hosts.is_empty() {
        serve.public_hosts = crate::server::FleetConfig::local(serve.data.clone()).public_hosts;
    }
    if !serve.public_hosts.iter().any(|h| h == HOST_FROM_GUEST) {
        serve.public_hosts.push(HOST_FROM_GUEST.to_string());
    }
    Ok(Some(Prepared {
        image,
        spec,
        paths,
        fresh: args.qemu_fresh,
    }))
}

/// A running QEMU node.
pub struct QemuNode {
    child: Child,
    monitor: PathBuf,
}

/// The provisioning string for the guest: this fleet's, with the URL the guest dials.
fn guest_provisioning(fleet: &RunningFleet, provisioning: &str) -> anyhow::Result<String> {
    let mut p = lattice_wire::register::Provisioning::parse(provisioning)?;
    p.url = format!("https://{HOST_FROM_GUEST}:{}", fleet.http_addr.port());
    Ok(p.encode())
}

/// Copies and provisions the image (first run or `--qemu-fresh`), then boots it.
pub async fn start(p: Prepared, fleet: &RunningFleet) -> anyhow::Result<QemuNode> {
    let Prepared {
        image,
        spec,
        paths,
        fresh,
    } = p;
    crate::server::prepare_data_dir(&paths.dir)?;
    let new_node = fresh || !paths.copy.exists();
    if new_node {
        // A new node: nothing of the old one may be booted on top of the new copy.
        for old in [&spec.overlay, &spec.vars, &paths.copy] {
            match std::fs::remove_file(old) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", old.display()))
                }
                _ => {}
            }
        }
        let t = crate::api::issue_token(&fleet.state, Some("qemu".into()), 1, TOKEN_TTL_SECS)
            .await
            .map_err(|e| anyhow::anyhow!("creating the QEMU node's token: {e}"))?;
        let provisioning = guest_provisioning(fleet, &t.provisioning)?;
        println!("QEMU node:        copying {} …", image.display());
        let (src, copy) = (image.clone(), paths.copy.clone());
        tokio::task::spawn_blocking(move || copy_and_provision(&src, &copy, provisioning))
            .await??;
    }
    {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || {
            qemu::prepare(&spec, new_node, &mut SystemRunner::new())
        })
        .await??;
    }
    // QEMU appends to the file; a fresh log per run is easier to read.
    let _ = std::fs::remove_file(&paths.serial);
    let _ = std::fs::remove_file(&paths.monitor);
    // Its own process group: Ctrl-C in the terminal reaches `lattice up`, which powers the
    // guest off in order, and not QEMU, which would stop at once.
    let mut command = spec.command();
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = tokio::process::Command::from(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting QEMU")?;
    println!(
        "QEMU node:        {} ({}, {}; serial console in {})",
        image.display(),
        spec.accel.name(),
        if new_node {
            "a new node"
        } else {
            "the same node as last time"
        },
        paths.serial.display()
    );
    Ok(QemuNode {
        child,
        monitor: paths.monitor,
    })
}

/// The copy is made under a temporary name and renamed once provisioned, so an interrupted
/// run leaves no half-made node behind.
fn copy_and_provision(src: &Path, copy: &Path, provisioning: String) -> anyhow::Result<()> {
    let partial = copy.with_extension("img.partial");
    let made = copy_and_provision_to(src, &partial, provisioning).and_then(|()| {
        std::fs::rename(&partial, copy)
            .with_context(|| format!("renaming {} to {}", partial.display(), copy.display()))
    });
    if made.is_err() {
        // It may hold the token: nothing half-made is left behind.
        let _ = std::fs::remove_file(&partial);
    }
    made
}

fn copy_and_provision_to(src: &Path, partial: &Path, provisioning: String) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(partial)
        .status()
        .context("running cp")?;
    anyhow::ensure!(
        status.success(),
        "copying {} to {} failed ({status})",
        src.display(),
        partial.display()
    );
    let req = lattice_image::provision::Provision {
        provisioning,
        authorized_keys: None,
        wifi: None,
    };
    lattice_image::provision::provision(partial, &req, &mut SystemRunner::new())
        .with_context(|| format!("provisioning {}", partial.display()))?;
    Ok(())
}

impl QemuNode {
    /// Resolves when QEMU exits.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Powers the guest off in order (the ACPI power button), waits for QEMU to exit, and
    /// kills it if it does not within [`POWER_OFF_WAIT`].
    pub async fn stop(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        match qemu::power_off(&self.monitor) {
            Ok(()) => {
                println!(
                    "QEMU node:        powering off (up to {} s)",
                    POWER_OFF_WAIT.as_secs()
                );
                if tokio::time::timeout(POWER_OFF_WAIT, self.child.wait())
                    .await
                    .is_ok()
                {
                    return;
                }
                eprintln!("QEMU node: no power-off within {POWER_OFF_WAIT:?}; killed");
            }
            Err(e) => eprintln!("QEMU node: cannot reach its monitor ({e}); killed"),
        }
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_must_be_able_to_reach_the_fleet() {
        check_reachable("127.0.0.1:8443".parse().unwrap()).unwrap();
        check_reachable("0.0.0.0:8443".parse().unwrap()).unwrap();
        let e = check_reachable("192.168.1.5:8443".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("192.168.1.5:8443"), "{e}");
    }

    #[test]
    fn a_monitor_socket_path_a_unix_socket_cannot_use_is_refused() {
        check_monitor_path(Path::new("lattice-data/qemu-node/monitor.sock")).unwrap();
        let long = format!("/{}/qemu-node/monitor.sock", "d".repeat(90));
        let e = check_monitor_path(Path::new(&long))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shorter --data"), "{e}");
        assert!(check_monitor_path(Path::new("/a,b/monitor.sock")).is_err());
    }

    #[test]
    fn a_failed_provisioning_leaves_no_copy_behind() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("junk.img");
        std::fs::write(&src, vec![1u8; 4096]).unwrap();
        let copy = dir.path().join("node.img");
        let e = copy_and_provision(&src, &copy, "lattice1:nope".into()).unwrap_err();
        assert!(format!("{e:#}").contains("provisioning"), "{e:#}");
        assert!(!copy.exists());
        assert!(!copy.with_extension("img.partial").exists());
    }

    #[test]
    fn a_wrong_accelerator_is_named() {
        let e = accel("--qemu-accel", "hvf", Arch::X86_64).unwrap_err();
        assert!(e.to_string().contains("hvf"), "{e}");
        assert_eq!(accel("--accel", "tcg", Arch::X86_64).unwrap(), Accel::Tcg);
    }
}
