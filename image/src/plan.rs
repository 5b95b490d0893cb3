//! The build as data: [`BuildSpec`] (what to build) becomes a list of [`Step`]s (what to run
//! and write, in order). No I/O here; [`crate::build`] executes the steps. Tests check the plan
//! with a fake runner; hw-tests run it for real.

use crate::arch::Arch;
use crate::boot;
use crate::layout::{Layout, Role, Sizes, MIB};
use crate::system;
use crate::tools::Cmd;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Debian packages every image has (the kernel comes from [`Arch::kernel_package`]).
pub const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "systemd-timesyncd",
    "systemd-resolved",
    "udev",
    "dbus",
    "kmod",
    "initramfs-tools",
    "docker.io",
    // Debian's kernel has AppArmor on: without apparmor_parser Docker cannot load its
    // docker-default profile and refuses to start any container.
    "apparmor",
    "rauc",
    // RAUC's D-Bus service (`rauc status mark-good` talks to it).
    "rauc-service",
    "ca-certificates",
    "openssh-server",
    "iproute2",
    "e2fsprogs",
    "netbase",
    "procps",
    // Wi-Fi from the config partition (lattice-wifi@.service) and the radio's legal channels.
    "wpasupplicant",
    "wireless-regdb",
];

/// Host name of every node (the fleet knows nodes by id, not by name).
pub const HOSTNAME: &str = "lattice-node";

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    pub arch: Arch,
    /// Debian suite.
    pub suite: String,
    pub mirror: String,
    /// Work directory (root tree, partition images, package cache).
    pub work_dir: PathBuf,
    /// Where the `.img`, `.qcow2` and checksums go.
    pub out_dir: PathBuf,
    /// The latticed binary to install (built for `arch`).
    pub latticed: PathBuf,
    pub latticed_version: String,
    pub extra_packages: Vec<String>,
    pub sizes: Sizes,
    /// Seeds every disk identifier (see [`Layout::plan`]).
    pub seed: Vec<u8>,
}

impl BuildSpec {
    /// Defaults for `arch`: Debian bookworm from deb.debian.org, work in `build/image/<arch>`.
    pub fn new(arch: Arch, latticed: PathBuf, latticed_version: &str) -> BuildSpec {
        let work = PathBuf::from("build/image").join(arch.name());
        BuildSpec {
            arch,
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            out_dir: work.join("out"),
            work_dir: work,
            latticed,
            latticed_version: latticed_version.into(),
            extra_packages: Vec::new(),
            sizes: Sizes::default(),
            seed: b"lattice".to_vec(),
        }
    }

    /// Every package name given to mmdebstrap.
    pub fn packages(&self) -> Vec<String> {
        let mut p: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
        p.push(self.arch.kernel_package().to_string());
        p.extend(self.extra_packages.iter().cloned());
        p
    }

    /// Base name of the outputs: `lattice-<version>-<arch>`.
    pub fn image_name(&self) -> String {
        format!("lattice-{}-{}", self.latticed_version, self.arch)
    }
    pub fn raw_path(&self) -> PathBuf {
        self.out_dir.join(format!("{}.img", self.image_name()))
    }
    pub fn qcow2_path(&self) -> PathBuf {
        self.out_dir.join(format!("{}.qcow2", self.image_name()))
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.work_dir.join("apt-cache")
    }
    fn rootfs(&self) -> PathBuf {
        self.work_dir.join("rootfs")
    }
}

/// One thing the executor does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run a program; `label` is shown as progress.
    Run {
        label: String,
        cmd: Cmd,
    },
    /// Remove a directory tree or file if present.
    Remove(PathBuf),
    MkDir {
        path: PathBuf,
        mode: u32,
    },
    WriteFile {
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
    },
    CopyFile {
        from: PathBuf,
        to: PathBuf,
        mode: u32,
    },
    /// Refuse the tree if an account has an empty or default password.
    CheckShadow {
        root: PathBuf,
    },
    /// Write the manifest: `header`, a build date, then the tree's packages and versions.
    Manifest {
        root: PathBuf,
        header: String,
        outs: Vec<PathBuf>,
    },
    /// Print sizes and write `SHA256SUMS` for `files` into `out`.
    Checksums {
        files: Vec<PathBuf>,
        out: PathBuf,
    },
}

