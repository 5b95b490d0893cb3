//! SSE-C: objects encrypted at rest with a key the client sends with every request
//! (`x-amz-server-side-encryption-customer-algorithm: AES256`, `-key`, `-key-MD5`).
//!
//! The key is never stored. An encrypted object keeps, in its metadata:
//!
//! - a *key check*: a random 16-byte salt and HMAC-SHA256(key, "lattice-s3 sse-c v1 check" ‖
//!   salt). A request's key is accepted when it gives the same HMAC (compared in constant
//!   time). Without the key the check reveals nothing about it (HMAC is a PRF keyed by it).
//! - its *extents*: one per PUT, one per multipart part (a completed upload is its parts'
//!   ciphertexts back to back, so completion needs no key and decrypts nothing). Each extent has
//!   its own random salt and data key, HMAC-SHA256(key, "lattice-s3 sse-c v1 data" ‖ salt).
//!
//! An extent's plaintext is cut into segments of [`SEGMENT`] bytes, each sealed with AES-256-GCM
//! (the last one, possibly short or empty, marked final: there is always at least one). The
//! nonce is the segment's index (u64 big-endian), three zero bytes and the final flag: the
//! STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015), so segments cannot be
//! reordered, dropped, or the extent truncated or extended without the tag failing. Data keys
//! are per extent, so a nonce is never reused under one key.
//!
//! Why segments: a ranged GET decrypts only the segments that overlap the range (at most two
//! more than it returns), and neither a PUT nor a GET holds more than one segment in memory.
//! One AEAD over the whole object would need the whole object to check the tag before
//! returning the first byte. 64 KiB keeps the tag overhead at 16 B per 64 KiB (0.02 %) and
//! the extra work of a small range to at most 128 KiB of decryption.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use aes_gcm::aead::AeadInPlace as _;
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce, Tag};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use s3s::crypto::{Checksum as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

/// Plaintext bytes per segment.
pub const SEGMENT: usize = 64 * 1024;
/// AES-GCM tag bytes after each segment.
pub const TAG: usize = 16;
/// The one algorithm S3 defines for SSE-C.
pub const ALGORITHM: &str = "AES256";

const CHECK_LABEL: &[u8] = b"lattice-s3 sse-c v1 check";
const DATA_LABEL: &[u8] = b"lattice-s3 sse-c v1 data";

type HmacSha256 = Hmac<Sha256>;

/// What S3 answers for SSE-C problems (codes and texts as AWS gives them).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SseError {
    #[error("The encryption request you specified is not valid. Supported value: AES256.")]
    BadAlgorithm,
    #[error("Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.")]
    MissingAlgorithm,
    #[error("Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.")]
    MissingKey,
    #[error("Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.")]
    MissingKeyMd5,
    #[error("The secret key was invalid for the specified algorithm.")]
    BadKey,
    #[error("The calculated MD5 hash of the key did not match the hash that was provided.")]
    KeyMd5Mismatch,
    /// GET/HEAD/copy source of an encrypted object without the key (400 InvalidRequest).
    #[error("The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.")]
    KeyRequired,
    /// The key does not open the object (403 AccessDenied, as AWS).
    #[error("Access Denied")]
    WrongKey,
    /// SSE-C headers for an object stored without SSE-C (400 InvalidRequest).
    #[error("The encryption parameters are not applicable to this object.")]
    NotEncrypted,
    /// An UploadPart whose key is not the one CreateMultipartUpload was given.
    #[error("The provided encryption parameters did not match the ones used originally.")]
    UploadKeyMismatch,
    /// An UploadPart without the key of an upload created with SSE-C (400 InvalidRequest).
    #[error("The multipart upload initiate requested encryption. Subsequent part requests must include the appropriate encryption parameters.")]
    PartKeyRequired,
    /// SSE-C over plain HTTP (the gateway says `X-Forwarded-Proto: http`).
    #[error("Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.")]
    Insecure,
}

/// A customer key: 32 bytes, wiped on drop, never printed.
#[derive(Clone)]
pub struct CustomerKey {
    key: Zeroizing<[u8; 32]>,
    /// Base64 MD5 of the key as the client sent it (echoed in answers, never stored).
    md5: String,
}

