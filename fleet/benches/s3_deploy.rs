//! Deploy to first successful PutObject (issue 6; target < 5 s), with the S3 image already on
//! the node's engine.
//!
//! A real `lattice fleet` (gateway included, `--s3-image` from build/test-images.env) and a
//! real latticed (the binary next to this one) on the machine's Docker engine. Each round: the
//! operator runs `lattice deploy s3 bN` (the clock starts just before), reads its credentials
//! (`lattice workload show bN --credentials --json`), and a boto3 process started beforehand
//! (imports done, so Python's start-up is not measured) tries CreateBucket + PutObject through
//! the gateway over HTTPS every 50 ms, without botocore's retries, until both succeed. Then the
//! workload is deleted and the next round waits until its container is gone. `ROUNDS` sets the
//! count (default 5). Needs root, Docker, the S3 image (`scripts/test-images`) and boto3 in
//! build/pyenv (`scripts/test`).
//!
//! `cargo build --release -p latticed && cargo bench -p lattice-fleet --bench s3_deploy`.
//! Writes `target/bench/s3_deploy.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::docker::*;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PUTTER: &str = r#"
import sys, time, boto3, botocore
from botocore.config import Config
ca = sys.argv[1]
print("ready", flush=True)
for line in sys.stdin:
    endpoint, key, secret = line.split()
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                 connect_timeout=2, read_timeout=5)
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                      aws_secret_access_key=secret, region_name="us-east-1",
                      verify=ca, config=cfg)
    tries, bucket = 0, False
    while True:
        tries += 1
        try:
            if not bucket:
                s3.create_bucket(Bucket="first")
                bucket = True
            s3.put_object(Bucket="first", Key="hello.txt", Body=b"hello")
            break
        except Exception:
            time.sleep(0.05)
    print(f"ok {tries}", flush=True)
"#;

fn main() {
    assert!(can_run_workloads(), "needs root and Docker");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = std::fs::read_to_string(root.join("build/test-images.env"))
        .expect("build/test-images.env (run scripts/test-images)");
    let image = env
        .lines()
        .find_map(|l| l.strip_prefix("LATTICE_S3_IMAGE="))
        .expect("LATTICE_S3_IMAGE in build/test-images.env")
        .trim()
        .to_string();
    let python = root.join("build/pyenv/bin/python");
    assert!(python.is_file(), "{} (scripts/test)", python.display());
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // "Image present": on the engine before the clock starts.
    let pulled = Command::new("docker").args(["pull", "-q", &image]).output();
    assert!(
        pulled.is_ok_and(|o| o.status.success()),
        "docker pull {image}"
    );

    let dir = tempfile::tempdir().unwrap();
    let apps_https = format!("127.0.0.1:{}", free_port());
    let apps_http = format!("127.0.0.1:{}", free_port());
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[
            "--s3-image",
            &image,
            "--apps-https",
            &apps_https,
            "--apps-http",
            &apps_http,
        ],
    );
    let n = Node::start(&dir.path().join("node"), &f.provisioning("bench"));
    let id = wait_for(20, "registration", || n.node_id());
    let _cleanup = Cleanup(id.clone());
    wait_for(20, "node online", || {
        (f.node(&id)["online"] == true).then_some(())
    });

    let mut putter = Command::new(&python)
        .arg("-c")
        .arg(PUTTER)
        .arg(f.data.join("apps-cert.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut to_putter = putter.stdin.take().unwrap();
    let mut from_putter = BufReader::new(putter.stdout.take().unwrap()).lines();
    assert_eq!(from_putter.next().unwrap().unwrap(), "ready");

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut samples = Vec::new();
    for i in 0..rounds {
        let name = format!("b{i}");
        let t0 = Instant::now();
        f.cli_ok(&["deploy", "s3", &name, "--json"]);
        let deployed = t0.elapsed();
        let out = f.cli_ok(&["workload", "show", &name, "--credentials", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let c = &v["credentials"];
        writeln!(
            to_putter,
            "{} {} {}",
            v["endpoint"].as_str().expect("endpoint (gateway running)"),
            c["access_key_id"].as_str().unwrap(),
            c["secret_access_key"].as_str().unwrap()
        )
        .unwrap();
        let line = from_putter.next().unwrap().unwrap();
        let first_put = t0.elapsed();
        let tries: u32 = line.strip_prefix("ok ").unwrap().parse().unwrap();
        println!(
            "round {i}: deploy answered {:.0} ms, first PutObject {:.0} ms ({tries} tries)",
            deployed.as_secs_f64() * 1e3,
            first_put.as_secs_f64() * 1e3
        );
        samples.push(serde_json::json!({
            "deploy_answered_ms": deployed.as_millis() as u64,
            "first_put_ms": first_put.as_millis() as u64,
            "tries": tries,
        }));
        f.cli_ok(&["delete", &name]);
        wait_for(60, "container removed", || {
            containers_of(&id).is_empty().then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(to_putter);
    let _ = putter.wait();

    let mut firsts: Vec<u64> = samples
        .iter()
        .map(|s| s["first_put_ms"].as_u64().unwrap())
        .collect();
    firsts.sort_unstable();
    let median = firsts[firsts.len() / 2];
    let max = *firsts.last().unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "deploy to first PutObject: median {median} ms, max {max} ms over {rounds} rounds (target < 5000 ms); load {}",
        load.trim()
    );
    let result = serde_json::json!({
        "what": "lattice deploy s3 to first successful CreateBucket+PutObject through the gateway (HTTPS), image present",
        "rounds": rounds,
        "median_first_put_ms": median,
        "max_first_put_ms": max,
        "target_ms": 5000,
        "samples": samples,
        "loadavg_before": load_before.trim(),
        "loadavg_after": load.trim(),
        "image": image,
    });
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("s3_deploy.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("wrote {}", out.display());
    drop(n);
}
