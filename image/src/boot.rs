//! Boot files on the EFI system partition: the configuration embedded in GRUB's standalone
//! EFI binary, the A/B `grub.cfg` that RAUC's grub backend drives through `grubenv`, the initial
//! `grubenv`, and RAUC's `system.conf` (which lives in the root filesystem).
//!
//! Slot selection follows RAUC's documented grub scheme: `ORDER` lists the slots to try,
//! `X_OK=1` marks a slot good, `X_TRY=1` is set before booting it and cleared by
//! `rauc status mark-good`. A slot that never gets marked good is skipped on the next boot.

use crate::arch::Arch;
use crate::layout::{Layout, Role};

/// Where the ESP is mounted in the running system.
pub const ESP_MOUNT: &str = "/boot/efi";
/// Directory on the ESP holding `grub.cfg` and `grubenv`.
pub const ESP_DIR: &str = "EFI/lattice";
/// GRUB modules built into the standalone binary (GRUB needs `part_gpt` and `ext2` before it
/// can find the root by UUID).
pub const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "ext2",
    "search",
    "search_fs_uuid",
    "loadenv",
    "test",
    "linux",
    "echo",
    "normal",
    "configfile",
    "serial",
    "terminal",
    "gzio",
    "all_video",
];
/// GRUB's environment block is exactly this long.
pub const GRUBENV_LEN: usize = 1024;

/// The configuration embedded in `BOOTX64.EFI`: find the ESP by its volume id, then load the
/// real configuration from it (so `grub.cfg` can change without rebuilding GRUB).
pub fn embedded_cfg(layout: &Layout) -> String {
    let esp = layout.get(Role::Esp).fat_uuid();
    format!(
        "search --no-floppy --fs-uuid --set=esp {esp}\n\
         set prefix=($esp)/{ESP_DIR}\n\
         configfile ($esp)/{ESP_DIR}/grub.cfg\n"
    )
}

/// The A/B `grub.cfg` on the ESP.
pub fn grub_cfg(layout: &Layout) -> String {
    let arch = layout.arch;
    let mut s = String::from(
        "# Lattice: A/B slot selection for RAUC's grub backend (state in grubenv beside this file).\n\
         set default=0\n\
         set timeout=1\n\
         if serial --unit=0 --speed=115200; then\n\
         \x20 terminal_input console serial\n\
         \x20 terminal_output console serial\n\
         fi\n\
         set ORDER=\"A B\"\n\
         set A_OK=0\nset B_OK=0\nset A_TRY=0\nset B_TRY=0\n\
         load_env --file ${prefix}/grubenv\n\
         set chosen=\"\"\n\
         for SLOT in $ORDER; do\n\
         \x20 if [ \"$SLOT\" = \"A\" ]; then INDEX=0; OK=$A_OK; TRY=$A_TRY; A_TRY=1; fi\n\
         \x20 if [ \"$SLOT\" = \"B\" ]; then INDEX=1; OK=$B_OK; TRY=$B_TRY; B_TRY=1; fi\n\
         \x20 if [ \"$OK\" -eq 1 -a \"$TRY\" -eq 0 ]; then default=$INDEX; chosen=$SLOT; break; fi\n\
         done\n\
         if [ -z \"$chosen\" ]; then\n\
         \x20 echo \"Lattice: no slot is marked good and untried; booting slot A\"\n\
         \x20 default=0\n\
         fi\n\
         save_env --file ${prefix}/grubenv A_TRY B_TRY\n",
    );
    for (slot, role) in [("A", Role::RootA), ("B", Role::RootB)] {
        let p = layout.get(role);
        s.push_str(&format!(
            "menuentry \"Lattice slot {slot}\" {{\n\
             \x20 search --no-floppy --fs-uuid --set=root {fs}\n\
             \x20 linux /vmlinuz {cmdline}\n\
             \x20 initrd /initrd.img\n\
             }}\n",
            fs = p.fs_id,
            cmdline = kernel_cmdline(arch, &p.part_uuid, slot),
        ));
    }
    s
}

/// The kernel command line for one slot: read-only root by partition GUID, consoles on screen
/// and on the serial port (last one is `/dev/console`, where systemd and latticed print).
pub fn kernel_cmdline(arch: Arch, root_part_uuid: &str, slot: &str) -> String {
    // Lower case: the initramfs looks the root up as /dev/disk/by-partuuid/<uuid>, and udev
    // names those links in lower case.
    let root_part_uuid = root_part_uuid.to_lowercase();
    format!(
        "root=PARTUUID={root_part_uuid} ro rootwait console=tty0 console={},115200 \
         rauc.slot={slot} systemd.show_status=auto",
        arch.serial_console()
    )
}

