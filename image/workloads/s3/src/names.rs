//! Bucket names and object keys: what S3 allows.
//!
//! s3s already refuses bad names while it parses a request path (`InvalidBucketName`,
//! `KeyTooLongError`); the store checks again so that it is safe on its own (and testable
//! without HTTP), and because names become directory names on disk.

use thiserror::Error;

/// S3's limit on an object key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("bucket name {name:?} breaks S3's naming rules: {reason}")]
    InvalidBucketName { name: String, reason: &'static str },
    #[error("object key is {len} bytes long; S3 allows at most {MAX_KEY_BYTES}")]
    KeyTooLong { len: usize },
    #[error("object key is empty")]
    EmptyKey,
}

/// Checks a bucket name against S3's rules for general purpose buckets
/// ([`crate::bucket_rules::bucket_name_problem`]: 3–63 characters of `a-z 0-9 . -`, starting
/// and ending with a letter or digit, no `..`, not an IPv4 address, and none of the reserved
/// prefixes and suffixes).
pub fn check_bucket_name(name: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError::InvalidBucketName {
            name: name.to_owned(),
            reason,
        })
    };
    if let Some(reason) = crate::bucket_rules::bucket_name_problem(name) {
        return bad(reason);
    }
    // s3s parses paths with its own check; a name it refuses could never be reached.
    if !s3s::path::check_bucket_name(name) {
        return bad("it breaks the S3 naming rules");
    }
    Ok(())
}

/// Checks an object key: 1 to 1024 bytes.
pub fn check_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() {
        return Err(NameError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(NameError::KeyTooLong { len: key.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_bucket_names_pass() {
        for name in ["abc", "my-bucket", "logs.2024", "a1b2c3", &"a".repeat(63)] {
            assert_eq!(check_bucket_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_s3_forbids_are_refused() {
        for name in [
            "ab",
            &"a".repeat(64),
            "My-Bucket",
            "under_score",
            "-leading",
            "trailing-",
            "two..dots",
            "192.168.1.1",
            "xn--punycode",
            "sthree-x",
            "name-s3alias",
            "name--ol-s3",
            "spa ce",
        ] {
            assert!(
                matches!(
                    check_bucket_name(name),
                    Err(NameError::InvalidBucketName { .. })
                ),
                "{name} was accepted"
            );
        }
    }

    #[test]
    fn keys_up_to_1024_bytes_pass_and_longer_ones_fail() {
        assert_eq!(check_key(&"k".repeat(1024)), Ok(()));
        assert_eq!(
            check_key(&"k".repeat(1025)),
            Err(NameError::KeyTooLong { len: 1025 })
        );
        // bytes, not characters: 342 three-byte characters are 1026 bytes
        assert_eq!(
            check_key(&"€".repeat(342)),
            Err(NameError::KeyTooLong { len: 1026 })
        );
        assert_eq!(check_key(""), Err(NameError::EmptyKey));
    }
}
