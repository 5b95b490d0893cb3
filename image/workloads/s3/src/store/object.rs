//! One object (or one multipart part) is one file: its data, then its metadata as JSON, then a
//! 16-byte footer (metadata length as u64 little-endian, magic `LS3OBJ01`).
//!
//! Data and metadata are therefore committed by one rename: there is no moment at which an
//! object's bytes and its ETag, content type, user metadata or checksums disagree. The data
//! comes first so the body can be streamed to disk in one pass; the metadata (which holds the
//! digests of that data) is appended when the body has ended and been verified.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum::{Checksums, Hasher};
use crate::sse::{CustomerKey, Encryptor, SseMeta};

pub const MAGIC: &[u8; 8] = b"LS3OBJ01";
const FOOTER: u64 = 16;
/// Metadata larger than this is refused on write and taken as corruption on read.
pub const MAX_META: u64 = 64 * 1024;

/// The HTTP attributes a client sets on an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `x-amz-meta-*` without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
}

/// Everything stored about an object besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Hex MD5 of the data, or `md5-of-md5s-N` for a multipart object; no quotes.
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub attrs: Attrs,
    #[serde(default)]
    pub checksums: Checksums,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    /// SSE-C: the data is encrypted with the client's key (see `crate::sse`); `size` is the
    /// plaintext's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseMeta>,
    /// A completed multipart object is stored as a manifest: its parts' files, moved (hard
    /// linked) into `buckets/B/blobs/` at completion, in order. The object's stored bytes are
    /// `[0, len)` of each, back to back; the object file itself then holds no data. Never
    /// shared: each blob belongs to exactly one object file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs: Option<Vec<BlobRef>>,
}

/// One part file of a manifest object: `buckets/B/blobs/NAME`, whose first `len` bytes are
/// this stretch of the object's stored bytes (the rest is the part's own metadata trailer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub name: String,
    pub len: u64,
}

impl ObjectMeta {
    /// Bytes of data of the object (ciphertext and tags for an encrypted object).
    pub fn stored_size(&self) -> u64 {
        self.sse.as_ref().map_or(self.size, SseMeta::stored_size)
    }

    /// Bytes of data in the object file itself: none for a manifest.
    pub fn file_data_len(&self) -> u64 {
        if self.blobs.is_some() {
            0
        } else {
            self.stored_size()
        }
    }
}

/// A blob name is ours: lowercase hex, a dot, a part number (see `complete_upload`).
pub fn valid_blob_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'.')
}

/// An object's stored bytes, `[0, stored_size)`, whether they are in its own file or in the
/// blobs of a manifest: `Read` and `Seek` over the concatenation (positioned reads, so the
/// files are never shared state). Open file handles keep the data readable after the object
/// is replaced or deleted, as with one file.
#[derive(Debug)]
pub struct ObjectData {
    /// Each file with the offset of its first byte in the object and its length.
    pieces: Vec<(File, u64, u64)>,
    len: u64,
    pos: u64,
}

impl ObjectData {
    pub fn new(pieces: Vec<(File, u64)>) -> ObjectData {
        let mut at = 0;
        let pieces = pieces
            .into_iter()
            .map(|(f, len)| {
                let p = (f, at, len);
                at += len;
                p
            })
            .collect();
        ObjectData {
            pieces,
            len: at,
            pos: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for ObjectData {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let i = self
            .pieces
            .partition_point(|(_, start, len)| start + len <= self.pos);
        let Some((f, start, len)) = self.pieces.get(i) else {
            return Ok(0);
        };
        let within = self.pos - start;
        let want = ((len - within) as usize).min(out.len());
        let n = f.read_at(&mut out[..want], within)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object file is shorter than its metadata says",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectData {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not an object file ({reason})")]
    Corrupt { path: PathBuf, reason: String },
}

/// Appends the metadata and footer after `size` bytes of data.
pub fn write_trailer(out: &mut impl Write, meta: &ObjectMeta) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    if json.len() as u64 > MAX_META {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "object metadata is larger than 64 KiB",
        ));
    }
    out.write_all(&json)?;
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(MAGIC)
}

/// Reads the metadata of an object file; the data is `[0, meta.stored_size())`.
pub fn read_meta(file: &mut File, path: &Path) -> Result<ObjectMeta, FormatError> {
    let io_err = |source| FormatError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |reason: String| FormatError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let len = file.metadata().map_err(io_err)?.len();
    if len < FOOTER {
        return Err(corrupt(format!("{len} bytes, shorter than the footer")));
    }
    let mut footer = [0u8; FOOTER as usize];
    file.seek(SeekFrom::Start(len - FOOTER)).map_err(io_err)?;
    file.read_exact(&mut footer).map_err(io_err)?;
    if &footer[8..] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let meta_len = u64::from_le_bytes(footer[..8].try_into().unwrap_or_default());
    if meta_len > MAX_META || meta_len > len - FOOTER {
        return Err(corrupt(format!("metadata length {meta_len} out of range")));
    }
    let mut json = vec![0u8; meta_len as usize];
    file.seek(SeekFrom::Start(len - FOOTER - meta_len))
        .map_err(io_err)?;
    file.read_exact(&mut json).map_err(io_err)?;
    let meta: ObjectMeta =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("metadata: {e}")))?;
    if meta.file_data_len() != len - FOOTER - meta_len {
        return Err(corrupt(format!(
            "metadata says {} data bytes, file holds {}",
            meta.file_data_len(),
            len - FOOTER - meta_len
        )));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    Ok(meta)
}

