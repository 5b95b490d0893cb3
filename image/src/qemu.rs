//! `lattice image qemu`: boots an image under QEMU with UEFI firmware, KVM when it works and
//! software emulation (TCG) otherwise, user-mode networking (the guest reaches the host at
//! 10.0.2.2, so a fleet on the host's loopback is reachable), the serial console on stdio or in
//! a file, and a copy-on-write overlay so the image itself is never written.

use crate::arch::Arch;
use crate::gpt::{is_qcow2, GptError, GptTable};
use crate::layout::Role;
use crate::tools::{Cmd, Runner, ToolError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Address at which a QEMU user-mode guest reaches the host.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    /// The terminal (QEMU's monitor is multiplexed on it: Ctrl-A X quits).
    Stdio,
    /// A file (tests keep it as the boot log).
    File(PathBuf),
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuSpec {
    pub arch: Arch,
    /// The image as built (never written).
    pub image: PathBuf,
    /// Copy-on-write overlay the guest writes to (kept across runs: the node's identity).
    pub overlay: PathBuf,
    /// This VM's copy of the UEFI variable store.
    pub vars: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// (host port on 127.0.0.1, guest port) TCP forwards, e.g. SSH.
    pub forwards: Vec<(u16, u16)>,
    pub serial: Serial,
    /// The guest's disk in bytes, when larger than the image (set when the overlay is made):
    /// like flashing a bigger stick, the data partition grows into it at boot
    /// (`system::repart_data_conf`). `None`: the image's own size.
    pub disk_bytes: Option<u64>,
    /// A Unix socket for QEMU's monitor, so another program can power the guest off in an
    /// orderly way ([`power_off`]). Only with [`Serial::File`] (on the terminal, the monitor
    /// is Ctrl-A C).
    pub monitor: Option<PathBuf>,
}

impl QemuSpec {
    /// Defaults: overlay and variables beside the image in `state_dir`, 2 GiB, 2 CPUs, TCG.
    pub fn new(arch: Arch, image: &Path, state_dir: &Path) -> QemuSpec {
        let stem = image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lattice".into());
        QemuSpec {
            arch,
            image: image.to_path_buf(),
            overlay: state_dir.join(format!("{stem}.overlay.qcow2")),
            vars: state_dir.join(format!("{stem}.vars.fd")),
            accel: Accel::Tcg,
            memory_mib: 2048,
            cpus: 2,
            forwards: Vec::new(),
            serial: Serial::Stdio,
            disk_bytes: None,
            monitor: None,
        }
    }

    /// QEMU's arguments.
    pub fn args(&self) -> Vec<OsString> {
        let (machine, cpu) = self.arch.qemu_machine();
        let (code, _, _) = self.arch.uefi_firmware();
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: String| a.push(s.into());
        push("-accel".into());
        push(self.accel.name().into());
        push("-machine".into());
        push(machine.into());
        push("-cpu".into());
        push(if self.accel == Accel::Kvm {
            "host".into()
        } else {
            cpu.into()
        });
        push("-m".into());
        push(self.memory_mib.to_string());
        push("-smp".into());
        push(self.cpus.to_string());
        push("-drive".into());
        push(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            code.display()
        ));
        push("-drive".into());
        push(format!(
            "if=pflash,format=raw,unit=1,file={}",
            self.vars.display()
        ));
        push("-drive".into());
        push(format!(
            "if=virtio,format=qcow2,discard=unmap,file={}",
            self.overlay.display()
        ));
        let mut netdev = "user,id=net0".to_string();
        for (host, guest) in &self.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        push("-netdev".into());
        push(netdev);
        push("-device".into());
        push("virtio-net-pci,netdev=net0".into());
        // Entropy: without it a guest under TCG can wait a long time for its random pool.
        push("-device".into());
        push("virtio-rng-pci".into());
        match &self.serial {
            Serial::Stdio => push("-nographic".into()),
            Serial::File(p) => {
                push("-display".into());
                push("none".into());
                push("-monitor".into());
                push(match &self.monitor {
                    Some(sock) => format!("unix:{},server=on,wait=off", sock.display()),
                    None => "none".into(),
                });
                push("-serial".into());
                push(format!("file:{}", p.display()));
            }
        }
        a
    }

    /// The command that runs the VM.
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(self.arch.qemu_binary().0);
        c.args(self.args());
        c
    }
}

