//! The `s3` kind end to end: a consumer runs `lattice deploy s3 files` on a real fleet; a real
//! latticed node runs `lattice-s3` on the machine's Docker engine with a size-limited volume;
//! the owner takes the generated credentials (audited, never in the fleet's or node's logs) and
//! uses the real aws CLI and boto3 through the gateway over HTTPS (the fleet's apps
//! certificate): buckets, objects, a 100 MiB multipart upload, `s3 sync` both ways, listings, a
//! presigned URL with curl (and an expired one refused). A wrong secret is SignatureDoesNotMatch;
//! another tenant's `files` is a different endpoint whose credentials open nothing of the
//! first's; `lattice delete` removes it. Needs root, Docker, the S3 image and the clients
//! (`scripts/test-images`, `scripts/test`); under CI their absence is a failure.

mod common;

use common::docker::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Says why the test cannot run: a skip on a developer machine, a failure under CI.
fn missing<T>(what: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what}; CI is set, so this is a failure, not a skip"
    );
    eprintln!("SKIPPED: {what}");
    None
}

/// `LATTICE_S3_IMAGE` from build/test-images.env.
fn s3_image() -> Option<String> {
    let env = workspace_file("build/test-images.env");
    let found = std::fs::read_to_string(&env).ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("LATTICE_S3_IMAGE="))
            .map(|v| v.trim().to_string())
    });
    match found {
        Some(i) if !i.is_empty() => Some(i),
        _ => missing(&format!(
            "no LATTICE_S3_IMAGE in {} (scripts/test-images builds it)",
            env.display()
        )),
    }
}

/// The venv with the aws CLI (scripts/test installs it into build/pyenv).
fn aws_bin() -> Option<PathBuf> {
    let venv = std::env::var_os("LATTICE_S3_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_file("build/pyenv"));
    let aws = venv.join("bin/aws");
    if aws.is_file() {
        return Some(aws);
    }
    missing(&format!(
        "the aws CLI is not installed in {} (scripts/test installs it)",
        venv.display()
    ))
}

fn lattice_as_ok(cfg: &Path, args: &[&str]) -> String {
    let (ok, out, err) = lattice_as(cfg, args, "");
    assert!(ok, "lattice {args:?}: {out}{err}");
    out
}

/// Signs up and logs in `email` as a consumer; returns its CLI config.
fn consumer(f: &Fleet, dir: &Path, email: &str) -> PathBuf {
    let cfg_path = dir.join(format!("{email}.toml"));
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(&f.cli_config).unwrap()).unwrap();
    let key = cfg["fleet_key"].as_str().unwrap().to_string();
    let pw = format!("{email}'s long passphrase 1\n");
    for cmd in ["signup", "login"] {
        let (ok, out, err) = lattice_as(
            &cfg_path,
            &[
                cmd,
                "--email",
                email,
                "--fleet",
                &f.url,
                "--fleet-key",
                &key,
            ],
            &pw,
        );
        assert!(ok, "{cmd} {email}: {out}{err}");
    }
    cfg_path
}

/// What the owner gets from `lattice workload show NAME --credentials --json`.
struct Creds {
    endpoint: String,
    key: String,
    secret: String,
}