pub fn open_meta(path: &Path) -> Result<(ObjectMeta, File), FormatError> {
    let mut f = File::open(path).map_err(|source| FormatError::Io {
        path: path.to_owned(),
        source,
    })?;
    let meta = read_meta(&mut f, path)?;
    Ok((meta, f))
}

/// Bodies at least this long (or of unknown length) are hashed on a thread of their own, which
/// overlaps the MD5 (and any declared checksum) with receiving and writing the body.
pub const THREADED_HASH_MIN: u64 = 1 << 20;
/// Batches queued for the hashing thread before the writer waits for it.
const HASH_QUEUE: usize = 4;

/// Where a writer's digests are computed.
pub(crate) enum Hashing {
    Inline(Hasher),
    Thread {
        tx: std::sync::mpsc::SyncSender<bytes::Bytes>,
        handle: std::thread::JoinHandle<Hasher>,
    },
}

impl Hashing {
    fn new(hasher: Hasher, threaded: bool) -> io::Result<Hashing> {
        if !threaded {
            return Ok(Hashing::Inline(hasher));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(HASH_QUEUE);
        let handle = std::thread::Builder::new()
            .name("s3-hash".into())
            .spawn(move || {
                let mut hasher = hasher;
                for data in rx {
                    hasher.update(&data);
                }
                hasher
            })?;
        Ok(Hashing::Thread { tx, handle })
    }

    pub(crate) fn update_slice(&mut self, data: &[u8]) {
        match self {
            Hashing::Inline(h) => h.update(data),
            Hashing::Thread { .. } => self.update(bytes::Bytes::copy_from_slice(data)),
        }
    }

    pub(crate) fn update(&mut self, data: bytes::Bytes) {
        match self {
            Hashing::Inline(h) => h.update(&data),
            Hashing::Thread { tx, .. } => {
                // The thread ends only when the sender is dropped; a send error means it
                // panicked, which `finish` reports.
                let _ = tx.send(data);
            }
        }
    }

    /// The digests of everything given to `update`.
    pub(crate) fn finish(self) -> io::Result<crate::checksum::Digests> {
        let hasher = match self {
            Hashing::Inline(h) => h,
            Hashing::Thread { tx, handle } => {
                drop(tx);
                handle
                    .join()
                    .map_err(|_| io::Error::other("the hashing thread panicked"))?
            }
        };
        Ok(hasher.finalize())
    }
}

/// A body being written to a temporary file, hashed on the way. Dropped without being sealed,
/// it removes its file.
pub struct ObjectWriter {
    pub(crate) out: Option<BufWriter<File>>,
    pub(crate) path: PathBuf,
    pub(crate) hasher: Option<Hashing>,
    /// SSE-C: the body is encrypted on its way to the file.
    pub(crate) enc: Option<Encryptor>,
    /// The key check stored with the object when `enc` is set.
    pub(crate) check: Option<crate::sse::KeyCheck>,
    /// Plaintext bytes received.
    pub(crate) written: u64,
    /// Bytes this write may hold before the quota is passed.
    pub(crate) room: u64,
    pub(crate) sealed: bool,
}

impl ObjectWriter {
    /// `length`, when known, decides whether the body is hashed inline (small) or on a thread.
    pub(crate) fn create(
        path: PathBuf,
        hasher: Hasher,
        room: u64,
        length: Option<u64>,
    ) -> io::Result<Self> {
        let threaded = length.is_none_or(|n| n >= THREADED_HASH_MIN);
        let hashing = Hashing::new(hasher, threaded)?;
        let f = File::create(&path)?;
        Ok(ObjectWriter {
            out: Some(BufWriter::with_capacity(1 << 20, f)),
            path,
            hasher: Some(hashing),
            enc: None,
            check: None,
            written: 0,
            room,
            sealed: false,
        })
    }

    /// The digests of the body written (once: the hasher is consumed).
    pub(crate) fn digests(&mut self) -> Result<crate::checksum::Digests, super::StoreError> {
        let path = self.path.clone();
        self.hasher
            .take()
            .ok_or_else(|| super::StoreError::Corrupt("writer reused".into()))?
            .finish()
            .map_err(super::io_err("hashing", &path))
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Encrypts what follows with `key` (SSE-C); call before the first byte is written.
    pub fn encrypt(&mut self, key: &CustomerKey) {
        debug_assert_eq!(self.written, 0);
        self.enc = Some(Encryptor::new(key));
        self.check = Some(key.new_check());
    }

    pub fn is_encrypted(&self) -> bool {
        self.enc.is_some()
    }
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("path", &self.path)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if !self.sealed {
            drop(self.out.take());
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
