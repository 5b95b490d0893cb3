//! The durable replication journal on the volume: `DATA/replication/NNN.jnl` segments (format
//! in [`super::format`]) and `DATA/replication/checkpoint.json`, plus the in-memory queue of
//! changes the replica has not acknowledged.
//!
//! A change is appended (one `write`) while the store holds its index lock, in the same
//! critical section as the change itself, so the journal's order is the order in which changes
//! became visible; the store then fsyncs the journal ([`Journal::sync`], one `fdatasync` for
//! every record written so far: concurrent writers share it) before the client is answered.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use thiserror::Error;

use super::format::{self, Change, Checkpoint, End, Record};
use crate::store::{now_ms, Layout};

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("replication journal: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Tunables (tests make segments small).
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// A segment past this size is closed and a new one started; closed segments are removed
    /// once the replica acknowledged all their records.
    pub segment_bytes: u64,
    /// The checkpoint is written after this many acknowledgements at most...
    pub checkpoint_every: u64,
    /// ...or after this long, or whenever the replica has caught up.
    pub checkpoint_interval: std::time::Duration,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 1 << 20,
            checkpoint_every: 256,
            checkpoint_interval: std::time::Duration::from_secs(1),
        }
    }
}

/// Shipping stops before a damaged record: what it could have named is unknown, and shipping
/// what follows would reorder changes.
#[derive(Debug, Clone)]
struct Stall {
    /// The last record that may be shipped.
    after: u64,
    message: String,
}

struct Inner {
    file: File,
    active_len: u64,
    /// First sequence number of every segment on disk, ascending; the last is being written.
    segments: Vec<u64>,
    /// Damaged segments: never removed.
    keep: Vec<u64>,
    next_seq: u64,
    written_seq: u64,
    pending: VecDeque<Record>,
    pending_bytes: u64,
    acked: u64,
    stall: Option<Stall>,
    last_ack_ms: Option<i64>,
}

/// How far the journal is, for the lag endpoint: counts and times only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStatus {
    pub pending_changes: u64,
    pub pending_bytes: u64,
    pub oldest_pending_ms: Option<i64>,
    pub acked_seq: u64,
    pub last_seq: u64,
    pub last_ack_ms: Option<i64>,
    pub error: Option<String>,
}

pub struct Journal {
    dir: PathBuf,
    tmp: PathBuf,
    target: String,
    options: JournalOptions,
    inner: Mutex<Inner>,
    /// Highest sequence number known to be on disk; held while fsyncing.
    synced: Mutex<u64>,
    persisted: Mutex<(u64, Instant)>,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// `DATA/replication`.
pub fn journal_dir(layout: &Layout) -> PathBuf {
    layout.root.join("replication")
}

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.json")
}

fn fsync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Creates a segment holding only the magic, durably (file and name).
fn create_segment(dir: &Path, first: u64) -> Result<File, JournalError> {
    let path = dir.join(format::segment_name(first));
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err("creating", &path))?;
    f.write_all(format::SEGMENT_MAGIC)
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", &path))?;
    fsync_dir(dir)?;
    Ok(f)
}

