//! Content checksums: the ETag's MD5 and the `x-amz-checksum-*` values clients send, either as
//! headers or as aws-chunked trailers. Every value a client declares is verified against the
//! bytes received before the object is committed; a mismatch is `BadDigest` and nothing is
//! stored.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Md5, Sha1, Sha256};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The checksum algorithms of S3's flexible checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// The name S3 uses (`CRC32`, `SHA256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The header (and trailer) that carries it: `x-amz-checksum-crc32`, ...
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub fn from_header(header: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(header.trim()))
    }

    fn digest_len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }
}

/// Base64 checksum values by algorithm, as stored with an object or a part and as answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<(Algorithm, String)>,
    /// For a multipart object: the values are checksums of the parts' checksums (`…-N`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub composite: bool,
}

impl Checksums {
    pub fn get(&self, algorithm: Algorithm) -> Option<&str> {
        self.values
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, algorithm: Algorithm, value: String) {
        self.values.retain(|(a, _)| *a != algorithm);
        self.values.push((algorithm, value));
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChecksumError {
    #[error("the {} checksum the client sent does not match the data received", .0.name())]
    Mismatch(Algorithm),
    #[error("the Content-MD5 the client sent does not match the data received")]
    Md5Mismatch,
    #[error("the {} checksum value {value:?} is not base64 of the right length", algorithm.name())]
    Malformed { algorithm: Algorithm, value: String },
    #[error("Content-MD5 {0:?} is not base64 of 16 bytes")]
    MalformedMd5(String),
    #[error("unknown checksum algorithm {0:?}")]
    UnknownAlgorithm(String),
    #[error("x-amz-trailer announced {} but the body ended without that trailer", .0.header())]
    MissingTrailer(Algorithm),
}

/// What the client declared before the body: values sent as headers, algorithms whose values
/// come as trailers, an optional Content-MD5.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub values: Vec<(Algorithm, String)>,
    pub trailing: Vec<Algorithm>,
    pub content_md5: Option<String>,
    /// `x-amz-sdk-checksum-algorithm` / `ChecksumAlgorithm` with no value (yet): computed and
    /// stored, nothing to compare.
    pub requested: Vec<Algorithm>,
}

impl Expected {
    /// Adds a declared value (header form); checks it is well-formed base64.
    pub fn add_value(&mut self, algorithm: Algorithm, value: &str) -> Result<(), ChecksumError> {
        let malformed = || ChecksumError::Malformed {
            algorithm,
            value: value.to_owned(),
        };
        let raw = B64.decode(value.trim()).map_err(|_| malformed())?;
        if raw.len() != algorithm.digest_len() {
            return Err(malformed());
        }
        self.values.retain(|(a, _)| *a != algorithm);
        self.values.push((algorithm, value.trim().to_owned()));
        Ok(())
    }

    pub fn set_content_md5(&mut self, value: &str) -> Result<(), ChecksumError> {
        let raw = B64
            .decode(value.trim())
            .map_err(|_| ChecksumError::MalformedMd5(value.to_owned()))?;
        if raw.len() != 16 {
            return Err(ChecksumError::MalformedMd5(value.to_owned()));
        }
        self.content_md5 = Some(value.trim().to_owned());
        Ok(())
    }

    /// Parses `x-amz-trailer` (comma-separated header names).
    pub fn add_trailer_names(&mut self, names: &str) -> Result<(), ChecksumError> {
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let algorithm = Algorithm::from_header(name)
                .ok_or_else(|| ChecksumError::UnknownAlgorithm(name.to_owned()))?;
            if !self.trailing.contains(&algorithm) {
                self.trailing.push(algorithm);
            }
        }
        Ok(())
    }

    pub fn request(&mut self, algorithm_name: &str) -> Result<(), ChecksumError> {
        let algorithm = Algorithm::from_name(algorithm_name)
            .ok_or_else(|| ChecksumError::UnknownAlgorithm(algorithm_name.to_owned()))?;
        if !self.requested.contains(&algorithm) {
            self.requested.push(algorithm);
        }
        Ok(())
    }

