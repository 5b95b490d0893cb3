//! Configuration: flags (each with an environment variable) and the credentials, taken from a
//! TOML file (`--credentials-file`) or from `LATTICE_S3_ACCESS_KEY` / `LATTICE_S3_SECRET_KEY`.
//! The secret never appears in `Debug` output or logs.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::quota::Quota;
use crate::replication::Target;

pub const ACCESS_KEY_ENV: &str = "LATTICE_S3_ACCESS_KEY";
pub const SECRET_KEY_ENV: &str = "LATTICE_S3_SECRET_KEY";
pub const REPLICA_URL_ENV: &str = "LATTICE_S3_REPLICA_URL";
/// `IP:PORT` of the replica, as a workload upstream hands it (the fleet declares the replica as
/// an upstream of the primary in this variable); the same as `--replica-url http://IP:PORT`.
pub const REPLICA_ADDR_ENV: &str = "LATTICE_S3_REPLICA_ADDR";
/// Which replica is at the replica address (the fleet sets its workload id): a new id means a
/// new, empty replica, so the primary starts a full copy, even at the same address.
pub const REPLICA_ID_ENV: &str = "LATTICE_S3_REPLICA_ID";
pub const REPLICA_ACCESS_KEY_ENV: &str = "LATTICE_S3_REPLICA_ACCESS_KEY";
/// The bearer token `GET /_lattice/replication` requires (the fleet generates one per workload).
pub const STATUS_TOKEN_ENV: &str = "LATTICE_S3_STATUS_TOKEN";
pub const REPLICA_SECRET_KEY_ENV: &str = "LATTICE_S3_REPLICA_SECRET_KEY";

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
    /// Buckets to create at start when missing (repeatable; the variable takes a
    /// comma-separated list). An existing bucket is kept with its objects.
    #[arg(
        long = "bucket",
        value_name = "NAME",
        env = "LATTICE_S3_BUCKETS",
        value_delimiter = ','
    )]
    pub buckets: Vec<String>,
    /// Replicate every change to this `lattice-s3` (`http://HOST:PORT`), signing with
    /// LATTICE_S3_REPLICA_ACCESS_KEY / LATTICE_S3_REPLICA_SECRET_KEY, or this server's own key
    /// when they are not set.
    #[arg(long, env = REPLICA_URL_ENV, value_name = "URL")]
    pub replica_url: Option<String>,
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
    /// Buckets that must exist once the server listens (`--bucket`, `LATTICE_S3_BUCKETS`),
    /// each once, in the order given.
    pub buckets: Vec<String>,
    /// The replica this server ships its changes to, when it is a primary.
    pub replica: Option<Target>,
    /// What `GET /_lattice/replication` must carry as `Authorization: Bearer …`
    /// (`LATTICE_S3_STATUS_TOKEN`); without it the report is open to anyone who reaches the
    /// port. Never printed.
    pub status_token: Option<StatusToken>,
}

/// The bearer token of `GET /_lattice/replication`. `Debug` does not show it.
#[derive(Clone)]
pub struct StatusToken(String);

impl StatusToken {
    /// Whether `Authorization` header value `given` carries this token. Compared as SHA-256
    /// digests, so the time taken says nothing about how much of the token matched.
    pub fn allows(&self, given: Option<&str>) -> bool {
        use sha2::{Digest, Sha256};
        let Some(token) = given.and_then(|g| g.strip_prefix("Bearer ")) else {
            return false;
        };
        Sha256::digest(token.as_bytes()) == Sha256::digest(self.0.as_bytes())
    }
}

