//! The storage backend: buckets, objects and multipart uploads on a data directory, with an
//! in-memory index rebuilt from the files at start. Synchronous and free of HTTP: the S3 layer
//! (`crate::s3`) calls it from blocking sections, and its tests call it directly.
//!
//! Every write follows one pattern: the new bytes go to a file under `tmp/` (same file system),
//! which is fsynced and then renamed over the final name, and the directory holding that name is
//! fsynced before the write is acknowledged. A crash at any point leaves the old file or the new
//! one; `open` empties `tmp/`.

mod layout;
mod list;
mod multipart;
mod object;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checksum::{self, ChecksumError, Expected, Hasher};
use crate::cors::CorsRule;
use crate::names::{self, NameError};
use crate::quota::{Quota, QuotaExceeded};
use crate::replication::format::Change;
use crate::replication::{Journal, JournalError};
use crate::sse::{self, CustomerKey, SseError, SseMeta};

pub use layout::{atomic_write, Layout};
pub use list::{ListPage, ListQuery};
pub use multipart::{CompletePart, PartInfo, UploadInfo};
pub use object::{now_ms, Attrs, BlobRef, ObjectData, ObjectMeta, ObjectWriter};

/// S3's smallest part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("no object {key:?} in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("no multipart upload {0:?}")]
    NoSuchUpload(String),
    #[error("bucket {0:?} has no CORS configuration")]
    NoSuchCors(String),
    #[error("part {part}: {reason}")]
    InvalidPart { part: i64, reason: String },
    #[error("parts must be listed in ascending order; part {part} comes after {previous}")]
    InvalidPartOrder { part: i64, previous: i64 },
    #[error("part {part} is {size} bytes; all parts but the last must be at least {min}")]
    EntityTooSmall { part: i64, size: u64, min: u64 },
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    #[error(transparent)]
    Sse(#[from] SseError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("body ended after {got} bytes; Content-Length said {expected}")]
    IncompleteBody { got: u64, expected: u64 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

impl From<object::FormatError> for StoreError {
    fn from(e: object::FormatError) -> Self {
        match e {
            object::FormatError::Io { path, source } => StoreError::Io {
                what: "reading",
                path,
                source,
            },
            e @ object::FormatError::Corrupt { .. } => StoreError::Corrupt(e.to_string()),
        }
    }
}

/// The SSE-C keys of a copy: the source's (`x-amz-copy-source-server-side-encryption-customer-*`)
/// and the destination's.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyKeys<'a> {
    pub source: Option<&'a CustomerKey>,
    pub dest: Option<&'a CustomerKey>,
}

/// What the index keeps per object (enough to list; GET and HEAD read the file's metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    /// A manifest object's blob names: removed when the object is replaced or deleted.
    pub blobs: Option<Arc<[String]>>,
}

impl From<&ObjectMeta> for Entry {
    fn from(m: &ObjectMeta) -> Self {
        Entry {
            size: m.size,
            etag: m.etag.clone(),
            last_modified_ms: m.last_modified_ms,
            blobs: m
                .blobs
                .as_ref()
                .map(|b| b.iter().map(|b| b.name.clone()).collect()),
        }
    }
}

/// `bucket.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketFile {
    created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cors: Option<Vec<CorsRule>>,
}

#[derive(Debug, Default)]
struct BucketState {
    file: BucketFile,
    objects: BTreeMap<String, Entry>,
}

#[derive(Debug, Default)]
struct Index {
    buckets: BTreeMap<String, BucketState>,
    uploads: HashMap<String, multipart::UploadState>,
    /// Bytes of all objects and of all parts of uploads in progress.
    used: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub quota: Quota,
    pub min_part_size: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            quota: Quota::unlimited(),
            min_part_size: MIN_PART_SIZE,
        }
    }
}

pub struct Store {
    layout: Layout,
    options: StoreOptions,
    index: Mutex<Index>,
    /// Primary of a replicated deployment: every change is journaled for the replica.
    journal: Option<Arc<Journal>>,
}

/// A bucket as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub created_ms: i64,
}