    /// The algorithms to compute while the body streams.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut all: Vec<Algorithm> = self.values.iter().map(|(a, _)| *a).collect();
        all.extend(self.trailing.iter().copied());
        all.extend(self.requested.iter().copied());
        Algorithm::ALL
            .into_iter()
            .filter(|a| all.contains(a))
            .collect()
    }
}

enum AnyHasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64Nvme(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl AnyHasher {
    fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Crc32 => AnyHasher::Crc32(Crc32::new()),
            Algorithm::Crc32c => AnyHasher::Crc32c(Crc32c::new()),
            Algorithm::Crc64Nvme => AnyHasher::Crc64Nvme(Crc64Nvme::new()),
            Algorithm::Sha1 => AnyHasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => AnyHasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            AnyHasher::Crc32(h) => h.update(data),
            AnyHasher::Crc32c(h) => h.update(data),
            AnyHasher::Crc64Nvme(h) => h.update(data),
            AnyHasher::Sha1(h) => h.update(data),
            AnyHasher::Sha256(h) => h.update(data),
        }
    }

    fn finalize(self) -> String {
        match self {
            AnyHasher::Crc32(h) => B64.encode(h.finalize()),
            AnyHasher::Crc32c(h) => B64.encode(h.finalize()),
            AnyHasher::Crc64Nvme(h) => B64.encode(h.finalize()),
            AnyHasher::Sha1(h) => B64.encode(h.finalize()),
            AnyHasher::Sha256(h) => B64.encode(h.finalize()),
        }
    }
}

/// MD5 (for the ETag) plus every requested algorithm, in one pass over the data.
pub struct Hasher {
    md5: Md5,
    others: Vec<(Algorithm, AnyHasher)>,
}

/// What a pass over the data gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub md5: [u8; 16],
    pub checksums: Checksums,
}