impl fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

impl CustomerKey {
    /// The key from the three SSE-C headers (`None` when none of them is there).
    pub fn from_headers(
        algorithm: Option<&str>,
        key: Option<&str>,
        key_md5: Option<&str>,
    ) -> Result<Option<CustomerKey>, SseError> {
        if algorithm.is_none() && key.is_none() && key_md5.is_none() {
            return Ok(None);
        }
        match algorithm {
            None => return Err(SseError::MissingAlgorithm),
            Some(a) if a != ALGORITHM => return Err(SseError::BadAlgorithm),
            Some(_) => {}
        }
        let key = key.ok_or(SseError::MissingKey)?;
        let md5 = key_md5.ok_or(SseError::MissingKeyMd5)?;
        let raw = Zeroizing::new(B64.decode(key.trim()).map_err(|_| SseError::BadKey)?);
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| SseError::BadKey)?;
        let key = CustomerKey {
            key: Zeroizing::new(bytes),
            md5: md5.trim().to_owned(),
        };
        let sent = B64
            .decode(md5.trim())
            .map_err(|_| SseError::KeyMd5Mismatch)?;
        if sent.as_slice() != Md5::checksum(key.key.as_slice()).as_slice() {
            return Err(SseError::KeyMd5Mismatch);
        }
        Ok(Some(key))
    }

    /// A key from raw bytes (tests, benchmarks).
    pub fn from_bytes(bytes: [u8; 32]) -> CustomerKey {
        let md5 = B64.encode(Md5::checksum(&bytes));
        CustomerKey {
            key: Zeroizing::new(bytes),
            md5,
        }
    }

    pub fn md5_base64(&self) -> &str {
        &self.md5
    }

    fn mac(&self, label: &[u8], salt: &[u8]) -> HmacSha256 {
        let mut m = <HmacSha256 as hmac::Mac>::new_from_slice(self.key.as_slice())
            .expect("HMAC takes any key length");
        m.update(label);
        m.update(salt);
        m
    }

    /// A fresh key check for a new object or upload.
    pub fn new_check(&self) -> KeyCheck {
        let salt = random16();
        let mac = self.mac(CHECK_LABEL, &salt).finalize().into_bytes();
        KeyCheck {
            salt: hex::encode(salt),
            mac: hex::encode(mac),
        }
    }

    /// Whether this is the key the check was made with (constant time).
    pub fn matches(&self, check: &KeyCheck) -> bool {
        let (Ok(salt), Ok(mac)) = (hex::decode(&check.salt), hex::decode(&check.mac)) else {
            return false;
        };
        self.mac(CHECK_LABEL, &salt).verify_slice(&mac).is_ok()
    }

    fn cipher(&self, salt: &[u8]) -> Aes256Gcm {
        let k: Zeroizing<[u8; 32]> =
            Zeroizing::new(self.mac(DATA_LABEL, salt).finalize().into_bytes().into());
        Aes256Gcm::new_from_slice(k.as_slice()).expect("a 32-byte key")
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b
}

/// The stored verifier of a key: salt and HMAC, both hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCheck {
    pub salt: String,
    pub mac: String,
}

/// One independently encrypted run of the object's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extent {
    /// Hex salt of the extent's data key.
    pub salt: String,
    /// Plaintext bytes.
    pub size: u64,
}

impl Extent {
    pub fn stored_size(&self) -> u64 {
        stored_size(self.size)
    }
}

/// How an object is encrypted (in its metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseMeta {
    pub check: KeyCheck,
    pub extents: Vec<Extent>,
}

impl SseMeta {
    pub fn stored_size(&self) -> u64 {
        self.extents.iter().map(Extent::stored_size).sum()
    }
}

/// Segments of an extent of `size` plaintext bytes (at least one: the final marker).
pub fn segments(size: u64) -> u64 {
    size.div_ceil(SEGMENT as u64).max(1)
}

/// Bytes on disk for `size` plaintext bytes.
pub fn stored_size(size: u64) -> u64 {
    size + segments(size) * TAG as u64
}

