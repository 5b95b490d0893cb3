//! A bounded on-disk queue for messages produced while the node is cut off from the broker.
//!
//! Why on disk: a node may be offline for hours and may be power-cycled meanwhile; telemetry
//! gaps are acceptable, lost events (workload crashed, OTA failed) are not. Why this format:
//! an append-only log is the simplest thing that survives SIGKILL and power loss.
//!
//! File layout: an 8-byte magic, then records
//! `[len u32 LE][crc32 u32 LE][state u8][prio u8][suffix len u8][suffix][payload]`, where
//! `len` counts the bytes after `state` and the CRC covers the `len` bytes plus those bytes.
//! `state` (live or dead) is the one byte ever rewritten in place: a single-byte write cannot
//! tear. On [`Outbox::open`] the log is scanned; the first record that is short or fails its
//! CRC, and everything after it, is truncated away with a warning (a torn append from a crash,
//! or garbage). Everything appended before it is kept. (Appends are the only writes that can
//! tear, and only at the tail; a record rotted mid-file by a failing disk also cuts off the
//! records after it.)
//!
//! Durability: [`Outbox::push`] fdatasyncs before returning, so an acknowledged push survives
//! power loss. [`Outbox::pop`] marks the record dead without fsync: that survives a process
//! crash, but after power loss recently popped records may be delivered again. Delivery is
//! therefore **at-least-once**; the receiver must tolerate duplicates. Call [`Outbox::sync`]
//! to make pops durable when that matters.
//!
//! Bound: `max_bytes` caps the encoded size of undelivered records ([`Outbox::bytes`]). When
//! a push would exceed it, the oldest telemetry records are dropped first; a telemetry push
//! that could only fit by dropping events is itself dropped instead; events are dropped
//! (oldest first) only when no telemetry is left. Dead records are reclaimed by compaction
//! (rewrite to a temp file, fsync, rename, fsync dir) once they outweigh the live ones and
//! exceed 64 KiB, so the file stays under about `2 * max_bytes + 64 KiB`. A bound lowered
//! between runs is enforced on open. An exclusive `flock` keeps two supervisors from sharing
//! one outbox.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

const MAGIC: &[u8; 8] = b"LTOUTBX1";
const HEADER: u64 = 9;
const LIVE: u8 = b'L';
const DEAD: u8 = b'D';
/// Dead bytes below this are never worth a rewrite.
const COMPACT_MIN_DEAD: u64 = 64 * 1024;

/// Failures of the outbox; each names the file and the operation.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("outbox {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("{path} is not an outbox file (bad magic); refusing to touch it")]
    NotAnOutbox { path: PathBuf },
    #[error("topic suffix is {len} bytes; the outbox stores at most 255")]
    SuffixTooLong { len: usize },
    #[error("record of {size} bytes can never fit in an outbox bounded to {max_bytes} bytes")]
    RecordTooLarge { size: u64, max_bytes: u64 },
}

/// Message class; decides what is dropped first when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Telemetry,
    Event,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub prio: Priority,
    pub topic_suffix: String,
    pub payload: Vec<u8>,
}

/// What a push did. `stored` is false when the pushed telemetry record itself was dropped
/// (counted in `dropped_telemetry`) because only events were left to evict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    pub stored: bool,
    pub dropped_telemetry: usize,
    pub dropped_events: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    off: u64,
    size: u64,
}

/// The outbox. See the module docs for format, durability and bound.
pub struct Outbox {
    path: PathBuf,
    file: Flock<File>,
    max_bytes: u64,
    end: u64,
    /// Live records per priority (index 0 telemetry, 1 events), each in append order.
    queues: [VecDeque<Entry>; 2],
    queue_bytes: [u64; 2],
    dead_bytes: u64,
    head: Option<(u64, Record)>,
    discarded: u64,
}

