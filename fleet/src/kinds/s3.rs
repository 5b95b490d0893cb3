//! The `s3` kind (issue 6): S3-compatible storage served by `lattice-s3` (docs/s3.md).
//!
//! A deploy gets the fleet's S3 image (`--s3-image`), a data volume sized by the plan with the
//! server's quota a tenth below it (room for the file system's own structures and the objects'
//! metadata), and an access key id and secret generated here. The pair is stored with the
//! workload's settings (deleted with it), reaches the node only inside its sealed target (as
//! the server's environment), and is shown to the owner on request
//! (`GET /api/v1/workloads/{name}/credentials`, audited). The workload is always-on, has no
//! egress, and declares the server's port, so the gateway routes
//! `https://NAME--ACCOUNT.DOMAIN` to it.
//!
//! Buckets named at deploy (`--bucket`, `"buckets"`) are checked here with `lattice-s3`'s own
//! naming rules and passed to the server as `LATTICE_S3_BUCKETS`; it creates the missing ones
//! before it listens, at every start, and never deletes one.

use crate::store::{StoreError, WorkloadRow};
use crate::workloads::{check_name, plan, DeployRequest, FrameError, Plan};
use lattice_wire::msg::{RestartPolicy, UpstreamSpec, VolumeSpec, WorkloadClass, WorkloadSpec};
use serde::{Deserialize, Serialize};

/// The port `lattice-s3` listens on inside the container.
pub const PORT: u16 = 9000;
/// Where the data volume is mounted.
pub const DATA_DIR: &str = "/data";
/// The data volume's name.
pub const VOLUME: &str = "data";
/// At most this many buckets at deploy (S3's classic default bucket quota per account).
pub const MAX_BUCKETS: usize = 100;
/// The server's variable for the buckets to create at start (comma-separated).
pub const BUCKETS_ENV: &str = "LATTICE_S3_BUCKETS";
/// The server's variable for its replica's `IP:PORT` (a workload upstream's address).
pub const REPLICA_ADDR_ENV: &str = "LATTICE_S3_REPLICA_ADDR";
/// The server's variable for the bearer token of its replication report.
pub const STATUS_TOKEN_ENV: &str = "LATTICE_S3_STATUS_TOKEN";
/// The server's variable naming its replica (the replica's workload id).
pub const REPLICA_ID_ENV: &str = "LATTICE_S3_REPLICA_ID";
/// A replica's name is its primary's with this suffix: `--` cannot occur in a name a
/// consumer gives ([`check_name`]), so it never takes one of theirs.
pub const REPLICA_SUFFIX: &str = "--replica";

/// The name of `primary`'s replica.
pub fn replica_name(primary: &str) -> String {
    format!("{primary}{REPLICA_SUFFIX}")
}

/// S3's bucket naming rules: the very file `lattice-s3` checks names with (no dependencies),
/// so a name the fleet accepts is one the server accepts.
#[path = "../../../image/workloads/s3/src/bucket_rules.rs"]
mod bucket_rules;

/// Checks the buckets asked for at deploy: S3's names, each once, at most [`MAX_BUCKETS`]. The
/// error names the first bad bucket.
pub fn check_buckets(buckets: &[String]) -> Result<(), FrameError> {
    if buckets.len() > MAX_BUCKETS {
        return Err(FrameError::Invalid(format!(
            "{} buckets asked for; at most {MAX_BUCKETS} at deploy",
            buckets.len()
        )));
    }
    for (i, b) in buckets.iter().enumerate() {
        if let Some(reason) = bucket_rules::bucket_name_problem(b) {
            return Err(FrameError::Invalid(format!(
                "bucket {b:?} breaks S3's naming rules: {reason}"
            )));
        }
        if buckets[..i].contains(b) {
            return Err(FrameError::Invalid(format!("bucket {b:?} is named twice")));
        }
    }
    Ok(())
}

/// The data volume of a plan.
pub fn volume_bytes(plan: &str) -> u64 {
    match plan {
        "medium" => 10 << 30,
        "large" => 50 << 30,
        _ => 2 << 30,
    }
}

/// The quota for a volume: a tenth below it. ext4's journal, inode tables and the objects'
/// metadata trailers live on the same volume, so a quota equal to its size would let the disk
/// fill before the quota answers `QuotaExceeded`.
pub fn quota_bytes(volume: u64) -> u64 {
    volume - volume / 10
}

/// What an `s3` workload stores as its settings. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub image: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub volume_bytes: u64,
    pub quota_bytes: u64,
    /// Created by the server at start when missing (workloads stored before deploy-time
    /// buckets have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<String>,
    /// On a primary: the id of its replica's workload, declared as the primary's upstream in
    /// [`REPLICA_ADDR_ENV`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// On a replica: the id of the primary it receives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// The bearer token of the server's `GET /_lattice/replication` (the fleet reads it; the
    /// route is otherwise public). Workloads stored before it have none: their report is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_token: Option<String>,
}