impl Hasher {
    pub fn new(algorithms: &[Algorithm]) -> Self {
        Hasher {
            md5: Md5::new(),
            others: algorithms
                .iter()
                .map(|a| (*a, AnyHasher::new(*a)))
                .collect(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        for (_, h) in &mut self.others {
            h.update(data);
        }
    }

    pub fn finalize(self) -> Digests {
        let md5 = self.md5.finalize();
        let mut checksums = Checksums::default();
        for (a, h) in self.others {
            checksums.set(a, h.finalize());
        }
        Digests { md5, checksums }
    }
}

/// Compares what was declared with what was computed. `trailers` are the values that arrived
/// after the body (header name, value); every trailer `x-amz-trailer` announced must have come
/// and match.
pub fn verify(
    expected: &Expected,
    trailers: &[(String, String)],
    got: &Digests,
) -> Result<(), ChecksumError> {
    if let Some(md5) = &expected.content_md5 {
        if B64.encode(got.md5) != *md5 {
            return Err(ChecksumError::Md5Mismatch);
        }
    }
    for algorithm in &expected.trailing {
        if !trailers
            .iter()
            .any(|(name, _)| Algorithm::from_header(name) == Some(*algorithm))
        {
            return Err(ChecksumError::MissingTrailer(*algorithm));
        }
    }
    let mut declared = expected.values.clone();
    for (name, value) in trailers {
        if let Some(algorithm) = Algorithm::from_header(name) {
            let mut e = Expected::default();
            e.add_value(algorithm, value)?;
            declared.extend(e.values);
        }
    }
    for (algorithm, value) in &declared {
        match got.checksums.get(*algorithm) {
            Some(computed) if computed == value => {}
            _ => return Err(ChecksumError::Mismatch(*algorithm)),
        }
    }
    Ok(())
}

/// The checksum of a multipart object from its parts' checksums (S3's COMPOSITE type):
/// the algorithm over the concatenated raw part checksums, then `-N`.
pub fn composite(algorithm: Algorithm, part_values: &[&str]) -> Option<String> {
    let mut h = AnyHasher::new(algorithm);
    for v in part_values {
        h.update(&B64.decode(v).ok()?);
    }
    Some(format!("{}-{}", h.finalize(), part_values.len()))
}

/// A multipart ETag: MD5 over the concatenated binary MD5s of the parts, then `-N`.
pub fn multipart_etag(part_etags_hex: &[&str]) -> Option<String> {
    let mut md5 = Md5::new();
    for e in part_etags_hex {
        md5.update(&hex::decode(e).ok()?);
    }
    Some(format!(
        "{}-{}",
        hex::encode(md5.finalize()),
        part_etags_hex.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(data: &[u8], algorithms: &[Algorithm]) -> Digests {
        let mut h = Hasher::new(algorithms);
        h.update(&data[..3]);
        h.update(&data[3..]);
        h.finalize()
    }

    #[test]
    fn known_values() {
        let d = digest(b"hello world", &Algorithm::ALL);
        assert_eq!(hex::encode(d.md5), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(d.checksums.get(Algorithm::Crc32), Some("DUoRhQ=="));
        assert_eq!(d.checksums.get(Algorithm::Crc32c), Some("yZRlqg=="));
        assert_eq!(
            d.checksums.get(Algorithm::Sha1),
            Some("Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
        );
        assert_eq!(
            d.checksums.get(Algorithm::Sha256),
            Some("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=")
        );
    }

    #[test]
    fn a_matching_header_value_passes_and_a_forged_one_is_refused() {
        let d = digest(b"hello world", &[Algorithm::Crc32]);
        let mut e = Expected::default();
        e.add_value(Algorithm::Crc32, "DUoRhQ==").unwrap();
        assert_eq!(verify(&e, &[], &d), Ok(()));
        let mut forged = Expected::default();
        forged.add_value(Algorithm::Crc32, "AAAAAA==").unwrap();
        assert_eq!(
            verify(&forged, &[], &d),
            Err(ChecksumError::Mismatch(Algorithm::Crc32))
        );
    }

    #[test]
    fn trailing_values_are_verified() {
        let mut e = Expected::default();
        e.add_trailer_names("x-amz-checksum-crc32c").unwrap();
        assert_eq!(e.algorithms(), vec![Algorithm::Crc32c]);
        let d = digest(b"hello world", &e.algorithms());
        let good = [("x-amz-checksum-crc32c".to_owned(), "yZRlqg==".to_owned())];
        assert_eq!(verify(&e, &good, &d), Ok(()));
        let bad = [("x-amz-checksum-crc32c".to_owned(), "yZRlqQ==".to_owned())];
        assert_eq!(
            verify(&e, &bad, &d),
            Err(ChecksumError::Mismatch(Algorithm::Crc32c))
        );
    }

    #[test]
    fn content_md5_is_verified_and_must_be_well_formed() {
        let d = digest(b"hello world", &[]);
        let mut e = Expected::default();
        e.set_content_md5("XrY7u+Ae7tCTyyK7j1rNww==").unwrap();
        assert_eq!(verify(&e, &[], &d), Ok(()));
        e.set_content_md5("XrY7u+Ae7tCTyyK7j1rNwA==").unwrap();
        assert_eq!(verify(&e, &[], &d), Err(ChecksumError::Md5Mismatch));
        assert!(e.set_content_md5("nope").is_err());
        assert!(Expected::default()
            .add_value(Algorithm::Sha256, "DUoRhQ==")
            .is_err());
    }

    #[test]
    fn multipart_etag_is_md5_of_md5s() {
        // two parts "a" and "b"
        let a = hex::encode(digest(b"aaaa", &[]).md5);
        let b = hex::encode(digest(b"bbbb", &[]).md5);
        let etag = multipart_etag(&[&a, &b]).unwrap();
        assert!(etag.ends_with("-2"), "{etag}");
        assert_ne!(etag, multipart_etag(&[&b, &a]).unwrap());
    }
}