impl Outbox {
    /// Open or create the outbox at `path`, recovering from a crash (see module docs).
    pub fn open(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let path = path.to_path_buf();
        match fs::remove_file(tmp_path(&path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(&path, "remove stale compaction file")(e))
            }
            _ => {}
        }
        let file = open_locked(&path, false)?;
        let mut ob = Outbox {
            file,
            max_bytes,
            end: 0,
            queues: [VecDeque::new(), VecDeque::new()],
            queue_bytes: [0, 0],
            dead_bytes: 0,
            head: None,
            discarded: 0,
            path,
        };
        ob.recover()?;
        let dropped = ob.make_room(0, None)?;
        if dropped.dropped_telemetry + dropped.dropped_events > 0 {
            tracing::warn!(path = %ob.path.display(), ?dropped, "outbox over its bound on open");
            ob.sync()?;
        }
        ob.compact_quietly();
        ob.refresh_head();
        Ok(ob)
    }

    /// Append a record and fdatasync it, first evicting old records if over the bound.
    /// `Ok` means the record is durable. An `Err` from the final fdatasync leaves the record
    /// queued in memory, so a caller that retries may queue it twice (at-least-once).
    pub fn push(
        &mut self,
        prio: Priority,
        topic_suffix: &str,
        payload: &[u8],
    ) -> Result<PushOutcome, OutboxError> {
        let rec = encode(prio, topic_suffix, payload)?;
        let size = rec.len() as u64;
        if size > self.max_bytes {
            return Err(OutboxError::RecordTooLarge {
                size,
                max_bytes: self.max_bytes,
            });
        }
        let mut outcome = self.make_room(size, Some(prio))?;
        if !outcome.stored {
            outcome.dropped_telemetry += 1;
            return Ok(outcome);
        }
        if let Err(e) = self.file.write_all_at(&rec, self.end) {
            // Don't leave a partial record behind for the next append to land after.
            let _ = self.file.set_len(self.end);
            return Err(io_err(&self.path, "append")(e));
        }
        self.queues[qi(prio)].push_back(Entry {
            off: self.end,
            size,
        });
        self.queue_bytes[qi(prio)] += size;
        self.end += size;
        self.refresh_head();
        self.sync()?;
        self.compact_quietly();
        Ok(outcome)
    }

    /// The oldest undelivered record, in append order.
    pub fn peek(&self) -> Option<Record> {
        self.head.as_ref().map(|(_, r)| r.clone())
    }

    /// Mark the oldest record delivered. A no-op on an empty outbox. Not fsynced: see the
    /// module docs (at-least-once). The record is gone from this `Outbox` even if an error is
    /// returned; the error means the mark may not have reached the file, so it may be
    /// delivered again after a restart.
    pub fn pop(&mut self) -> Result<(), OutboxError> {
        let Some(q) = self.front_queue() else {
            return Ok(());
        };
        let marked = self.kill_front(q);
        self.refresh_head();
        self.compact_quietly();
        marked
    }

    /// Make every pop so far durable against power loss.
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "fdatasync"))
    }

    pub fn len(&self) -> usize {
        self.queues[0].len() + self.queues[1].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded bytes of undelivered records (what `max_bytes` bounds).
    pub fn bytes(&self) -> u64 {
        self.queue_bytes[0] + self.queue_bytes[1]
    }

    /// Bytes of torn or corrupt tail truncated away by [`Outbox::open`].
    pub fn discarded_on_open(&self) -> u64 {
        self.discarded
    }

    fn recover(&mut self) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let len = self.file.metadata().map_err(io_err(&path, "stat"))?.len();
        let mut rd = BufReader::new(&*self.file);
        let mut magic = vec![0u8; len.min(8) as usize];
        rd.read_exact(&mut magic).map_err(io_err(&path, "read"))?;
        if len < 8 && MAGIC.starts_with(&magic) {
            // New file, or creation torn by a crash before anything was stored.
            drop(rd);
            self.file
                .write_all_at(MAGIC, 0)
                .map_err(io_err(&path, "write header"))?;
            self.file.set_len(8).map_err(io_err(&path, "truncate"))?;
            self.file.sync_all().map_err(io_err(&path, "fsync"))?;
            self.end = 8;
            return sync_dir(&path);
        }
        if magic != MAGIC {
            return Err(OutboxError::NotAnOutbox { path });
        }
        let mut off = 8;
        let mut buf = Vec::new();
        while len - off >= HEADER {
            buf.resize(HEADER as usize, 0);
            rd.read_exact(&mut buf).map_err(io_err(&path, "read"))?;
            let body = u64::from(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
            if HEADER + body > len - off {
                break;
            }
            buf.resize((HEADER + body) as usize, 0);
            rd.read_exact(&mut buf[HEADER as usize..])
                .map_err(io_err(&path, "read"))?;
            let Ok((state, rec)) = decode(&buf) else {
                break;
            };
            let size = HEADER + body;
            if state == LIVE {
                self.queues[qi(rec.prio)].push_back(Entry { off, size });
                self.queue_bytes[qi(rec.prio)] += size;
            } else {
                self.dead_bytes += size;
            }
            off += size;
        }
        self.end = off;
        if off < len {
            self.discarded = len - off;
            tracing::warn!(path = %path.display(), offset = off, bytes = len - off,
                "outbox: discarding torn or corrupt tail");
            drop(rd);
            self.file.set_len(off).map_err(io_err(&path, "truncate"))?;
            self.sync()?;
        }
        Ok(())
    }

    /// Evict records until `incoming` more bytes fit. With `incoming_prio == Some(Telemetry)`,
    /// returns `stored: false` (evicting nothing) if only events could make room.
    fn make_room(
        &mut self,
        incoming: u64,
        incoming_prio: Option<Priority>,
    ) -> Result<PushOutcome, OutboxError> {
        let mut out = PushOutcome {
            stored: true,
            ..PushOutcome::default()
        };
        let excess = (self.bytes() + incoming).saturating_sub(self.max_bytes);
        if incoming_prio == Some(Priority::Telemetry) && excess > self.queue_bytes[0] {
            out.stored = false;
            return Ok(out);
        }
        while self.bytes() + incoming > self.max_bytes {
            if !self.queues[0].is_empty() {
                self.kill_front(0)?;
                out.dropped_telemetry += 1;
            } else if !self.queues[1].is_empty() {
                self.kill_front(1)?;
                out.dropped_events += 1;
            } else {
                break;
            }
        }
        Ok(out)
    }

    fn front_queue(&self) -> Option<usize> {
        match (self.queues[0].front(), self.queues[1].front()) {
            (Some(t), Some(e)) => Some(if t.off < e.off { 0 } else { 1 }),
            (Some(_), None) => Some(0),
            (None, Some(_)) => Some(1),
            (None, None) => None,
        }
    }

    /// Remove the front of queue `q` in memory, then mark it dead in the file.
    fn kill_front(&mut self, q: usize) -> Result<(), OutboxError> {
        let Some(e) = self.queues[q].pop_front() else {
            return Ok(());
        };
        self.queue_bytes[q] -= e.size;
        self.dead_bytes += e.size;
        self.file
            .write_all_at(&[DEAD], e.off + 8)
            .map_err(io_err(&self.path, "mark record dead"))
    }

    /// Cache the oldest live record for `peek`. A record that can no longer be read back
    /// (it passed its CRC when written or recovered, so this means a failing disk) is skipped
    /// with an error log: otherwise the outbox would be wedged on it forever.
    fn refresh_head(&mut self) {
        while let Some(q) = self.front_queue() {
            let Some(e) = self.queues[q].front().copied() else {
                break;
            };
            if self.head.as_ref().is_some_and(|(off, _)| *off == e.off) {
                return;
            }
            let mut buf = vec![0u8; e.size as usize];
            let read = self.file.read_exact_at(&mut buf, e.off);
            match read.map_err(|_| "read failed").and_then(|()| decode(&buf)) {
                Ok((_, rec)) => {
                    self.head = Some((e.off, rec));
                    return;
                }
                Err(reason) => {
                    tracing::error!(path = %self.path.display(), offset = e.off, reason,
                        "outbox: skipping unreadable record");
                    let _ = self.kill_front(q);
                }
            }
        }
        self.head = None;
    }

    fn compact_quietly(&mut self) {
        if let Err(e) = self.maybe_compact() {
            tracing::warn!(error = %e, "outbox compaction failed; will retry later");
        }
    }

    fn maybe_compact(&mut self) -> Result<(), OutboxError> {
        if self.dead_bytes == 0 {
            return Ok(());
        }
        if self.is_empty() {
            // Nothing live: dropping the dead records is a truncate. The next push's
            // fdatasync persists the new length.
            self.file
                .set_len(8)
                .map_err(io_err(&self.path, "truncate"))?;
            self.end = 8;
            self.dead_bytes = 0;
            return Ok(());
        }
        if self.dead_bytes < COMPACT_MIN_DEAD || self.dead_bytes <= self.bytes() {
            return Ok(());
        }
        let tmp = tmp_path(&self.path);
        let result = self.compact_into(&tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn compact_into(&mut self, tmp: &Path) -> Result<(), OutboxError> {
        let new = open_locked(tmp, true)?;
        let mut w = BufWriter::new(&*new);
        w.write_all(MAGIC).map_err(io_err(tmp, "write"))?;
        let mut queues = [VecDeque::new(), VecDeque::new()];
        let (mut i, mut j, mut off) = (0, 0, 8u64);
        let mut buf = Vec::new();
        while i < self.queues[0].len() || j < self.queues[1].len() {
            let t = self.queues[0].get(i).map_or(u64::MAX, |e| e.off);
            let ev = self.queues[1].get(j).map_or(u64::MAX, |e| e.off);
            let (q, e) = if t < ev {
                i += 1;
                (0, self.queues[0][i - 1])
            } else {
                j += 1;
                (1, self.queues[1][j - 1])
            };
            buf.resize(e.size as usize, 0);
            self.file
                .read_exact_at(&mut buf, e.off)
                .map_err(io_err(&self.path, "read record"))?;
            if let Err(reason) = decode(&buf) {
                // Copying it would make the next open truncate everything after it.
                tracing::error!(path = %self.path.display(), offset = e.off, reason,
                    "outbox: dropping unreadable record during compaction");
                continue;
            }
            w.write_all(&buf).map_err(io_err(tmp, "write"))?;
            queues[q].push_back(Entry { off, size: e.size });
            off += e.size;
        }
        w.flush().map_err(io_err(tmp, "write"))?;
        drop(w);
        new.sync_all().map_err(io_err(tmp, "fsync"))?;
        fs::rename(tmp, &self.path).map_err(io_err(&self.path, "rename compacted file"))?;
        sync_dir(&self.path)?;
        self.file = new;
        self.queue_bytes = [0, 1].map(|q| queues[q].iter().map(|e| e.size).sum());
        self.queues = queues;
        self.end = off;
        self.dead_bytes = 0;
        self.head = None;
        self.refresh_head();
        Ok(())
    }
}

fn qi(p: Priority) -> usize {
    match p {
        Priority::Telemetry => 0,
        Priority::Event => 1,
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> OutboxError {
    let path = path.to_path_buf();
    move |source| OutboxError::Io { path, op, source }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".compact.tmp");
    PathBuf::from(s)
}

fn open_locked(path: &Path, truncate: bool) -> Result<Flock<File>, OutboxError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path, "open"))?;
    let locked = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            OutboxError::Locked {
                path: path.to_path_buf(),
            }
        } else {
            io_err(path, "flock")(io::Error::from(errno))
        }
    })?;
    // If the holder compacted (renamed a new file over `path`) between our open and our
    // lock, we locked an orphaned inode: treat that as locked too.
    let id = |m: fs::Metadata| (m.dev(), m.ino());
    if fs::metadata(path).map(id).ok() != locked.metadata().map(id).ok() {
        return Err(OutboxError::Locked {
            path: path.to_path_buf(),
        });
    }
    Ok(locked)
}

