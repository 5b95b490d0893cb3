//! Replication between two real `lattice-s3` processes on loopback: a primary started with
//! `--replica-url` and a replica that is an ordinary server with the same key. boto3 writes
//! to the primary; the replica must end up holding the same objects (bytes, ETag, content
//! type, user metadata, SSE-C ciphertext readable with the same key), whatever is stopped or
//! SIGKILLed on the way, and the lag endpoint must say how far behind it is.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;

fn primary(data: &Path, replica: &Server) -> Server {
    let url = replica.endpoint();
    Server::start_with(data, ACCESS_KEY, SECRET_KEY, &["--replica-url", &url])
}

fn status(server: &Server) -> Value {
    let (code, body) = curl(&[&format!("{}/_lattice/replication", server.endpoint())]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits until the primary has nothing pending; returns the time it took.
fn caught_up(primary: &Server, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = status(primary);
        if s["pending_changes"] == 0 && s["replica"] == "reachable" {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "replica not caught up after {within:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every bucket with its CORS rules, and every object with what a client sees of it.
const SNAPSHOT: &str = r#"
import hashlib
out = {}
for b in s3.list_buckets()['Buckets']:
    name = b['Name']
    try:
        cors = s3.get_bucket_cors(Bucket=name)['CORSRules']
    except ClientError as e:
        cors = e.response['Error']['Code']
    objects = {}
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket=name):
        for o in page.get('Contents', []):
            try:
                r = s3.get_object(Bucket=name, Key=o['Key'])
                body = hashlib.sha256(r['Body'].read()).hexdigest()
                objects[o['Key']] = [body, r['ETag'], r.get('ContentType'), r['Metadata'], r['ContentLength'], r['LastModified'].isoformat()]
            except ClientError as e:
                # SSE-C objects: readable only with the key
                objects[o['Key']] = [e.response['Error']['Code'], o['ETag'], o['Size']]
    out[name] = {'cors': cors, 'objects': objects}
print(json.dumps(out, sort_keys=True))
"#;

fn snapshot(c: &Clients) -> Value {
    serde_json::from_str(c.python_ok(SNAPSHOT).trim()).expect("snapshot JSON")
}

const SSE_KEY: &str = "import base64\nkey = bytes(range(32))\n";

#[test]
fn every_kind_of_change_reaches_the_replica_as_the_primary_holds_it() {
    let Some(venv) = venv() else { return };
    let (rdir, pdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = Server::start(rdir.path());
    let primary = primary(pdir.path(), &replica);
    let (p, r) = (Clients::new(&venv, &primary), Clients::new(&venv, &replica));
    assert_eq!(status(&replica)["role"], "standalone");
    assert_eq!(status(&replica)["replica"], "none");
    p.python_ok(&format!(
        r#"{SSE_KEY}
s3.create_bucket(Bucket='photos')
s3.create_bucket(Bucket='gone')
s3.put_object(Bucket='photos', Key='a.jpg', Body=b'jpeg' * 1000, ContentType='image/jpeg', Metadata={{'camera': 'x100'}})
for v in range(5):
    s3.put_object(Bucket='photos', Key='over', Body=f'version {{v}}'.encode() * 100)
s3.put_object(Bucket='photos', Key='doomed', Body=b'x')
s3.delete_object(Bucket='photos', Key='doomed')
s3.put_object(Bucket='photos', Key='d1', Body=b'1')
s3.put_object(Bucket='photos', Key='d2', Body=b'2')
s3.delete_objects(Bucket='photos', Delete={{'Objects': [{{'Key': 'd1'}}, {{'Key': 'd2'}}]}})
up = s3.create_multipart_upload(Bucket='photos', Key='big', ContentType='application/x-big', Metadata={{'parts': 'two'}})['UploadId']
p1 = bytes(range(256)) * (5 * 4096)
p2 = b'tail' * 1000
e1 = s3.upload_part(Bucket='photos', Key='big', UploadId=up, PartNumber=1, Body=p1)['ETag']
e2 = s3.upload_part(Bucket='photos', Key='big', UploadId=up, PartNumber=2, Body=p2)['ETag']
s3.complete_multipart_upload(Bucket='photos', Key='big', UploadId=up, MultipartUpload={{'Parts': [{{'PartNumber': 1, 'ETag': e1}}, {{'PartNumber': 2, 'ETag': e2}}]}})
s3.copy_object(Bucket='photos', Key='a-copy', CopySource={{'Bucket': 'photos', 'Key': 'a.jpg'}}, MetadataDirective='REPLACE', ContentType='image/png', Metadata={{'copied': 'yes'}})
s3.put_bucket_cors(Bucket='photos', CORSConfiguration={{'CORSRules': [{{'AllowedOrigins': ['https://app.example'], 'AllowedMethods': ['GET', 'PUT'], 'AllowedHeaders': ['*'], 'ExposeHeaders': ['ETag'], 'MaxAgeSeconds': 600}}]}})
s3.put_object(Bucket='photos', Key='secret', Body=b'only with the key' * 5000, SSECustomerAlgorithm='AES256', SSECustomerKey=key)
s3.delete_bucket(Bucket='gone')
"#
    ));
    let took = caught_up(&primary, Duration::from_secs(30));
    eprintln!("replica caught up {took:?} after the last write");
    let (ps, rs) = (snapshot(&p), snapshot(&r));
    assert_eq!(ps, rs, "primary and replica differ");
    let photos = &rs["photos"]["objects"];
    assert_eq!(photos["over"][0], ps["photos"]["objects"]["over"][0]);
    assert!(
        photos["big"][1].as_str().unwrap().ends_with("-2\""),
        "multipart ETag kept: {}",
        photos["big"]
    );
    assert_eq!(photos["a-copy"][2], "image/png");
    assert_eq!(photos["a.jpg"][3]["camera"], "x100");
    assert!(photos.get("doomed").is_none() && photos.get("d1").is_none());
    assert!(rs.get("gone").is_none());
    assert_eq!(rs["photos"]["cors"][0]["MaxAgeSeconds"], 600);
    // The SSE-C object went over as ciphertext and is served by the replica with the key.
    let out = r.python_ok(&format!(
        "{SSE_KEY}
print(s3.get_object(Bucket='photos', Key='secret', SSECustomerAlgorithm='AES256', SSECustomerKey=key)['Body'].read() == b'only with the key' * 5000)
print(code(s3.get_object, Bucket='photos', Key='secret'))
print(code(s3.get_object, Bucket='photos', Key='secret', SSECustomerAlgorithm='AES256', SSECustomerKey=bytes(32)))
"
    ));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["True", "InvalidRequest", "AccessDenied"]
    );
    let s = status(&primary);
    assert_eq!(s["role"], "primary");
    assert_eq!(s["pending_bytes"], 0);
    assert_eq!(s["oldest_pending_age_ms"], 0);
    assert!(s["last_acknowledged_ms"].as_i64().is_some(), "{s}");
    assert!(s["acknowledged_seq"].as_u64().unwrap() >= 15, "{s}");
    // A primary does not take replicated objects (no loops between two primaries).
    let (code, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        "x-lattice-replica-meta: e30=",
        "--data-binary",
        "x",
        &format!("{}/photos/loop", primary.endpoint()),
    ]);
    assert_ne!(code, 200, "{body}");
}

#[test]
fn writes_go_on_while_the_replica_is_down_and_it_catches_up_when_back() {
    let Some(venv) = venv() else { return };
    let (rdir, pdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut replica = Server::start(rdir.path());
    let primary = primary(pdir.path(), &replica);
    let (p, r) = (Clients::new(&venv, &primary), Clients::new(&venv, &replica));
    p.aws_ok(&["s3", "mb", "s3://logs"]);
    caught_up(&primary, Duration::from_secs(30));
    replica.kill();
    p.python_ok("for i in range(5):\n    s3.put_object(Bucket='logs', Key=f'day-{i}', Body=b'line\\n' * 2000)\n");
    let first = status(&primary);
    assert_eq!(first["replica"], "unreachable", "{first}");
    assert!(first["pending_changes"].as_u64().unwrap() >= 5, "{first}");
    assert!(
        first["pending_bytes"].as_u64().unwrap() >= 5 * 10_000,
        "{first}"
    );
    assert!(
        first["last_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    p.python_ok("s3.put_object(Bucket='logs', Key='day-5', Body=b'more')\ns3.delete_object(Bucket='logs', Key='day-0')\n");
    let later = status(&primary);
    assert!(
        later["pending_changes"].as_u64() > first["pending_changes"].as_u64(),
        "{later}"
    );
    assert!(
        later["oldest_pending_age_ms"].as_u64().unwrap()
            >= first["oldest_pending_age_ms"].as_u64().unwrap() + 1000,
        "{first} then {later}"
    );
    // No object names in the status: it is served without credentials.
    assert!(!later.to_string().contains("day-"), "{later}");
    replica.restart();
    let took = caught_up(&primary, Duration::from_secs(30));
    eprintln!("replica caught up {took:?} after it came back");
    assert_eq!(snapshot(&p), snapshot(&r));
}

const WRITER: &str = r#"
import random
from botocore.config import Config
s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], config=Config(retries={'total_max_attempts': 1}))
rng = random.Random(int(os.environ['SEED']))
v = int(os.environ['FIRST'])
try:
    while True:
        # mostly overwrites of a few keys (order matters), some keys written once (a lost
        # record would leave them missing on the replica)
        k = rng.choice(['k0', 'k1', 'dir/k2', 'k3', 'k4']) if rng.random() < 0.7 else f'once-{v}'
        if rng.random() < 0.2:
            s3.delete_object(Bucket='crash', Key=k)
        else:
            s3.put_object(Bucket='crash', Key=k, Body=(f'{k}:{v}:'.encode() * 100000)[:rng.randint(10, 1500000)], Metadata={'v': str(v)})
        v += 1
except Exception as e:
    print('stopped', type(e).__name__, flush=True)
"#;

#[test]
fn sigkilled_primaries_lose_nothing_and_the_replica_ends_where_the_primary_is() {
    let Some(venv) = venv() else { return };
    let seed: u64 = std::env::var("LATTICE_S3_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut rng = StdRng::seed_from_u64(seed);
    let (rdir, pdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut replica = Server::start(rdir.path());
    let mut primary = primary(pdir.path(), &replica);
    let r = Clients::new(&venv, &replica);
    Clients::new(&venv, &primary).aws_ok(&["s3", "mb", "s3://crash"]);
    for i in 0..8u64 {
        // Every other round the replica is down: the changes wait in the journal across the
        // primary's SIGKILL and restart.
        let replica_down = i % 2 == 1;
        if replica_down {
            replica.kill();
        }
        let p = Clients::new(&venv, &primary);
        let mut cmd = std::process::Command::new(p.venv.join("bin/python"));
        cmd.arg("-c")
            .arg(format!("import os, json, boto3\n{WRITER}"))
            .env("SEED", (seed * 100 + i).to_string())
            .env("FIRST", (i * 10_000).to_string())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("S3_ENDPOINT", primary.endpoint())
            .env("HOME", p.home.path())
            .stdout(std::process::Stdio::null());
        let mut writer = cmd.spawn().expect("writer");
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        primary.kill(); // SIGKILL, while writes are journaled and shipped
        let _ = writer.wait();
        if replica_down {
            let pending = std::fs::read_dir(pdir.path().join("replication"))
                .unwrap()
                .count();
            assert!(pending >= 2, "nothing journaled while the replica was down");
        }
        primary.restart();
        if replica_down {
            replica.restart();
        }
    }
    let took = caught_up(&primary, Duration::from_secs(60));
    eprintln!("replica caught up {took:?} after the last restart");
    let p = Clients::new(&venv, &primary);
    let (ps, rs) = (snapshot(&p), snapshot(&r));
    assert_eq!(
        ps, rs,
        "the replica's final state differs from the primary's"
    );
    assert!(!ps["crash"]["objects"].as_object().unwrap().is_empty());
    // Acknowledged segments were compacted: the journal is small again.
    let segments = std::fs::read_dir(pdir.path().join("replication"))
        .unwrap()
        .count();
    assert!(segments <= 10, "{segments} files in the journal directory");
}

#[test]
fn a_damaged_journal_record_stops_shipping_there_and_says_where() {
    let Some(venv) = venv() else { return };
    let (rdir, pdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut replica = Server::start(rdir.path());
    let mut primary = primary(pdir.path(), &replica);
    replica.kill();
    let p = Clients::new(&venv, &primary);
    p.python_ok("s3.create_bucket(Bucket='jnl')\nfor k in 'abc':\n    s3.put_object(Bucket='jnl', Key=k, Body=k.encode() * 10)\n");
    primary.kill();
    // Damage the third record (the put of 'b') and leave a torn record at the end.
    let dir = pdir.path().join("replication");
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .expect("a segment with records");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mut at = 8;
    for _ in 0..2 {
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    bytes[at + 8 + 3] ^= 0x40;
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
    std::fs::write(&seg, &bytes).unwrap();
    primary.restart();
    replica.restart();
    p.python_ok("s3.put_object(Bucket='jnl', Key='d', Body=b'after')\n");
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&primary);
    let err = s["journal_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no journal_error: {s}"));
    assert!(
        err.contains(&seg.display().to_string()) && err.contains(&format!("at byte {at}")),
        "{err}"
    );
    assert!(s["pending_changes"].as_u64().unwrap() >= 1, "{s}");
    // Shipped up to the damage, nothing after it: 'a' is there, 'd' (written later) is not.
    let r = Clients::new(&venv, &replica);
    let objects = &snapshot(&r)["jnl"]["objects"];
    assert!(objects.get("a").is_some(), "{objects}");
    assert!(
        objects.get("d").is_none(),
        "shipped past the damaged record: {objects}"
    );
    // The documented way out: remove the journal; the next start copies everything.
    primary.kill();
    std::fs::remove_dir_all(&dir).unwrap();
    primary.restart();
    caught_up(&primary, Duration::from_secs(30));
    assert_eq!(snapshot(&p), snapshot(&r));
}

/// Lag on loopback for many small objects: printed, and bounded loosely.
#[test]
fn lag_for_a_burst_of_small_objects() {
    let Some(venv) = venv() else { return };
    let (rdir, pdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = Server::start(rdir.path());
    let primary = primary(pdir.path(), &replica);
    let p = Clients::new(&venv, &primary);
    let start = Instant::now();
    p.python_ok("s3.create_bucket(Bucket='burst')\nfor i in range(200):\n    s3.put_object(Bucket='burst', Key=f'o{i}', Body=os.urandom(64 * 1024))\n");
    let wrote = start.elapsed();
    let lag = caught_up(&primary, Duration::from_secs(60));
    eprintln!("200 x 64 KiB: written in {wrote:?}, replica caught up {lag:?} after the last write");
}
