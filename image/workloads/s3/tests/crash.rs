//! SIGKILL at random points while boto3 overwrites objects with PutObject and completes
//! multipart uploads; after each restart every key must hold exactly its last acknowledged
//! content or the content of the write in flight, never anything partial, and no temporary
//! file may be left. A completed multipart object is a manifest naming its parts' files
//! (blobs): after each restart the bucket's `blobs/` must hold exactly the blobs of the
//! multipart objects the keys hold (none leaked by overwrites or by a crash mid-completion,
//! none missing). Seeded: LATTICE_S3_CRASH_SEED, LATTICE_S3_CRASH_ITERATIONS.

mod common;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const KEYS: [&str; 4] = ["k0", "k1", "dir/k2", "k3"];

/// Content of version `v` of `key`: a recognisable, size-exact pattern.
const GEN: &str = "def gen(k, v, size):\n    p = f'{k}:{v}:'.encode()\n    return (p * (size // len(p) + 1))[:size]\n";

const WRITER: &str = r#"
import io, random, time
from botocore.config import Config

class Slow(io.BytesIO):
    # bodies arrive at ~20 MB/s, so that kills land while the server is writing
    def read(self, n=-1):
        time.sleep(0.003)
        return super().read(65536 if n is None or n < 0 or n > 65536 else n)

s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], config=Config(retries={'total_max_attempts': 1}))
rng = random.Random(int(os.environ['SEED']))
keys = json.loads(os.environ['KEYS'])
v = int(os.environ['FIRST_VERSION'])
try:
    while True:
        k = rng.choice(keys)
        kind = rng.choice(['put', 'put', 'mpu'])
        size = rng.randint(5 * 1024 * 1024 + 1, 6 * 1024 * 1024) if kind == 'mpu' else rng.randint(100, 2 * 1024 * 1024)
        print('attempt', k, v, size, kind, flush=True)
        data = gen(k, v, size)
        if kind == 'put':
            s3.put_object(Bucket='crash', Key=k, Body=Slow(data))
        else:
            up = s3.create_multipart_upload(Bucket='crash', Key=k)['UploadId']
            e1 = s3.upload_part(Bucket='crash', Key=k, UploadId=up, PartNumber=1, Body=Slow(data[:5 * 1024 * 1024]))['ETag']
            e2 = s3.upload_part(Bucket='crash', Key=k, UploadId=up, PartNumber=2, Body=Slow(data[5 * 1024 * 1024:]))['ETag']
            s3.complete_multipart_upload(Bucket='crash', Key=k, UploadId=up, MultipartUpload={'Parts': [
                {'PartNumber': 1, 'ETag': e1}, {'PartNumber': 2, 'ETag': e2}]})
        print('ack', k, v, flush=True)
        v += 1
except Exception as e:
    print('stopped', type(e).__name__, flush=True)
"#;

const VERIFIER: &str = r#"
allowed = json.loads(os.environ['ALLOWED'])
out = {}
for k, versions in allowed.items():
    try:
        data = s3.get_object(Bucket='crash', Key=k)['Body'].read()
    except ClientError as e:
        out[k] = 'error ' + e.response['Error']['Code']
        continue
    match = [v for v, size in versions if data == gen(k, v, size)]
    out[k] = match[0] if match else f'MISMATCH len={len(data)} head={data[:24]!r}'
listed = [o['Key'] for o in s3.list_objects_v2(Bucket='crash').get('Contents', [])]
print(json.dumps({'found': out, 'listed': listed}))
"#;

