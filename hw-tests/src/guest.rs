//! A QEMU guest booted from an image, its serial console in a file (kept under
//! `build/hw-tests/logs/` when a test fails), and commands run in it over SSH.

use crate::repo_root;
use lattice_image::qemu::{self, Accel, QemuSpec, Serial};
use lattice_image::tools::SystemRunner;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Guest {
    pub spec: QemuSpec,
    child: Option<Child>,
    pub serial: PathBuf,
    pub ssh_port: u16,
    pub key: PathBuf,
    pub started: Instant,
    /// Serial logs of the boots before a [`Guest::reboot`], oldest first.
    earlier_serials: Vec<PathBuf>,
}

impl Guest {
    /// Boots `image` (never written: an overlay in `dir`), forwarding a free port to SSH.
    /// Boots `image` (through an overlay in `dir`) on a disk of `disk_bytes` when given
    /// (larger than the image: the data partition grows into it).
    pub fn boot(image: &Path, dir: &Path, key: &Path, disk_bytes: Option<u64>) -> Guest {
        let arch = lattice_image::arch::Arch::host().expect("host arch");
        let mut spec = QemuSpec::new(arch, image, dir);
        spec.disk_bytes = disk_bytes;
        spec.accel = if qemu::probe_kvm(arch, Duration::from_secs(8)) {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        let ssh_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        spec.forwards.push((ssh_port, 22));
        let serial = dir.join("serial.log");
        spec.serial = Serial::File(serial.clone());
        qemu::prepare(&spec, true, &mut SystemRunner::new()).expect("prepare VM");
        eprintln!("booting with {}", spec.accel.name());
        let mut g = Guest {
            spec,
            child: None,
            serial,
            ssh_port,
            key: key.to_path_buf(),
            started: Instant::now(),
            earlier_serials: Vec::new(),
        };
        g.start();
        g
    }

    /// Starts QEMU (again); the overlay keeps what the guest wrote.
    ///
    /// With `-no-reboot`: a reset the guest asks for ends QEMU instead of warm-resetting the
    /// virtual firmware, and [`Guest::reboot`] powers it on again. Under TCG, OVMF's warm reset
    /// once never came back (CI, 2026-11-26: nothing on the serial console for 300 s after
    /// "reboot: Restarting system", where a cold start prints within seconds).
    pub fn start(&mut self) {
        let child = self
            .spec
            .command()
            .arg("-no-reboot")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu");
        self.child = Some(child);
        self.started = Instant::now();
    }

    /// Reboots the guest the way an operator does (`systemctl reboot`: every unit stopped in
    /// order, file systems unmounted), waits for it to reach the reset, then powers the machine
    /// on again. Returns how long the orderly shutdown took.
    pub fn reboot(&mut self, shutdown_within: Duration) -> Duration {
        let child = self.child.as_mut().expect("guest running");
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            panic!("QEMU had already ended ({status}) before the reboot was asked for");
        }
        let asked = Instant::now();
        // `--no-block`: ssh returns at once, so a guest that hangs while stopping cannot hold
        // the test inside ssh, past the deadline below.
        let (code, out, err) = self.ssh("systemctl --no-block reboot");
        assert_eq!(code, 0, "systemctl reboot: {out}{err}");
        let child = self.child.as_mut().expect("guest running");
        loop {
            match child.try_wait().expect("wait for qemu") {
                Some(_) => break,
                None if asked.elapsed() > shutdown_within => {
                    panic!("the guest did not reach its reset within {shutdown_within:?}")
                }
                None => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        let took = asked.elapsed();
        self.child = None;
        // QEMU truncates its serial file when it starts: the first boot's console (its
        // shutdown included) is kept beside it, and copied too when the test fails.
        let n = self.earlier_serials.len() + 1;
        let kept = self.serial.with_file_name(format!("serial-boot{n}.log"));
        std::fs::rename(&self.serial, &kept).expect("keep the serial log");
        self.earlier_serials.push(kept);
        self.start();
        took
    }

    /// Stops QEMU (power off, no shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Keeps `ssh -N -R` open so the guest's `127.0.0.1:guest_port` reaches the host's
    /// `127.0.0.1:host_port` (the test registry: Docker pulls from a loopback registry without
    /// TLS). Closed when the returned guard is dropped.
    pub fn reverse_forward(&self, guest_port: u16, host_port: u16) -> Forward {
        let child = Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args(["-p", &self.ssh_port.to_string()])
            .args([
                "-N",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "LogLevel=ERROR",
                "-R",
                &format!("127.0.0.1:{guest_port}:127.0.0.1:{host_port}"),
                "root@127.0.0.1",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("run ssh -R");
        Forward(child)
    }

    /// Runs `cmd` as root in the guest: (exit code, stdout, stderr).
    pub fn ssh(&self, cmd: &str) -> (i32, String, String) {
        let out = Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args(["-p", &self.ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                cmd,
            ])
            .output()
            .expect("run ssh");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `cmd` and returns its output; panics if it fails.
    pub fn ok(&self, cmd: &str) -> String {
        let (code, out, err) = self.ssh(cmd);
        assert_eq!(code, 0, "guest `{cmd}` failed: {out}{err}");
        out
    }

    pub fn serial_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let dir = repo_root().join("build/hw-tests/logs");
            let _ = std::fs::create_dir_all(&dir);
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for (n, earlier) in self.earlier_serials.iter().enumerate() {
                let kept = dir.join(format!("serial-{stamp}-boot{}.log", n + 1));
                let _ = std::fs::copy(earlier, &kept);
                eprintln!(
                    "serial console of an earlier boot kept in {}",
                    kept.display()
                );
            }
            let kept = dir.join(format!("serial-{stamp}.log"));
            let _ = std::fs::copy(&self.serial, &kept);
            let text = self.serial_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!(
                "serial console kept in {}; last lines:\n{}",
                kept.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// An `ssh -R` forward; stopped on drop.
pub struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
