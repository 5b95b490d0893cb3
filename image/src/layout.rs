//! The disk layout: which partitions, in which order, how big, at which offset, with which
//! identifiers. Pure arithmetic and text; the executor turns it into `sfdisk` input and `dd`
//! offsets, and `provision`/`inspect` find partitions again by their GPT names.
//!
//! ```text
//!  1 MiB  GPT + alignment
//!  p1     lattice-config   FAT   LATTICE-CFG   provider-editable (provisioning, SSH key)
//!  p2     lattice-esp      FAT   ESP           GRUB (removable-media path), grub.cfg, grubenv
//!  p3     lattice-root-a   ext4  read-only root, slot A (booted first)
//!  p4     lattice-root-b   ext4  slot B: left empty, RAUC writes it on the first update
//!  p5     lattice-data     ext4  /data: identity, Docker, volumes (last, so it can grow)
//!  1 MiB  backup GPT
//! ```
//!
//! The config partition comes first because some systems only show the first FAT partition of
//! a removable disk; UEFI finds the ESP by its type wherever it is.

use crate::arch::Arch;
use sha2::{Digest, Sha256};

/// Bytes in a MiB; every partition starts and ends on a MiB boundary.
pub const MIB: u64 = 1024 * 1024;
/// Space before the first partition (protective MBR, GPT header, entries, alignment).
pub const HEAD_MIB: u64 = 1;
/// Space after the last partition for the backup GPT.
pub const TAIL_MIB: u64 = 1;

const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// "Microsoft basic data": Windows and macOS mount it, so a provider can edit it anywhere.
const BASIC_DATA_TYPE: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const LINUX_DATA_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Config,
    Esp,
    RootA,
    RootB,
    Data,
}

impl Role {
    /// GPT partition name: how `provision`, `inspect` and RAUC's config find it.
    pub fn part_label(self) -> &'static str {
        match self {
            Role::Config => "lattice-config",
            Role::Esp => "lattice-esp",
            Role::RootA => "lattice-root-a",
            Role::RootB => "lattice-root-b",
            Role::Data => "lattice-data",
        }
    }

    /// Filesystem label (FAT labels are at most 11 characters, upper case).
    pub fn fs_label(self) -> &'static str {
        match self {
            Role::Config => "LATTICE-CFG",
            Role::Esp => "LATTICE-ESP",
            Role::RootA => "lattice-root-a",
            Role::RootB => "lattice-root-b",
            Role::Data => "lattice-data",
        }
    }
}

/// Partition sizes in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub config_mib: u64,
    pub esp_mib: u64,
    /// Each root slot.
    pub root_mib: u64,
    pub data_mib: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            config_mib: 16,
            esp_mib: 64,
            root_mib: 1536,
            data_mib: 1024,
        }
    }
}

/// One partition as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub role: Role,
    /// 1-based partition number.
    pub number: u32,
    pub offset_mib: u64,
    pub size_mib: u64,
    pub type_guid: String,
    /// GPT unique partition GUID (the kernel's `root=PARTUUID=`).
    pub part_uuid: String,
    /// Filesystem UUID (ext4) or volume id (FAT, 8 hex digits).
    pub fs_id: String,
}

impl Partition {
    pub fn offset_bytes(&self) -> u64 {
        self.offset_mib * MIB
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_mib * MIB
    }
    /// FAT volume id as GRUB and `/dev/disk/by-uuid` show it: `ABCD-1234`.
    pub fn fat_uuid(&self) -> String {
        format!("{}-{}", &self.fs_id[..4], &self.fs_id[4..])
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub arch: Arch,
    /// GPT disk GUID.
    pub disk_guid: String,
    pub partitions: Vec<Partition>,
    pub total_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("partition size for {0} must be at least {1} MiB")]
    TooSmall(&'static str, u64),
}

impl Layout {
    /// Plans the disk. `seed` makes every identifier (disk GUID, partition GUIDs, filesystem
    /// ids); the same seed gives the same layout.
    pub fn plan(arch: Arch, sizes: Sizes, seed: &[u8]) -> Result<Layout, LayoutError> {
        let minimums = [
            ("config", sizes.config_mib, 2),
            ("esp", sizes.esp_mib, 33),
            ("root", sizes.root_mib, 256),
            ("data", sizes.data_mib, 64),
        ];
        for (name, size, min) in minimums {
            if size < min {
                return Err(LayoutError::TooSmall(name, min));
            }
        }
        let order = [
            (Role::Config, sizes.config_mib, BASIC_DATA_TYPE),
            (Role::Esp, sizes.esp_mib, ESP_TYPE),
            (Role::RootA, sizes.root_mib, arch.root_type_guid()),
            (Role::RootB, sizes.root_mib, arch.root_type_guid()),
            (Role::Data, sizes.data_mib, LINUX_DATA_TYPE),
        ];
        let mut offset = HEAD_MIB;
        let mut partitions = Vec::new();
        for (i, (role, size, ty)) in order.into_iter().enumerate() {
            let fs_id = match role {
                Role::Config | Role::Esp => {
                    hex::encode_upper(&derive(seed, role.part_label(), "fs")[..4])
                }
                _ => guid(seed, role.part_label(), "fs").to_lowercase(),
            };
            partitions.push(Partition {
                role,
                number: i as u32 + 1,
                offset_mib: offset,
                size_mib: size,
                type_guid: ty.to_string(),
                part_uuid: guid(seed, role.part_label(), "part"),
                fs_id,
            });
            offset += size;
        }
        Ok(Layout {
            arch,
            disk_guid: guid(seed, "disk", "disk"),
            partitions,
            total_mib: offset + TAIL_MIB,
        })
    }

