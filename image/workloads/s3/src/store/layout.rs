//! Where things live in the data directory, and the few file-system moves every durable write
//! is made of.
//!
//! ```text
//! DATA/tmp/                          files and directories being written; emptied at start
//! DATA/buckets/NAME/bucket.json      creation time, CORS rules
//! DATA/buckets/NAME/objects/HH/HASH  one object: data, then its metadata (see `object`)
//! DATA/buckets/NAME/blobs/RAND.N     part N of a completed multipart object (a manifest)
//! DATA/uploads/ID/upload.json        a multipart upload in progress
//! DATA/uploads/ID/part-NNNNN         one uploaded part (same format as an object)
//! ```
//!
//! HASH is the hex SHA-256 of the object key and HH its first two digits: keys may hold any
//! character and be 1024 bytes long, file names may not. The key itself is in the file's
//! metadata, so a scan of the directory rebuilds the index.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use s3s::crypto::{Checksum as _, Sha256};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn buckets(&self) -> PathBuf {
        self.root.join("buckets")
    }
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }
    pub fn bucket(&self, bucket: &str) -> PathBuf {
        self.buckets().join(bucket)
    }
    pub fn bucket_meta(&self, bucket: &str) -> PathBuf {
        self.bucket(bucket).join("bucket.json")
    }
    pub fn objects(&self, bucket: &str) -> PathBuf {
        self.bucket(bucket).join("objects")
    }
    /// The part files of the bucket's manifest objects.
    pub fn blobs(&self, bucket: &str) -> PathBuf {
        self.bucket(bucket).join("blobs")
    }
    /// The fan-out directory and the file of `key` in `bucket`.
    pub fn object(&self, bucket: &str, key: &str) -> (PathBuf, PathBuf) {
        let name = hex::encode(Sha256::checksum(key.as_bytes()));
        let dir = self.objects(bucket).join(&name[..2]);
        let file = dir.join(name);
        (dir, file)
    }
    pub fn upload(&self, upload_id: &str) -> PathBuf {
        self.uploads().join(upload_id)
    }
    pub fn part(&self, upload_id: &str, part_number: u32) -> PathBuf {
        self.upload(upload_id)
            .join(format!("part-{part_number:05}"))
    }
    /// A fresh name under `tmp/`.
    pub fn new_tmp(&self) -> PathBuf {
        self.tmp().join(random_hex(16))
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// fsync of a directory: makes the names created, renamed or removed in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` if missing; when it was created, fsyncs its parent so the new name is durable.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => fsync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `dest` so that a crash leaves either the old file or the new one: a
/// temporary file in `tmp` (same file system), fsync, rename, fsync of the directory.
pub fn atomic_write(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let path = tmp.join(random_hex(16));
    let result = (|| {
        let mut f = File::create(&path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&path, dest)?;
        match dest.parent() {
            Some(parent) => fsync_dir(parent),
            None => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&path);
    }
    result
}

/// Empties `tmp/` (whatever a crash left there) and makes sure the top directories exist.
pub fn prepare(layout: &Layout) -> io::Result<usize> {
    fs::create_dir_all(&layout.root)?;
    for dir in [layout.tmp(), layout.buckets(), layout.uploads()] {
        ensure_dir(&dir)?;
    }
    let mut removed = 0;
    for entry in fs::read_dir(layout.tmp())? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
        removed += 1;
    }
    if removed > 0 {
        fsync_dir(&layout.tmp())?;
    }
    Ok(removed)
}