fn sync_dir(path: &Path) -> Result<(), OutboxError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

fn encode(prio: Priority, suffix: &str, payload: &[u8]) -> Result<Vec<u8>, OutboxError> {
    let slen =
        u8::try_from(suffix.len()).map_err(|_| OutboxError::SuffixTooLong { len: suffix.len() })?;
    let body = 2 + suffix.len() + payload.len();
    let len = u32::try_from(body).map_err(|_| OutboxError::RecordTooLarge {
        size: body as u64,
        max_bytes: u64::from(u32::MAX),
    })?;
    let mut rec = Vec::with_capacity(HEADER as usize + body);
    rec.extend_from_slice(&len.to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&[LIVE, qi(prio) as u8, slen]);
    rec.extend_from_slice(suffix.as_bytes());
    rec.extend_from_slice(payload);
    let crc = crc(&rec);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(rec)
}

fn crc(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[..4]);
    h.update(&rec[HEADER as usize..]);
    h.finalize()
}

/// Decode one whole record (header included); returns its state byte and contents.
fn decode(rec: &[u8]) -> Result<(u8, Record), &'static str> {
    if rec.len() < HEADER as usize + 2 {
        return Err("too short");
    }
    if u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]) != crc(rec) {
        return Err("CRC mismatch");
    }
    let state = rec[8];
    if state != LIVE && state != DEAD {
        return Err("bad state byte");
    }
    let prio = match rec[9] {
        0 => Priority::Telemetry,
        1 => Priority::Event,
        _ => return Err("bad priority"),
    };
    let suffix_end = HEADER as usize + 2 + usize::from(rec[10]);
    let suffix = rec
        .get(HEADER as usize + 2..suffix_end)
        .ok_or("bad suffix length")?;
    let topic_suffix = std::str::from_utf8(suffix).map_err(|_| "suffix not UTF-8")?;
    Ok((
        state,
        Record {
            prio,
            topic_suffix: topic_suffix.to_string(),
            payload: rec[suffix_end..].to_vec(),
        },
    ))
}

#[cfg(test)]
mod tests;
