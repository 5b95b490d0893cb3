//! Files the image adds to the Debian tree: mounts (read-only root, state on the data
//! partition), latticed's unit and configuration, networking, SSH only when a key is
//! provisioned. Pure text; the plan decides where each goes.
//!
//! Everything here is identical on every device built from the same inputs, because a RAUC
//! update replaces the whole root: partitions are named by GPT name, never by GUID.

use crate::boot::ESP_MOUNT;
use crate::layout::Role;

/// Where the data partition is mounted.
pub const DATA_MOUNT: &str = "/data";
/// Where the config partition is mounted (read-only) in the running system.
pub const CONFIG_MOUNT: &str = "/boot/lattice-config";
/// File on the config partition holding the provisioning string.
pub const PROVISIONING_FILE: &str = "provisioning";
/// File on the config partition holding SSH public keys; SSH runs only if it exists.
pub const AUTHORIZED_KEYS_FILE: &str = "authorized_keys";
/// File on the config partition holding the Wi-Fi network ([`lattice_wire::wifi`]); Wi-Fi is
/// used only when it exists.
pub const WIFI_FILE: &str = lattice_wire::wifi::WIFI_FILE;
/// Where the Wi-Fi units and files go in the image.
pub const WIFI_UNIT: &str = "/etc/systemd/system/lattice-wifi@.service";
/// After `80-net-setup-link.rules`, which gives the interface its final name (`wlp2s0`).
pub const WIFI_UDEV_RULE: &str = "/etc/udev/rules.d/90-lattice-wifi.rules";
/// Makes `network-online.target` wait for any one link, not every managed one.
pub const WAIT_ONLINE_DROPIN: &str =
    "/etc/systemd/system/systemd-networkd-wait-online.service.d/lattice.conf";
pub const WIFI_NETWORK: &str = "/etc/systemd/network/81-lattice-wifi.network";
/// latticed's configuration in the root filesystem.
pub const LATTICED_CONFIG: &str = "/etc/lattice/latticed.toml";
/// The image manifest (also read by `lattice image inspect`).
pub const RELEASE_FILE: &str = "/etc/lattice/release";
/// Where sshd keeps this machine's host key (made on first start, on the data partition).
pub const SSH_HOST_KEY_DIR: &str = "/var/lib/lattice-ssh";

/// A directory that must survive updates: `/data/<dir>` bind-mounted over `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistent {
    pub dir: &'static str,
    pub target: &'static str,
    pub mode: u32,
}

/// State that lives on the data partition. Everything else under `/var` is either read-only
/// (dpkg's database, which only changes with a new root) or a tmpfs.
pub const PERSISTENT: &[Persistent] = &[
    Persistent {
        dir: "latticed",
        target: "/var/lib/latticed",
        mode: 0o700,
    },
    Persistent {
        dir: "docker",
        target: "/var/lib/docker",
        mode: 0o710,
    },
    Persistent {
        dir: "containerd",
        target: "/var/lib/containerd",
        mode: 0o711,
    },
    Persistent {
        dir: "systemd",
        target: "/var/lib/systemd",
        mode: 0o755,
    },
    Persistent {
        dir: "rauc",
        target: "/var/lib/rauc",
        mode: 0o700,
    },
    Persistent {
        dir: "log",
        target: "/var/log",
        mode: 0o755,
    },
    // dockerd writes its key.json into /etc/docker at start.
    Persistent {
        dir: "docker-etc",
        target: "/etc/docker",
        mode: 0o700,
    },
    Persistent {
        dir: "ssh",
        target: SSH_HOST_KEY_DIR,
        mode: 0o700,
    },
];

/// Volatile directories (tmpfs).
pub const VOLATILE: &[&str] = &["/tmp", "/var/tmp", "/var/cache"];

/// Units enabled in the tree (Debian's presets are not applied by mmdebstrap, so each unit the
/// image relies on is enabled explicitly).
pub const ENABLED_UNITS: &[&str] = &[
    "systemd-networkd.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "containerd.service",
    "docker.service",
    "ssh.service",
    "latticed.service",
    "lattice-mark-good.service",
];