/// A GRUB environment block holding `vars`, padded with `#` to [`GRUBENV_LEN`].
pub fn grubenv(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("# GRUB Environment Block\n");
    for (k, v) in vars {
        s.push_str(&format!("{k}={v}\n"));
    }
    let mut b = s.into_bytes();
    b.resize(GRUBENV_LEN.max(b.len()), b'#');
    b
}

/// The fresh image's boot state: slot A good, slot B empty (RAUC fills it on the first update).
pub fn initial_grubenv() -> Vec<u8> {
    grubenv(&[
        ("ORDER", "A B"),
        ("A_OK", "1"),
        ("A_TRY", "0"),
        ("B_OK", "0"),
        ("B_TRY", "0"),
    ])
}

/// RAUC's `/etc/rauc/system.conf`. Slots are named by GPT partition name, not GUID: the root
/// filesystem (and so this file) is the same on every device, whatever its disk's GUIDs.
pub fn rauc_system_conf(arch: Arch) -> String {
    format!(
        "# Lattice: RAUC slots and bootloader. The keyring for signed bundles comes with OTA.\n\
         [system]\n\
         compatible=lattice-{arch}\n\
         bootloader=grub\n\
         grubenv={ESP_MOUNT}/{ESP_DIR}/grubenv\n\
         statusfile=/var/lib/rauc/status.raucs\n\
         \n\
         # [keyring] path=/etc/rauc/keyring.pem  (with OTA: RAUC verifies bundles against it)\n\
         \n\
         [slot.rootfs.0]\n\
         device=/dev/disk/by-partlabel/{a}\n\
         type=ext4\n\
         bootname=A\n\
         \n\
         [slot.rootfs.1]\n\
         device=/dev/disk/by-partlabel/{b}\n\
         type=ext4\n\
         bootname=B\n",
        a = Role::RootA.part_label(),
        b = Role::RootB.part_label(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Sizes;

    fn layout() -> Layout {
        Layout::plan(Arch::X86_64, Sizes::default(), b"boot").unwrap()
    }

    #[test]
    fn grubenv_is_exactly_one_block() {
        let env = initial_grubenv();
        assert_eq!(env.len(), GRUBENV_LEN);
        let text = String::from_utf8(env).unwrap();
        assert!(text.starts_with("# GRUB Environment Block\nORDER=A B\nA_OK=1\n"));
        assert!(text.ends_with('#'));
    }

    #[test]
    fn grub_cfg_boots_each_slot_from_its_own_root() {
        let l = layout();
        let cfg = grub_cfg(&l);
        for role in [Role::RootA, Role::RootB] {
            let p = l.get(role);
            assert!(cfg.contains(&format!("--set=root {}", p.fs_id)), "{cfg}");
            let uuid = p.part_uuid.to_lowercase();
            assert!(cfg.contains(&format!("root=PARTUUID={uuid} ro")), "{cfg}");
        }
        assert!(cfg.contains("rauc.slot=A") && cfg.contains("rauc.slot=B"));
        assert!(cfg.contains("console=ttyS0,115200"));
        assert!(cfg.contains("load_env --file ${prefix}/grubenv"));
        assert!(cfg.contains("save_env --file ${prefix}/grubenv A_TRY B_TRY"));
        // Slot A is the first menu entry (index 0), B the second.
        assert!(cfg.find("slot A\"").unwrap() < cfg.find("slot B\"").unwrap());
    }

    #[test]
    fn embedded_cfg_finds_the_esp_by_volume_id() {
        let l = layout();
        let cfg = embedded_cfg(&l);
        assert!(cfg.contains(&l.get(Role::Esp).fat_uuid()));
        assert!(cfg.contains("configfile ($esp)/EFI/lattice/grub.cfg"));
    }

    #[test]
    fn rauc_conf_names_slots_by_partition_label_and_arch() {
        let c = rauc_system_conf(Arch::Arm64);
        assert!(c.contains("compatible=lattice-arm64"));
        assert!(c.contains("device=/dev/disk/by-partlabel/lattice-root-a"));
        assert!(c.contains("grubenv=/boot/efi/EFI/lattice/grubenv"));
        assert!(c.contains("bootloader=grub"));
    }

    #[test]
    fn arm64_uses_its_own_serial_console() {
        let c = kernel_cmdline(Arch::Arm64, "X", "A");
        assert!(c.contains("console=ttyAMA0,115200"), "{c}");
    }
}
