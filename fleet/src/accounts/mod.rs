//! Accounts: what a sign-up must contain, password hashing (argon2id), and the login rate
//! limits. The HTTP handlers are in `crate::api::accounts`; the rows in `crate::store`.

mod limits;
pub mod metrics;
mod password;

pub use limits::{LoginLimiter, Refused};
pub use password::{hash_password, verify_password, ARGON2_M_KIB, ARGON2_P, ARGON2_T};

/// Who may create accounts with `POST /api/v1/accounts` (`--signup`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupPolicy {
    /// Anyone who reaches the API may sign up as a consumer or provider.
    #[default]
    Open,
    /// Only operators create accounts.
    Operators,
}

/// Life of the token `POST /api/v1/login` returns: 30 days.
pub const LOGIN_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// Default life of a token made with `POST /api/v1/api-tokens`: 90 days (at most 1 year).
pub const API_TOKEN_TTL_SECS: u64 = 90 * 24 * 3600;
pub const API_TOKEN_MAX_TTL_SECS: u64 = 365 * 24 * 3600;
/// The name of the tokens `POST /api/v1/login` hands out (reserved for them).
pub const LOGIN_TOKEN_NAME: &str = "login";
/// Login tokens kept per account: a new login deletes the oldest beyond these.
pub const LOGIN_TOKENS_KEPT: u32 = 20;
/// Tokens an account may create with `POST /api/v1/api-tokens`.
pub const API_TOKENS_MAX: u64 = 100;
/// Passwords: at least this many characters...
pub const PASSWORD_MIN_CHARS: usize = 10;
/// ...and at most this many bytes (argon2 reads all of it; this bounds the work per request).
pub const PASSWORD_MAX_BYTES: usize = 1024;

/// Lower-cases and checks an email address: 3 to 254 characters, one `@` with something on
/// both sides, no spaces or control characters. Deliberately loose: the address is a login
/// name here, not a mailbox the fleet writes to.
pub fn normalize_email(email: &str) -> Result<String, String> {
    let e = email.trim().to_lowercase();
    let ok = (3..=254).contains(&e.chars().count())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(e)
    } else {
        Err("email must look like name@example.org (3 to 254 characters, no spaces)".into())
    }
}

/// A display name: 1 to 64 characters, no control characters.
pub fn check_name(field: &str, name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 64 || name.chars().any(char::is_control) || name.trim() != name {
        return Err(format!(
            "{field} must be 1 to 64 characters, without control characters or surrounding spaces"
        ));
    }
    Ok(())
}

/// A new password: [`PASSWORD_MIN_CHARS`] characters or more, [`PASSWORD_MAX_BYTES`] bytes
/// or fewer. (No composition rules: length is what counts, NIST SP 800-63B.)
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < PASSWORD_MIN_CHARS || password.len() > PASSWORD_MAX_BYTES {
        return Err(format!(
            "password must be {PASSWORD_MIN_CHARS} characters to {PASSWORD_MAX_BYTES} bytes long"
        ));
    }
    Ok(())
}

/// A new id with a readable prefix: `a-…` accounts, `k-…` API tokens.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// A new API token: `lat_` + 256 random bits (base64url). Only its SHA-256 is stored.
pub fn new_token() -> String {
    format!("lat_{}", crate::secrets::random_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            normalize_email(" Ann@Example.ORG ").unwrap(),
            "ann@example.org"
        );
        for bad in ["", "a", "@x", "x@", "a b@c", "a@b@c", "a@\u{7}b"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_need_length_not_rules() {
        assert!(check_password("short").is_err());
        assert!(check_password("tenletters").is_ok());
        assert!(check_password(&"x".repeat(PASSWORD_MAX_BYTES + 1)).is_err());
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("name", "Ann").is_ok());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", " Ann").is_err());
        assert!(check_name("name", &"x".repeat(65)).is_err());
    }
}