impl Store {
    /// Opens (or initialises) the data directory: removes leftover temporary files, then reads
    /// every bucket, object and upload into the index.
    pub fn open(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Store, StoreError> {
        let layout = Layout { root: root.into() };
        let removed = layout::prepare(&layout).map_err(io_err("preparing", &layout.root))?;
        if removed > 0 {
            tracing::info!(removed, "removed temporary files left by an earlier run");
        }
        let mut index = Index::default();
        let buckets_dir = layout.buckets();
        for entry in fs::read_dir(&buckets_dir).map_err(io_err("listing", &buckets_dir))? {
            let entry = entry.map_err(io_err("listing", &buckets_dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if names::check_bucket_name(&name).is_err() {
                tracing::warn!(name, "ignoring a directory that is not a valid bucket name");
                continue;
            }
            let state = load_bucket(&layout, &name)?;
            index.used += state.objects.values().map(|e| e.size).sum::<u64>();
            index.buckets.insert(name, state);
        }
        multipart::load_uploads(&layout, &mut index)?;
        Ok(Store {
            layout,
            options,
            index: Mutex::new(index),
            journal: None,
        })
    }

    /// Makes this store a replication primary: from now on every change is journaled (in the
    /// same critical section as the change, and fsynced before the change is acknowledged).
    /// With `seed`, the journal is new for this replica: every bucket and object is queued
    /// first, so the replica starts from a full copy.
    pub fn attach_journal(&mut self, journal: Arc<Journal>, seed: bool) -> Result<(), StoreError> {
        if seed {
            let index = self.lock();
            let mut queued = 0u64;
            for (name, b) in &index.buckets {
                journal.append(
                    Change::Bucket {
                        bucket: name.clone(),
                    },
                    0,
                )?;
                for (key, e) in &b.objects {
                    journal.append(
                        Change::Object {
                            bucket: name.clone(),
                            key: key.clone(),
                        },
                        e.size,
                    )?;
                    queued += 1;
                }
            }
            drop(index);
            journal.seeded()?;
            tracing::info!(
                objects = queued,
                "replication: queued a full copy for the replica"
            );
        }
        self.journal = Some(journal);
        Ok(())
    }

    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Journals a change; called with the index lock held, before the change is made, so the
    /// journal's order is the order of the changes and a crash between the two leaves a
    /// record whose shipping is harmless (the shipper sends the current state).
    fn note(&self, change: Change, bytes: u64) -> Result<Option<u64>, StoreError> {
        match &self.journal {
            Some(j) => Ok(Some(j.append(change, bytes)?)),
            None => Ok(None),
        }
    }

    /// Makes the journal durable up to `seq` before the change is acknowledged.
    fn noted(&self, seq: Option<u64>) -> Result<(), StoreError> {
        match (&self.journal, seq) {
            (Some(j), Some(seq)) => Ok(j.sync(seq)?),
            _ => Ok(()),
        }
    }

    fn object_change(bucket: &str, key: &str) -> Change {
        Change::Object {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }
    }

    fn bucket_change(bucket: &str) -> Change {
        Change::Bucket {
            bucket: bucket.to_owned(),
        }
    }

    /// The current state of a bucket for the shipper: `None` when it does not exist, else its
    /// CORS rules.
    pub fn bucket_state(&self, bucket: &str) -> Option<Option<Vec<CorsRule>>> {
        self.lock().buckets.get(bucket).map(|b| b.file.cors.clone())
    }

    /// The current state of an object for the shipper: `None` when it (or its bucket) does not
    /// exist.
    pub fn object_state(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectMeta, ObjectData)>, StoreError> {
        match self.open_object(bucket, key) {
            Ok(found) => Ok(Some(found)),
            Err(StoreError::NoSuchKey { .. } | StoreError::NoSuchBucket(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index as it was at the panic; the files
        // are the truth and nothing half-done is visible in them.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes counted against the quota.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    // --- buckets --------------------------------------------------------------------------

    pub fn create_bucket(&self, name: &str) -> Result<(), StoreError> {
        names::check_bucket_name(name)?;
        let mut index = self.lock();
        if index.buckets.contains_key(name) {
            return Err(StoreError::BucketExists(name.to_owned()));
        }
        let seq = self.note(Self::bucket_change(name), 0)?;
        // Built complete under tmp/, then renamed into place: a bucket exists with its
        // bucket.json or not at all.
        let tmp = self.layout.new_tmp();
        let file = BucketFile {
            created_ms: now_ms(),
            cors: None,
        };
        let build = || -> io::Result<()> {
            fs::create_dir(&tmp)?;
            fs::create_dir(tmp.join("objects"))?;
            let mut f = File::create(tmp.join("bucket.json"))?;
            f.write_all(&serde_json::to_vec(&file).map_err(io::Error::other)?)?;
            f.sync_all()?;
            layout::fsync_dir(&tmp.join("objects"))?;
            layout::fsync_dir(&tmp)?;
            fs::rename(&tmp, self.layout.bucket(name))?;
            layout::fsync_dir(&self.layout.buckets())
        };
        if let Err(e) = build() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(StoreError::Io {
                what: "creating bucket",
                path: self.layout.bucket(name),
                source: e,
            });
        }
        index.buckets.insert(
            name.to_owned(),
            BucketState {
                file,
                objects: BTreeMap::new(),
            },
        );
        drop(index);
        self.noted(seq)
    }

    /// Creates `name` unless it exists (an existing bucket is kept as it is, objects and CORS
    /// rules included): the buckets of the configuration, at every start. True when created.
    pub fn ensure_bucket(&self, name: &str) -> Result<bool, StoreError> {
        match self.create_bucket(name) {
            Ok(()) => Ok(true),
            Err(StoreError::BucketExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn head_bucket(&self, name: &str) -> Result<(), StoreError> {
        match self.lock().buckets.contains_key(name) {
            true => Ok(()),
            false => Err(StoreError::NoSuchBucket(name.to_owned())),
        }
    }

    pub fn list_buckets(&self) -> Vec<BucketInfo> {
        self.lock()
            .buckets
            .iter()
            .map(|(name, b)| BucketInfo {
                name: name.clone(),
                created_ms: b.file.created_ms,
            })
            .collect()
    }

    /// Deletes an empty bucket (uploads in progress in it are aborted with it).
    pub fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let mut index = self.lock();
        let bucket = index
            .buckets
            .get(name)
            .ok_or_else(|| StoreError::NoSuchBucket(name.to_owned()))?;
        if !bucket.objects.is_empty() {
            return Err(StoreError::BucketNotEmpty(name.to_owned()));
        }
        let seq = self.note(Self::bucket_change(name), 0)?;
        let tmp = self.layout.new_tmp();
        let dir = self.layout.bucket(name);
        fs::rename(&dir, &tmp).map_err(io_err("removing bucket", &dir))?;
        layout::fsync_dir(&self.layout.buckets())
            .map_err(io_err("syncing", &self.layout.buckets()))?;
        index.buckets.remove(name);
        let uploads: Vec<String> = index
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == name)
            .map(|(id, _)| id.clone())
            .collect();
        for id in uploads {
            multipart::drop_upload(&self.layout, &mut index, &id)?;
        }
        drop(index);
        let _ = fs::remove_dir_all(&tmp);
        self.noted(seq)
    }

    pub fn get_cors(&self, bucket: &str) -> Result<Vec<CorsRule>, StoreError> {
        let index = self.lock();
        let b = index
            .buckets
            .get(bucket)
            .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))?;
        b.file
            .cors
            .clone()
            .ok_or_else(|| StoreError::NoSuchCors(bucket.to_owned()))
    }

    /// Replaces (`Some`) or deletes (`None`) the bucket's CORS rules.
    pub fn set_cors(&self, bucket: &str, rules: Option<Vec<CorsRule>>) -> Result<(), StoreError> {
        if let Some(rules) = &rules {
            crate::cors::validate(rules).map_err(StoreError::InvalidArgument)?;
        }
        let mut index = self.lock();
        let b = index
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))?;
        let file = BucketFile {
            created_ms: b.file.created_ms,
            cors: rules,
        };
        let path = self.layout.bucket_meta(bucket);
        let json = serde_json::to_vec(&file).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let seq = self.note(Self::bucket_change(bucket), 0)?;
        layout::atomic_write(&self.layout.tmp(), &path, &json).map_err(io_err("writing", &path))?;
        if let Some(b) = index.buckets.get_mut(bucket) {
            b.file = file;
        }
        drop(index);
        self.noted(seq)
    }

    // --- objects --------------------------------------------------------------------------

    /// Starts a write of `key` in `bucket`. With a known length the quota is checked before
    /// any byte is read; either way the writer refuses bytes past the quota.
    pub fn begin_put(
        &self,
        bucket: &str,
        key: &str,
        length: Option<u64>,
        expected: &Expected,
    ) -> Result<ObjectWriter, StoreError> {
        names::check_key(key)?;
        let room = {
            let index = self.lock();
            let b = index
                .buckets
                .get(bucket)
                .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))?;
            let freed = b.objects.get(key).map_or(0, |e| e.size);
            if let Some(len) = length {
                self.options.quota.check(index.used, freed, len)?;
            }
            self.options.quota.room(index.used, freed)
        };
        let path = self.layout.new_tmp();
        ObjectWriter::create(
            path.clone(),
            Hasher::new(&expected.algorithms()),
            room,
            length,
        )
        .map_err(io_err("creating", &path))
    }

    /// Appends body bytes.
    pub fn write(&self, w: &mut ObjectWriter, data: &[u8]) -> Result<(), StoreError> {
        self.write_inner(w, data, None)
    }

    /// Appends body bytes the caller hands over: a writer hashing on its own thread takes
    /// them without a copy.
    pub fn write_bytes(&self, w: &mut ObjectWriter, data: bytes::Bytes) -> Result<(), StoreError> {
        let view = data.clone();
        self.write_inner(w, &view, Some(data))
    }

    fn write_inner(
        &self,
        w: &mut ObjectWriter,
        data: &[u8],
        owned: Option<bytes::Bytes>,
    ) -> Result<(), StoreError> {
        let new_len = w.written + data.len() as u64;
        if new_len > w.room {
            let limit = self.options.quota.limit.unwrap_or(u64::MAX);
            return Err(QuotaExceeded {
                limit,
                used: self.used(),
                needed: new_len,
            }
            .into());
        }
        if let (Some(out), Some(h)) = (w.out.as_mut(), w.hasher.as_mut()) {
            // Hashed first: on its own thread, the digest runs while the data is written.
            match owned {
                Some(b) => h.update(b),
                None => h.update_slice(data),
            }
            match w.enc.as_mut() {
                Some(enc) => enc.write(out, data),
                None => out.write_all(data),
            }
            .map_err(io_err("writing", &w.path))?;
        }
        w.written = new_len;
        Ok(())
    }

    /// Verifies the body against what the client declared (header values, `trailers` that
    /// came after the body, Content-MD5), then seals the file (metadata, fsync) and renames it
    /// into place. On any error the temporary file is removed and the old object stays.
    pub fn commit_put(
        &self,
        mut w: ObjectWriter,
        bucket: &str,
        key: &str,
        attrs: Attrs,
        expected: &Expected,
        trailers: &[(String, String)],
    ) -> Result<ObjectMeta, StoreError> {
        let digests = w.digests()?;
        checksum::verify(expected, trailers, &digests)?;
        let mut checksums = digests.checksums;
        // Keep only what the client asked for or sent (all of them were computed for that).
        checksums
            .values
            .retain(|(a, _)| expected.algorithms().contains(a));
        let mut meta = ObjectMeta {
            key: key.to_owned(),
            size: w.written,
            etag: etag(&w, &digests.md5),
            last_modified_ms: now_ms(),
            attrs,
            checksums,
            parts: None,
            sse: None,
            blobs: None,
        };
        self.seal(&mut w, &mut meta)?;
        self.commit_object(w, bucket, meta)
    }

    /// Writes the last encrypted segment (SSE-C: `meta.sse` is set from the writer), the
    /// metadata trailer, and fsyncs the file.
    fn seal(&self, w: &mut ObjectWriter, meta: &mut ObjectMeta) -> Result<(), StoreError> {
        let path = w.path.clone();
        let mut out = w
            .out
            .take()
            .ok_or_else(|| StoreError::Corrupt("writer reused".into()))?;
        if let Some(enc) = w.enc.take() {
            let extent = enc.finish(&mut out).map_err(io_err("writing", &path))?;
            let check = w
                .check
                .take()
                .ok_or_else(|| StoreError::Corrupt("writer without key check".into()))?;
            meta.sse = Some(SseMeta {
                check,
                extents: vec![extent],
            });
        }
        object::write_trailer(&mut out, meta).map_err(io_err("writing", &path))?;
        let f = out.into_inner().map_err(|e| StoreError::Io {
            what: "writing",
            path: path.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io_err("syncing", &path))?;
        Ok(())
    }

    /// Renames a sealed temporary file over the object's name and updates the index.
    fn commit_object(
        &self,
        mut w: ObjectWriter,
        bucket: &str,
        meta: ObjectMeta,
    ) -> Result<ObjectMeta, StoreError> {
        let (dir, file) = self.layout.object(bucket, &meta.key);
        let mut index = self.lock();
        let used = index.used;
        let b = index
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))?;
        let old = b.objects.get(&meta.key);
        let freed = old.map_or(0, |e| e.size);
        let old_blobs = old.and_then(|e| e.blobs.clone());
        // Other writes may have committed since begin_put.
        self.options.quota.check(used, freed, meta.size)?;
        let seq = self.note(Self::object_change(bucket, &meta.key), meta.size)?;
        layout::ensure_dir(&dir).map_err(io_err("creating", &dir))?;
        fs::rename(&w.path, &file).map_err(io_err("renaming into", &file))?;
        w.sealed = true;
        if let Some(b) = index.buckets.get_mut(bucket) {
            b.objects.insert(meta.key.clone(), Entry::from(&meta));
        }
        index.used = used - freed + meta.size;
        drop(index);
        // The rename is durable once the directory is; only then is the PUT acknowledged.
        layout::fsync_dir(&dir).map_err(io_err("syncing", &dir))?;
        // Only now are the replaced object's part files removed: before the rename is durable,
        // a power cut could keep the old manifest and lose its parts. Readers that opened
        // them keep reading; readers that read the old manifest retry ([`Store::open_object`]).
        self.remove_blobs(bucket, old_blobs.as_deref());
        self.noted(seq)?;
        Ok(meta)
    }

