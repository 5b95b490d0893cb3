//! Reads the GUID partition table of a raw image file, checking what a damaged or truncated
//! image would break: the protective MBR, the header signature and CRC, the entries' CRC, and
//! that every partition lies inside the file. `provision`, `inspect` and `qemu` refuse an image
//! this rejects, with the reason.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based index in the entry array.
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    pub part_uuid: String,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
}

impl GptPartition {
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size_bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

/// A partition table that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptTable {
    pub disk_guid: String,
    pub partitions: Vec<GptPartition>,
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is a qcow2 image; this needs the raw .img (or convert it: qemu-img convert -O raw)"
    )]
    Qcow2 { path: PathBuf },
    #[error("{path} is too short to hold a partition table ({len} bytes)")]
    TooShort { path: PathBuf, len: u64 },
    #[error("{path} has no protective MBR (not a GPT disk image)")]
    NoProtectiveMbr { path: PathBuf },
    #[error("{path} has no GPT header (signature `EFI PART` missing at LBA 1)")]
    NoHeader { path: PathBuf },
    #[error("{path}: GPT header checksum mismatch (the image is damaged)")]
    HeaderCrc { path: PathBuf },
    #[error("{path}: GPT partition entries checksum mismatch (the image is damaged)")]
    EntriesCrc { path: PathBuf },
    #[error("{path}: GPT header is malformed: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error(
        "{path}: partition {name} ends at byte {end} but the file has only {len} bytes \
         (truncated image?)"
    )]
    Truncated {
        path: PathBuf,
        name: String,
        end: u64,
        len: u64,
    },
    #[error("{path} has no partition named {name} (not a Lattice image?)")]
    Missing { path: PathBuf, name: String },
}

impl GptTable {
    /// Reads and checks the table of the image at `path`.
    pub fn read(path: &Path) -> Result<GptTable, GptError> {
        let io = |source| GptError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        read_from(&mut f, len, path)
    }

    /// The partition with this GPT name.
    pub fn find(&self, name: &str, path: &Path) -> Result<&GptPartition, GptError> {
        self.partitions
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| GptError::Missing {
                path: path.to_path_buf(),
                name: name.to_string(),
            })
    }
}

/// True if the file starts like a qcow2 image.
pub fn is_qcow2(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == QCOW2_MAGIC
}