impl std::fmt::Debug for StatusToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusToken(<redacted>)")
    }
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
        let mut buckets: Vec<String> = Vec::new();
        for b in args.buckets.iter().map(|b| b.trim()) {
            if let Err(e) = crate::names::check_bucket_name(b) {
                problems.push(format!("buckets: {e}"));
            } else if !buckets.iter().any(|known| known == b) {
                buckets.push(b.to_owned());
            }
        }
        let from_addr = match env(REPLICA_ADDR_ENV).filter(|a| !a.trim().is_empty()) {
            None => None,
            Some(_) if args.replica_url.is_some() => {
                problems.push(format!(
                    "replica: give {REPLICA_URL_ENV} (--replica-url) or {REPLICA_ADDR_ENV}, not both"
                ));
                None
            }
            Some(addr) => match addr.trim().parse::<std::net::SocketAddr>() {
                Ok(a) => Some(format!("http://{a}")),
                Err(_) => {
                    problems.push(format!(
                        "replica: {REPLICA_ADDR_ENV} {addr:?} is not IP:PORT"
                    ));
                    None
                }
            },
        };
        let replica = match (
            args.replica_url
                .as_deref()
                .filter(|u| !u.trim().is_empty())
                .or(from_addr.as_deref()),
            env(REPLICA_ACCESS_KEY_ENV),
            env(REPLICA_SECRET_KEY_ENV),
        ) {
            (None, None, None) => None,
            (None, _, _) => {
                problems.push(format!(
                    "replica: {REPLICA_ACCESS_KEY_ENV}/{REPLICA_SECRET_KEY_ENV} given without --replica-url ({REPLICA_URL_ENV})"
                ));
                None
            }
            (Some(url), ak, sk) => {
                let keys = match (ak, sk, &credentials) {
                    (Some(ak), Some(sk), _) => Some((ak, sk)),
                    (None, None, Some(c)) => Some((c.access_key.clone(), c.secret_key.clone())),
                    (None, None, None) => None,
                    _ => {
                        problems.push(format!(
                            "replica: set both {REPLICA_ACCESS_KEY_ENV} and {REPLICA_SECRET_KEY_ENV}, or neither (then this server's key is used)"
                        ));
                        None
                    }
                };
                keys.and_then(|(ak, sk)| {
                    let target = Target::parse(url.trim(), ak, sk)
                        .map_err(|e| problems.push(format!("replica_url: {e}")))
                        .ok()?;
                    match env(REPLICA_ID_ENV).filter(|i| !i.trim().is_empty()) {
                        None => Some(target),
                        Some(id) => target
                            .with_replica_id(id.trim())
                            .map_err(|e| problems.push(format!("replica: {REPLICA_ID_ENV} {e}")))
                            .ok(),
                    }
                })
            }
        };
        let status_token = match env(STATUS_TOKEN_ENV) {
            None => None,
            Some(t) if t.len() >= 16 && t.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(StatusToken(t))
            }
            Some(_) => {
                problems.push(format!(
                    "status token: {STATUS_TOKEN_ENV} must be at least 16 printable characters without spaces"
                ));
                None
            }
        };
        match (problems.is_empty(), credentials) {
            (true, Some(credentials)) => Ok(Config {
                status_token,
                listen: args.listen,
                data: args.data,
                quota: args.quota_bytes.map_or(Quota::unlimited(), Quota::bytes),
                credentials,
                buckets,
                replica,
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

/// The log filter when `RUST_LOG` is not set: s3s logs every client error at ERROR level.
pub const DEFAULT_LOG: &str = "info,s3s=warn,s3s::ops=off";

/// The log filter from `RUST_LOG` (or [`DEFAULT_LOG`]), with every s3s directive capped at
/// `info`: at `debug` s3s prints whole requests (`?req`, SigV2 strings to sign, POST forms),
/// headers included, and SSE-C keys travel in headers
/// (`x-amz-server-side-encryption-customer-key`). A global `debug`/`trace` gets `s3s=info`
/// added. Our own log lines never carry a header.
pub fn log_filter(env: Option<&str>) -> String {
    let spec = env.filter(|s| !s.trim().is_empty()).unwrap_or(DEFAULT_LOG);
    let verbose = |level: &str| {
        matches!(
            level.trim().to_ascii_lowercase().as_str(),
            "debug" | "trace" | "4" | "5"
        )
    };
    let mut out = Vec::new();
    let mut names_s3s = false;
    let mut global_verbose = false;
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.rsplit_once('=') {
            Some((target, level)) if target.trim_start().starts_with("s3s") => {
                names_s3s |= target.trim() == "s3s";
                if verbose(level) {
                    out.push(format!("{target}=info"));
                    continue;
                }
            }
            Some(_) => {}
            None if verbose(d) => global_verbose = true,
            // a target alone means all its levels
            None if d.starts_with("s3s") => {
                names_s3s |= d == "s3s";
                out.push(format!("{d}=info"));
                continue;
            }
            None => {}
        }
        out.push(d.to_owned());
    }
    if global_verbose && !names_s3s {
        out.push("s3s=info".to_owned());
    }
    out.join(",")
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
    fn buckets_from_flags_or_the_environment_are_checked_and_deduplicated() {
        let env = |k: &str| match k {
            ACCESS_KEY_ENV => Some("AKIDEXAMPLE".to_owned()),
            SECRET_KEY_ENV => Some("very-secret-value".to_owned()),
            _ => None,
        };
        let c = Config::from_args(
            args(&["--bucket", "photos", "--bucket", "logs.2026,photos"]),
            env,
        )
        .unwrap();
        assert_eq!(c.buckets, ["photos", "logs.2026"]);
        let c = Config::from_args(args(&[]), env).unwrap();
        assert!(c.buckets.is_empty());
        let err = Config::from_args(args(&["--bucket", "ok-one,Bad_Name"]), env).unwrap_err();
        assert!(
            err.contains("buckets:") && err.contains("Bad_Name"),
            "{err}"
        );
    }

    #[test]
    fn a_replica_target_with_this_servers_key_or_its_own() {
        let env = |extra: &'static [(&'static str, &'static str)]| {
            move |k: &str| match k {
                ACCESS_KEY_ENV => Some("AKIDEXAMPLE".to_owned()),
                SECRET_KEY_ENV => Some("very-secret-value".to_owned()),
                _ => extra
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string()),
            }
        };
        let c = Config::from_args(args(&[]), env(&[])).unwrap();
        assert!(c.replica.is_none());
        let c =
            Config::from_args(args(&["--replica-url", "http://10.0.0.2:9000"]), env(&[])).unwrap();
        let t = c.replica.unwrap();
        assert_eq!(
            (t.id().as_str(), t.access_key.as_str()),
            ("http://10.0.0.2:9000", "AKIDEXAMPLE")
        );
        const OWN: &[(&str, &str)] = &[
            (REPLICA_ACCESS_KEY_ENV, "AKIDREPLICA"),
            (REPLICA_SECRET_KEY_ENV, "replica-secret-1"),
        ];
        let c = Config::from_args(args(&["--replica-url", "http://r:1"]), env(OWN)).unwrap();
        assert_eq!(c.replica.as_ref().unwrap().access_key, "AKIDREPLICA");
        assert!(!format!("{c:?}").contains("replica-secret-1"));
        let err =
            Config::from_args(args(&["--replica-url", "https://r:1"]), env(&OWN[..1])).unwrap_err();
        assert!(err.contains("neither"), "{err}");
        let err = Config::from_args(args(&["--replica-url", "ftp://r"]), env(&[])).unwrap_err();
        assert!(err.contains("replica_url"), "{err}");
        let err = Config::from_args(args(&[]), env(OWN)).unwrap_err();
        assert!(err.contains("without --replica-url"), "{err}");
        // From a workload upstream's variable: IP:PORT.
        const ADDR: &[(&str, &str)] = &[(REPLICA_ADDR_ENV, "10.201.0.1:7700")];
        let c = Config::from_args(args(&[]), env(ADDR)).unwrap();
        assert_eq!(c.replica.unwrap().id(), "http://10.201.0.1:7700");
        const BAD: &[(&str, &str)] = &[(REPLICA_ADDR_ENV, "replica.example")];
        let err = Config::from_args(args(&[]), env(BAD)).unwrap_err();
        assert!(err.contains("not IP:PORT"), "{err}");
        let err = Config::from_args(args(&["--replica-url", "http://r:1"]), env(ADDR)).unwrap_err();
        assert!(err.contains("not both"), "{err}");
        // A named replica: the checkpoint's target carries the name, so another replica at
        // the same address is another target (a full copy).
        const NAMED: &[(&str, &str)] = &[
            (REPLICA_ADDR_ENV, "10.201.0.1:7700"),
            (REPLICA_ID_ENV, "w-0123abcd"),
        ];
        let c = Config::from_args(args(&[]), env(NAMED)).unwrap();
        assert_eq!(c.replica.unwrap().id(), "http://10.201.0.1:7700#w-0123abcd");
        const BAD_ID: &[(&str, &str)] = &[
            (REPLICA_ADDR_ENV, "10.201.0.1:7700"),
            (REPLICA_ID_ENV, "W/../x"),
        ];
        let err = Config::from_args(args(&[]), env(BAD_ID)).unwrap_err();
        assert!(err.contains(REPLICA_ID_ENV) && err.contains("a-z"), "{err}");
    }

    #[test]
    fn the_status_token_is_checked_kept_out_of_debug_and_asked_as_a_bearer() {
        let env = |token: &'static str| {
            move |k: &str| match k {
                ACCESS_KEY_ENV => Some("AKIDEXAMPLE".to_owned()),
                SECRET_KEY_ENV => Some("very-secret-value".to_owned()),
                STATUS_TOKEN_ENV => Some(token.to_owned()),
                _ => None,
            }
        };
        let c = Config::from_args(args(&[]), env("status-token-0123456789")).unwrap();
        assert!(!format!("{c:?}").contains("status-token-0123456789"));
        let t = c.status_token.unwrap();
        assert!(t.allows(Some("Bearer status-token-0123456789")));
        for wrong in [
            None,
            Some("status-token-0123456789"),
            Some("Bearer status-token-012345678"),
            Some("Bearer "),
            Some("Basic c3RhdHVz"),
        ] {
            assert!(!t.allows(wrong), "{wrong:?}");
        }
        let err = Config::from_args(args(&[]), env("short")).unwrap_err();
        assert!(err.contains(STATUS_TOKEN_ENV), "{err}");
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

    #[test]
    fn s3s_never_logs_below_info_where_it_would_print_request_headers() {
        assert_eq!(log_filter(None), DEFAULT_LOG);
        assert_eq!(log_filter(Some("")), DEFAULT_LOG);
        assert_eq!(log_filter(Some("debug")), "debug,s3s=info");
        assert_eq!(
            log_filter(Some("trace,s3s::ops=off")),
            "trace,s3s::ops=off,s3s=info"
        );
        assert_eq!(
            log_filter(Some("info,s3s=debug,s3s::service=TRACE,lattice_s3=debug")),
            "info,s3s=info,s3s::service=info,lattice_s3=debug"
        );
        assert_eq!(log_filter(Some("warn,s3s")), "warn,s3s=info");
        assert_eq!(log_filter(Some("s3s=warn,debug")), "s3s=warn,debug");
    }
}
