//! The size quota of a plan: the bytes of all objects plus the parts of multipart uploads in
//! progress. A write that would pass it is refused before anything is stored.
//!
//! S3 itself has no per-bucket quota error; S3-compatible stores answer `QuotaExceeded` with
//! HTTP 403 (Ceph RGW does; the aws CLI prints "An error occurred (QuotaExceeded) when calling
//! the PutObject operation: ..." and boto3 raises `ClientError` with that code, and neither
//! retries a 403). This server does the same.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// `None`: no limit.
    pub limit: Option<u64>,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("the {limit}-byte quota is used up: {used} bytes stored, this write needs {needed} more")]
pub struct QuotaExceeded {
    pub limit: u64,
    pub used: u64,
    pub needed: u64,
}

impl Quota {
    pub fn unlimited() -> Self {
        Quota { limit: None }
    }

    pub fn bytes(limit: u64) -> Self {
        Quota { limit: Some(limit) }
    }

    /// How many bytes a write may add when `used` bytes are stored and the write replaces
    /// `freed` bytes (the old object under the same key, the old part of the same number).
    pub fn room(&self, used: u64, freed: u64) -> u64 {
        match self.limit {
            None => u64::MAX,
            Some(limit) => limit.saturating_sub(used.saturating_sub(freed)),
        }
    }

    /// Checks a write of `size` bytes replacing `freed` bytes.
    pub fn check(&self, used: u64, freed: u64, size: u64) -> Result<(), QuotaExceeded> {
        match self.limit {
            Some(limit) if size > self.room(used, freed) => Err(QuotaExceeded {
                limit,
                used,
                needed: size.saturating_sub(freed),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_fits_up_to_the_limit_exactly() {
        let q = Quota::bytes(100);
        assert_eq!(q.check(60, 0, 40), Ok(()));
        assert_eq!(
            q.check(60, 0, 41),
            Err(QuotaExceeded {
                limit: 100,
                used: 60,
                needed: 41
            })
        );
    }

    #[test]
    fn replacing_an_object_counts_only_the_difference() {
        let q = Quota::bytes(100);
        // 90 used, 50 of them the old version of this key: a 60-byte replacement fits
        assert_eq!(q.check(90, 50, 60), Ok(()));
        assert!(q.check(90, 50, 61).is_err());
        assert_eq!(q.room(90, 50), 60);
    }

    #[test]
    fn unlimited_takes_anything() {
        assert_eq!(Quota::unlimited().check(u64::MAX, 0, u64::MAX), Ok(()));
    }
}