    /// Replica side: starts receiving an object's stored bytes as the primary holds them
    /// (ciphertext for SSE-C), to be committed with the primary's metadata by
    /// [`Store::commit_replica`].
    pub fn begin_replica_put(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
    ) -> Result<ObjectWriter, StoreError> {
        let mut w = self.begin_put(bucket, key, Some(meta.size), &Expected::default())?;
        // The quota counts plaintext sizes; the bytes received may hold SSE-C tags too. The
        // size was checked above and is checked again at commit.
        w.room = u64::MAX;
        Ok(w)
    }

    /// Replica side: seals the bytes received with the primary's metadata (ETag, times,
    /// attributes, checksums, SSE-C extents kept) and renames the object into place.
    pub fn commit_replica(
        &self,
        mut w: ObjectWriter,
        bucket: &str,
        key: &str,
        mut meta: ObjectMeta,
    ) -> Result<ObjectMeta, StoreError> {
        if w.written != meta.stored_size() {
            return Err(StoreError::IncompleteBody {
                got: w.written,
                expected: meta.stored_size(),
            });
        }
        meta.key = key.to_owned();
        // stored here as one file, whatever the primary's layout
        meta.blobs = None;
        self.seal(&mut w, &mut meta)?;
        self.commit_object(w, bucket, meta)
    }