impl S3Settings {
    /// The settings of `primary`'s replica, workload `replica_id`: the same image, key and
    /// volume (what is replicated must fit), no buckets of its own (they come from the
    /// primary, which may have deleted one since the deploy).
    pub fn for_replica(&self, primary_id: &str) -> S3Settings {
        S3Settings {
            buckets: vec![],
            replica: None,
            replica_of: Some(primary_id.to_string()),
            ..self.clone()
        }
    }

    /// The settings of this replica once promoted in place of `primary` (whose settings are
    /// `primary`): a standalone server with the primary's buckets.
    pub fn promoted(&self, primary: &S3Settings) -> S3Settings {
        S3Settings {
            buckets: primary.buckets.clone(),
            replica: None,
            replica_of: None,
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("image", &self.image)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("volume_bytes", &self.volume_bytes)
            .field("quota_bytes", &self.quota_bytes)
            .field("buckets", &self.buckets)
            .field("replica", &self.replica)
            .field("replica_of", &self.replica_of)
            .field(
                "status_token",
                &self.status_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `GET /api/v1/workloads/{name}/credentials`: what an S3 client needs.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Any region works (the server has one); clients want one set.
    pub region: String,
    /// `https://NAME--ACCOUNT.DOMAIN:PORT` when this fleet process runs the gateway.
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(alphabet: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A new key pair in AWS's shape: a 20-character id (`LK` + 18 of A–Z2–7, 90 bits) and a
/// 40-character secret (62 symbols, 238 bits), from the operating system's CSPRNG (seeded).
pub fn generate_credentials() -> (String, String) {
    (
        format!("LK{}", random_string(UPPER_DIGITS, 18)),
        random_string(SECRET_CHARS, 40),
    )
}

/// Checks an `s3` deploy request and makes its settings (with fresh credentials).
pub fn prepare(req: &DeployRequest, image: Option<&str>) -> Result<(Plan, S3Settings), FrameError> {
    check_name(&req.name)?;
    let plan = plan(req.plan.as_deref())?;
    if !req.image.is_empty()
        || req.port.is_some()
        || !req.env.is_empty()
        || !req.command.is_empty()
        || !req.upstreams.is_empty()
    {
        return Err(FrameError::Invalid(format!(
            "kind s3 takes no image, port, env, command or upstreams: the fleet runs its S3 \
             image on port {PORT}"
        )));
    }
    check_buckets(&req.buckets)?;
    let image = image.ok_or_else(|| {
        FrameError::Unavailable(
            "this fleet cannot deploy s3: it was started without an S3 image (start `lattice fleet` or `lattice up` with --s3-image REF, or set LATTICE_S3_IMAGE)".into(),
        )
    })?;
    let volume = volume_bytes(plan.name);
    let (access_key_id, secret_access_key) = generate_credentials();
    Ok((
        plan,
        S3Settings {
            image: image.to_string(),
            access_key_id,
            secret_access_key,
            volume_bytes: volume,
            quota_bytes: quota_bytes(volume),
            buckets: req.buckets.clone(),
            replica: None,
            replica_of: None,
            status_token: Some(random_string(SECRET_CHARS, 32)),
        },
    ))
}

/// The settings of a stored `s3` workload.
pub fn settings(w: &WorkloadRow) -> Result<S3Settings, StoreError> {
    serde_json::from_str(&w.settings)
        .map_err(|e| StoreError::Corrupt(format!("workload {} s3 settings: {e}", w.id)))
}

impl S3Settings {
    /// As stored in workload `id`'s row ([`settings`] reads it back).
    pub fn to_json(&self, id: &str) -> Result<String, StoreError> {
        serde_json::to_string(self)
            .map_err(|e| StoreError::Corrupt(format!("workload {id} s3 settings: {e}")))
    }
}

/// The id of `w`'s replica, when `w` is an S3 primary with one.
pub fn replica_id(w: &WorkloadRow) -> Option<String> {
    (w.kind == "s3")
        .then(|| settings(w).ok()?.replica)
        .flatten()
}

/// The id of the primary `w` is the replica of, when `w` is an S3 replica.
pub fn primary_id(w: &WorkloadRow) -> Option<String> {
    (w.kind == "s3")
        .then(|| settings(w).ok()?.replica_of)
        .flatten()
}

/// The node-side spec: the server's configuration travels as environment inside the sealed
/// target (`lattice-s3` reads `LATTICE_S3_*`; credentials never as flags, which `ps` shows).
pub fn spec(w: &WorkloadRow, p: Plan) -> Result<WorkloadSpec, StoreError> {
    let s = settings(w)?;
    let mut env = vec![
        ("LATTICE_S3_LISTEN".into(), format!("0.0.0.0:{PORT}")),
        ("LATTICE_S3_DATA".into(), DATA_DIR.into()),
        ("LATTICE_S3_QUOTA_BYTES".into(), s.quota_bytes.to_string()),
        ("LATTICE_S3_ACCESS_KEY".into(), s.access_key_id),
        ("LATTICE_S3_SECRET_KEY".into(), s.secret_access_key),
    ];
    if !s.buckets.is_empty() {
        env.push((BUCKETS_ENV.into(), s.buckets.join(",")));
    }
    if let Some(t) = &s.status_token {
        env.push((STATUS_TOKEN_ENV.into(), t.clone()));
    }
    // The replica's id tells a new replica from the last one at the same upstream address:
    // the server then starts a full copy rather than carry on from its checkpoint.
    if let Some(id) = &s.replica {
        env.push((REPLICA_ID_ENV.into(), id.clone()));
    }
    // The primary reaches its replica, wherever the fleet placed it, through its node's
    // tunnel and the gateway: a workload upstream (ADR 0011) in the server's variable.
    let upstreams = s
        .replica
        .iter()
        .map(|id| UpstreamSpec {
            name: UpstreamSpec::name_for(id, PORT),
            workload: id.clone(),
            port: PORT,
            env: REPLICA_ADDR_ENV.into(),
        })
        .collect();
    Ok(WorkloadSpec {
        id: w.id.clone(),
        name: w.name.clone(),
        image: s.image,
        command: vec![],
        env,
        volumes: vec![VolumeSpec {
            name: VOLUME.into(),
            mount_path: DATA_DIR.into(),
            size_bytes: s.volume_bytes,
        }],
        cpu_millis: p.cpu_millis,
        memory_bytes: p.memory_bytes,
        pids_max: p.pids_max,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::AlwaysOn,
        egress: false,
        capabilities: vec![],
        ports: vec![PORT],
        upstreams,
    })
}

/// The credentials of a stored `s3` workload.
pub fn credentials(w: &WorkloadRow, endpoint: Option<String>) -> Result<Credentials, StoreError> {
    let s = settings(w)?;
    Ok(Credentials {
        access_key_id: s.access_key_id,
        secret_access_key: s.secret_access_key,
        region: "us-east-1".into(),
        endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const IMAGE: &str = "127.0.0.1:5000/lattice/s3@sha256:aa";

    fn req(name: &str, plan: Option<&str>) -> DeployRequest {
        DeployRequest {
            kind: "s3".into(),
            name: name.into(),
            plan: plan.map(str::to_string),
            image: String::new(),
            port: None,
            env: BTreeMap::new(),
            command: vec![],
            ..Default::default()
        }
    }

    fn row(s: &S3Settings, plan: &str) -> WorkloadRow {
        WorkloadRow {
            id: "w-1".into(),
            account_id: "a-1".into(),
            name: "files".into(),
            kind: "s3".into(),
            plan: plan.into(),
            settings: serde_json::to_string(s).unwrap(),
            node_id: Some("n-1".into()),
            moving_to: None,
            cpu_millis: 250,
            memory_bytes: 256 << 20,
            disk_bytes: s.volume_bytes,
            created_ms: 1,
            updated_ms: 1,
            next: None,
        }
    }

    #[test]
    fn without_an_image_the_deploy_is_refused_naming_the_flag() {
        let e = prepare(&req("files", None), None).unwrap_err();
        assert!(matches!(e, FrameError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("--s3-image"), "{e}");
    }

    #[test]
    fn names_and_plans_are_checked_and_container_fields_refused() {
        let e = prepare(&req("Files", None), Some(IMAGE)).unwrap_err();
        assert!(e.to_string().contains("lower-case"), "{e}");
        let e = prepare(&req("files", Some("huge")), Some(IMAGE)).unwrap_err();
        assert!(e.to_string().contains("unknown plan"), "{e}");
        let mut r = req("files", None);
        r.image = "evil@sha256:bb".into();
        let e = prepare(&r, Some(IMAGE)).unwrap_err();
        assert!(e.to_string().contains("takes no image"), "{e}");
        let mut r = req("files", None);
        r.env.insert("LATTICE_S3_SECRET_KEY".into(), "mine".into());
        assert!(
            prepare(&r, Some(IMAGE)).is_err(),
            "env cannot override the server's"
        );
    }

    #[test]
    fn each_deploy_gets_its_own_random_credentials_in_aws_shape() {
        let (_, a) = prepare(&req("files", None), Some(IMAGE)).unwrap();
        let (_, b) = prepare(&req("files", None), Some(IMAGE)).unwrap();
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.secret_access_key, b.secret_access_key);
        for s in [&a, &b] {
            assert_eq!(s.access_key_id.len(), 20);
            assert!(s.access_key_id.starts_with("LK"));
            assert!(s
                .access_key_id
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
            assert_eq!(s.secret_access_key.len(), 40);
            assert!(s
                .secret_access_key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn the_spec_has_the_volume_the_quota_below_it_the_port_and_no_egress() {
        for plan_name in ["small", "medium", "large"] {
            let (p, s) = prepare(&req("files", Some(plan_name)), Some(IMAGE)).unwrap();
            let spec = spec(&row(&s, plan_name), p).unwrap();
            assert_eq!(spec.image, IMAGE);
            assert_eq!(spec.ports, vec![PORT]);
            assert!(!spec.egress);
            assert_eq!(spec.class, WorkloadClass::AlwaysOn);
            assert_eq!(spec.volumes.len(), 1);
            let vol = spec.volumes[0].size_bytes;
            assert_eq!(vol, volume_bytes(plan_name));
            assert_eq!(spec.volumes[0].mount_path, DATA_DIR);
            let env: BTreeMap<_, _> = spec.env.iter().cloned().collect();
            let quota: u64 = env["LATTICE_S3_QUOTA_BYTES"].parse().unwrap();
            assert!(quota < vol && quota >= vol * 8 / 10, "{quota} of {vol}");
            assert_eq!(env["LATTICE_S3_DATA"], DATA_DIR);
            assert_eq!(env["LATTICE_S3_LISTEN"], format!("0.0.0.0:{PORT}"));
            assert_eq!(env["LATTICE_S3_ACCESS_KEY"], s.access_key_id);
            assert_eq!(env["LATTICE_S3_SECRET_KEY"], s.secret_access_key);
        }
        assert!(volume_bytes("small") < volume_bytes("medium"));
        assert!(volume_bytes("medium") < volume_bytes("large"));
    }

    #[test]
    fn deploy_time_buckets_are_checked_and_reach_the_server_as_one_variable() {
        let mut r = req("files", None);
        r.buckets = vec!["photos".into(), "logs.2026".into()];
        let (p, s) = prepare(&r, Some(IMAGE)).unwrap();
        assert_eq!(s.buckets, ["photos", "logs.2026"]);
        let env: BTreeMap<_, _> = spec(&row(&s, "small"), p)
            .unwrap()
            .env
            .into_iter()
            .collect();
        assert_eq!(env[BUCKETS_ENV], "photos,logs.2026");
        // None asked: no variable, and settings stored before buckets existed still read.
        let (p, s) = prepare(&req("files", None), Some(IMAGE)).unwrap();
        let stored = serde_json::to_string(&s).unwrap();
        assert!(!stored.contains("buckets"), "{stored}");
        let env = spec(&row(&s, "small"), p).unwrap().env;
        assert!(env.iter().all(|(k, _)| k != BUCKETS_ENV));

        for (bad, says) in [
            ("Bad_Name", "lowercase"),
            ("ab", "3 to 63"),
            ("-photos", "start and end"),
            ("192.168.0.1", "IP address"),
            ("xn--abc", "prefix"),
            ("a,b", "lowercase"),
        ] {
            let mut r = req("files", None);
            r.buckets = vec!["photos".into(), bad.into()];
            let e = prepare(&r, Some(IMAGE)).unwrap_err();
            assert!(matches!(e, FrameError::Invalid(_)), "{e:?}");
            let e = e.to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains(says),
                "{bad}: {e}"
            );
        }
        let mut r = req("files", None);
        r.buckets = vec!["photos".into(), "photos".into()];
        let e = prepare(&r, Some(IMAGE)).unwrap_err().to_string();
        assert!(e.contains("named twice"), "{e}");
        let mut r = req("files", None);
        r.buckets = (0..=MAX_BUCKETS).map(|i| format!("bucket-{i}")).collect();
        let e = prepare(&r, Some(IMAGE)).unwrap_err().to_string();
        assert!(e.contains("at most 100"), "{e}");
        r.buckets.pop();
        assert!(prepare(&r, Some(IMAGE)).is_ok());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let (_, s) = prepare(&req("files", None), Some(IMAGE)).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains(&s.secret_access_key), "{shown}");
        let token = s
            .status_token
            .clone()
            .expect("each deploy gets a status token");
        assert!(token.len() >= 16);
        assert!(!shown.contains(&token), "{shown}");
        let c = credentials(&row(&s, "small"), None).unwrap();
        assert_eq!(c.secret_access_key, s.secret_access_key);
        assert!(!format!("{c:?}").contains(&s.secret_access_key));
    }
}