/// The build plan: the layout and the steps.
#[derive(Debug, Clone)]
pub struct Plan {
    pub layout: Layout,
    pub steps: Vec<Step>,
    /// Programs the steps run (checked before anything starts).
    pub tools: Vec<&'static str>,
}

fn join(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn run(label: &str, cmd: Cmd) -> Step {
    Step::Run {
        label: label.to_string(),
        cmd,
    }
}

fn write(path: PathBuf, contents: impl Into<Vec<u8>>, mode: u32) -> Step {
    Step::WriteFile {
        path,
        contents: contents.into(),
        mode,
    }
}

/// The whole build as steps.
pub fn plan(spec: &BuildSpec) -> Result<Plan, crate::layout::LayoutError> {
    let layout = Layout::plan(spec.arch, spec.sizes, &spec.seed)?;
    let arch = spec.arch;
    let w = &spec.work_dir;
    let root = spec.rootfs();
    let cache = spec.cache_dir();
    let parts = w.join("parts");
    let esp_stage = w.join("esp");
    let data_tree = w.join("datatree");
    let mut s = Vec::new();

    // 1. Debian tree, with the package cache synced in and out.
    s.push(Step::MkDir {
        path: cache.clone(),
        mode: 0o755,
    });
    s.push(Step::Remove(root.clone()));
    let cache_s = cache.display().to_string();
    s.push(run(
        "debootstrap the root tree (mmdebstrap)",
        Cmd::new("mmdebstrap")
            .arg("--variant=minbase")
            .arg(format!("--architectures={}", arch.debian()))
            .arg(format!("--include={}", spec.packages().join(",")))
            .arg("--skip=essential/unlink")
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
            .arg(format!(
                "--setup-hook=sync-in {cache_s} /var/cache/apt/archives/"
            ))
            .arg(format!(
                "--customize-hook=sync-out /var/cache/apt/archives {cache_s}"
            ))
            .arg("--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb")
            .arg(&spec.suite)
            .arg(&root)
            .arg(&spec.mirror),
    ));

    // 2. Lattice's files in the tree.
    s.push(Step::CopyFile {
        from: spec.latticed.clone(),
        to: join(&root, "/usr/bin/latticed"),
        mode: 0o755,
    });
    let files: Vec<(&str, String)> = vec![
        (system::LATTICED_CONFIG, system::latticed_config()),
        (
            "/etc/systemd/system/latticed.service",
            system::latticed_unit(),
        ),
        (
            "/etc/systemd/system/lattice-mark-good.service",
            system::mark_good_unit(),
        ),
        ("/etc/fstab", system::fstab()),
        (system::REPART_DATA_CONF, system::repart_data_conf()),
        ("/etc/hostname", format!("{HOSTNAME}\n")),
        (
            "/etc/hosts",
            format!("127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n"),
        ),
        (
            "/etc/systemd/network/10-lattice-containers.network",
            system::container_links_file(),
        ),
        (
            "/etc/systemd/network/80-lattice-wired.network",
            system::network_file(),
        ),
        (system::WIFI_UNIT, system::wifi_unit()),
        (system::WIFI_UDEV_RULE, system::wifi_udev_rule()),
        (system::WIFI_NETWORK, system::wifi_network_file()),
        (system::WAIT_ONLINE_DROPIN, system::wait_online_dropin()),
        ("/etc/ssh/sshd_config.d/lattice.conf", system::sshd_config()),
        (
            "/etc/systemd/system/ssh.service.d/lattice.conf",
            system::ssh_dropin(),
        ),
        ("/etc/rauc/system.conf", boot::rauc_system_conf(arch)),
        // Empty: systemd makes a transient one on the read-only root (every node differs).
        ("/etc/machine-id", String::new()),
    ];
    for (path, text) in files {
        s.push(write(join(&root, path), text, 0o644));
    }
    let mut mountpoints = vec![system::DATA_MOUNT, boot::ESP_MOUNT, system::CONFIG_MOUNT];
    mountpoints.extend(system::PERSISTENT.iter().map(|p| p.target));
    mountpoints.extend(system::VOLATILE.iter().copied());
    for m in mountpoints {
        s.push(Step::MkDir {
            path: join(&root, m),
            mode: 0o755,
        });
    }
    let chroot = |args: &[&str]| Cmd::new("chroot").arg(&root).args(args.iter().copied());
    let mut enable = vec!["systemctl", "enable"];
    enable.extend(system::ENABLED_UNITS);
    s.push(run("enable units", chroot(&enable)));
    let mut mask = vec!["systemctl", "mask"];
    mask.extend(system::MASKED_UNITS);
    s.push(run("mask units", chroot(&mask)));
    s.push(run("lock root", chroot(&["passwd", "--lock", "root"])));
    s.push(run(
        "remove build-time SSH host keys",
        Cmd::new("find")
            .arg(join(&root, "/etc/ssh"))
            .args(["-name", "ssh_host_*", "-delete"]),
    ));
    s.push(Step::CheckShadow { root: root.clone() });
    s.push(Step::Manifest {
        root: root.clone(),
        header: format!(
            "LATTICE_IMAGE={}\nLATTICED_VERSION={}\nARCH={}\nDEBIAN_SUITE={}\n",
            spec.image_name(),
            spec.latticed_version,
            arch,
            spec.suite
        ),
        outs: vec![
            join(&root, system::RELEASE_FILE),
            spec.out_dir.join(format!("{}.release", spec.image_name())),
        ],
    });

    // 3. The data partition's tree: the persistent directories, empty.
    s.push(Step::Remove(data_tree.clone()));
    for p in system::PERSISTENT {
        s.push(Step::MkDir {
            path: data_tree.join(p.dir),
            mode: p.mode,
        });
    }
    // journald keeps logs across reboots when this exists.
    s.push(Step::MkDir {
        path: data_tree.join("log/journal"),
        mode: 0o755,
    });

    // 4. Partition images.
    s.push(Step::MkDir {
        path: parts.clone(),
        mode: 0o755,
    });
    s.push(Step::MkDir {
        path: esp_stage.clone(),
        mode: 0o755,
    });
    s.push(Step::MkDir {
        path: spec.out_dir.clone(),
        mode: 0o755,
    });
    let embedded = esp_stage.join("embedded.cfg");
    let efi = esp_stage.join(arch.efi_file());
    s.push(write(embedded.clone(), boot::embedded_cfg(&layout), 0o644));
    s.push(write(
        esp_stage.join("grub.cfg"),
        boot::grub_cfg(&layout),
        0o644,
    ));
    s.push(write(
        esp_stage.join("grubenv"),
        boot::initial_grubenv(),
        0o644,
    ));
    s.push(run(
        "GRUB EFI binary",
        Cmd::new("grub-mkstandalone")
            .arg("-O")
            .arg(arch.grub_target())
            .arg(format!("--modules={}", boot::GRUB_MODULES.join(" ")))
            .args(["--locales=", "--themes=", "--fonts="])
            .arg("-o")
            .arg(&efi)
            .arg(format!("boot/grub/grub.cfg={}", embedded.display())),
    ));
    let esp = layout.get(Role::Esp);
    let esp_img = parts.join("esp.img");
    s.push(Step::Remove(esp_img.clone()));
    s.push(run(
        "ESP filesystem",
        mkfs_vfat(&esp_img, esp.fs_id.as_str(), Role::Esp, esp.size_mib),
    ));
    s.push(run(
        "ESP directories",
        Cmd::new("mmd")
            .arg("-i")
            .arg(&esp_img)
            .args(["::/EFI", "::/EFI/BOOT", "::/EFI/lattice"]),
    ));
    s.push(run(
        "ESP files",
        mcopy(
            &esp_img,
            &[efi],
            &format!("::/EFI/BOOT/{}", arch.efi_file()),
        ),
    ));
    s.push(run(
        "ESP boot config",
        mcopy(
            &esp_img,
            &[esp_stage.join("grub.cfg"), esp_stage.join("grubenv")],
            &format!("::/{}/", boot::ESP_DIR),
        ),
    ));

    let cfg = layout.get(Role::Config);
    let cfg_img = parts.join("config.img");
    let readme = esp_stage.join("README.txt");
    s.push(write(readme.clone(), system::config_readme(), 0o644));
    s.push(Step::Remove(cfg_img.clone()));
    s.push(run(
        "config filesystem",
        mkfs_vfat(&cfg_img, cfg.fs_id.as_str(), Role::Config, cfg.size_mib),
    ));
    s.push(run(
        "config README",
        mcopy(&cfg_img, &[readme], "::/README.txt"),
    ));

    let root_a = parts.join("root-a.img");
    let data_img = parts.join("data.img");
    for (img, role, tree) in [
        (&root_a, Role::RootA, &root),
        (&data_img, Role::Data, &data_tree),
    ] {
        let p = layout.get(role);
        s.push(Step::Remove(img.clone()));
        s.push(run(
            &format!(
                "{} filesystem (ext4, {} MiB)",
                role.part_label(),
                p.size_mib
            ),
            Cmd::new("mkfs.ext4")
                .args(["-q", "-L", role.fs_label(), "-U", p.fs_id.as_str(), "-d"])
                .arg(tree)
                .arg(img)
                .arg(format!("{}M", p.size_mib)),
        ));
    }

    // 5. The disk: GPT, then each partition at its offset. Root B stays empty (zeros, sparse).
    let raw = spec.raw_path();
    s.push(Step::Remove(raw.clone()));
    s.push(run(
        "disk file",
        Cmd::new("truncate")
            .arg("-s")
            .arg(format!("{}", layout.total_mib * MIB))
            .arg(&raw),
    ));
    s.push(run(
        "partition table",
        Cmd::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&raw)
            .stdin(layout.sfdisk_script()),
    ));
    for (img, role) in [
        (&cfg_img, Role::Config),
        (&esp_img, Role::Esp),
        (&root_a, Role::RootA),
        (&data_img, Role::Data),
    ] {
        let p = layout.get(role);
        s.push(run(
            &format!("write {} at {} MiB", role.part_label(), p.offset_mib),
            Cmd::new("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", raw.display()))
                .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
                .arg(format!("seek={}", p.offset_mib)),
        ));
    }
    let qcow2 = spec.qcow2_path();
    s.push(Step::Remove(qcow2.clone()));
    s.push(run(
        "compressed qcow2",
        Cmd::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2),
    ));
    s.push(Step::Checksums {
        files: vec![raw, qcow2],
        out: spec.out_dir.join("SHA256SUMS"),
    });

    Ok(Plan {
        layout,
        steps: s,
        tools: vec![
            "mmdebstrap",
            "chroot",
            "find",
            "grub-mkstandalone",
            "mkfs.vfat",
            "mmd",
            "mcopy",
            "mkfs.ext4",
            "truncate",
            "sfdisk",
            "dd",
            "qemu-img",
        ],
    })
}