/// Whether a request may read an object: its key must be there exactly when the object is
/// encrypted, and open it.
pub fn check_access(stored: Option<&SseMeta>, key: Option<&CustomerKey>) -> Result<(), SseError> {
    match (stored, key) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(SseError::NotEncrypted),
        (Some(_), None) => Err(SseError::KeyRequired),
        (Some(s), Some(k)) if k.matches(&s.check) => Ok(()),
        (Some(_), Some(_)) => Err(SseError::WrongKey),
    }
}

fn nonce(index: u64, last: bool) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n.into()
}

/// Encrypts one extent as it streams: plaintext in, sealed segments out.
pub struct Encryptor {
    cipher: Aes256Gcm,
    salt: String,
    buf: Vec<u8>,
    index: u64,
    size: u64,
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    pub fn new(key: &CustomerKey) -> Encryptor {
        let salt = random16();
        Encryptor {
            cipher: key.cipher(&salt),
            salt: hex::encode(salt),
            buf: Vec::with_capacity(SEGMENT + TAG),
            index: 0,
            size: 0,
        }
    }

    fn seal_segment(&mut self, out: &mut impl Write, len: usize, last: bool) -> io::Result<()> {
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(self.index, last), b"", &mut self.buf[..len])
            .map_err(|_| io::Error::other("AES-GCM refused a segment"))?;
        out.write_all(&self.buf[..len])?;
        out.write_all(&tag)?;
        self.buf.drain(..len);
        self.index += 1;
        Ok(())
    }

    /// Takes plaintext; writes every segment known not to be the last.
    pub fn write(&mut self, out: &mut impl Write, mut data: &[u8]) -> io::Result<()> {
        self.size += data.len() as u64;
        while !data.is_empty() {
            // A full segment is written only when more data follows it: the last is final.
            if self.buf.len() == SEGMENT {
                self.seal_segment(out, SEGMENT, false)?;
            }
            let take = (SEGMENT - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Writes the final segment; returns the extent.
    pub fn finish(mut self, out: &mut impl Write) -> io::Result<Extent> {
        let len = self.buf.len();
        self.seal_segment(out, len, true)?;
        Ok(Extent {
            salt: std::mem::take(&mut self.salt),
            size: self.size,
        })
    }
}

/// Plaintext of `[start, end)` of an encrypted object whose data begins at `base` in `file`,
/// decrypting only the segments the range touches. A segment that does not authenticate is an
/// `InvalidData` error (damaged or altered storage).
pub struct Decryptor<R = File> {
    file: R,
    base: u64,
    key: CustomerKey,
    extents: Vec<Extent>,
    pos: u64,
    end: u64,
    /// Decrypted segment and the plaintext offset of its first byte.
    seg: Vec<u8>,
    seg_start: u64,
    /// The data cipher of the extent last read.
    cipher: Option<(usize, Aes256Gcm)>,
}

impl<R> fmt::Debug for Decryptor<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl<R: Read + Seek> Decryptor<R> {
    pub fn new(
        file: R,
        base: u64,
        key: CustomerKey,
        sse: &SseMeta,
        start: u64,
        end: u64,
    ) -> Decryptor<R> {
        Decryptor {
            file,
            base,
            key,
            extents: sse.extents.clone(),
            pos: start,
            end,
            seg: Vec::new(),
            seg_start: 0,
            cipher: None,
        }
    }

    /// Loads the segment holding plaintext offset `pos`.
    fn load(&mut self) -> io::Result<()> {
        let (mut plain_at, mut stored_at) = (0u64, self.base);
        for (i, e) in self.extents.iter().enumerate() {
            if self.pos < plain_at + e.size {
                let index = (self.pos - plain_at) / SEGMENT as u64;
                let seg_plain = plain_at + index * SEGMENT as u64;
                let len = (plain_at + e.size - seg_plain).min(SEGMENT as u64) as usize;
                let last = index + 1 == segments(e.size);
                let offset = stored_at + index * (SEGMENT + TAG) as u64;
                let mut buf = vec![0u8; len + TAG];
                self.file.seek(SeekFrom::Start(offset))?;
                self.file.read_exact(&mut buf)?;
                let tag = Tag::clone_from_slice(&buf[len..]);
                buf.truncate(len);
                let cipher = match &self.cipher {
                    Some((at, c)) if *at == i => c,
                    _ => {
                        let salt = hex::decode(&e.salt).map_err(|_| {
                            io::Error::new(io::ErrorKind::InvalidData, "bad extent salt")
                        })?;
                        &self.cipher.insert((i, self.key.cipher(&salt))).1
                    }
                };
                cipher
                    .decrypt_in_place_detached(&nonce(index, last), b"", &mut buf, &tag)
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            "an encrypted segment does not authenticate (damaged or altered)",
                        )
                    })?;
                self.seg = buf;
                self.seg_start = seg_plain;
                return Ok(());
            }
            plain_at += e.size;
            stored_at += e.stored_size();
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "read past the object's extents",
        ))
    }
}

