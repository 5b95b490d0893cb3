//! Throughput of the aws CLI (and of curl with presigned URLs, to see the server without the
//! Python client) against `lattice-s3` directly (no gateway), as a ratio against a
//! plain file copy (read, write, fsync) on the same disk in the same run; and the latency of
//! small GETs with boto3 (TCP_NODELAY). Prints the figures and writes target/bench/s3.json.
//!
//! `cargo bench -p lattice-s3 --bench s3` (needs build/pyenv from scripts/test).
//!
//! Also one 64 MiB object PUT and GET plain and with SSE-C (aws CLI `--sse-c`, and curl with
//! presigned URLs and the SSE-C headers), plus the segment encryption alone in-process.
//! `LATTICE_S3_BENCH_ONLY=sse-c` runs only that part.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "AKIDBENCH";
const SECRET_KEY: &str = "bench-secret-0123456789";
const RUNS: usize = 3;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .canonicalize()
        .expect("workspace root")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-s3"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("LATTICE_S3_ACCESS_KEY", ACCESS_KEY)
        .env("LATTICE_S3_SECRET_KEY", SECRET_KEY)
        .env("RUST_LOG", "warn,s3s::ops=off")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting lattice-s3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reading the address");
    let addr = line
        .trim()
        .strip_prefix("lattice-s3 listening on ")
        .expect("listening line")
        .to_owned();
    Server(child, format!("http://{addr}"))
}

fn aws(venv: &Path, endpoint: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(venv.join("bin/aws"))
        .arg("--endpoint-url")
        .arg(endpoint)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("running aws");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// read + write + fsync of every file of `src` into `dst`: what a durable PUT has to do at least.
fn plain_copy(src: &Path, dst: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(dst).unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let mut r = std::fs::File::open(&p).unwrap();
        let mut w = std::fs::File::create(dst.join(p.file_name().unwrap())).unwrap();
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).unwrap();
        }
        w.sync_all().unwrap();
    }
    std::fs::File::open(dst).unwrap().sync_all().unwrap();
    t.elapsed()
}

/// Presigned SigV4 URLs (boto3) for `method` ("put_object" / "get_object") of `keys`.
fn presign(venv: &Path, endpoint: &str, method: &str, keys: &[String]) -> Vec<String> {
    let script = "import os, json, boto3\n\
        from botocore.config import Config\n\
        s3 = boto3.client('s3', endpoint_url=os.environ['EP'], config=Config(signature_version='s3v4'))\n\
        keys = json.loads(os.environ['KEYS'])\n\
        print(json.dumps([s3.generate_presigned_url(os.environ['METHOD'], Params={'Bucket': 'bench', 'Key': k}, ExpiresIn=3600) for k in keys]))\n";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .env("EP", endpoint)
        .env("KEYS", serde_json::to_string(keys).unwrap())
        .env("METHOD", method)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "presign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("presigned URLs")
}