    /// The object's metadata and its stored bytes (`[0, meta.stored_size())`; the plaintext
    /// `[0, meta.size)` for an object without SSE-C). Only the index is read under the lock;
    /// the files are opened outside it, so a slow disk or a manifest of many parts holds up
    /// no other request. Once open, the data stays readable whatever happens to the object;
    /// a manifest whose part files were removed before they were opened (the object was
    /// replaced meanwhile) is read again.
    pub fn open_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectMeta, ObjectData), StoreError> {
        const ATTEMPTS: usize = 5;
        let (_, path) = self.layout.object(bucket, key);
        let no_such_key = || StoreError::NoSuchKey {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        for _ in 0..ATTEMPTS {
            {
                let index = self.lock();
                let b = index
                    .buckets
                    .get(bucket)
                    .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))?;
                if !b.objects.contains_key(key) {
                    return Err(no_such_key());
                }
            }
            let (meta, file) = match object::open_meta(&path) {
                Ok(found) => found,
                // deleted since the index was read (or removed by hand)
                Err(object::FormatError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    return Err(no_such_key());
                }
                Err(e) => return Err(e.into()),
            };
            let Some(blobs) = &meta.blobs else {
                let len = meta.stored_size();
                return Ok((meta, ObjectData::new(vec![(file, len)])));
            };
            let dir = self.layout.blobs(bucket);
            let mut pieces = Vec::with_capacity(blobs.len());
            let mut replaced = false;
            for blob in blobs {
                let p = dir.join(&blob.name);
                match File::open(&p) {
                    Ok(f) => pieces.push((f, blob.len)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        replaced = true;
                        break;
                    }
                    Err(e) => return Err(io_err("opening", &p)(e)),
                }
            }
            if !replaced {
                return Ok((meta, ObjectData::new(pieces)));
            }
        }
        Err(StoreError::Io {
            what: "opening (the object kept changing while it was read)",
            path,
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    /// Removes the blobs of a manifest object that was just replaced or deleted (after the
    /// rename or removal of its object file is durable). Not fsynced: a removal lost to a
    /// crash leaves blobs no manifest names, which `open` moves to `DATA/damaged/`.
    fn remove_blobs(&self, bucket: &str, blobs: Option<&[String]>) {
        let dir = self.layout.blobs(bucket);
        for name in blobs.unwrap_or_default() {
            let p = dir.join(name);
            if let Err(e) = fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove the part file of a replaced object; removed at the next start");
                }
            }
        }
    }

    /// Deletes an object; deleting a missing key is not an error (S3 answers 204 either way).
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        let (dir, path) = self.layout.object(bucket, key);
        let mut index = self.lock();
        let b = index
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))?;
        let Some(entry) = b.objects.get(key).cloned() else {
            return Ok(false);
        };
        let seq = self.note(Self::object_change(bucket, key), 0)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Io {
                    what: "removing",
                    path,
                    source: e,
                })
            }
        }
        if let Some(b) = index.buckets.get_mut(bucket) {
            b.objects.remove(key);
        }
        index.used -= entry.size;
        drop(index);
        layout::fsync_dir(&dir).map_err(io_err("syncing", &dir))?;
        // After the removal is durable (see commit_object).
        self.remove_blobs(bucket, entry.blobs.as_deref());
        self.noted(seq)?;
        Ok(true)
    }

    /// Copies an object (data and checksums) under a new key; `attrs` replaces the source's
    /// attributes when given (MetadataDirective REPLACE). With SSE-C on either side the data
    /// is decrypted with the source's key and encrypted with the destination's as it is copied.
    pub fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        attrs: Option<Attrs>,
        keys: CopyKeys<'_>,
    ) -> Result<ObjectMeta, StoreError> {
        let (src_meta, src) = self.open_object(src_bucket, src_key)?;
        sse::check_access(src_meta.sse.as_ref(), keys.source)?;
        let mut w = self.begin_put(
            dst_bucket,
            dst_key,
            Some(src_meta.size),
            &Expected::default(),
        )?;
        let path = w.path.clone();
        let size = src_meta.size;
        let etag = match (&src_meta.sse, keys.source, keys.dest) {
            (None, _, None) => {
                if let Some(out) = w.out.as_mut() {
                    let copied = io::copy(&mut io::Read::take(src, size), out)
                        .map_err(io_err("copying into", &path))?;
                    if copied != size {
                        return Err(StoreError::Corrupt(format!(
                            "{src_bucket}/{src_key}: short read while copying"
                        )));
                    }
                }
                w.written = size;
                src_meta.etag.clone()
            }
            (stored, source, dest) => {
                if let Some(k) = dest {
                    w.encrypt(k);
                }
                let mut reader: Box<dyn io::Read> = match (stored, source) {
                    (Some(s), Some(k)) => {
                        Box::new(sse::Decryptor::new(src, 0, k.clone(), s, 0, size))
                    }
                    _ => Box::new(io::Read::take(src, size)),
                };
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(StoreError::Corrupt(format!("{src_bucket}/{src_key}: {e}")))
                        }
                    };
                    self.write(&mut w, &buf[..n])?;
                }
                if w.written != size {
                    return Err(StoreError::Corrupt(format!(
                        "{src_bucket}/{src_key}: short read while copying"
                    )));
                }
                let md5 = w.digests()?.md5;
                etag(&w, &md5)
            }
        };
        let mut meta = ObjectMeta {
            key: dst_key.to_owned(),
            size,
            etag,
            last_modified_ms: now_ms(),
            attrs: attrs.unwrap_or(src_meta.attrs),
            checksums: src_meta.checksums,
            parts: src_meta.parts,
            sse: None,
            blobs: None,
        };
        self.seal(&mut w, &mut meta)?;
        self.commit_object(w, dst_bucket, meta)
    }

    pub fn list_objects(&self, bucket: &str, query: &ListQuery) -> Result<ListPage, StoreError> {
        let index = self.lock();
        let b = index
            .buckets
            .get(bucket)
            .ok_or_else(|| StoreError::NoSuchBucket(bucket.to_owned()))?;
        Ok(list::list(&b.objects, query))
    }
}