impl<R: Read + Seek> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || out.is_empty() {
            return Ok(0);
        }
        let in_seg =
            self.pos >= self.seg_start && self.pos < self.seg_start + self.seg.len() as u64;
        if !in_seg {
            self.load()?;
        }
        let from = (self.pos - self.seg_start) as usize;
        let n = (self.seg.len() - from)
            .min(out.len())
            .min((self.end - self.pos) as usize);
        out[..n].copy_from_slice(&self.seg[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> CustomerKey {
        CustomerKey::from_bytes([b; 32])
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Encrypts `parts` as consecutive extents into a temp file; returns it and the metadata.
    fn encrypt(
        k: &CustomerKey,
        parts: &[&[u8]],
        chunk: usize,
    ) -> (tempfile::NamedTempFile, SseMeta) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut extents = Vec::new();
        for p in parts {
            let mut e = Encryptor::new(k);
            for c in p.chunks(chunk.max(1)) {
                e.write(f.as_file_mut(), c).unwrap();
            }
            extents.push(e.finish(f.as_file_mut()).unwrap());
        }
        let meta = SseMeta {
            check: k.new_check(),
            extents,
        };
        assert_eq!(f.as_file().metadata().unwrap().len(), meta.stored_size());
        (f, meta)
    }

    fn decrypt(
        f: &tempfile::NamedTempFile,
        k: &CustomerKey,
        m: &SseMeta,
        start: u64,
        end: u64,
    ) -> io::Result<Vec<u8>> {
        let k = CustomerKey::from_bytes(*k.key);
        let mut d = Decryptor::new(f.reopen().unwrap(), 0, k, m, start, end);
        let mut out = Vec::new();
        d.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_size_around_segment_borders() {
        let k = key(1);
        for n in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            for chunk in [1000, SEGMENT, 7 * SEGMENT] {
                let plain = data(n);
                let (f, m) = encrypt(&k, &[&plain], chunk);
                assert_eq!(m.extents[0].size, n as u64);
                assert_eq!(decrypt(&f, &k, &m, 0, n as u64).unwrap(), plain, "size {n}");
                // nothing of the plaintext is on disk in clear
                if n >= 64 {
                    let disk = std::fs::read(f.path()).unwrap();
                    assert!(!disk.windows(64).any(|w| w == &plain[..64]));
                }
            }
        }
    }

    #[test]
    fn ranges_across_segment_and_extent_borders() {
        let k = key(2);
        let a = data(2 * SEGMENT + 10);
        let b: Vec<u8> = data(SEGMENT + 5).into_iter().rev().collect();
        let (f, m) = encrypt(&k, &[&a, &b], 4096);
        let all: Vec<u8> = a.iter().chain(&b).copied().collect();
        let n = all.len() as u64;
        let s = SEGMENT as u64;
        for (start, end) in [
            (0, n),
            (s - 3, s + 3),
            (s, 2 * s),
            (2 * s + 5, 2 * s + 15), // across the extents' border
            (2 * s + 10, n),
            (n - 1, n),
            (5, 6),
            (s - 1, 3 * s),
        ] {
            assert_eq!(
                decrypt(&f, &k, &m, start, end).unwrap(),
                &all[start as usize..end as usize],
                "{start}..{end}"
            );
        }
    }

    #[test]
    fn tampering_truncation_and_a_wrong_key_are_detected() {
        let k = key(3);
        let plain = data(2 * SEGMENT + 100);
        let (f, m) = encrypt(&k, &[&plain], SEGMENT);
        // a flipped bit in the second segment: that segment fails, the first still reads
        let mut bytes = std::fs::read(f.path()).unwrap();
        bytes[SEGMENT + TAG + 10] ^= 1;
        std::fs::write(f.path(), &bytes).unwrap();
        assert_eq!(
            decrypt(&f, &k, &m, 0, 100).unwrap(),
            &plain[..100],
            "untouched segment"
        );
        let e = decrypt(&f, &k, &m, 0, plain.len() as u64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        // swapped segments fail (the index is in the nonce)
        let (f, m) = encrypt(&k, &[&plain], SEGMENT);
        let mut bytes = std::fs::read(f.path()).unwrap();
        let seg = SEGMENT + TAG;
        let first: Vec<u8> = bytes[..seg].to_vec();
        bytes.copy_within(seg..2 * seg, 0);
        bytes[seg..2 * seg].copy_from_slice(&first);
        std::fs::write(f.path(), &bytes).unwrap();
        assert!(decrypt(&f, &k, &m, 0, 10).is_err());

        // metadata claiming fewer bytes: the segment read as final was not sealed as final
        let (f, mut m) = encrypt(&k, &[&plain], SEGMENT);
        m.extents[0].size = 2 * SEGMENT as u64;
        assert!(decrypt(&f, &k, &m, SEGMENT as u64, 2 * SEGMENT as u64).is_err());

        // another key decrypts nothing
        let (f, m) = encrypt(&k, &[&plain], SEGMENT);
        assert!(decrypt(&f, &key(4), &m, 0, 10).is_err());
    }

    #[test]
    fn key_check_accepts_only_the_key_and_does_not_contain_it() {
        let k = key(5);
        let c = k.new_check();
        assert!(k.matches(&c));
        assert!(!key(6).matches(&c));
        assert_ne!(k.new_check(), c, "fresh salt each time");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains(&hex::encode([5u8; 32])));
        assert!(!json.contains(&B64.encode([5u8; 32])));
        let m = SseMeta {
            check: c.clone(),
            extents: vec![],
        };
        assert_eq!(check_access(Some(&m), Some(&k)), Ok(()));
        assert_eq!(
            check_access(Some(&m), Some(&key(6))),
            Err(SseError::WrongKey)
        );
        assert_eq!(check_access(Some(&m), None), Err(SseError::KeyRequired));
        assert_eq!(check_access(None, Some(&k)), Err(SseError::NotEncrypted));
        assert_eq!(check_access(None, None), Ok(()));
    }

    #[test]
    fn headers_are_checked_as_s3_does() {
        let raw = [9u8; 32];
        let b64 = B64.encode(raw);
        let md5 = B64.encode(Md5::checksum(&raw));
        let parse = |a, k, m| CustomerKey::from_headers(a, k, m).map(|k| k.is_some());
        assert_eq!(parse(None, None, None), Ok(false));
        assert_eq!(parse(Some("AES256"), Some(&b64), Some(&md5)), Ok(true));
        assert_eq!(
            parse(Some("aws:kms"), Some(&b64), Some(&md5)),
            Err(SseError::BadAlgorithm)
        );
        assert_eq!(
            parse(None, Some(&b64), Some(&md5)),
            Err(SseError::MissingAlgorithm)
        );
        assert_eq!(
            parse(Some("AES256"), None, Some(&md5)),
            Err(SseError::MissingKey)
        );
        assert_eq!(
            parse(Some("AES256"), Some(&b64), None),
            Err(SseError::MissingKeyMd5)
        );
        let short = B64.encode([1u8; 16]);
        assert_eq!(
            parse(Some("AES256"), Some(&short), Some(&md5)),
            Err(SseError::BadKey)
        );
        let other = B64.encode(Md5::checksum(&[8u8; 32]));
        assert_eq!(
            parse(Some("AES256"), Some(&b64), Some(&other)),
            Err(SseError::KeyMd5Mismatch)
        );
        let k = CustomerKey::from_bytes(raw);
        assert!(!format!("{k:?}").contains(&b64));
        assert_eq!(k.md5_base64(), md5);
    }
}
