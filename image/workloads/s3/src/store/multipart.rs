//! Multipart uploads: `uploads/ID/upload.json` plus one file per part (same format as an
//! object). Completion does not copy the data: it hard-links the listed parts' files into
//! `buckets/B/blobs/` (fsyncing that directory), then writes a manifest (an object file with no
//! data whose metadata names the blobs), fsyncs it and renames it into place like any PUT; only
//! then is the upload's directory removed and the replaced object's blobs, if any. A crash
//! before the rename leaves the old object and the whole upload, plus blobs no manifest names
//! (removed at start); after it, the new object (and, until the removal is done, an upload that
//! can still be aborted).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::layout::{self, Layout};
use super::object::{self, now_ms, Attrs, BlobRef, ObjectMeta, ObjectWriter};
use super::{io_err, Index, Store, StoreError};
use crate::checksum::{self, Algorithm, Expected, Hasher};
use crate::names;
use crate::sse::{CustomerKey, KeyCheck, SseError, SseMeta};

/// `upload.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadInfo {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated_ms: i64,
    #[serde(default)]
    pub attrs: Attrs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<Algorithm>,
    /// SSE-C: the check of the key every part must be sent with (never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<KeyCheck>,
}

#[derive(Debug)]
pub(super) struct UploadState {
    pub(super) bucket: String,
    pub(super) info: UploadInfo,
    /// part number → size
    pub(super) parts: BTreeMap<u32, u64>,
}

/// A part as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub meta: ObjectMeta,
}

/// A part as named in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletePart {
    pub part_number: i64,
    /// Quotes are ignored; `None` skips the check.
    pub etag: Option<String>,
    /// Checksums the client computed for the part; each must match what was stored.
    pub checksums: Vec<(Algorithm, String)>,
}

fn valid_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub(super) fn load_uploads(layout: &Layout, index: &mut Index) -> Result<(), StoreError> {
    let dir = layout.uploads();
    for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
        let path = entry.map_err(io_err("listing", &dir))?.path();
        let Some(id) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let info_path = path.join("upload.json");
        let info: UploadInfo = match fs::read(&info_path) {
            Ok(json) => serde_json::from_slice(&json)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", info_path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // created by rename with its upload.json; without one it is no upload
                tracing::warn!(path = %path.display(), "removing an upload directory without upload.json");
                fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
                continue;
            }
            Err(e) => {
                return Err(StoreError::Io {
                    what: "reading",
                    path: info_path,
                    source: e,
                })
            }
        };
        if !index.buckets.contains_key(&info.bucket) || info.upload_id != id {
            tracing::warn!(path = %path.display(), "removing an upload of a missing bucket");
            fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
            continue;
        }
        let mut parts = BTreeMap::new();
        for f in fs::read_dir(&path).map_err(io_err("listing", &path))? {
            let p = f.map_err(io_err("listing", &path))?.path();
            let Some(n) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("part-"))
            else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let (meta, _) = object::open_meta(&p)?;
            parts.insert(n, meta.size);
        }
        index.used += parts.values().sum::<u64>();
        index.uploads.insert(
            id,
            UploadState {
                bucket: info.bucket.clone(),
                info,
                parts,
            },
        );
    }
    Ok(())
}

