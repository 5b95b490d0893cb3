//! Password hashing: argon2id (RFC 9106) through the RustCrypto `argon2` crate, stored as a
//! PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so the parameters travel with
//! each hash and can be raised later without invalidating old ones.
//!
//! Parameters: 19 MiB of memory, 2 passes, 1 lane: OWASP's recommended minimum for argon2id
//! (Password Storage Cheat Sheet), about 20-40 ms per hash on one core of a small server.
//! Hashing runs on tokio's blocking pool, never on the async workers.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::LazyLock;

/// Memory cost in KiB (19 MiB).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// Passes over memory.
pub const ARGON2_T: u32 = 2;
/// Lanes.
pub const ARGON2_P: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .expect("argon2 parameters are valid constants");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a password nobody has, verified against when the account does not exist, so a
/// login for an unknown email costs the same time as one for a known email.
static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash_blocking(&crate::secrets::random_secret()).unwrap_or_default());

fn hash_blocking(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // The crate compares the computed and stored outputs in constant time.
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Hashes `password` with a fresh 128-bit salt; returns the PHC string.
pub async fn hash_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| e.to_string())?
}

/// True when `password` matches `phc`. With `phc = None` (no such account) a dummy hash is
/// verified instead and the answer is false.
pub async fn verify_password(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match phc {
        Some(p) => verify_blocking(&password, &p),
        None => {
            verify_blocking(&password, &DUMMY);
            false
        }
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_carry_their_parameters() {
        let h = hash_password("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify_password("correct horse battery!".into(), Some(h.clone())).await);
        assert!(!verify_password("correct horse battery".into(), None).await);
        assert!(!verify_password("x".into(), Some("not a phc string".into())).await);
        // Same password, new salt.
        assert_ne!(
            h,
            hash_password("correct horse battery".into()).await.unwrap()
        );
    }
}
