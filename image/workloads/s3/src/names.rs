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

/// Checks a bucket name against S3's rules for general purpose buckets: 3–63 characters of
/// `a-z 0-9 . -`, starting and ending with a letter or digit, no `..`, not an IPv4 address, and
/// none of the reserved prefixes and suffixes.
pub fn check_bucket_name(name: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError::InvalidBucketName {
            name: name.to_owned(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return bad("it must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("it must start and end with a letter or a digit");
    }
    if name.contains("..") {
        return bad("it must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("it must not be formatted as an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return bad("it starts with a prefix S3 reserves");
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return bad("it ends with a suffix S3 reserves");
        }
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