#[test]
fn sigkill_during_overwrites_and_multipart_completion_leaves_old_or_new() {
    let Some(venv) = venv() else { return };
    let seed: u64 = std::env::var("LATTICE_S3_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261126);
    let iterations: usize = std::env::var("LATTICE_S3_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!(
        "crash test: seed {seed}, {iterations} iterations (LATTICE_S3_CRASH_SEED / _ITERATIONS)"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    let clients = Clients::new(&venv, &server);
    // version 0 of every key, acknowledged
    let setup = format!(
        "{GEN}s3.create_bucket(Bucket='crash')\nfor k in {keys}:\n    s3.put_object(Bucket='crash', Key=k, Body=gen(k, 0, 1000))\n",
        keys = serde_json::to_string(&KEYS).unwrap()
    );
    clients.python_ok(&setup);
    let mut acked: HashMap<String, (u64, u64)> =
        KEYS.iter().map(|k| (k.to_string(), (0, 1000))).collect();
    let (mut killed_in_flight, mut killed_in_multipart, mut in_flight_committed) = (0, 0, 0);

    for it in 0..iterations {
        let clients = Clients::new(&venv, &server);
        let first_version = (it as u64 + 1) * 1_000_000;
        let mut cmd = Command::new(venv.join("bin/python"));
        let prelude = "import os, json, boto3\n";
        cmd.arg("-c").arg(format!("{prelude}{GEN}{WRITER}"));
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("S3_ENDPOINT", server.endpoint())
            .env("SEED", rng.random::<u32>().to_string())
            .env("KEYS", serde_json::to_string(&KEYS).unwrap())
            .env("FIRST_VERSION", first_version.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut writer = cmd.spawn().expect("starting the writer");
        let stdout = writer.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // wait for the first write to begin, then kill at a random moment
        let mut lines = Vec::new();
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => {
                    let begun = l.starts_with("attempt");
                    lines.push(l);
                    if begun {
                        break;
                    }
                }
                Err(e) => panic!("writer did not start within 30 s: {e}"),
            }
        }
        let delay = Duration::from_millis(rng.random_range(50..2500));
        while started.elapsed() < delay {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(5)) {
                lines.push(l);
            }
        }
        server.kill();
        let _ = writer.wait();
        let _ = reader.join();
        lines.extend(rx.try_iter());

        // what was acknowledged, and what was in flight at the kill
        let mut in_flight: Option<(String, u64, u64)> = None;
        let mut in_flight_kind = "";
        for l in &lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["attempt", k, v, size, kind] => {
                    in_flight = Some((k.to_string(), v.parse().unwrap(), size.parse().unwrap()));
                    in_flight_kind = kind;
                }
                ["ack", k, v] => {
                    let (fk, fv, size) = in_flight.take().expect("ack without attempt");
                    assert_eq!((fk.as_str(), fv.to_string().as_str()), (*k, *v));
                    acked.insert(fk, (fv, size));
                }
                _ => {}
            }
        }
        server.restart();
        assert!(
            temp_files(&server.data).is_empty(),
            "temporary files left after restart: {:?}",
            temp_files(&server.data)
        );
        let mut allowed: HashMap<String, Vec<(u64, u64)>> =
            acked.iter().map(|(k, v)| (k.clone(), vec![*v])).collect();
        if let Some((k, v, size)) = &in_flight {
            killed_in_flight += 1;
            if in_flight_kind == "mpu" {
                killed_in_multipart += 1;
            }
            allowed.get_mut(k).unwrap().push((*v, *size));
        }
        let verifier = Clients::new(&venv, &server);
        let out = verifier.python_ok(&format!(
            "{GEN}import json, os\nos.environ['ALLOWED'] = {allowed:?}\n{VERIFIER}",
            allowed = serde_json::to_string(&allowed).unwrap()
        ));
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        let mut expected_blobs = 0;
        for k in KEYS {
            let found = &v["found"][k];
            let version = found.as_u64().unwrap_or_else(|| {
                panic!("iteration {it} (seed {seed}): key {k} holds neither the old nor the new object: {found}; allowed {:?}", allowed[k])
            });
            if let Some((fk, fv, size)) = &in_flight {
                if fk == k && *fv == version {
                    in_flight_committed += 1;
                    acked.insert(k.to_string(), (version, *size));
                }
            }
            assert!(allowed[k].iter().any(|(av, _)| *av == version));
            // multipart versions (two parts) are the only ones over 5 MiB
            let (_, size) = allowed[k].iter().find(|(av, _)| *av == version).unwrap();
            if *size > 5 * 1024 * 1024 {
                expected_blobs += 2;
            }
        }
        let blobs = std::fs::read_dir(server.data.join("buckets/crash/blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(
            blobs, expected_blobs,
            "iteration {it} (seed {seed}): part files under blobs/ are not exactly those of the multipart objects held"
        );
        let mut listed: Vec<String> = v["listed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        let mut expected: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        expected.sort();
        assert_eq!(listed, expected, "iteration {it}: unexpected keys listed");
        drop(clients);
    }
    eprintln!(
        "crash test: {iterations} kills, {killed_in_flight} with a write in flight ({killed_in_multipart} multipart), \
         {in_flight_committed} of those had committed"
    );
    assert!(
        killed_in_flight > 0,
        "no kill landed during a write: the test proved nothing"
    );
}