/// The ETag of a new object or part: the MD5 of its data, as S3; for an encrypted one 16
/// random bytes (S3's SSE-C ETags are not the MD5 either, and an MD5 of the plaintext on disk
/// would let anyone confirm a guess of the content).
fn etag(w: &ObjectWriter, md5: &[u8]) -> String {
    if w.is_encrypted() {
        layout::random_hex(16)
    } else {
        hex::encode(md5)
    }
}

/// Moves a damaged file to `DATA/damaged/` (kept for inspection, out of every index).
fn quarantine(layout: &Layout, path: &Path) -> Result<PathBuf, StoreError> {
    let dir = layout.root.join("damaged");
    layout::ensure_dir(&dir).map_err(io_err("creating", &dir))?;
    let dest = dir.join(layout::random_hex(8));
    fs::rename(path, &dest).map_err(io_err("moving aside", path))?;
    Ok(dest)
}

fn load_bucket(layout: &Layout, name: &str) -> Result<BucketState, StoreError> {
    let meta_path = layout.bucket_meta(name);
    let json = fs::read(&meta_path).map_err(io_err("reading", &meta_path))?;
    let file: BucketFile = serde_json::from_slice(&json)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", meta_path.display())))?;
    let mut objects = BTreeMap::new();
    let mut referenced = std::collections::HashSet::new();
    let blobs_dir = layout.blobs(name);
    let objects_dir = layout.objects(name);
    for fan in fs::read_dir(&objects_dir).map_err(io_err("listing", &objects_dir))? {
        let fan = fan.map_err(io_err("listing", &objects_dir))?.path();
        for f in fs::read_dir(&fan).map_err(io_err("listing", &fan))? {
            let path = f.map_err(io_err("listing", &fan))?.path();
            let meta = match object::open_meta(&path) {
                Ok((meta, _)) => meta,
                Err(e @ object::FormatError::Corrupt { .. }) => {
                    // Never produced by a crash (objects appear only by rename after fsync):
                    // damaged storage or a hand edit. The rest of the bucket stays available.
                    let dest = quarantine(layout, &path)?;
                    tracing::error!(error = %e, moved_to = %dest.display(), "moved a damaged object file aside");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if layout.object(name, &meta.key).1 != path {
                tracing::warn!(path = %path.display(), "ignoring an object file stored under the wrong name");
                continue;
            }
            if let Some(blobs) = &meta.blobs {
                // Blobs are linked and their directory fsynced before the manifest is renamed
                // into place, so a missing or short one is damage, not a crash.
                let mut missing = None;
                for b in blobs {
                    let short = !object::valid_blob_name(&b.name)
                        || match fs::metadata(blobs_dir.join(&b.name)) {
                            Ok(m) => m.len() < b.len,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                            // not "missing": an I/O error must not make the object damage
                            Err(e) => return Err(io_err("reading", &blobs_dir.join(&b.name))(e)),
                        };
                    if short {
                        missing = Some(b);
                        break;
                    }
                }
                if let Some(b) = missing {
                    let dest = quarantine(layout, &path)?;
                    tracing::error!(blob = %b.name, moved_to = %dest.display(), "moved aside a multipart object whose part file is missing or short");
                    continue;
                }
                referenced.extend(blobs.iter().map(|b| b.name.clone()));
            }
            objects.insert(meta.key.clone(), Entry::from(&meta));
        }
    }
    // Blobs no manifest names: a completion that crashed before its manifest was renamed
    // into place, a replaced object whose blobs were not all removed before a crash, or the
    // parts of a manifest moved aside above (damaged, or unreadable to this version). Moved
    // to `DATA/damaged/`, never deleted: which of these it is cannot be told from here, and
    // the last two are the only copy of an object's data.
    match fs::read_dir(&blobs_dir) {
        Ok(entries) => {
            let mut moved = 0usize;
            for entry in entries {
                let entry = entry.map_err(io_err("listing", &blobs_dir))?;
                let keep = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| referenced.contains(n));
                if !keep {
                    quarantine(layout, &entry.path())?;
                    moved += 1;
                }
            }
            if moved > 0 {
                tracing::warn!(bucket = name, moved, "moved part files no object names to DATA/damaged/ (delete them there once inspected)");
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("listing", &blobs_dir)(e)),
    }
    Ok(BucketState { file, objects })
}

#[cfg(test)]
mod tests;