/// Units that would write to the read-only root or are of no use on a node.
pub const MASKED_UNITS: &[&str] = &[
    // Debian's D-Bus wpa_supplicant: lattice-wifi@.service runs one per interface instead.
    "wpa_supplicant.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
];

/// Where systemd-repart reads [`repart_data_conf`].
pub const REPART_DATA_CONF: &str = "/usr/lib/repart.d/50-lattice-data.conf";

/// systemd-repart's definition of the data partition, the disk's only `linux-generic` one and
/// its last: at every boot (systemd-repart.service, early) it grows to the end of the disk, so
/// an image written to a stick larger than the image, or a VM disk made larger, gives the
/// workloads the space. The other partitions match no definition and are left as they are.
pub fn repart_data_conf() -> String {
    "# Lattice: the data partition (the only linux-generic one) takes the rest of the disk.\n\
     [Partition]\n\
     Type=linux-generic\n"
        .to_string()
}

/// `/etc/fstab`.
pub fn fstab() -> String {
    let label = |r: Role| format!("PARTLABEL={}", r.part_label());
    let mut s = String::from(
        "# Lattice: the root is read-only (kernel `ro`, not listed here); state is on /data.\n",
    );
    // Mounted after systemd-repart grew the partition to the disk, then grown itself
    // (systemd-growfs, online) to the partition.
    s.push_str(&format!(
        "{}  {DATA_MOUNT}  ext4  defaults,noatime,x-systemd.growfs,x-systemd.after=systemd-repart.service  0 2\n",
        label(Role::Data)
    ));
    s.push_str(&format!(
        "{}  {ESP_MOUNT}  vfat  umask=0077,noatime,nofail  0 0\n",
        label(Role::Esp)
    ));
    s.push_str(&format!(
        "{}  {CONFIG_MOUNT}  vfat  ro,umask=0077,nofail  0 0\n",
        label(Role::Config)
    ));
    for p in PERSISTENT {
        s.push_str(&format!(
            "{DATA_MOUNT}/{}  {}  none  bind,x-systemd.requires-mounts-for={DATA_MOUNT}  0 0\n",
            p.dir, p.target
        ));
    }
    for v in VOLATILE {
        let mode = if v.ends_with("tmp") { "1777" } else { "0755" };
        s.push_str(&format!(
            "tmpfs  {v}  tmpfs  mode={mode},nosuid,nodev  0 0\n"
        ));
    }
    s
}

/// systemd's watchdog interval for latticed: latticed pings every third of it while its
/// runtime and its agent loop make progress (firmware/src/watchdog.rs); a stall of half of it
/// stops the pings, and systemd restarts latticed when the interval passes without one.
pub const LATTICED_WATCHDOG_SECS: u32 = 30;