/// Presses the guest's power button through the monitor socket of a VM started with
/// [`QemuSpec::monitor`]: the guest's systemd shuts down in order and QEMU then exits.
pub fn power_off(monitor: &Path) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut sock = std::os::unix::net::UnixStream::connect(monitor)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    sock.write_all(b"system_powerdown\n")?;
    sock.flush()?;
    // The monitor carries the command out only if the connection stays open until it has
    // read it (a connection closed at once was seen to be dropped with the command unread):
    // wait for the prompt after the command's echo, up to 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(&seen);
        if let Some(at) = text.find("system_powerdown") {
            if text[at..].contains("(qemu)") {
                return Ok(());
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "QEMU's monitor did not confirm system_powerdown within 5 s",
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(
        "the disk size asked for ({asked} bytes) is smaller than the image {image} ({size} \
         bytes): the guest's disk can only be as large or larger"
    )]
    DiskTooSmall {
        asked: u64,
        image: PathBuf,
        size: u64,
    },
    #[error("{what} {path}: {source}")]
    Fs {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks the image, creates the overlay (unless it exists and `fresh` is false) and this VM's
/// UEFI variables. A raw image must pass the GPT checks and hold root slot A; a qcow2 image
/// must pass `qemu-img check`.
pub fn prepare(spec: &QemuSpec, fresh: bool, runner: &mut dyn Runner) -> Result<(), QemuError> {
    let (qemu, qemu_pkg) = spec.arch.qemu_binary();
    runner.require(&["qemu-img", qemu])?;
    let _ = qemu_pkg;
    let (code, vars_template, fw_pkg) = spec.arch.uefi_firmware();
    for f in [&code, &vars_template] {
        if !f.exists() {
            return Err(ToolError::MissingFile {
                path: f.clone(),
                package: fw_pkg,
            }
            .into());
        }
    }
    let format = if is_qcow2(&spec.image) {
        runner.run(&Cmd::new("qemu-img").args(["check", "-q"]).arg(&spec.image))?;
        "qcow2"
    } else {
        let t = GptTable::read(&spec.image)?;
        t.find(Role::RootA.part_label(), &spec.image)?;
        "raw"
    };
    let fs = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| QemuError::Fs { what, path, source }
    };
    if let Some(dir) = spec.overlay.parent() {
        std::fs::create_dir_all(dir).map_err(fs("creating", dir))?;
    }
    if fresh || !spec.overlay.exists() {
        let _ = std::fs::remove_file(&spec.overlay);
        let base = std::fs::canonicalize(&spec.image).map_err(fs("reading", &spec.image))?;
        let mut create = Cmd::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
            .arg(base)
            .arg(&spec.overlay);
        if let Some(asked) = spec.disk_bytes {
            let size =
                virtual_size(&spec.image, format == "qcow2").map_err(fs("reading", &spec.image))?;
            if asked < size {
                return Err(QemuError::DiskTooSmall {
                    asked,
                    image: spec.image.clone(),
                    size,
                });
            }
            create = create.arg(asked.to_string());
        }
        runner.run(&create)?;
    }
    if fresh || !spec.vars.exists() {
        std::fs::copy(&vars_template, &spec.vars).map_err(fs("copying", &vars_template))?;
    }
    Ok(())
}

/// Whether KVM really runs this architecture here: boots the UEFI firmware alone under KVM and
/// waits up to `timeout` for it to print on the serial port. On some hosts `/dev/kvm` exists
/// but the guest hangs or fails at once, so existence alone is not trusted.
pub fn probe_kvm(arch: Arch, timeout: Duration) -> bool {
    if Arch::host() != Some(arch) || !Path::new("/dev/kvm").exists() {
        return false;
    }
    let dir = std::env::temp_dir().join(format!("lattice-kvm-probe-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let (code, vars, _) = arch.uefi_firmware();
    let vars_copy = dir.join("vars.fd");
    let log = dir.join("serial.log");
    let ok = std::fs::copy(&vars, &vars_copy).is_ok() && {
        let (machine, _) = arch.qemu_machine();
        let child = std::process::Command::new(arch.qemu_binary().0)
            .args([
                "-accel",
                "kvm",
                "-machine",
                machine,
                "-m",
                "256",
                "-nodefaults",
            ])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                code.display()
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars_copy.display()
            ))
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Err(_) => false,
            Ok(mut child) => {
                let deadline = Instant::now() + timeout;
                let mut seen = false;
                while Instant::now() < deadline {
                    if std::fs::read(&log)
                        .map(|b| b.windows(6).any(|w| w == b"BdsDxe"))
                        .unwrap_or(false)
                    {
                        seen = true;
                        break;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = child.kill();
                let _ = child.wait();
                seen
            }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// The size the guest sees of `image`: a raw file's length, or a qcow2's virtual size (a
/// big-endian u64 at byte 24 of its header).
fn virtual_size(image: &Path, qcow2: bool) -> std::io::Result<u64> {
    if !qcow2 {
        return Ok(std::fs::metadata(image)?.len());
    }
    use std::io::Read;
    let mut header = [0u8; 32];
    std::fs::File::open(image)?.read_exact(&mut header)?;
    let mut size = [0u8; 8];
    size.copy_from_slice(&header[24..32]);
    Ok(u64::from_be_bytes(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::FakeRunner;

    fn args(spec: &QemuSpec) -> String {
        spec.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn boots_the_overlay_with_uefi_and_user_networking() {
        let mut s = QemuSpec::new(Arch::X86_64, Path::new("/i/lattice.img"), Path::new("/st"));
        s.forwards.push((2222, 22));
        s.serial = Serial::File("/st/serial.log".into());
        let a = args(&s);
        assert!(a.starts_with("-accel tcg -machine q35 -cpu max"), "{a}");
        assert!(a.contains("readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert!(a.contains("unit=1,file=/st/lattice.vars.fd"));
        assert!(a.contains("file=/st/lattice.overlay.qcow2"));
        assert!(
            !a.contains("/i/lattice.img"),
            "the image itself is never attached"
        );
        assert!(a.contains("hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(a.contains("-serial file:/st/serial.log"));
        assert!(a.contains("-monitor none"));
        s.monitor = Some("/st/monitor.sock".into());
        assert!(args(&s).contains("-monitor unix:/st/monitor.sock,server=on,wait=off"));
        s.serial = Serial::Stdio;
        s.accel = Accel::Kvm;
        let a = args(&s);
        assert!(a.contains("-nographic") && a.contains("-cpu host"));
    }

    #[test]
    fn arm64_uses_its_machine_and_firmware() {
        let s = QemuSpec::new(Arch::Arm64, Path::new("/i/x.img"), Path::new("/st"));
        let a = args(&s);
        assert!(a.contains("-machine virt"));
        assert!(a.contains("AAVMF_CODE.fd"));
        assert_eq!(s.command().get_program(), "qemu-system-aarch64");
    }

    #[test]
    fn a_damaged_image_is_refused_before_qemu_starts() {
        if !Arch::X86_64.uefi_firmware().0.exists() {
            eprintln!("skipped: no OVMF");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        std::fs::write(&img, vec![0u8; 64 * 512]).unwrap();
        let s = QemuSpec::new(Arch::X86_64, &img, dir.path());
        let mut r = FakeRunner::default();
        let e = prepare(&s, true, &mut r).unwrap_err();
        assert!(e.to_string().contains("protective MBR"), "{e}");
        assert!(r.ran.is_empty());
        std::fs::write(
            &img,
            crate::gpt::tests::disk(&[("lattice-root-a", 40, 59)], 64 * 512),
        )
        .unwrap();
        prepare(&s, true, &mut r).unwrap();
        assert!(r.ran[0]
            .display()
            .starts_with("qemu-img create -q -f qcow2 -F raw -b"));
        assert!(s.vars.exists());
    }

    #[test]
    fn a_larger_disk_is_the_overlays_size_and_a_smaller_one_is_refused() {
        if !Arch::X86_64.uefi_firmware().0.exists() {
            eprintln!("skipped: no OVMF");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        std::fs::write(
            &img,
            crate::gpt::tests::disk(&[("lattice-root-a", 40, 59)], 64 * 512),
        )
        .unwrap();
        let mut s = QemuSpec::new(Arch::X86_64, &img, dir.path());
        s.disk_bytes = Some(8 << 30);
        let mut r = FakeRunner::default();
        prepare(&s, true, &mut r).unwrap();
        let create = r.ran[0].display();
        assert!(create.ends_with(" 8589934592"), "{create}");
        s.disk_bytes = Some(64 * 512 - 1);
        let mut r = FakeRunner::default();
        let e = prepare(&s, true, &mut r).unwrap_err();
        assert!(
            matches!(e, QemuError::DiskTooSmall { asked, size, .. } if asked == 64 * 512 - 1 && size == 64 * 512),
            "{e}"
        );
        assert!(r.ran.is_empty(), "nothing made for a refused size");
    }
}