    pub fn get(&self, role: Role) -> &Partition {
        // `plan` always creates every role.
        self.partitions
            .iter()
            .find(|p| p.role == role)
            .unwrap_or(&self.partitions[0])
    }

    /// Input for `sfdisk IMAGE` (script format), sizes in 512-byte sectors.
    pub fn sfdisk_script(&self) -> String {
        let mut s = format!(
            "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: 2048\n\n",
            self.disk_guid
        );
        for p in &self.partitions {
            s.push_str(&format!(
                "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
                p.offset_bytes() / 512,
                p.size_bytes() / 512,
                p.type_guid,
                p.part_uuid,
                p.role.part_label()
            ));
        }
        s
    }
}

fn derive(seed: &[u8], name: &str, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lattice-image-id\0");
    h.update(seed);
    h.update([0]);
    h.update(name.as_bytes());
    h.update([0]);
    h.update(what.as_bytes());
    h.finalize().into()
}

/// A version-4-shaped GUID derived from the seed, upper case, dashed.
fn guid(seed: &[u8], name: &str, what: &str) -> String {
    let mut b = derive(seed, name, what);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode_upper(&b[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::plan(Arch::X86_64, Sizes::default(), b"seed").unwrap()
    }

    #[test]
    fn partitions_are_contiguous_aligned_and_leave_room_for_the_backup_gpt() {
        let l = layout();
        assert_eq!(l.partitions.len(), 5);
        let mut expect = HEAD_MIB;
        for p in &l.partitions {
            assert_eq!(p.offset_mib, expect, "{:?}", p.role);
            expect += p.size_mib;
        }
        assert_eq!(l.total_mib, expect + TAIL_MIB);
        assert_eq!(l.get(Role::Data).number, 5, "data is last so it can grow");
        // systemd-repart's definition (`system::repart_data_conf`) matches by type: the data
        // partition must be the only linux-generic one.
        let generic: Vec<Role> = l
            .partitions
            .iter()
            .filter(|p| p.type_guid == LINUX_DATA_TYPE)
            .map(|p| p.role)
            .collect();
        assert_eq!(generic, vec![Role::Data]);
        assert_eq!(l.get(Role::Config).number, 1);
        assert_eq!(l.get(Role::RootA).size_mib, l.get(Role::RootB).size_mib);
    }

    #[test]
    fn identifiers_are_stable_per_seed_unique_and_well_formed() {
        let a = layout();
        assert_eq!(a, layout());
        let b = Layout::plan(Arch::X86_64, Sizes::default(), b"other").unwrap();
        assert_ne!(a.disk_guid, b.disk_guid);
        let mut ids: Vec<&str> = a.partitions.iter().map(|p| p.part_uuid.as_str()).collect();
        ids.push(&a.disk_guid);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6);
        for id in ids {
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(&id[14..15], "4", "version 4: {id}");
        }
        let esp = a.get(Role::Esp);
        assert_eq!(esp.fs_id.len(), 8);
        assert_eq!(esp.fat_uuid().len(), 9);
        assert_eq!(a.get(Role::RootA).fs_id.len(), 36);
    }

    #[test]
    fn root_type_follows_the_architecture() {
        let x = layout();
        let a = Layout::plan(Arch::Arm64, Sizes::default(), b"seed").unwrap();
        assert_eq!(x.get(Role::RootA).type_guid, Arch::X86_64.root_type_guid());
        assert_eq!(a.get(Role::RootB).type_guid, Arch::Arm64.root_type_guid());
    }

    #[test]
    fn sfdisk_script_names_every_partition_in_sectors() {
        let l = layout();
        let s = l.sfdisk_script();
        assert!(s.starts_with("label: gpt\n"));
        assert!(s.contains("start=2048, size=32768, type=EBD0A0A2"), "{s}");
        assert!(s.contains("name=\"lattice-data\""));
        assert_eq!(s.matches("start=").count(), 5);
    }

    #[test]
    fn too_small_partitions_are_refused_by_name() {
        let sizes = Sizes {
            root_mib: 10,
            ..Sizes::default()
        };
        let e = Layout::plan(Arch::X86_64, sizes, b"s").unwrap_err();
        assert_eq!(e, LayoutError::TooSmall("root", 256));
    }
}