/// Removes an upload from the index and from disk, giving its bytes back to the quota.
pub(super) fn drop_upload(
    layout: &Layout,
    index: &mut Index,
    upload_id: &str,
) -> Result<(), StoreError> {
    if let Some(u) = index.uploads.remove(upload_id) {
        index.used -= u.parts.values().sum::<u64>();
        let dir = layout.upload(upload_id);
        // Renamed away first so that a crash cannot leave half an upload under uploads/.
        let tmp = layout.new_tmp();
        fs::rename(&dir, &tmp).map_err(io_err("removing", &dir))?;
        layout::fsync_dir(&layout.uploads()).map_err(io_err("syncing", &layout.uploads()))?;
        let _ = fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// The blobs linked for a completion; removed again unless the manifest naming them was
/// renamed into place.
struct Linked {
    dir: std::path::PathBuf,
    names: Vec<String>,
    keep: bool,
}

impl Drop for Linked {
    fn drop(&mut self) {
        if !self.keep {
            for n in &self.names {
                let _ = fs::remove_file(self.dir.join(n));
            }
        }
    }
}

fn strip_quotes(s: &str) -> &str {
    s.trim().trim_start_matches("W/").trim_matches('"')
}

impl Store {
    pub fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        attrs: Attrs,
        checksum_algorithm: Option<Algorithm>,
        sse: Option<&CustomerKey>,
    ) -> Result<UploadInfo, StoreError> {
        names::check_key(key)?;
        self.head_bucket(bucket)?;
        let info = UploadInfo {
            upload_id: layout::random_hex(16),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            initiated_ms: now_ms(),
            attrs,
            checksum_algorithm,
            sse: sse.map(CustomerKey::new_check),
        };
        let tmp = self.layout.new_tmp();
        let dest = self.layout.upload(&info.upload_id);
        let build = || -> io::Result<()> {
            fs::create_dir(&tmp)?;
            let mut f = File::create(tmp.join("upload.json"))?;
            f.write_all(&serde_json::to_vec(&info).map_err(io::Error::other)?)?;
            f.sync_all()?;
            layout::fsync_dir(&tmp)?;
            fs::rename(&tmp, &dest)?;
            layout::fsync_dir(&self.layout.uploads())
        };
        let mut index = self.lock();
        if !index.buckets.contains_key(bucket) {
            return Err(StoreError::NoSuchBucket(bucket.to_owned()));
        }
        if let Err(e) = build() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(StoreError::Io {
                what: "creating upload",
                path: dest,
                source: e,
            });
        }
        index.uploads.insert(
            info.upload_id.clone(),
            UploadState {
                bucket: bucket.to_owned(),
                info: info.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(info)
    }

    fn check_upload<'a>(
        &self,
        index: &'a Index,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<&'a UploadState, StoreError> {
        let no = || StoreError::NoSuchUpload(upload_id.to_owned());
        if !valid_upload_id(upload_id) {
            return Err(no());
        }
        let u = index.uploads.get(upload_id).ok_or_else(no)?;
        if u.bucket != bucket || u.info.key != key {
            return Err(no());
        }
        Ok(u)
    }

    /// Starts writing part `part_number` (1–10000) of an upload. An upload created with SSE-C
    /// takes only parts sent with the same key, and encrypts them with it.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i64,
        length: Option<u64>,
        expected: &Expected,
        sse: Option<&CustomerKey>,
    ) -> Result<ObjectWriter, StoreError> {
        if !(1..=10000).contains(&part_number) {
            return Err(StoreError::InvalidArgument(format!(
                "part number {part_number} is not within 1 to 10000"
            )));
        }
        let room = {
            let index = self.lock();
            let u = self.check_upload(&index, bucket, key, upload_id)?;
            let freed = u.parts.get(&(part_number as u32)).copied().unwrap_or(0);
            if let Some(len) = length {
                self.options.quota.check(index.used, freed, len)?;
            }
            self.options.quota.room(index.used, freed)
        };
        let mut algorithms = expected.algorithms();
        let index = self.lock();
        let info = &self.check_upload(&index, bucket, key, upload_id)?.info;
        if let Some(a) = info.checksum_algorithm {
            if !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
        match (&info.sse, sse) {
            (None, None) => {}
            (Some(_), None) => return Err(SseError::PartKeyRequired.into()),
            (Some(check), Some(k)) if k.matches(check) => {}
            (_, Some(_)) => return Err(SseError::UploadKeyMismatch.into()),
        }
        drop(index);
        let path = self.layout.new_tmp();
        let mut w = ObjectWriter::create(path.clone(), Hasher::new(&algorithms), room, length)
            .map_err(io_err("creating", &path))?;
        if let Some(k) = sse {
            w.encrypt(k);
        }
        Ok(w)
    }

    /// Verifies and stores a part (replacing an earlier upload of the same number).
    #[allow(clippy::too_many_arguments)]
    pub fn commit_part(
        &self,
        mut w: ObjectWriter,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i64,
        expected: &Expected,
        trailers: &[(String, String)],
    ) -> Result<ObjectMeta, StoreError> {
        let digests = w.digests()?;
        checksum::verify(expected, trailers, &digests)?;
        let mut meta = ObjectMeta {
            key: key.to_owned(),
            size: w.written,
            etag: super::etag(&w, &digests.md5),
            last_modified_ms: now_ms(),
            attrs: Attrs::default(),
            checksums: digests.checksums,
            parts: None,
            sse: None,
            blobs: None,
        };
        self.seal(&mut w, &mut meta)?;
        let n = part_number as u32;
        let dest = self.layout.part(upload_id, n);
        let mut index = self.lock();
        let used = index.used;
        let freed = self
            .check_upload(&index, bucket, key, upload_id)?
            .parts
            .get(&n)
            .copied()
            .unwrap_or(0);
        self.options.quota.check(used, freed, meta.size)?;
        fs::rename(&w.path, &dest).map_err(io_err("renaming into", &dest))?;
        w.sealed = true;
        if let Some(u) = index.uploads.get_mut(upload_id) {
            u.parts.insert(n, meta.size);
        }
        index.used = used - freed + meta.size;
        drop(index);
        let dir = self.layout.upload(upload_id);
        layout::fsync_dir(&dir).map_err(io_err("syncing", &dir))?;
        Ok(meta)
    }

    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(UploadInfo, Vec<PartInfo>), StoreError> {
        let (info, numbers) = {
            let index = self.lock();
            let u = self.check_upload(&index, bucket, key, upload_id)?;
            (u.info.clone(), u.parts.keys().copied().collect::<Vec<_>>())
        };
        let mut parts = Vec::new();
        for n in numbers {
            match object::open_meta(&self.layout.part(upload_id, n)) {
                Ok((meta, _)) => parts.push(PartInfo {
                    part_number: n,
                    meta,
                }),
                // replaced or the upload ended meanwhile
                Err(object::FormatError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((info, parts))
    }

    pub fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<UploadInfo>, StoreError> {
        let index = self.lock();
        if !index.buckets.contains_key(bucket) {
            return Err(StoreError::NoSuchBucket(bucket.to_owned()));
        }
        let mut out: Vec<UploadInfo> = index
            .uploads
            .values()
            .filter(|u| u.bucket == bucket && u.info.key.starts_with(prefix))
            .map(|u| u.info.clone())
            .collect();
        out.sort_by(|a, b| {
            (&a.key, a.initiated_ms, &a.upload_id).cmp(&(&b.key, b.initiated_ms, &b.upload_id))
        });
        Ok(out)
    }

    pub fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let mut index = self.lock();
        self.check_upload(&index, bucket, key, upload_id)?;
        drop_upload(&self.layout, &mut index, upload_id)
    }

    /// Completes an upload from the listed parts: ascending part numbers (`InvalidPartOrder`),
    /// each uploaded and with the ETag and checksums the client names (`InvalidPart`), all but
    /// the last at least the minimum part size (`EntityTooSmall`).
    pub fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletePart],
    ) -> Result<ObjectMeta, StoreError> {
        if parts.is_empty() {
            return Err(StoreError::InvalidArgument(
                "CompleteMultipartUpload must name at least one part".into(),
            ));
        }
        let info = {
            let index = self.lock();
            self.check_upload(&index, bucket, key, upload_id)?
                .info
                .clone()
        };
        let mut previous = 0i64;
        let mut chosen = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            if p.part_number <= previous {
                return Err(StoreError::InvalidPartOrder {
                    part: p.part_number,
                    previous,
                });
            }
            previous = p.part_number;
            let missing = || StoreError::InvalidPart {
                part: p.part_number,
                reason: "was not uploaded".into(),
            };
            let n = u32::try_from(p.part_number).map_err(|_| missing())?;
            let path = self.layout.part(upload_id, n);
            let (meta, file) = match object::open_meta(&path) {
                Ok(found) => found,
                Err(object::FormatError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    return Err(missing());
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(etag) = &p.etag {
                if strip_quotes(etag) != meta.etag {
                    return Err(StoreError::InvalidPart {
                        part: p.part_number,
                        reason: format!(
                            "ETag {etag} does not match the uploaded part's \"{}\"",
                            meta.etag
                        ),
                    });
                }
            }
            for (a, v) in &p.checksums {
                if meta.checksums.get(*a) != Some(v.as_str()) {
                    return Err(StoreError::InvalidPart {
                        part: p.part_number,
                        reason: format!(
                            "its {} checksum does not match the uploaded part's",
                            a.name()
                        ),
                    });
                }
            }
            if i + 1 < parts.len() && meta.size < self.options.min_part_size {
                return Err(StoreError::EntityTooSmall {
                    part: p.part_number,
                    size: meta.size,
                    min: self.options.min_part_size,
                });
            }
            chosen.push((meta, file));
        }

        // The object: the parts' data back to back, then the metadata.
        let size: u64 = chosen.iter().map(|(m, _)| m.size).sum();
        let etags: Vec<&str> = chosen.iter().map(|(m, _)| m.etag.as_str()).collect();
        let etag = checksum::multipart_etag(&etags)
            .ok_or_else(|| StoreError::Corrupt("bad part ETag".into()))?;
        let mut checksums = checksum::Checksums {
            values: Vec::new(),
            composite: true,
        };
        if let Some(a) = info.checksum_algorithm {
            let values: Option<Vec<&str>> =
                chosen.iter().map(|(m, _)| m.checksums.get(a)).collect();
            if let Some(c) = values.and_then(|v| checksum::composite(a, &v)) {
                checksums.values.push((a, c));
            }
        }
        // SSE-C: the parts' extents back to back, under the upload's key check.
        let sse = match &info.sse {
            None => None,
            Some(check) => {
                let mut extents = Vec::new();
                for (m, _) in &chosen {
                    let s = m.sse.as_ref().ok_or_else(|| {
                        StoreError::Corrupt(format!("upload {upload_id}: a part is not encrypted"))
                    })?;
                    extents.extend(s.extents.iter().cloned());
                }
                Some(SseMeta {
                    check: check.clone(),
                    extents,
                })
            }
        };
        // The parts' files become the object's blobs: hard links under buckets/B/blobs/ (the
        // upload keeps its own names until it is dropped, so a crash before the manifest is in
        // place leaves the upload whole and blobs no manifest names, removed at start).
        let prefix = layout::random_hex(12);
        let blobs_dir = self.layout.blobs(bucket);
        let mut linked = Linked {
            dir: blobs_dir.clone(),
            names: Vec::with_capacity(chosen.len()),
            keep: false,
        };
        layout::ensure_dir(&blobs_dir).map_err(io_err("creating", &blobs_dir))?;
        let mut blobs = Vec::with_capacity(chosen.len());
        for (p, (m, _)) in parts.iter().zip(&chosen) {
            let n = p.part_number as u32;
            let name = format!("{prefix}.{n:05}");
            let dest = blobs_dir.join(&name);
            match fs::hard_link(self.layout.part(upload_id, n), &dest) {
                Ok(()) => {}
                // aborted (or completed) meanwhile
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::NoSuchUpload(upload_id.to_owned()))
                }
                Err(e) => return Err(io_err("linking", &dest)(e)),
            }
            linked.names.push(name.clone());
            // The part may have been uploaded again since it was checked above: the blob
            // must be the part that was checked.
            let (now, _) = object::open_meta(&dest)?;
            if now != *m {
                return Err(StoreError::InvalidPart {
                    part: p.part_number,
                    reason: "was uploaded again while the upload was being completed".into(),
                });
            }
            blobs.push(BlobRef {
                name,
                len: m.stored_size(),
            });
        }
        drop(chosen);
        // The blobs' names are durable before a manifest names them.
        layout::fsync_dir(&blobs_dir).map_err(io_err("syncing", &blobs_dir))?;

        let mut meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag,
            last_modified_ms: now_ms(),
            attrs: info.attrs.clone(),
            checksums,
            parts: Some(blobs.len() as u32),
            sse,
            blobs: Some(blobs),
        };
        let path = self.layout.new_tmp();
        // Room is not checked: the parts are already counted, the object replaces them. The
        // manifest holds no data, only the metadata naming the blobs.
        let mut w = ObjectWriter::create(path.clone(), Hasher::new(&[]), u64::MAX, Some(0))
            .map_err(io_err("creating", &path))?;
        w.written = size;
        self.seal(&mut w, &mut meta)?;

        let (dir, file) = self.layout.object(bucket, key);
        let mut index = self.lock();
        self.check_upload(&index, bucket, key, upload_id)?; // not aborted meanwhile
        let old = index.buckets.get(bucket).and_then(|b| b.objects.get(key));
        let freed = old.map_or(0, |e| e.size);
        let old_blobs = old.and_then(|e| e.blobs.clone());
        let seq = self.note(Self::object_change(bucket, key), size)?;
        layout::ensure_dir(&dir).map_err(io_err("creating", &dir))?;
        fs::rename(&w.path, &file).map_err(io_err("renaming into", &file))?;
        w.sealed = true;
        linked.keep = true;
        layout::fsync_dir(&dir).map_err(io_err("syncing", &dir))?;
        if let Some(b) = index.buckets.get_mut(bucket) {
            b.objects.insert(key.to_owned(), super::Entry::from(&meta));
        }
        index.used = index.used - freed + size;
        self.remove_blobs(bucket, old_blobs.as_deref());
        drop_upload(&self.layout, &mut index, upload_id)?;
        drop(index);
        self.noted(seq)?;
        Ok(meta)
    }
}