fn mkfs_vfat(img: &Path, volume_id: &str, role: Role, size_mib: u64) -> Cmd {
    Cmd::new("mkfs.vfat")
        .args(["-C", "-n", role.fs_label(), "-i", volume_id])
        .arg(img)
        .arg((size_mib * 1024).to_string())
}

fn mcopy(img: &Path, files: &[PathBuf], to: &str) -> Cmd {
    Cmd::new("mcopy")
        .args(["-o", "-i"])
        .arg(img)
        .args(files.iter().map(|f| f.as_os_str().to_owned()))
        .arg(to)
}

/// A hash of everything that determines the image (the plan and latticed's bytes): hw-tests
/// reuse a cached image while it matches.
pub fn input_hash(plan: &Plan, latticed_bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}", plan.steps).as_bytes());
    h.update(latticed_bytes);
    hex::encode(&h.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BuildSpec {
        BuildSpec::new(Arch::X86_64, PathBuf::from("/tmp/latticed"), "0.1.0")
    }

    fn commands(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Run { cmd, .. } => Some(cmd.display()),
                _ => None,
            })
            .collect()
    }

    fn written(p: &Plan, suffix: &str) -> String {
        p.steps
            .iter()
            .find_map(|s| match s {
                Step::WriteFile { path, contents, .. } if path.ends_with(suffix) => {
                    Some(String::from_utf8_lossy(contents).into_owned())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no file {suffix}"))
    }

    #[test]
    fn mmdebstrap_gets_every_package_the_node_needs_and_the_cache() {
        let p = plan(&spec()).unwrap();
        let mm = commands(&p)
            .into_iter()
            .find(|c| c.starts_with("mmdebstrap"))
            .unwrap();
        for pkg in [
            "linux-image-amd64",
            "docker.io",
            "apparmor",
            "rauc",
            "systemd-timesyncd",
            "systemd-sysv",
        ] {
            assert!(mm.contains(pkg), "{pkg} in {mm}");
        }
        assert!(mm.contains("--architectures=amd64"));
        assert!(mm.contains("sync-in build/image/x86_64/apt-cache /var/cache/apt/archives/"));
        assert!(mm.contains("--skip=essential/unlink"));
        assert!(mm.ends_with("bookworm build/image/x86_64/rootfs http://deb.debian.org/debian"));
    }

    #[test]
    fn arm64_plan_names_no_x86_detail() {
        let s = BuildSpec::new(Arch::Arm64, PathBuf::from("/tmp/latticed"), "0.1.0");
        let p = plan(&s).unwrap();
        let all = format!("{:?}", p.steps);
        for x86 in ["amd64", "x86_64", "BOOTX64", "ttyS0"] {
            assert!(!all.contains(x86), "{x86} in the arm64 plan");
        }
        assert!(all.contains("BOOTAA64.EFI") && all.contains("arm64-efi"));
    }

    #[test]
    fn units_are_enabled_and_root_locked_inside_the_tree() {
        let p = plan(&spec()).unwrap();
        let cmds = commands(&p);
        let enable = cmds
            .iter()
            .find(|c| c.contains("systemctl enable"))
            .unwrap();
        assert!(enable.starts_with("chroot build/image/x86_64/rootfs systemctl enable"));
        assert!(enable.contains("docker.service") && enable.contains("latticed.service"));
        assert!(cmds.iter().any(|c| c.ends_with("passwd --lock root")));
        assert!(p
            .steps
            .iter()
            .any(|s| matches!(s, Step::CheckShadow { .. })));
        assert!(written(&p, "etc/fstab").contains("/var/lib/docker"));
        assert!(written(&p, "latticed.service").contains("ExecStart=/usr/bin/latticed"));
    }

    #[test]
    fn partitions_are_written_at_their_planned_offsets_and_root_b_is_left_empty() {
        let p = plan(&spec()).unwrap();
        let dds: Vec<String> = commands(&p)
            .into_iter()
            .filter(|c| c.starts_with("dd "))
            .collect();
        assert_eq!(dds.len(), 4);
        for role in [Role::Config, Role::Esp, Role::RootA, Role::Data] {
            let part = p.layout.get(role);
            assert!(
                dds.iter()
                    .any(|d| d.ends_with(&format!("seek={}", part.offset_mib))),
                "{role:?}"
            );
        }
        let b = p.layout.get(Role::RootB).offset_mib;
        assert!(!dds.iter().any(|d| d.ends_with(&format!("seek={b}"))));
        let sfdisk = p
            .steps
            .iter()
            .find_map(|s| match s {
                Step::Run { cmd, .. } if cmd.program == "sfdisk" => cmd.stdin.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(sfdisk, p.layout.sfdisk_script().into_bytes());
    }

    #[test]
    fn every_program_run_is_checked_up_front() {
        let p = plan(&spec()).unwrap();
        for s in &p.steps {
            if let Step::Run { cmd, .. } = s {
                assert!(
                    p.tools.contains(&cmd.program.as_str()),
                    "{} not in tools",
                    cmd.program
                );
            }
        }
    }

    #[test]
    fn input_hash_changes_with_latticed_and_with_the_plan() {
        let p = plan(&spec()).unwrap();
        let a = input_hash(&p, b"one");
        assert_eq!(a, input_hash(&p, b"one"));
        assert_ne!(a, input_hash(&p, b"two"));
        let mut s = spec();
        s.extra_packages.push("htop".into());
        assert_ne!(a, input_hash(&plan(&s).unwrap(), b"one"));
    }
}