fn read_from<R: Read + Seek>(r: &mut R, len: u64, path: &Path) -> Result<GptTable, GptError> {
    let p = || path.to_path_buf();
    let io = |source| GptError::Io { path: p(), source };
    if len < 34 * SECTOR {
        if len >= 4 {
            let mut magic = [0u8; 4];
            r.read_exact(&mut magic).map_err(io)?;
            if &magic == QCOW2_MAGIC {
                return Err(GptError::Qcow2 { path: p() });
            }
        }
        return Err(GptError::TooShort { path: p(), len });
    }
    let mut head = vec![0u8; 2 * SECTOR as usize];
    r.read_exact(&mut head).map_err(io)?;
    if &head[..4] == QCOW2_MAGIC {
        return Err(GptError::Qcow2 { path: p() });
    }
    let mbr = &head[..512];
    if mbr[510] != 0x55 || mbr[511] != 0xaa || !(0..4).any(|i| mbr[446 + 16 * i + 4] == 0xee) {
        return Err(GptError::NoProtectiveMbr { path: p() });
    }
    let hdr = &head[512..];
    if &hdr[..8] != b"EFI PART" {
        return Err(GptError::NoHeader { path: p() });
    }
    let header_size = u32le(hdr, 12) as usize;
    if !(92..=512).contains(&header_size) {
        return Err(GptError::Malformed {
            path: p(),
            what: format!("header size {header_size}"),
        });
    }
    let stored_crc = u32le(hdr, 16);
    let mut check = hdr[..header_size].to_vec();
    check[16..20].fill(0);
    if crc32fast::hash(&check) != stored_crc {
        return Err(GptError::HeaderCrc { path: p() });
    }
    let entries_lba = u64le(hdr, 72);
    let count = u32le(hdr, 80) as u64;
    let entry_size = u32le(hdr, 84) as u64;
    let entries_crc = u32le(hdr, 88);
    if !(128..=4096).contains(&entry_size) || count > 1024 || entries_lba < 2 {
        return Err(GptError::Malformed {
            path: p(),
            what: format!("{count} entries of {entry_size} bytes at LBA {entries_lba}"),
        });
    }
    let bytes = count * entry_size;
    if entries_lba * SECTOR + bytes > len {
        return Err(GptError::TooShort { path: p(), len });
    }
    let mut entries = vec![0u8; bytes as usize];
    r.seek(SeekFrom::Start(entries_lba * SECTOR)).map_err(io)?;
    r.read_exact(&mut entries).map_err(io)?;
    if crc32fast::hash(&entries) != entries_crc {
        return Err(GptError::EntriesCrc { path: p() });
    }
    let mut partitions = Vec::new();
    for (i, e) in entries.chunks(entry_size as usize).enumerate() {
        if e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let name_units: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        let part = GptPartition {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&name_units),
            type_guid: guid(&e[..16]),
            part_uuid: guid(&e[16..32]),
            first_lba: u64le(e, 32),
            last_lba: u64le(e, 40),
        };
        if part.last_lba < part.first_lba {
            return Err(GptError::Malformed {
                path: p(),
                what: format!("partition {} ends before it starts", part.name),
            });
        }
        let end = part.offset_bytes() + part.size_bytes();
        if end > len {
            return Err(GptError::Truncated {
                path: p(),
                name: part.name,
                end,
                len,
            });
        }
        partitions.push(part);
    }
    Ok(GptTable {
        disk_guid: guid(&hdr[56..72]),
        partitions,
    })
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// GPT stores the first three GUID fields little-endian.
fn guid(b: &[u8]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        hex::encode_upper(&b[8..10]),
        hex::encode_upper(&b[10..16])
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    /// Encodes a GUID string the way GPT stores it (inverse of [`guid`]).
    fn guid_bytes(s: &str) -> [u8; 16] {
        let h = hex::decode(s.replace('-', "")).unwrap();
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[h[3], h[2], h[1], h[0]]);
        b[4..6].copy_from_slice(&[h[5], h[4]]);
        b[6..8].copy_from_slice(&[h[7], h[6]]);
        b[8..].copy_from_slice(&h[8..]);
        b
    }

    /// A minimal valid GPT disk in memory: `parts` are (name, first_lba, last_lba).
    pub(crate) fn disk(parts: &[(&str, u64, u64)], len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        d[446 + 4] = 0xee;
        d[510] = 0x55;
        d[511] = 0xaa;
        let mut entries = vec![0u8; 128 * 128];
        for (i, (name, first, last)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&guid_bytes("0FC63DAF-8483-4772-8E79-3D69D8477DE4"));
            e[16..32].copy_from_slice(&guid_bytes("11111111-2222-4333-8444-555555555555"));
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        d[1024..1024 + entries.len()].copy_from_slice(&entries);
        let h = &mut d[512..1024];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&[0, 0, 1, 0]);
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[56..72].copy_from_slice(&guid_bytes("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"));
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        d
    }

    fn parse(d: &[u8]) -> Result<GptTable, GptError> {
        read_from(&mut Cursor::new(d), d.len() as u64, Path::new("x.img"))
    }

    #[test]
    fn reads_names_guids_and_offsets() {
        let d = disk(
            &[("lattice-config", 40, 49), ("lattice-data", 50, 59)],
            64 * 512,
        );
        let t = parse(&d).unwrap();
        assert_eq!(t.disk_guid, "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE");
        assert_eq!(t.partitions.len(), 2);
        let c = t.find("lattice-config", Path::new("x")).unwrap();
        assert_eq!(c.offset_bytes(), 40 * 512);
        assert_eq!(c.size_bytes(), 10 * 512);
        assert_eq!(c.type_guid, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(c.part_uuid, "11111111-2222-4333-8444-555555555555");
        let e = t.find("lattice-esp", Path::new("x")).unwrap_err();
        assert!(
            e.to_string().contains("no partition named lattice-esp"),
            "{e}"
        );
    }

    #[test]
    fn damaged_images_are_refused_with_the_reason() {
        let good = disk(&[("lattice-config", 40, 49)], 64 * 512);

        let mut d = good.clone();
        d[510] = 0;
        assert!(matches!(parse(&d), Err(GptError::NoProtectiveMbr { .. })));

        let mut d = good.clone();
        d[512] = b'X';
        assert!(matches!(parse(&d), Err(GptError::NoHeader { .. })));

        let mut d = good.clone();
        d[512 + 40] ^= 1; // first usable LBA: covered by the header CRC
        assert!(matches!(parse(&d), Err(GptError::HeaderCrc { .. })));

        let mut d = good.clone();
        d[1024 + 60] ^= 1; // a name byte: covered by the entries CRC
        assert!(matches!(parse(&d), Err(GptError::EntriesCrc { .. })));

        let d = &good[..45 * 512];
        let e = parse(d).unwrap_err();
        assert!(matches!(e, GptError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");

        let e = parse(&good[..1000]).unwrap_err();
        assert!(matches!(e, GptError::TooShort { .. }), "{e}");

        let mut q = good.clone();
        q[..4].copy_from_slice(QCOW2_MAGIC);
        assert!(matches!(parse(&q), Err(GptError::Qcow2 { .. })));
        assert!(matches!(parse(&q[..100]), Err(GptError::Qcow2 { .. })));
    }

    #[test]
    fn zeroes_are_not_a_disk() {
        let e = parse(&vec![0u8; 64 * 512]).unwrap_err();
        assert!(e.to_string().contains("protective MBR"), "{e}");
    }
}
