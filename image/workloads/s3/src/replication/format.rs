//! The replication journal's bytes, without I/O: records, segments and the checkpoint.
//!
//! A segment file is the magic `LS3JNL01` followed by records, each framed as
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of the payload | payload (JSON)
//! ```
//!
//! The payload names what changed, never how: `{"seq":7,"at_ms":…,"op":"object","bucket":"b",
//! "key":"k","bytes":1024}` or `{"seq":8,"at_ms":…,"op":"bucket","bucket":"b"}`. The shipper
//! sends the *current* state of that object or bucket when it reaches the record, so shipping
//! a record twice, or an old record after a newer one of the same key, leaves the replica
//! where the primary is.

use serde::{Deserialize, Serialize};

pub const SEGMENT_MAGIC: &[u8; 8] = b"LS3JNL01";
const FRAME_HEADER: usize = 8;
/// A payload longer than this is corruption (a key is at most 1 KiB, a bucket 63 bytes).
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// An object was written, copied, completed or deleted.
    Object { bucket: String, key: String },
    /// A bucket was created or deleted, or its CORS rules changed.
    Bucket { bucket: String },
}

/// One journal entry. (No `deny_unknown_fields`: serde does not support it with `flatten`;
/// the CRC, not the parser, is what detects damage.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// When the change was made (ms since the epoch): the age of the oldest pending change.
    pub at_ms: i64,
    #[serde(flatten)]
    pub change: Change,
    /// The object's size after the change (0 for deletes and buckets): the pending bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The framed bytes of one record.
pub fn encode(record: &Record) -> Vec<u8> {
    // A struct of strings and integers always serialises.
    let payload = serde_json::to_vec(record).unwrap_or_default();
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// How a segment's bytes ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a good record.
    Clean,
    /// The last record is incomplete from `offset` on (a write cut by a crash; it was never
    /// acknowledged, since the answer waits for the fsync of the whole record).
    Torn { offset: u64 },
    /// A complete record at `offset` is damaged; nothing after it can be trusted to be read.
    Corrupt { offset: u64, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Record>,
    pub end: End,
}

/// Reads a whole segment. Records must carry increasing sequence numbers.
pub fn decode_segment(buf: &[u8]) -> Scan {
    let mut records: Vec<Record> = Vec::new();
    let corrupt = |records, offset: usize, reason: String| Scan {
        records,
        end: End::Corrupt {
            offset: offset as u64,
            reason,
        },
    };
    if buf.len() < SEGMENT_MAGIC.len() {
        if SEGMENT_MAGIC.starts_with(buf) {
            return Scan {
                records,
                end: End::Torn { offset: 0 },
            };
        }
        return corrupt(records, 0, "not a journal segment (bad magic)".into());
    }
    if &buf[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return corrupt(records, 0, "not a journal segment (bad magic)".into());
    }
    let mut at = SEGMENT_MAGIC.len();
    while at < buf.len() {
        let rest = &buf[at..];
        // A crash during the last write may leave a short frame, or (after a power cut on
        // some file systems) zeros where the frame was to be.
        if rest.len() < FRAME_HEADER || rest.iter().all(|&b| b == 0) {
            return Scan {
                records,
                end: End::Torn { offset: at as u64 },
            };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_PAYLOAD {
            return corrupt(records, at, format!("record length {len} out of range"));
        }
        if rest.len() < FRAME_HEADER + len {
            return Scan {
                records,
                end: End::Torn { offset: at as u64 },
            };
        }
        let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
        if crc32fast::hash(payload) != crc {
            return corrupt(records, at, "record checksum mismatch".into());
        }
        let record: Record = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => return corrupt(records, at, format!("record does not parse: {e}")),
        };
        if let Some(prev) = records.last() {
            if record.seq <= prev.seq {
                let reason = format!(
                    "sequence number {} does not follow {}",
                    record.seq, prev.seq
                );
                return corrupt(records, at, reason);
            }
        }
        records.push(record);
        at += FRAME_HEADER + len;
    }
    Scan {
        records,
        end: End::Clean,
    }
}

/// The segment file name of a segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jnl")
}

/// The first sequence number of a segment file name, or `None` for another file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jnl")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// `checkpoint.json`: how far the replica has acknowledged, and which replica that is (a new
/// replica starts from a full copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    /// The replica's URL.
    pub target: String,
    /// Every record up to and including this sequence number reached the replica.
    pub acked: u64,
}

pub const CHECKPOINT_VERSION: u32 = 1;

impl Checkpoint {
    pub fn new(target: &str, acked: u64) -> Self {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            target: target.to_owned(),
            acked,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let c: Checkpoint = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if c.version != CHECKPOINT_VERSION {
            return Err(format!("unknown checkpoint version {}", c.version));
        }
        Ok(c)
    }
}