/// One curl process, up to 8 transfers at a time: uploads (`-T file URL`) or downloads.
fn curl_parallel(pairs: &[(PathBuf, String)], upload: bool) -> Duration {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--parallel", "--parallel-max", "8"]);
    for (file, url) in pairs {
        if upload {
            cmd.arg("-T").arg(file).arg(url);
        } else {
            cmd.arg("-o").arg(file).arg(url);
        }
    }
    let t = Instant::now();
    let out = cmd.output().expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// 64 MiB, one object: PUT and GET MiB/s, plain and with SSE-C, for the CLI and for curl.
fn sse_c_rows(venv: &Path, endpoint: &str, work: &Path) -> serde_json::Value {
    use base64::Engine as _;
    const SIZE: usize = 64 << 20;
    let mib = (SIZE >> 20) as f64;
    let src = work.join("sse-src");
    let data: Vec<u8> = (0..SIZE).map(|j| ((j * 31) % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let raw: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(73).wrapping_add(5))
        .collect();
    let key_file = work.join("sse-key.bin");
    std::fs::write(&key_file, &raw).unwrap();
    let key_arg = format!("fileb://{}", key_file.display());
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_b64 = b64.encode(&raw);
    let md5_b64 = b64.encode(<s3s::crypto::Md5 as s3s::crypto::Checksum>::checksum(&raw));
    let down = work.join("sse-down");
    let mut rows = Vec::new();
    for (mode, sse) in [("plain", false), ("sse-c", true)] {
        let flags: Vec<&str> = if sse {
            vec!["--sse-c", "AES256", "--sse-c-key", &key_arg]
        } else {
            vec![]
        };
        let (mut put, mut get, mut cput, mut cget) = (vec![], vec![], vec![], vec![]);
        for run in 0..RUNS {
            let dst = format!("s3://bench/sse/{mode}/run{run}");
            let mut args = vec!["s3", "cp", "--quiet"];
            args.extend(&flags);
            let up = [args.clone(), vec![src.to_str().unwrap(), &dst]].concat();
            put.push(mib / aws(venv, endpoint, &up).as_secs_f64());
            let _ = std::fs::remove_file(&down);
            let dn = [args.clone(), vec![&dst, down.to_str().unwrap()]].concat();
            get.push(mib / aws(venv, endpoint, &dn).as_secs_f64());
            assert!(std::fs::read(&down).unwrap() == data, "{mode}: other bytes");

            // curl: one PUT, one GET, presigned with the SSE-C headers signed
            let key = format!("sse/{mode}/curl{run}");
            let extra = if sse { "sse" } else { "" };
            let urls = presign_sse(venv, endpoint, &key, extra, &raw);
            let mut headers = Vec::new();
            if sse {
                headers = vec![
                    "x-amz-server-side-encryption-customer-algorithm: AES256".to_owned(),
                    format!("x-amz-server-side-encryption-customer-key: {key_b64}"),
                    format!("x-amz-server-side-encryption-customer-key-MD5: {md5_b64}"),
                ];
            }
            cput.push(mib / curl_one(&urls[0], Some(&src), None, &headers).as_secs_f64());
            let _ = std::fs::remove_file(&down);
            cget.push(mib / curl_one(&urls[1], None, Some(&down), &headers).as_secs_f64());
            assert!(
                std::fs::read(&down).unwrap() == data,
                "{mode} curl: other bytes"
            );
        }
        let (put, get, cput, cget) = (median(put), median(get), median(cput), median(cget));
        println!(
            "s3 64MiB x1 {mode:>5}: aws s3 cp PUT {put:7.1} MiB/s GET {get:7.1} MiB/s | curl PUT {cput:7.1} MiB/s GET {cget:7.1} MiB/s"
        );
        rows.push(serde_json::json!({
            "mode": mode, "runs": RUNS, "object_mib": mib,
            "cli_put_mib_s": put, "cli_get_mib_s": get,
            "curl_put_mib_s": cput, "curl_get_mib_s": cget,
        }));
    }
    // the segment encryption and decryption alone, in memory
    let k = lattice_s3::sse::CustomerKey::from_bytes(raw.as_slice().try_into().unwrap());
    let (mut enc, mut dec) = (vec![], vec![]);
    for _ in 0..RUNS {
        let mut sink = std::io::Cursor::new(Vec::with_capacity(SIZE + SIZE / 1000));
        let t = Instant::now();
        let mut e = lattice_s3::sse::Encryptor::new(&k);
        for c in data.chunks(1 << 20) {
            e.write(&mut sink, c).unwrap();
        }
        let extent = e.finish(&mut sink).unwrap();
        enc.push(mib / t.elapsed().as_secs_f64());
        let f = work.join("sse-cipher");
        std::fs::write(&f, sink.get_ref()).unwrap();
        let meta = lattice_s3::sse::SseMeta {
            check: k.new_check(),
            extents: vec![extent],
        };
        let t = Instant::now();
        let mut d = lattice_s3::sse::Decryptor::new(
            std::fs::File::open(&f).unwrap(),
            0,
            k.clone(),
            &meta,
            0,
            SIZE as u64,
        );
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0usize;
        loop {
            let r = d.read(&mut buf).unwrap();
            if r == 0 {
                break;
            }
            n += r;
        }
        assert_eq!(n, SIZE);
        dec.push(mib / t.elapsed().as_secs_f64());
    }
    let (enc, dec) = (median(enc), median(dec));
    println!("s3 SSE-C segments alone (AES-256-GCM, 64 KiB): encrypt {enc:7.1} MiB/s decrypt {dec:7.1} MiB/s (decrypt reads the page cache)");
    serde_json::json!({"rows": rows, "encrypt_mib_s": enc, "decrypt_mib_s": dec})
}

/// Presigned PUT and GET URLs for `key`; with `sse` the SSE-C headers are signed into them.
fn presign_sse(venv: &Path, endpoint: &str, key: &str, sse: &str, raw: &[u8]) -> Vec<String> {
    let script = "import os, json, boto3\n\
        from botocore.config import Config\n\
        s3 = boto3.client('s3', endpoint_url=os.environ['EP'], config=Config(signature_version='s3v4'))\n\
        p = {'Bucket': 'bench', 'Key': os.environ['KEY']}\n\
        if os.environ['SSE']:\n    p.update(SSECustomerAlgorithm='AES256', SSECustomerKey=bytes.fromhex(os.environ['RAW']))\n\
        print(json.dumps([s3.generate_presigned_url(m, Params=p, ExpiresIn=3600) for m in ['put_object', 'get_object']]))\n";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .env("EP", endpoint)
        .env("KEY", key)
        .env("SSE", sse)
        .env(
            "RAW",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        )
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "presign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("presigned URLs")
}

/// One curl transfer: upload `up` or download to `down`, with `headers`.
fn curl_one(url: &str, up: Option<&Path>, down: Option<&Path>, headers: &[String]) -> Duration {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail"]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(f) = up {
        cmd.arg("-T").arg(f);
    }
    if let Some(f) = down {
        cmd.arg("-o").arg(f);
    }
    cmd.arg(url);
    let t = Instant::now();
    let out = cmd.output().expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn main() {
    let venv = std::env::var_os("LATTICE_S3_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/pyenv"));
    if !venv.join("bin/aws").is_file() {
        eprintln!(
            "bench s3: {} has no aws CLI; run scripts/test (or its venv step) first",
            venv.display()
        );
        std::process::exit(1);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let out_dir = target.join("bench");
    let work = out_dir.join("s3-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let server = start(&work.join("data"));
    let endpoint = server.1.clone();
    aws(&venv, &endpoint, &["s3", "mb", "s3://bench"]);

    let sse_c = sse_c_rows(&venv, &endpoint, &work);
    if std::env::var("LATTICE_S3_BENCH_ONLY").as_deref() == Ok("sse-c") {
        let json = serde_json::json!({"bench": "s3", "sse_c_64mib": sse_c});
        std::fs::write(
            out_dir.join("s3-sse-c.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
        println!("wrote {}", out_dir.join("s3-sse-c.json").display());
        drop(server);
        let _ = std::fs::remove_dir_all(&work);
        return;
    }

    let mut rows = Vec::new();
    for (label, size, count) in [
        ("1MiB", 1usize << 20, 64usize),
        ("64MiB", 64usize << 20, 4usize),
    ] {
        let src = work.join(format!("src-{label}"));
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..count {
            let data: Vec<u8> = (0..size).map(|j| ((j * 31 + i * 7) % 251) as u8).collect();
            std::fs::write(src.join(format!("obj{i:03}")), data).unwrap();
        }
        let total_mib = (size * count) as f64 / (1024.0 * 1024.0);
        let (mut put, mut get, mut copy) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS {
            let dst = format!("s3://bench/{label}/run{run}/");
            put.push(
                total_mib
                    / aws(
                        &venv,
                        &endpoint,
                        &[
                            "s3",
                            "cp",
                            "--recursive",
                            "--quiet",
                            src.to_str().unwrap(),
                            &dst,
                        ],
                    )
                    .as_secs_f64(),
            );
            let down = work.join(format!("down-{label}"));
            let _ = std::fs::remove_dir_all(&down);
            get.push(
                total_mib
                    / aws(
                        &venv,
                        &endpoint,
                        &[
                            "s3",
                            "cp",
                            "--recursive",
                            "--quiet",
                            &dst,
                            down.to_str().unwrap(),
                        ],
                    )
                    .as_secs_f64(),
            );
            copy.push(
                total_mib / plain_copy(&src, &work.join(format!("copy-{label}"))).as_secs_f64(),
            );
        }
        // the same objects with curl and presigned URLs: the server without the Python client
        let (mut cput, mut cget) = (Vec::new(), Vec::new());
        let files: Vec<PathBuf> = (0..count).map(|i| src.join(format!("obj{i:03}"))).collect();
        for run in 0..RUNS {
            let keys: Vec<String> = (0..count)
                .map(|i| format!("curl-{label}/run{run}/obj{i:03}"))
                .collect();
            let puts = presign(&venv, &endpoint, "put_object", &keys);
            let pairs: Vec<(PathBuf, String)> = files.iter().cloned().zip(puts).collect();
            cput.push(total_mib / curl_parallel(&pairs, true).as_secs_f64());
            let down = work.join(format!("curl-down-{label}"));
            let _ = std::fs::remove_dir_all(&down);
            std::fs::create_dir_all(&down).unwrap();
            let gets = presign(&venv, &endpoint, "get_object", &keys);
            let pairs: Vec<(PathBuf, String)> = (0..count)
                .map(|i| down.join(format!("obj{i:03}")))
                .zip(gets)
                .collect();
            cget.push(total_mib / curl_parallel(&pairs, false).as_secs_f64());
            assert_eq!(
                std::fs::read(&pairs[0].0).unwrap(),
                std::fs::read(&files[0]).unwrap(),
                "curl GET returned other bytes"
            );
        }
        let (cput, cget) = (median(cput), median(cget));
        let (put, get, copy) = (median(put), median(get), median(copy));
        println!(
            "s3 {label:>6} x{count:<3} curl (presigned, 8 at a time): PUT {cput:7.1} MiB/s  GET {cget:7.1} MiB/s | ratio PUT {:.2} GET {:.2}",
            cput / copy,
            cget / copy
        );
        println!(
            "s3 {label:>6} x{count:<3} aws s3 cp: PUT {put:7.1} MiB/s  GET {get:7.1} MiB/s  | plain copy {copy:7.1} MiB/s | ratio PUT {:.2} GET {:.2}",
            put / copy,
            get / copy
        );
        rows.push(serde_json::json!({
            "object": label, "objects": count, "runs": RUNS,
            "put_mib_s": put, "get_mib_s": get, "plain_copy_mib_s": copy,
            "put_ratio": put / copy, "get_ratio": get / copy,
            "curl_put_mib_s": cput, "curl_get_mib_s": cget,
            "curl_put_ratio": cput / copy, "curl_get_ratio": cget / copy,
        }));
    }

    // small GETs: one boto3 client, 200 GETs of a 1 KiB object
    let script = "import os, time, boto3\n\
        s3 = boto3.client('s3', endpoint_url=os.environ['EP'])\n\
        s3.put_object(Bucket='bench', Key='small', Body=b'x' * 1024)\n\
        t = []\n\
        for _ in range(200):\n    a = time.perf_counter(); s3.get_object(Bucket='bench', Key='small')['Body'].read(); t.append(time.perf_counter() - a)\n\
        t.sort(); print(t[len(t) // 2] * 1000, t[int(len(t) * 0.99)] * 1000)\n";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .env("EP", &endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text
        .split_whitespace()
        .filter_map(|s| s.parse::<f64>().ok());
    let (p50, p99) = (it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN));
    println!("s3 small GET (1 KiB, boto3, 200x): p50 {p50:.2} ms  p99 {p99:.2} ms");

    let json = serde_json::json!({
        "bench": "s3",
        "client": "aws CLI (s3 cp --recursive) from build/pyenv, and curl with presigned URLs (--parallel, 8); server reached directly on loopback",
        "plain_copy": "read + write + fsync per file, same disk",
        "throughput": rows,
        "small_get_ms": {"p50": p50, "p99": p99},
        "sse_c_64mib": sse_c,
    });
    std::fs::write(
        out_dir.join("s3.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("wrote {}", out_dir.join("s3.json").display());
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}