/// latticed's systemd unit: `Type=notify` (latticed says `READY=1` before enrolling, so a
/// first boot that waits for the fleet is not a start timeout) with the service watchdog.
pub fn latticed_unit() -> String {
    let watchdog = LATTICED_WATCHDOG_SECS;
    format!(
        "[Unit]\n\
         Description=Lattice node supervisor\n\
         After=network.target docker.service time-sync.target\n\
         Wants=docker.service\n\
         RequiresMountsFor=/var/lib/latticed {CONFIG_MOUNT}\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         WatchdogSec={watchdog}\n\
         # A watchdog abort (SIGABRT) that does not end latticed is a SIGKILL 10 s later.\n\
         TimeoutAbortSec=10\n\
         ExecStart=/usr/bin/latticed --config {LATTICED_CONFIG}\n\
         Restart=always\n\
         RestartSec=10\n\
         # Registration errors go to the screen (and the serial console) too.\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\
         # Root for cgroups, the Docker socket and volume mounts; nothing else. No option that\n\
         # gives latticed a mount namespace of its own (PrivateTmp, ProtectHome, ProtectSystem,\n\
         # ReadWritePaths, ProtectKernelModules, ProtectKernelLogs): dockerd must see the\n\
         # volumes it loop-mounts. No device allow-list either (ProtectClock implies one):\n\
         # loop devices must stay usable.\n\
         NoNewPrivileges=yes\n\
         ProtectHostname=yes\n\
         RestrictRealtime=yes\n\
         LockPersonality=yes\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// What runs workloads on the image: the Docker engine, inside the node's envelope, which on
/// this systemd + cgroup v2 system is a slice whose limits systemd sets (over D-Bus).
pub const IMAGE_RUNTIME: &str = "docker";

/// Free space latticed keeps on the image's data partition (256 MiB). The default (1 GiB, for a
/// provider's own machine) would leave nothing of the 1 GiB data partition of a fresh image.
pub const IMAGE_DISK_FLOOR: u64 = 256 << 20;

/// latticed's configuration on the image.
pub fn latticed_config() -> String {
    format!(
        "# latticed on the Lattice image. Provisioning comes from the config partition\n\
         # (editable from any computer); identity and state live on the data partition.\n\
         data_dir = \"/var/lib/latticed\"\n\
         provisioning_file = \"{CONFIG_MOUNT}/{PROVISIONING_FILE}\"\n\
         # Workloads run on the Docker engine inside a systemd slice (the provider envelope).\n\
         runtime = \"{IMAGE_RUNTIME}\"\n\
         # The whole disk is Lattice's here: the floor keeps the system's own room on the\n\
         # data partition (journal, Docker's metadata), not a provider's files.\n\
         disk_floor_bytes = {IMAGE_DISK_FLOOR}\n"
    )
}

/// Marks the booted slot good once latticed has started (RAUC's grub backend then keeps
/// booting it). A real health check comes with OTA.
pub fn mark_good_unit() -> String {
    "[Unit]\n\
     Description=Mark the booted RAUC slot good\n\
     After=latticed.service\n\
     Requires=latticed.service\n\
     RequiresMountsFor=/boot/efi /var/lib/rauc\n\
     \n\
     [Service]\n\
     Type=oneshot\n\
     ExecStart=/usr/bin/rauc status mark-good\n\
     \n\
     [Install]\n\
     WantedBy=multi-user.target\n"
        .to_string()
}

/// DHCP on the machine's wired interfaces, by name: `Type=ether` alone also matches the host
/// ends of containers' veth pairs, and networkd then runs DHCP on them and manages them
/// (a known way to break Docker's networking).
pub fn network_file() -> String {
    "[Match]\nName=en* eth*\nType=ether\n\n[Network]\nDHCP=yes\n".to_string()
}

/// DHCP on wireless interfaces once they have joined the network (wpa_supplicant does that).
/// Their routes weigh more than the wired ones' (networkd's default metric is 1024), so a
/// node with a cable prefers it.
pub fn wifi_network_file() -> String {
    "[Match]\nType=wlan\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nRouteMetric=2048\n\n\
     [IPv6AcceptRA]\nRouteMetric=2048\n"
        .to_string()
}

/// `network-online.target` (which Docker, and so latticed, start after) is reached once any
/// link is online: by default networkd waits up to 2 minutes for every managed link, and a node
/// has links that never come up (an empty Ethernet port, a Wi-Fi chip out of range).
pub fn wait_online_dropin() -> String {
    "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any\n".to_string()
}

/// Every wireless interface, when it appears (at boot or plugged in later), pulls in
/// `lattice-wifi@<interface>.service`, by its final name (`$name`, set by
/// `80-net-setup-link.rules` before this rule runs; `%k` is still the kernel's `wlan0`).
pub fn wifi_udev_rule() -> String {
    "# Lattice: Wi-Fi from the config partition on every wireless interface.\n\
     ACTION==\"add\", SUBSYSTEM==\"net\", ENV{DEVTYPE}==\"wlan\", TAG+=\"systemd\", \
     ENV{SYSTEMD_WANTS}+=\"lattice-wifi@$name.service\"\n"
        .to_string()
}

/// `latticed --write-wpa-config`'s exit status for a file it cannot use (`EX_CONFIG`).
pub const WIFI_EXIT_CONFIG: i32 = lattice_wire::wifi::EXIT_CONFIG;

/// One interface's Wi-Fi: latticed turns the config partition's file into wpa_supplicant's
/// configuration (in /run: the root is read-only, and the key never lands on a disk), then
/// wpa_supplicant joins the network (one main process: the shell execs it, so a crash is
/// restarted). Nothing runs without the file. A bad file fails the unit once with latticed's
/// message (file, line, what is wrong) in the journal, and is not retried: the partition is
/// read-only until the next boot.
pub fn wifi_unit() -> String {
    format!(
        "[Unit]\n\
         Description=Wi-Fi on %I from the config partition\n\
         ConditionPathExists={CONFIG_MOUNT}/{WIFI_FILE}\n\
         RequiresMountsFor={CONFIG_MOUNT}\n\
         BindsTo=sys-subsystem-net-devices-%i.device\n\
         After=sys-subsystem-net-devices-%i.device\n\
         Before=network.target\n\
         Wants=network.target\n\
         \n\
         [Service]\n\
         ExecStart=/bin/sh -c '/usr/bin/latticed --write-wpa-config {CONFIG_MOUNT}/{WIFI_FILE} \
         /run/lattice-wifi/%I.conf && exec /sbin/wpa_supplicant -i %I -c /run/lattice-wifi/%I.conf -D nl80211,wext'\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         RestartPreventExitStatus={exit_config}\n",
        exit_config = WIFI_EXIT_CONFIG
    )
}

/// Docker's and latticed's interfaces (veth pairs, `docker0`, workload bridges `lt…`) are
/// Docker's to manage, never networkd's.
pub fn container_links_file() -> String {
    "[Match]\nName=veth* docker* lt* br-*\n\n[Link]\nUnmanaged=yes\n".to_string()
}

/// sshd: keys only, from the config partition; the host key on the data partition.
pub fn sshd_config() -> String {
    format!(
        "# Lattice: SSH runs only when {CONFIG_MOUNT}/{AUTHORIZED_KEYS_FILE} exists.\n\
         HostKey {SSH_HOST_KEY_DIR}/ssh_host_ed25519_key\n\
         AuthorizedKeysFile {CONFIG_MOUNT}/{AUTHORIZED_KEYS_FILE}\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n"
    )
}

/// Drop-in for Debian's `ssh.service`: off unless a key was provisioned; makes this machine's
/// host key on first start (images carry none).
pub fn ssh_dropin() -> String {
    let key = format!("{SSH_HOST_KEY_DIR}/ssh_host_ed25519_key");
    format!(
        "[Unit]\n\
         RequiresMountsFor={CONFIG_MOUNT} {SSH_HOST_KEY_DIR}\n\
         ConditionPathExists={CONFIG_MOUNT}/{AUTHORIZED_KEYS_FILE}\n\
         \n\
         [Service]\n\
         ExecStartPre=\n\
         ExecStartPre=/bin/sh -c 'test -s {key} || ssh-keygen -q -t ed25519 -N \"\" -f {key}'\n\
         ExecStartPre=/usr/sbin/sshd -t\n"
    )
}

/// The README a provider finds on the config partition.
pub fn config_readme() -> String {
    format!(
        "Lattice node configuration\r\n\
         ==========================\r\n\
         \r\n\
         Put the provisioning string from your fleet (`lattice tokens create`) in a file\r\n\
         named `{PROVISIONING_FILE}` here (one line, starting with lattice1:), or run\r\n\
         `lattice image provision IMAGE --provisioning STRING` before flashing.\r\n\
         \r\n\
         Optional: a file named `{AUTHORIZED_KEYS_FILE}` with SSH public keys turns SSH on\r\n\
         (root login with those keys only; no passwords anywhere).\r\n\
         \r\n\
         Optional: a file named `{WIFI_FILE}` joins a Wi-Fi network (a cable is preferred\r\n\
         when both work). Lines of key=value:\r\n\
         \r\n\
         \x20   ssid=Home Network\r\n\
         \x20   psk=the network's password (8 to 63 characters)\r\n\
         \x20   country=DE            (optional: where the node is, for legal channels)\r\n\
         \x20   hidden=yes            (optional: the network is not broadcast)\r\n\
         \r\n\
         For a network without a password write open=yes instead of psk=. Or run\r\n\
         `lattice image provision IMAGE --wifi-ssid NAME --wifi-psk-file FILE`.\r\n\
         \r\n\
         The node reads this partition at start; once registered, its identity lives on\r\n\
         the data partition and the provisioning string is not needed any more.\r\n"
    )
}

/// Checks `/etc/shadow` text: every account must be locked or have a real hash (no empty and
/// no default password). Returns the offending account names.
pub fn accounts_with_password_problems(shadow: &str) -> Vec<String> {
    shadow
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let hash = f.next()?;
            let locked = hash.starts_with('!') || hash.starts_with('*');
            let real_hash = hash.starts_with('$') && hash.len() > 20;
            (!locked && !real_hash).then(|| name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_mounts_state_by_label_and_never_remounts_root() {
        let f = fstab();
        assert!(f.contains("PARTLABEL=lattice-data  /data  ext4"));
        assert!(f.contains("PARTLABEL=lattice-config  /boot/lattice-config  vfat  ro,"));
        assert!(f.contains("/data/latticed  /var/lib/latticed  none  bind"));
        assert!(f.contains("/data/docker  /var/lib/docker  none  bind"));
        assert!(f.contains("tmpfs  /tmp  tmpfs  mode=1777"));
        assert!(
            !f.contains("PARTUUID"),
            "root images are device-independent"
        );
        for line in f.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 6, "{line}");
            assert_ne!(fields[1], "/", "root stays as the kernel mounted it (ro)");
        }
    }

    #[test]
    fn the_data_partition_grows_and_its_file_system_follows() {
        let conf = repart_data_conf();
        // The layout's only linux-generic partition is the data one, and it is the last.
        assert!(conf.contains("[Partition]\nType=linux-generic\n"), "{conf}");
        assert!(
            !conf.contains("SizeMaxBytes"),
            "it takes the whole rest: {conf}"
        );
        let data = fstab()
            .lines()
            .find(|l| l.contains(&format!(" {DATA_MOUNT} ")))
            .unwrap()
            .to_string();
        assert!(data.contains("x-systemd.growfs"), "{data}");
        assert!(
            data.contains("x-systemd.after=systemd-repart.service"),
            "{data}"
        );
    }

    #[test]
    fn latticed_is_a_notify_service_with_a_watchdog() {
        let unit = latticed_unit();
        assert!(unit.contains("Type=notify\nNotifyAccess=main\n"), "{unit}");
        assert!(unit.contains(&format!("WatchdogSec={LATTICED_WATCHDOG_SECS}\n")));
        assert!(unit.contains("Restart=always"));
        assert!(unit.contains("ExecStart=/usr/bin/latticed --config /etc/lattice/latticed.toml"));
    }

    #[test]
    fn networkd_leaves_container_interfaces_to_docker() {
        let wired = network_file();
        assert!(wired.contains("Name=en* eth*"), "{wired}");
        let unmanaged = container_links_file();
        assert!(unmanaged.contains("Unmanaged=yes"));
        for name in ["veth*", "docker*", "lt*", "br-*"] {
            assert!(unmanaged.contains(name), "{name}: {unmanaged}");
        }
    }

    #[test]
    fn wifi_runs_only_with_the_file_on_every_wireless_interface_and_keeps_the_key_in_run() {
        let unit = wifi_unit();
        assert!(unit.contains("ConditionPathExists=/boot/lattice-config/wifi\n"));
        assert!(unit.contains(
            "--write-wpa-config /boot/lattice-config/wifi /run/lattice-wifi/%I.conf && exec /sbin/wpa_supplicant -i %I -c /run/lattice-wifi/%I.conf"
        ));
        assert!(unit.contains("RestartPreventExitStatus=78\n"));
        let rule = wifi_udev_rule();
        assert!(rule.contains("ENV{DEVTYPE}==\"wlan\""));
        assert!(rule.contains("SYSTEMD_WANTS}+=\"lattice-wifi@$name.service\""));
        // After Debian's rule that names the interface.
        let file = WIFI_UDEV_RULE.rsplit('/').next().unwrap();
        assert!(file > "80-net-setup-link.rules", "{file}");
        assert!(wait_online_dropin().contains("--any"));
        assert!(wifi_network_file().contains("[IPv6AcceptRA]\nRouteMetric=2048"));
        // A cable wins: Wi-Fi routes weigh more than networkd's default 1024.
        assert!(wifi_network_file().contains("Type=wlan"));
        assert!(wifi_network_file().contains("RouteMetric=2048"));
        assert!(MASKED_UNITS.contains(&"wpa_supplicant.service"));
        assert!(config_readme().contains("`wifi`"));
    }

    #[test]
    fn latticed_shares_the_hosts_mounts_and_runs_docker_workloads() {
        // Volumes latticed mounts must be visible to dockerd: no private mount namespace.
        let unit = latticed_unit();
        for ns in [
            "PrivateTmp=",
            "ProtectHome=",
            "ProtectSystem=",
            "ReadWritePaths=",
            "ProtectKernelModules=",
            "ProtectKernelLogs=",
            "PrivateMounts=",
            "ProtectClock=",
            "DeviceAllow=",
        ] {
            let set = unit
                .lines()
                .any(|l| l.starts_with(ns) && !l.ends_with("=no"));
            assert!(!set, "{ns} in latticed.service:\n{unit}");
        }
        assert!(unit.contains("NoNewPrivileges=yes"));
        let config = latticed_config();
        assert!(config.contains("runtime = \"docker\""));
        // The data partition of a fresh image is 1 GiB: the floor must leave room to pull.
        assert!(config.contains("disk_floor_bytes = 268435456"), "{config}");
        assert!(IMAGE_DISK_FLOOR < crate::layout::Sizes::default().data_mib << 20);
    }

    #[test]
    fn latticed_reads_provisioning_from_the_config_partition() {
        let c = latticed_config();
        assert!(c.contains("provisioning_file = \"/boot/lattice-config/provisioning\""));
        assert!(c.contains("data_dir = \"/var/lib/latticed\""));
    }

    #[test]
    fn ssh_needs_a_provisioned_key_and_never_a_password() {
        assert!(ssh_dropin().contains("ConditionPathExists=/boot/lattice-config/authorized_keys"));
        let c = sshd_config();
        assert!(c.contains("PasswordAuthentication no"));
        assert!(c.contains("AuthorizedKeysFile /boot/lattice-config/authorized_keys"));
    }

    #[test]
    fn shadow_check_flags_empty_and_unhashed_passwords() {
        let shadow = "root:*:19000:0:99999:7:::\n\
                      daemon:!:19000::::::\n\
                      alice::19000::::::\n\
                      bob:$y$j9T$abcdefghijklmnopqrstuv$0123456789:1::::::\n\
                      eve:password:1::::::\n";
        assert_eq!(
            accounts_with_password_problems(shadow),
            vec!["alice", "eve"]
        );
    }

    #[test]
    fn persistent_dirs_cover_what_writes_at_runtime() {
        let targets: Vec<&str> = PERSISTENT.iter().map(|p| p.target).collect();
        for t in [
            "/var/lib/latticed",
            "/var/lib/docker",
            "/var/lib/containerd",
            "/var/log",
        ] {
            assert!(targets.contains(&t), "{t}");
        }
        assert!(ENABLED_UNITS.contains(&"docker.service"));
    }
}