/// The segments (by first sequence number, ascending, the last one being written) that may be
/// removed once everything up to `acked` is acknowledged: those before the active one whose
/// records all precede the next segment's first record, which is at most `acked + 1`.
pub fn removable_segments(firsts: &[u64], acked: u64, keep: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    for pair in firsts.windows(2) {
        let (first, next) = (pair[0], pair[1]);
        if next <= acked.saturating_add(1) && !keep.contains(&first) {
            out.push(first);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(seq: u64, key: &str, bytes: u64) -> Record {
        Record {
            seq,
            at_ms: 1_700_000_000_000 + seq as i64,
            change: Change::Object {
                bucket: "photos".into(),
                key: key.into(),
            },
            bytes,
        }
    }

    fn segment(records: &[Record]) -> Vec<u8> {
        let mut buf = SEGMENT_MAGIC.to_vec();
        for r in records {
            buf.extend(encode(r));
        }
        buf
    }

    #[test]
    fn records_round_trip() {
        let records = vec![
            obj(1, "a/b.jpg", 10),
            Record {
                seq: 2,
                at_ms: 5,
                change: Change::Bucket {
                    bucket: "logs".into(),
                },
                bytes: 0,
            },
            obj(3, "ключ with spaces & \"quotes\"\n", 0),
        ];
        let scan = decode_segment(&segment(&records));
        assert_eq!(scan.end, End::Clean);
        assert_eq!(scan.records, records);
    }

    #[test]
    fn the_payload_says_what_changed_not_how() {
        let json = String::from_utf8(encode(&obj(7, "k", 3))[8..].to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"seq":7,"at_ms":1700000000007,"op":"object","bucket":"photos","key":"k","bytes":3}"#
        );
    }

    #[test]
    fn a_cut_last_record_is_a_torn_tail_at_its_offset() {
        let full = segment(&[obj(1, "a", 1), obj(2, "b", 2)]);
        let second = SEGMENT_MAGIC.len() + encode(&obj(1, "a", 1)).len();
        for cut in second + 1..full.len() {
            let scan = decode_segment(&full[..cut]);
            assert_eq!(scan.records, [obj(1, "a", 1)], "cut at {cut}");
            assert_eq!(
                scan.end,
                End::Torn {
                    offset: second as u64
                }
            );
        }
        // zeros where the last record was to be
        let mut zeros = full[..second].to_vec();
        zeros.extend([0u8; 40]);
        assert_eq!(
            decode_segment(&zeros).end,
            End::Torn {
                offset: second as u64
            }
        );
        assert_eq!(decode_segment(b"LS3").end, End::Torn { offset: 0 });
    }

    #[test]
    fn a_damaged_record_is_corrupt_at_its_offset_and_nothing_after_it_is_read() {
        let records = [obj(1, "a", 1), obj(2, "b", 2), obj(3, "c", 3)];
        let full = segment(&records);
        let second = SEGMENT_MAGIC.len() + encode(&records[0]).len();
        // a flipped bit in the second record's payload
        let mut bad = full.clone();
        bad[second + 12] ^= 0x01;
        let scan = decode_segment(&bad);
        assert_eq!(scan.records, [obj(1, "a", 1)]);
        assert!(
            matches!(&scan.end, End::Corrupt { offset, reason }
                if *offset == second as u64 && reason.contains("checksum")),
            "{:?}",
            scan.end
        );
        // a length out of range
        let mut bad = full.clone();
        bad[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            matches!(decode_segment(&bad).end, End::Corrupt { offset, .. } if offset == second as u64)
        );
        // a valid frame holding something else
        let mut bad = full[..second].to_vec();
        let payload = b"{\"seq\":2}";
        bad.extend((payload.len() as u32).to_le_bytes());
        bad.extend(crc32fast::hash(payload).to_le_bytes());
        bad.extend(payload);
        bad.extend(encode(&records[2]));
        assert!(
            matches!(decode_segment(&bad).end, End::Corrupt { ref reason, .. } if reason.contains("parse"))
        );
        // sequence numbers going back
        let bad = segment(&[obj(5, "a", 1), obj(4, "b", 1)]);
        assert!(
            matches!(decode_segment(&bad).end, End::Corrupt { ref reason, .. } if reason.contains("does not follow"))
        );
        // not a segment
        assert!(matches!(
            decode_segment(b"something else").end,
            End::Corrupt { offset: 0, .. }
        ));
    }

    #[test]
    fn segment_names_sort_by_sequence() {
        assert_eq!(segment_name(42), "00000000000000000042.jnl");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.jnl"), None);
        assert_eq!(parse_segment_name("checkpoint.json"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn checkpoint_round_trip_and_versions() {
        let c = Checkpoint::new("http://10.0.0.2:9000", 41);
        assert_eq!(Checkpoint::decode(&c.encode()).unwrap(), c);
        assert!(
            Checkpoint::decode(br#"{"version":2,"target":"x","acked":1}"#)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(Checkpoint::decode(b"{").is_err());
    }

    #[test]
    fn only_fully_acknowledged_segments_before_the_active_one_are_removable() {
        // segments starting at 1, 10, 20 (active)
        let firsts = [1, 10, 20];
        assert_eq!(removable_segments(&firsts, 0, &[]), Vec::<u64>::new());
        assert_eq!(removable_segments(&firsts, 8, &[]), Vec::<u64>::new());
        assert_eq!(removable_segments(&firsts, 9, &[]), [1]);
        assert_eq!(removable_segments(&firsts, 19, &[]), [1, 10]);
        // the active segment is never removed, whatever was acknowledged
        assert_eq!(removable_segments(&firsts, 1000, &[]), [1, 10]);
        // nor a segment kept for being damaged
        assert_eq!(removable_segments(&firsts, 1000, &[10]), [1]);
    }
}