fn credentials(cfg: &Path, name: &str) -> Creds {
    let out = lattice_as_ok(cfg, &["workload", "show", name, "--credentials", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["credentials"];
    assert_eq!(c["endpoint"], v["endpoint"], "{out}");
    Creds {
        endpoint: v["endpoint"].as_str().expect("endpoint").to_string(),
        key: c["access_key_id"].as_str().unwrap().to_string(),
        secret: c["secret_access_key"].as_str().unwrap().to_string(),
    }
}

/// The aws CLI against `endpoint` with a key pair, trusting the fleet's apps certificate.
struct Aws {
    bin: PathBuf,
    ca: PathBuf,
    home: tempfile::TempDir,
}

impl Aws {
    fn run(&self, endpoint: &str, key: &str, secret: &str, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--endpoint-url")
            .arg(endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_CA_BUNDLE", &self.ca)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("credentials"),
            )
            .env("HOME", self.home.path())
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .output()
            .expect("running aws")
    }

    fn ok(&self, c: &Creds, args: &[&str]) -> String {
        let out = self.run(&c.endpoint, &c.key, &c.secret, args);
        assert!(
            out.status.success(),
            "aws {args:?} against {} failed: {}",
            c.endpoint,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn err(&self, endpoint: &str, key: &str, secret: &str, args: &[&str], code: &str) {
        let out = self.run(endpoint, key, secret, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "aws {args:?} succeeded; expected {code}"
        );
        assert!(
            stderr.contains(&format!("({code})")),
            "aws {args:?}: expected {code}, got: {stderr}"
        );
    }
}

/// A real fleet that deploys `s3` with `image`, its apps on loopback (HTTPS on
/// `https_port`), with `extra` flags.
fn s3_fleet(dir: &Path, image: &str, https_port: u16, extra: &[&str]) -> Fleet {
    let apps_https = format!("127.0.0.1:{https_port}");
    let apps_http = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--s3-image",
        image,
        "--apps-https",
        &apps_https,
        "--apps-http",
        &apps_http,
    ];
    args.extend_from_slice(extra);
    Fleet::start("fleet", &dir.join("fleet"), free_port(), free_port(), &args)
}

fn wait_running(cfg: &Path, name: &str) -> serde_json::Value {
    wait_for(120, &format!("{name} running"), || {
        let (ok, out, _) = lattice_as(cfg, &["workload", "show", name, "--json"], "");
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        assert_ne!(v["state"], "failed", "{v}");
        (ok && v["state"] == "running").then_some(v)
    })
}

#[test]
fn deploy_s3_use_it_with_the_aws_cli_through_the_gateway_and_delete_it() {
    if !can_run_workloads() {
        return;
    }
    let (Some(image), Some(aws_bin)) = (s3_image(), aws_bin()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let https_port = free_port();
    let f = s3_fleet(dir.path(), &image, https_port, &[]);
    let (n, id, _cleanup) = online_node(&f, &dir.path().join("node"), "alice");

    let ann = consumer(&f, dir.path(), "ann@example.org");
    // The kind brings its own image and port.
    let (ok, _, err) = lattice_as(
        &ann,
        &["deploy", "s3", "files", "--image", &test_image()],
        "",
    );
    assert!(!ok && err.contains("takes no image"), "{err}");
    let out = lattice_as_ok(&ann, &["deploy", "s3", "files"]);
    assert!(
        out.contains("endpoint https://files--")
            && out.contains(&format!(".lattice-apps.localhost:{https_port}"))
            && out.contains("--credentials"),
        "{out}"
    );
    let shown = wait_running(&ann, "files");
    assert_eq!(shown["kind"], "s3");
    assert_eq!(shown["image"], image.as_str());
    assert!(shown.get("credentials").is_none(), "only on request");

    let c = credentials(&ann, "files");
    assert!(
        c.endpoint.starts_with("https://files--a-")
            && c.endpoint
                .ends_with(&format!(".lattice-apps.localhost:{https_port}")),
        "{}",
        c.endpoint
    );
    // Revealing is audited, without the secret; no log line carries it.
    let audit = f.cli_ok(&["audit", "--action", "credentials.revealed", "--json"]);
    assert!(audit.contains("name=files"), "{audit}");
    assert!(!audit.contains(&c.secret), "audit shows the secret");
    // The operator's view of the node shows the workload, not its secret.
    let node = f.node(&id);
    let target = node["target"].as_str().unwrap();
    assert!(
        target.contains("LATTICE_S3_SECRET_KEY") && !target.contains(&c.secret),
        "{target}"
    );

    let aws = Aws {
        bin: aws_bin,
        ca: f.data.join("apps-cert.pem"),
        home: tempfile::tempdir().unwrap(),
    };
    aws.ok(&c, &["s3", "mb", "s3://photos"]);
    let small = dir.path().join("hello.txt");
    std::fs::write(&small, "hello through the gateway").unwrap();
    aws.ok(
        &c,
        &[
            "s3",
            "cp",
            small.to_str().unwrap(),
            "s3://photos/a/hello.txt",
        ],
    );
    // 100 MiB: the CLI uploads it in 8 MiB parts (multipart, trailing CRC32 over HTTPS).
    let big = dir.path().join("big.bin");
    let data = data_file(&big, 100 << 20, 7);
    aws.ok(
        &c,
        &["s3", "cp", big.to_str().unwrap(), "s3://photos/big.bin"],
    );
    let head = aws.ok(
        &c,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "photos",
            "--key",
            "big.bin",
        ],
    );
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    let etag = head["ETag"].as_str().unwrap_or_default();
    assert!(etag.ends_with("-13\""), "a 13-part multipart ETag: {head}");
    let back = dir.path().join("back.bin");
    aws.ok(
        &c,
        &["s3", "cp", "s3://photos/big.bin", back.to_str().unwrap()],
    );
    assert!(
        std::fs::read(&back).unwrap() == data,
        "big.bin came back changed"
    );
    let back_small = dir.path().join("back.txt");
    aws.ok(
        &c,
        &[
            "s3",
            "cp",
            "s3://photos/a/hello.txt",
            back_small.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&back_small).unwrap(),
        "hello through the gateway"
    );
    let ls = aws.ok(&c, &["s3", "ls", "--recursive", "s3://photos"]);
    assert!(ls.contains("a/hello.txt") && ls.contains("big.bin"), "{ls}");
    let buckets = aws.ok(&c, &["s3", "ls"]);
    assert!(buckets.contains("photos"), "{buckets}");

    // A presigned URL (SigV4), fetched with curl over the gateway's TLS.
    std::fs::write(
        aws.home.path().join("config"),
        "[default]\nregion = us-east-1\ns3 =\n    signature_version = s3v4\n",
    )
    .unwrap();
    let url = aws.ok(&c, &["s3", "presign", "s3://photos/a/hello.txt"]);
    let got = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&aws.ca)
        .arg(url.trim())
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "hello through the gateway",
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );

    // Expired: S3's AccessDenied, through the gateway as directly.
    let expired = aws.ok(
        &c,
        &[
            "s3",
            "presign",
            "s3://photos/a/hello.txt",
            "--expires-in",
            "1",
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let got = Command::new("curl")
        .args(["-sS", "-w", "%{http_code}", "--cacert"])
        .arg(&aws.ca)
        .arg(expired.trim())
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&got.stdout);
    assert!(
        body.ends_with("403") && body.contains("AccessDenied"),
        "{body}"
    );

    // `s3 sync` both ways: a directory of files up, then down into an empty one.
    let up = dir.path().join("sync-up");
    std::fs::create_dir_all(up.join("nested")).unwrap();
    for (i, name) in ["one.txt", "two.bin", "nested/three.txt"]
        .iter()
        .enumerate()
    {
        data_file(&up.join(name), 1000 * (i + 1), i as u32);
    }
    aws.ok(
        &c,
        &["s3", "sync", up.to_str().unwrap(), "s3://photos/synced"],
    );
    let down = dir.path().join("sync-down");
    aws.ok(
        &c,
        &["s3", "sync", "s3://photos/synced", down.to_str().unwrap()],
    );
    for name in ["one.txt", "two.bin", "nested/three.txt"] {
        assert_eq!(
            std::fs::read(up.join(name)).unwrap(),
            std::fs::read(down.join(name)).unwrap_or_default(),
            "{name} came back changed"
        );
    }

    // boto3 too: its default CRC32 goes as an aws-chunked trailer over HTTPS.
    let py = aws.bin.with_file_name("python");
    let script = "import os, boto3\n\
        s3 = boto3.client('s3', endpoint_url=os.environ['EP'], verify=os.environ['CA'])\n\
        r = s3.put_object(Bucket='photos', Key='boto.txt', Body=b'from boto3')\n\
        assert 'ChecksumCRC32' in r, r\n\
        print(s3.get_object(Bucket='photos', Key='boto.txt')['Body'].read().decode())\n";
    let out = Command::new(&py)
        .arg("-c")
        .arg(script)
        .env("EP", &c.endpoint)
        .env("CA", &aws.ca)
        .env("AWS_ACCESS_KEY_ID", &c.key)
        .env("AWS_SECRET_ACCESS_KEY", &c.secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", aws.home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", aws.home.path().join("none"))
        .output()
        .expect("python");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "from boto3",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A wrong secret.
    aws.err(
        &c.endpoint,
        &c.key,
        "wrong-secret-0123456789abcdefghijklmnopq",
        &["s3", "ls", "s3://photos"],
        "SignatureDoesNotMatch",
    );

    // Another tenant with its own `files`: another endpoint, other credentials. His comes
    // with buckets made at deploy; a name S3 refuses is a 400 naming it, and nothing deployed.
    let bob = consumer(&f, dir.path(), "bob@example.org");
    let (ok, _, err) = lattice_as(
        &bob,
        &[
            "deploy", "s3", "files", "--bucket", "reports", "--bucket", "Bad_Name",
        ],
        "",
    );
    assert!(
        !ok && err.contains("\"Bad_Name\"") && err.contains("400"),
        "{err}"
    );
    let (ok, _, _) = lattice_as(&bob, &["workload", "show", "files"], "");
    assert!(!ok, "a refused deploy left a workload");
    lattice_as_ok(
        &bob,
        &[
            "deploy",
            "s3",
            "files",
            "--bucket",
            "reports",
            "--bucket",
            "logs.2026",
        ],
    );
    wait_running(&bob, "files");
    let b = credentials(&bob, "files");
    deploy_time_buckets_and_sse_c(&aws, &b, dir.path());
    assert_ne!(b.endpoint, c.endpoint);
    assert_ne!((&b.key, &b.secret), (&c.key, &c.secret));
    // Bob's valid keys on ann's endpoint open nothing; on his own there is no such bucket.
    aws.err(
        &c.endpoint,
        &b.key,
        &b.secret,
        &["s3", "ls", "s3://photos"],
        "InvalidAccessKeyId",
    );
    aws.err(
        &c.endpoint,
        &b.key,
        &b.secret,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "photos",
            "--key",
            "a/hello.txt",
            "/dev/null",
        ],
        "InvalidAccessKeyId",
    );
    aws.err(
        &b.endpoint,
        &b.key,
        &b.secret,
        &["s3", "ls", "s3://photos"],
        "NoSuchBucket",
    );
    // Bob cannot ask for ann's credentials: her workload does not exist for him.
    let (ok, _, err) = lattice_as(&bob, &["workload", "show", "files", "--credentials"], "");
    assert!(ok, "bob sees his own files: {err}");
    assert_ne!(credentials(&bob, "files").secret, c.secret);

    // The secrets travel sealed and never reach a log.
    for (who, text) in [("fleet", f.log_text()), ("node", n.log_text())] {
        assert!(
            !text.contains(&c.secret) && !text.contains(&b.secret),
            "the {who} log carries a secret"
        );
    }

    // Delete: the container goes, the endpoint stops answering, the credentials are gone.
    lattice_as_ok(&ann, &["delete", "files"]);
    let (ok, _, err) = lattice_as(&ann, &["workload", "show", "files", "--credentials"], "");
    assert!(!ok && err.contains("no workload named"), "{err}");
    wait_for(60, "ann's s3 container removed", || {
        (containers_of(&id).lines().count() == 1).then_some(())
    });
    let out = aws.run(&c.endpoint, &c.key, &c.secret, &["s3", "ls", "s3://photos"]);
    assert!(!out.status.success(), "the deleted endpoint still answers");
    // Bob's keeps serving.
    aws.ok(&b, &["s3", "mb", "s3://bobs"]);
}

/// Bob's `files` was deployed with `--bucket reports --bucket logs.2026`: as soon as it runs,
/// both are listed and take objects without a CreateBucket; then an SSE-C round trip with
/// boto3 through the gateway's TLS (the key in headers, `X-Forwarded-Proto: https` set by the
/// gateway): put and get with the key, a get without it refused with 400 InvalidRequest.
fn deploy_time_buckets_and_sse_c(aws: &Aws, b: &Creds, dir: &Path) {
    let listed = aws.ok(b, &["s3", "ls"]);
    assert!(
        listed.contains("reports") && listed.contains("logs.2026"),
        "the deploy's buckets are not listed: {listed}"
    );
    let file = dir.join("q3.txt");
    std::fs::write(&file, "third quarter").unwrap();
    aws.ok(
        b,
        &[
            "s3",
            "cp",
            file.to_str().unwrap(),
            "s3://reports/2026/q3.txt",
        ],
    );
    let ls = aws.ok(b, &["s3", "ls", "--recursive", "s3://reports"]);
    assert!(ls.contains("2026/q3.txt"), "{ls}");

    let py = aws.bin.with_file_name("python");
    let script = r#"import os, boto3, botocore
s3 = boto3.client('s3', endpoint_url=os.environ['EP'], verify=os.environ['CA'])
key = os.urandom(32)
body = os.urandom(300_000)
sse = dict(SSECustomerAlgorithm='AES256', SSECustomerKey=key)
r = s3.put_object(Bucket='logs.2026', Key='secret.bin', Body=body, **sse)
assert r['SSECustomerAlgorithm'] == 'AES256', r
got = s3.get_object(Bucket='logs.2026', Key='secret.bin', **sse)
assert got['Body'].read() == body, 'SSE-C object came back changed'
assert got['SSECustomerAlgorithm'] == 'AES256', got
try:
    s3.get_object(Bucket='logs.2026', Key='secret.bin')
    raise SystemExit('GET without the key succeeded')
except botocore.exceptions.ClientError as e:
    status = e.response['ResponseMetadata']['HTTPStatusCode']
    code = e.response['Error']['Code']
    assert (status, code) == (400, 'InvalidRequest'), (status, code)
print('sse-c ok')
"#;
    let out = Command::new(&py)
        .arg("-c")
        .arg(script)
        .env("EP", &b.endpoint)
        .env("CA", &aws.ca)
        .env("AWS_ACCESS_KEY_ID", &b.key)
        .env("AWS_SECRET_ACCESS_KEY", &b.secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", aws.home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", aws.home.path().join("none"))
        .output()
        .expect("python");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sse-c ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file of `len` bytes of a simple sequence (seeded), for round trips.
fn data_file(path: &Path, len: usize, seed: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut x = seed;
    while data.len() < len {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, &data).unwrap();
    data
}

/// Issue 6, durability across nodes: `lattice deploy s3` on a fleet with two providers' nodes
/// places a replica on the other provider's node; the primary (the real `lattice-s3`) ships
/// every change to it through both nodes' tunnels and the gateway (a workload upstream); the
/// fleet reads the lag and shows it; when the primary's node is lost (latticed SIGKILLed: its
/// tunnel is cut) the replica is promoted, the same endpoint serves every object written
/// before, and the owner is told the lag last read.
#[test]
fn a_replica_on_another_provider_takes_over_with_the_data_when_the_primarys_node_is_lost() {
    if !can_run_workloads() {
        return;
    }
    let (Some(image), Some(aws_bin)) = (s3_image(), aws_bin()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = s3_fleet(
        dir.path(),
        &image,
        free_port(),
        &["--node-lost-grace-secs", "3"],
    );
    let (a, a_id, _ca) = online_node(&f, &dir.path().join("a"), "alice");
    let (b, b_id, _cb) = online_node(&f, &dir.path().join("b"), "bob");
    let mut nodes = [(a, a_id.clone()), (b, b_id.clone())];

    let ann = consumer(&f, dir.path(), "ann@example.org");
    lattice_as_ok(&ann, &["deploy", "s3", "files", "--bucket", "photos"]);
    let shown = wait_running(&ann, "files");
    let primary_node = shown["node"].as_str().unwrap().to_string();
    let replica_node = shown["replication"]["replica_node"]
        .as_str()
        .unwrap_or_else(|| panic!("no replica: {shown}"))
        .to_string();
    assert_ne!(primary_node, replica_node, "{shown}");
    let mut both = [primary_node.clone(), replica_node.clone()];
    both.sort();
    let mut ids = [a_id.clone(), b_id.clone()];
    ids.sort();
    assert_eq!(both, ids, "one on each provider's node: {shown}");
    wait_running(&ann, "files--replica");

    let c = credentials(&ann, "files");
    let aws = Aws {
        bin: aws_bin,
        ca: f.data.join("apps-cert.pem"),
        home: tempfile::tempdir().unwrap(),
    };
    // Small objects, an overwrite, a delete, and a 12 MiB multipart upload.
    let mut written = Vec::new();
    for i in 0..5 {
        let p = dir.path().join(format!("obj{i}"));
        written.push((format!("obj{i}"), data_file(&p, 1000 + i * 3000, i as u32)));
        aws.ok(
            &c,
            &[
                "s3",
                "cp",
                p.to_str().unwrap(),
                &format!("s3://photos/obj{i}"),
            ],
        );
    }
    let p = dir.path().join("obj0-v2");
    written[0].1 = data_file(&p, 777, 99);
    aws.ok(&c, &["s3", "cp", p.to_str().unwrap(), "s3://photos/obj0"]);
    aws.ok(&c, &["s3", "rm", "s3://photos/obj4"]);
    written.pop();
    let p = dir.path().join("big");
    written.push(("big".into(), data_file(&p, 12 << 20, 7)));
    // Taken before the last write starts: the replica acknowledges it after this, however
    // soon after the upload it does.
    let last_write = lattice_wire::now_ms();
    aws.ok(&c, &["s3", "cp", p.to_str().unwrap(), "s3://photos/big"]);

    // The fleet reads the lag through the primary's tunnel: caught up after the last write.
    let v = wait_for(60, "the replica acknowledged every change", || {
        let (ok, out, _) = lattice_as(&ann, &["workload", "show", "files", "--json"], "");
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let r = &v["replication"]["report"];
        (ok && r["replica"] == "reachable"
            && r["pending_changes"] == 0
            && r["last_acknowledged_ms"].as_u64()? >= last_write)
            .then_some(v)
    });
    eprintln!("caught up: {}", v["replication"]);
    // The report is the fleet's: through the public address it needs the workload's token,
    // and the replica has no public address at all.
    let curl = |url: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&aws.ca)
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&format!("{}/_lattice/replication", c.endpoint)), "401");
    let replica_url = c.endpoint.replacen("files--", "files--replica--", 1);
    assert_eq!(
        curl(&format!("{replica_url}/photos")),
        "404",
        "{replica_url}"
    );
    let text = lattice_as_ok(&ann, &["workload", "show", "files"]);
    assert!(
        text.contains(&format!("replica  files--replica on {replica_node}"))
            && text.contains("0 changes (0 bytes) pending; replica reachable"),
        "{text}"
    );

    // The primary's node is lost: its latticed killed, so its tunnel is cut (its container
    // keeps running on the engine, unreachable).
    let lost = nodes
        .iter_mut()
        .find(|(_, id)| *id == primary_node)
        .unwrap();
    lost.0.kill9();
    let t = std::time::Instant::now();
    let promoted = wait_for(90, "the replica promoted", || {
        let (ok, out, _) = lattice_as(&ann, &["workload", "show", "files", "--json"], "");
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v["node"] == replica_node.as_str() && v["state"] == "running").then_some(v)
    });
    // The replica's node has applied the target that makes it "files" (its container
    // recreated over the same volume): what answers now is the promoted server.
    wait_for(60, "the replica's node applied the promotion", || {
        let n = f.node(&replica_node);
        let target: serde_json::Value = serde_json::from_str(n["target"].as_str()?).ok()?;
        let renamed = target.as_array()?.iter().any(|w| w["name"] == "files");
        (renamed && n["applied_revision"] == n["target_revision"]).then_some(())
    });
    eprintln!("promoted and running after {:?}", t.elapsed());
    let events = promoted["events"].as_array().unwrap();
    let ev = events
        .iter()
        .find(|e| e["kind"] == "promoted")
        .unwrap_or_else(|| panic!("no promoted event: {promoted}"));
    let told = ev["detail"].as_str().unwrap();
    assert!(
        told.contains(&format!("node {primary_node} lost"))
            && told.contains("replication lag 0: the replica had every change"),
        "{told}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&lattice_as_ok(&ann, &["workloads", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["files"], "{listed}");

    // Same endpoint, same key: every object as last written, the deleted one still gone.
    let objects = wait_for(60, "the promoted server answers", || {
        let out = aws.run(&c.endpoint, &c.key, &c.secret, &["s3", "ls", "s3://photos"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(!objects.contains("obj4"), "{objects}");
    for (key, data) in &written {
        let back = dir.path().join(format!("back-{key}"));
        aws.ok(
            &c,
            &[
                "s3",
                "cp",
                &format!("s3://photos/{key}"),
                back.to_str().unwrap(),
            ],
        );
        assert!(std::fs::read(&back).unwrap() == *data, "{key} differs");
    }
    // And it takes new writes.
    let p = dir.path().join("after");
    data_file(&p, 4096, 5);
    aws.ok(&c, &["s3", "cp", p.to_str().unwrap(), "s3://photos/after"]);
}