impl Journal {
    /// Opens the journal in `dir` for the replica `target`. Returns `true` when the store must
    /// seed it with everything it holds ([`Journal::seeded`] afterwards): there was no
    /// checkpoint, or it was for another replica, or it was unreadable.
    pub fn open(
        dir: PathBuf,
        tmp: PathBuf,
        target: &str,
        options: JournalOptions,
    ) -> Result<(Journal, bool), JournalError> {
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let cp_path = checkpoint_path(&dir);
        let checkpoint = match fs::read(&cp_path) {
            Ok(bytes) => match Checkpoint::decode(&bytes) {
                Ok(c) => Some(c),
                Err(reason) => {
                    tracing::error!(path = %cp_path.display(), %reason, "replication checkpoint unreadable; starting a full copy to the replica");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading", &cp_path)(e)),
        };
        let mut firsts: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            if let Some(first) = entry
                .file_name()
                .to_str()
                .and_then(format::parse_segment_name)
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let fresh = checkpoint.as_ref().is_none_or(|c| c.target != target);
        let acked = checkpoint
            .as_ref()
            .filter(|_| !fresh)
            .map_or(0, |c| c.acked);
        let mut inner_segments = Vec::new();
        let mut keep = Vec::new();
        let mut pending = VecDeque::new();
        let mut max_seq = acked;
        let mut stall: Option<Stall> = None;
        if fresh {
            if checkpoint.is_some() {
                tracing::info!(
                    "replication target changed; starting a full copy to the new replica"
                );
            }
            for first in &firsts {
                let path = dir.join(format::segment_name(*first));
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
            fsync_dir(&dir)?;
        } else {
            let last = firsts.last().copied();
            for first in &firsts {
                let path = dir.join(format::segment_name(*first));
                let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
                let scan = format::decode_segment(&bytes);
                max_seq = max_seq.max(*first);
                let good = scan.records.len();
                for r in scan.records {
                    max_seq = max_seq.max(r.seq);
                    if r.seq > acked {
                        pending.push_back(r);
                    }
                }
                let damage = match scan.end {
                    End::Clean => None,
                    End::Torn { offset } if Some(*first) == last => {
                        tracing::warn!(path = %path.display(), offset, "replication journal: removing a record cut by a crash (never acknowledged)");
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err("opening", &path))?;
                        f.set_len(offset)
                            .and_then(|()| f.sync_all())
                            .map_err(io_err("truncating", &path))?;
                        None
                    }
                    End::Torn { offset } => Some((offset, "record cut short".to_owned())),
                    End::Corrupt { offset, reason } => Some((offset, reason)),
                };
                if let Some((offset, reason)) = damage {
                    let message = format!(
                        "replication journal {} at byte {offset}: {reason}",
                        path.display()
                    );
                    tracing::error!(%message, "replication stops before the damaged record; later records are kept");
                    keep.push(*first);
                    if stall.is_none() {
                        stall = Some(Stall {
                            after: pending.back().map_or(acked, |r: &Record| r.seq),
                            message,
                        });
                    }
                }
                if good == 0 && !keep.contains(first) {
                    fs::remove_file(&path).map_err(io_err("removing", &path))?;
                } else {
                    inner_segments.push(*first);
                }
            }
        }
        let next_seq = max_seq + 1;
        let file = create_segment(&dir, next_seq)?;
        inner_segments.push(next_seq);
        let pending_bytes = pending.iter().map(|r| r.bytes).sum();
        let journal = Journal {
            dir,
            tmp,
            target: target.to_owned(),
            options,
            inner: Mutex::new(Inner {
                file,
                active_len: format::SEGMENT_MAGIC.len() as u64,
                segments: inner_segments,
                keep,
                next_seq,
                written_seq: max_seq,
                pending,
                pending_bytes,
                acked,
                stall,
                last_ack_ms: None,
            }),
            synced: Mutex::new(max_seq),
            persisted: Mutex::new((acked, Instant::now())),
            notify: tokio::sync::Notify::new(),
        };
        Ok((journal, fresh))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// After a fresh open and the store's seeding: makes the seed durable, then records the
    /// target, so that a crash during the seeding seeds again at the next start.
    pub fn seeded(&self) -> Result<(), JournalError> {
        let last = self.lock().written_seq;
        self.sync(last)?;
        self.write_checkpoint(0)
    }

    /// Appends a record for `change` (not yet durable: see [`Journal::sync`]) and queues it
    /// for the shipper. Returns its sequence number.
    pub fn append(&self, change: Change, bytes: u64) -> Result<u64, JournalError> {
        let mut inner = self.lock();
        if inner.active_len >= self.options.segment_bytes {
            self.roll(&mut inner)?;
        }
        let record = Record {
            seq: inner.next_seq,
            at_ms: now_ms(),
            change,
            bytes,
        };
        let frame = format::encode(&record);
        if let Err(e) = inner.file.write_all(&frame) {
            // Take back a partial frame so that the next record follows a whole one.
            let len = inner.active_len;
            if inner.file.set_len(len).is_err() {
                // the next append starts a new segment; this one ends in a torn record
                inner.active_len = u64::MAX;
            }
            return Err(io_err("writing", &self.active_path(&inner))(e));
        }
        inner.active_len += frame.len() as u64;
        inner.next_seq += 1;
        inner.written_seq = record.seq;
        inner.pending_bytes += record.bytes;
        let seq = record.seq;
        inner.pending.push_back(record);
        drop(inner);
        self.notify.notify_one();
        Ok(seq)
    }

    fn active_path(&self, inner: &Inner) -> PathBuf {
        let first = inner.segments.last().copied().unwrap_or(inner.next_seq);
        self.dir.join(format::segment_name(first))
    }

    /// Closes the active segment (durably: its records may not have been fsynced yet) and
    /// starts the next one.
    fn roll(&self, inner: &mut Inner) -> Result<(), JournalError> {
        let path = self.active_path(inner);
        inner.file.sync_data().map_err(io_err("syncing", &path))?;
        let first = inner.next_seq;
        inner.file = create_segment(&self.dir, first)?;
        inner.segments.push(first);
        inner.active_len = format::SEGMENT_MAGIC.len() as u64;
        Ok(())
    }

    /// Returns once every record up to `seq` is on disk. Writers that arrive while another
    /// fsyncs wait for it and usually find their record already covered.
    pub fn sync(&self, seq: u64) -> Result<(), JournalError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        let (file, upto, path) = {
            let inner = self.lock();
            let path = self.active_path(&inner);
            let file = inner.file.try_clone().map_err(io_err("opening", &path))?;
            (file, inner.written_seq, path)
        };
        file.sync_data().map_err(io_err("syncing", &path))?;
        *synced = upto;
        Ok(())
    }

    /// The next record to ship, or why shipping is stopped.
    pub fn front(&self) -> Result<Option<Record>, String> {
        let inner = self.lock();
        match (inner.pending.front(), &inner.stall) {
            (Some(r), Some(stall)) if r.seq > stall.after => Err(stall.message.clone()),
            (r, _) => Ok(r.cloned()),
        }
    }

    /// Waits until a record is appended (returns at once if one was appended since the last
    /// wait).
    pub async fn appended(&self) {
        self.notify.notified().await;
    }

    /// The replica acknowledged the front record `seq`.
    pub fn ack(&self, seq: u64) {
        let mut inner = self.lock();
        if inner.pending.front().is_some_and(|r| r.seq == seq) {
            if let Some(r) = inner.pending.pop_front() {
                inner.pending_bytes -= r.bytes;
            }
            inner.acked = seq;
            inner.last_ack_ms = Some(now_ms());
        }
    }

    /// Writes the checkpoint and removes fully acknowledged segments when enough was
    /// acknowledged since the last time, or when `force`.
    pub fn persist(&self, force: bool) -> Result<bool, JournalError> {
        let (acked, caught_up) = {
            let inner = self.lock();
            (inner.acked, inner.pending.is_empty())
        };
        {
            let persisted = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
            let (done, at) = *persisted;
            let due = force
                || caught_up
                || acked.saturating_sub(done) >= self.options.checkpoint_every
                || at.elapsed() >= self.options.checkpoint_interval;
            if acked <= done || !due {
                return Ok(false);
            }
        }
        self.write_checkpoint(acked)?;
        self.compact(acked)?;
        Ok(true)
    }

    fn write_checkpoint(&self, acked: u64) -> Result<(), JournalError> {
        let path = checkpoint_path(&self.dir);
        let bytes = Checkpoint::new(&self.target, acked).encode();
        crate::store::atomic_write(&self.tmp, &path, &bytes).map_err(io_err("writing", &path))?;
        *self.persisted.lock().unwrap_or_else(|p| p.into_inner()) = (acked, Instant::now());
        Ok(())
    }

    fn compact(&self, acked: u64) -> Result<(), JournalError> {
        let removable = {
            let inner = self.lock();
            format::removable_segments(&inner.segments, acked, &inner.keep)
        };
        if removable.is_empty() {
            return Ok(());
        }
        for first in &removable {
            let path = self.dir.join(format::segment_name(*first));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &path)(e)),
            }
        }
        fsync_dir(&self.dir)?;
        self.lock().segments.retain(|f| !removable.contains(f));
        Ok(())
    }

    pub fn status(&self) -> JournalStatus {
        let inner = self.lock();
        JournalStatus {
            pending_changes: inner.pending.len() as u64,
            pending_bytes: inner.pending_bytes,
            oldest_pending_ms: inner.pending.front().map(|r| r.at_ms),
            acked_seq: inner.acked,
            last_seq: inner.written_seq,
            last_ack_ms: inner.last_ack_ms,
            error: inner.stall.as_ref().map(|s| s.message.clone()),
        }
    }

    /// Segment files on disk (for tests and the status).
    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, target: &str, segment_bytes: u64) -> (Journal, bool) {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        Journal::open(
            dir.join("replication"),
            tmp,
            target,
            JournalOptions {
                segment_bytes,
                checkpoint_every: 1,
                checkpoint_interval: std::time::Duration::ZERO,
            },
        )
        .unwrap()
    }

    fn obj(key: &str) -> Change {
        Change::Object {
            bucket: "b".into(),
            key: key.into(),
        }
    }

    fn ship_all(j: &Journal) -> Vec<String> {
        let mut keys = Vec::new();
        while let Some(r) = j.front().unwrap() {
            if let Change::Object { key, .. } = &r.change {
                keys.push(key.clone());
            }
            j.ack(r.seq);
        }
        keys
    }

    #[test]
    fn records_survive_a_reopen_and_acknowledged_ones_are_not_shipped_again() {
        let dir = tempfile::tempdir().unwrap();
        let (j, fresh) = open(dir.path(), "http://r:1", 1 << 20);
        assert!(fresh);
        j.seeded().unwrap();
        for k in ["a", "b", "c"] {
            let seq = j.append(obj(k), 1).unwrap();
            j.sync(seq).unwrap();
        }
        let r = j.front().unwrap().unwrap();
        j.ack(r.seq);
        j.persist(true).unwrap();
        drop(j);
        let (j, fresh) = open(dir.path(), "http://r:1", 1 << 20);
        assert!(!fresh);
        assert_eq!(j.status().pending_changes, 2);
        assert_eq!(ship_all(&j), ["b", "c"]);
        // new records continue the sequence
        let seq = j.append(obj("d"), 0).unwrap();
        assert_eq!(seq, 4);
    }

    #[test]
    fn another_replica_starts_from_a_full_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path(), "http://r:1", 1 << 20);
        j.seeded().unwrap();
        j.append(obj("a"), 1).unwrap();
        drop(j);
        let (j, fresh) = open(dir.path(), "http://other:1", 1 << 20);
        assert!(fresh, "a new target needs seeding");
        assert_eq!(
            j.status().pending_changes,
            0,
            "the old replica's records are gone"
        );
        // a crash before seeded(): the next start seeds again
        drop(j);
        let (_, fresh) = open(dir.path(), "http://other:1", 1 << 20);
        assert!(fresh);
    }

    #[test]
    fn acknowledged_segments_are_removed_and_the_journal_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path(), "http://r:1", 200);
        j.seeded().unwrap();
        for i in 0..100 {
            j.append(obj(&format!("key-{i}")), 10).unwrap();
            if i % 10 == 9 {
                ship_all(&j);
                j.persist(true).unwrap();
            }
        }
        assert!(j.segment_count() <= 2, "{} segments", j.segment_count());
        let files = fs::read_dir(dir.path().join("replication"))
            .unwrap()
            .count();
        assert!(files <= 3, "{files} files");
        drop(j);
        let (j, _) = open(dir.path(), "http://r:1", 200);
        assert_eq!(j.status().pending_changes, 0);
    }

    #[test]
    fn unacknowledged_records_keep_their_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path(), "http://r:1", 150);
        j.seeded().unwrap();
        for i in 0..30 {
            j.append(obj(&format!("k{i}")), 1).unwrap();
        }
        let first = j.front().unwrap().unwrap();
        j.ack(first.seq);
        j.persist(true).unwrap();
        drop(j);
        let (j, _) = open(dir.path(), "http://r:1", 150);
        let shipped = ship_all(&j);
        let want: Vec<String> = (1..30).map(|i| format!("k{i}")).collect();
        assert_eq!(shipped, want);
    }

    #[test]
    fn a_damaged_record_stops_shipping_there_names_file_and_offset_and_keeps_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path(), "http://r:1", 1 << 20);
        j.seeded().unwrap();
        for k in ["a", "b", "c"] {
            j.append(obj(k), 1).unwrap();
        }
        drop(j);
        let seg = fs::read_dir(dir.path().join("replication"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .min()
            .unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        // the second record starts after the magic and the first frame
        let first_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let second = 8 + 8 + first_len;
        let at = second + 20;
        bytes[at] ^= 0x20;
        fs::write(&seg, &bytes).unwrap();
        let (j, _) = open(dir.path(), "http://r:1", 1 << 20);
        // a record written after the damage is queued, but not shipped before it
        j.append(obj("d"), 1).unwrap();
        let r = j.front().unwrap().unwrap();
        assert!(matches!(&r.change, Change::Object { key, .. } if key == "a"));
        j.ack(r.seq);
        let err = j.front().unwrap_err();
        assert!(
            err.contains(&seg.display().to_string()) && err.contains(&format!("at byte {second}")),
            "{err}"
        );
        assert_eq!(j.status().pending_changes, 1);
        assert_eq!(j.status().error.as_deref(), Some(err.as_str()));
        // the damaged segment stays, even once acknowledged past
        j.persist(true).unwrap();
        drop(j);
        assert!(seg.exists());
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_sequence_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path(), "http://r:1", 1 << 20);
        j.seeded().unwrap();
        j.append(obj("a"), 1).unwrap();
        j.append(obj("b"), 1).unwrap();
        drop(j);
        let seg = fs::read_dir(dir.path().join("replication"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .min()
            .unwrap();
        let bytes = fs::read(&seg).unwrap();
        fs::write(&seg, &bytes[..bytes.len() - 5]).unwrap();
        // the cut segment is the last one only if no newer (empty) segment follows
        for p in fs::read_dir(dir.path().join("replication")).unwrap() {
            let p = p.unwrap().path();
            if p != seg && p.extension().is_some_and(|e| e == "jnl") {
                fs::remove_file(p).unwrap();
            }
        }
        let (j, _) = open(dir.path(), "http://r:1", 1 << 20);
        assert_eq!(j.status().error, None);
        assert_eq!(ship_all(&j), ["a"]);
        // the cut record was never acknowledged: its number is used again
        assert_eq!(j.append(obj("c"), 1).unwrap(), 2);
    }
}
