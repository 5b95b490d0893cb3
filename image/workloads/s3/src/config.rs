//! Configuration: flags (each with an environment variable) and the credentials, taken from a
//! TOML file (`--credentials-file`) or from `LATTICE_S3_ACCESS_KEY` / `LATTICE_S3_SECRET_KEY`.
//! The secret never appears in `Debug` output or logs.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::quota::Quota;

pub const ACCESS_KEY_ENV: &str = "LATTICE_S3_ACCESS_KEY";
pub const SECRET_KEY_ENV: &str = "LATTICE_S3_SECRET_KEY";

/// The S3 server of a Lattice `s3` workload.
#[derive(Debug, clap::Parser)]
#[command(name = "lattice-s3", version)]
pub struct Args {
    /// Address to serve plain HTTP on (the gateway terminates TLS).
    #[arg(long, env = "LATTICE_S3_LISTEN", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,
    /// Data directory (the workload's volume).
    #[arg(long, env = "LATTICE_S3_DATA", default_value = "/data")]
    pub data: PathBuf,
    /// Size quota in bytes over all buckets (objects plus parts of uploads in progress).
    #[arg(long, env = "LATTICE_S3_QUOTA_BYTES")]
    pub quota_bytes: Option<u64>,
    /// TOML file with `access_key` and `secret_key`; otherwise the environment variables
    /// LATTICE_S3_ACCESS_KEY and LATTICE_S3_SECRET_KEY.
    #[arg(long, env = "LATTICE_S3_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
}

/// The access key and its secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub access_key: String,
    secret_key: String,
}

impl Credentials {
    pub fn new(access_key: String, secret_key: String) -> Self {
        Credentials {
            access_key,
            secret_key,
        }
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub quota: Quota,
    pub credentials: Credentials,
}

impl Config {
    /// Builds the configuration; every problem is reported at once, one per line.
    pub fn from_args(args: Args, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut problems = Vec::new();
        let credentials = match (
            &args.credentials_file,
            env(ACCESS_KEY_ENV),
            env(SECRET_KEY_ENV),
        ) {
            (Some(path), None, None) => read_credentials(path).map_err(|e| problems.push(e)).ok(),
            (Some(_), _, _) => {
                problems.push(format!(
                    "credentials: give either --credentials-file or {ACCESS_KEY_ENV}/{SECRET_KEY_ENV}, not both"
                ));
                None
            }
            (None, Some(access_key), Some(secret_key)) => Some(Credentials {
                access_key,
                secret_key,
            }),
            (None, _, _) => {
                problems.push(format!(
                    "credentials: set --credentials-file, or both {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}"
                ));
                None
            }
        };
        if let Some(c) = &credentials {
            if !(3..=128).contains(&c.access_key.len())
                || !c.access_key.bytes().all(|b| b.is_ascii_graphic())
            {
                problems.push(
                    "credentials.access_key: 3 to 128 printable ASCII characters without spaces"
                        .into(),
                );
            }
            if c.secret_key.len() < 8 || !c.secret_key.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push(
                    "credentials.secret_key: at least 8 printable ASCII characters without spaces"
                        .into(),
                );
            }
        }
        if args.quota_bytes == Some(0) {
            problems.push(
                "quota_bytes: 0 would refuse every write; leave it unset for no quota".into(),
            );
        }
        match (problems.is_empty(), credentials) {
            (true, Some(credentials)) => Ok(Config {
                listen: args.listen,
                data: args.data,
                quota: args.quota_bytes.map_or(Quota::unlimited(), Quota::bytes),
                credentials,
            }),
            _ => Err(problems.join("\n")),
        }
    }
}

fn read_credentials(path: &Path) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("credentials file {}: {e}", path.display()))?;
    // toml's error would quote the offending line, which may hold the secret: say only where.
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(" at byte {}", s.start))
            .unwrap_or_default();
        format!(
            "credentials file {}: not TOML with exactly access_key and secret_key{at}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(["lattice-s3"].iter().chain(extra)).unwrap()
    }

    #[test]
    fn credentials_from_the_environment_and_the_secret_is_not_printed() {
        let env = |k: &str| match k {
            ACCESS_KEY_ENV => Some("AKIDEXAMPLE".to_owned()),
            SECRET_KEY_ENV => Some("very-secret-value".to_owned()),
            _ => None,
        };
        let c = Config::from_args(args(&["--quota-bytes", "100"]), env).unwrap();
        assert_eq!(c.credentials.access_key, "AKIDEXAMPLE");
        assert_eq!(c.quota, Quota::bytes(100));
        assert!(!format!("{c:?}").contains("very-secret-value"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_args(args(&["--quota-bytes", "0"]), |_| None).unwrap_err();
        assert!(
            err.contains("credentials:") && err.contains("quota_bytes"),
            "{err}"
        );
    }

    #[test]
    fn credentials_file_errors_do_not_quote_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        std::fs::write(
            &path,
            "access_key = \"AKID\"\nsecret_key = \"hunter2hunter2\"\nextra = \"hunter2hunter2\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let err = Config::from_args(args(&["--credentials-file", p]), |_| None).unwrap_err();
        assert!(
            err.contains("creds.toml") && !err.contains("hunter2"),
            "{err}"
        );
        std::fs::write(
            &path,
            "access_key = \"AKID\"\nsecret_key = \"hunter2hunter2\"\n",
        )
        .unwrap();
        let c = Config::from_args(args(&["--credentials-file", p]), |_| None).unwrap();
        assert_eq!(c.credentials.secret_key(), "hunter2hunter2");
    }
}
