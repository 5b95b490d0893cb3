//! S3 throughput through the gateway (issue 6): the aws CLI against one `s3` workload, reached
//! through the fleet's gateway over HTTPS and directly on its container's address on the
//! Docker bridge (plain HTTP, port 9000, no gateway, no tunnel), and a plain file copy on the
//! same disk in the same run. Prints the figures and both ratios (gateway / plain copy,
//! gateway / direct).
//!
//! A real `lattice fleet` (gateway included, `--s3-image` from build/test-images.env, or
//! `LATTICE_S3_IMAGE`) and a real latticed (the binary next to this one) on the machine's
//! Docker engine; the operator deploys `lattice deploy s3 tput --plan PLAN` (`PLAN`, default
//! `medium`: half a CPU, 512 MiB, a 10 GiB volume (`large` needs 50 GiB free for its volume); the server's CPU limit applies to both paths alike). Per object size
//! (64 × 1 MiB, 4 × 64 MiB), `RUNS` rounds (default 3), each: `aws s3 cp --recursive` up and down
//! through the gateway, the same direct, and the plain copy (read + write + fsync of each file,
//! 1 MiB buffers); medians. Every download is compared with the source. Needs root, Docker,
//! the S3 image (`scripts/test-images`) and the aws CLI in build/pyenv (`scripts/test`).
//!
//! `cargo build --release -p latticed && cargo bench -p lattice-fleet --bench s3_throughput`.
//! Writes `target/bench/s3_throughput.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::docker::*;
use common::*;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The aws CLI with the workload's keys; `ca` for the gateway's certificate.
struct Aws {
    bin: PathBuf,
    key: String,
    secret: String,
    ca: PathBuf,
    home: tempfile::TempDir,
}

impl Aws {
    fn run(&self, endpoint: &str, args: &[&str]) -> Duration {
        let t = Instant::now();
        let out = Command::new(&self.bin)
            .arg("--endpoint-url")
            .arg(endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
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
            .expect("running aws");
        assert!(
            out.status.success(),
            "aws {args:?} at {endpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    }
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

fn same_files(a: &Path, b: &Path) -> bool {
    std::fs::read_dir(a).unwrap().all(|e| {
        let p = e.unwrap().path();
        std::fs::read(&p).ok() == std::fs::read(b.join(p.file_name().unwrap())).ok()
    })
}

/// Where a process's CPU is accounted: cgroup v2 (`0::PATH`) or v1 (the `cpu` and `cpuacct`
/// hierarchies).
enum Cgroup {
    V2(PathBuf),
    V1 { cpu: PathBuf, cpuacct: PathBuf },
}

impl Cgroup {
    fn of(pid: &str) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let under = |mount: &str, p: &str| {
            Path::new("/sys/fs/cgroup")
                .join(mount)
                .join(p.trim_start_matches('/'))
        };
        let v1 = |name: &str| {
            text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls
                    .split(',')
                    .any(|c| c == name)
                    .then(|| under(name, path))
            })
        };
        match (v1("cpu"), v1("cpuacct")) {
            (Some(cpu), Some(cpuacct)) if cpu.is_dir() => Some(Cgroup::V1 { cpu, cpuacct }),
            _ => text
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| Cgroup::V2(under("", p.trim()))),
        }
    }

    /// Microseconds of CPU used, and microseconds throttled by the CPU limit.
    fn stat(&self) -> (u64, u64) {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        match self {
            Cgroup::V2(dir) => {
                let t = read(dir.join("cpu.stat"));
                (field(&t, "usage_usec "), field(&t, "throttled_usec "))
            }
            Cgroup::V1 { cpu, cpuacct } => {
                let used: u64 = read(cpuacct.join("cpuacct.usage"))
                    .trim()
                    .parse()
                    .unwrap_or(0);
                let t = read(cpu.join("cpu.stat"));
                (used / 1000, field(&t, "throttled_time ") / 1000)
            }
        }
    }

    /// The CPU limit as "quota period" (microseconds).
    fn limit(&self) -> String {
        let read = |p: PathBuf| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        match self {
            Cgroup::V2(dir) => read(dir.join("cpu.max")),
            Cgroup::V1 { cpu, .. } => format!(
                "{} {}",
                read(cpu.join("cpu.cfs_quota_us")),
                read(cpu.join("cpu.cfs_period_us"))
            ),
        }
    }
}

/// CPU seconds (user + system) a process has used, all its threads.
fn proc_cpu(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 of stat (utime, stime), in clock ticks (100 per second on Linux)
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of this process's children that have been waited for (the aws CLI runs).
fn children_cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // cutime, cstime
    (ticks(13) + ticks(14)) / 100.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() {
    assert!(can_run_workloads(), "needs root and Docker");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let image = std::env::var("LATTICE_S3_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| {
            let env = std::fs::read_to_string(root.join("build/test-images.env"))
                .expect("build/test-images.env (run scripts/test-images)");
            env.lines()
                .find_map(|l| l.strip_prefix("LATTICE_S3_IMAGE="))
                .expect("LATTICE_S3_IMAGE in build/test-images.env")
                .trim()
                .to_string()
        });
    let venv = std::env::var_os("LATTICE_S3_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("build/pyenv"));
    let aws_bin = venv.join("bin/aws");
    assert!(aws_bin.is_file(), "{} (scripts/test)", aws_bin.display());
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let plan = std::env::var("PLAN").unwrap_or_else(|_| "medium".into());
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

    f.cli_ok(&["deploy", "s3", "tput", "--plan", &plan, "--bucket", "bench"]);
    let out = f.cli_ok(&["workload", "show", "tput", "--credentials", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let gateway = v["endpoint"]
        .as_str()
        .expect("endpoint (gateway running)")
        .to_string();
    let c = &v["credentials"];
    let aws = Aws {
        bin: aws_bin,
        key: c["access_key_id"].as_str().unwrap().to_string(),
        secret: c["secret_access_key"].as_str().unwrap().to_string(),
        ca: f.data.join("apps-cert.pem"),
        home: tempfile::tempdir().unwrap(),
    };
    // The same server without the gateway: its container's address on the node's bridge.
    let container = wait_for(60, "the workload's container", || {
        containers_of(&id).lines().next().map(str::to_owned)
    });
    let ip = wait_for(30, "the container's address", || {
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &container,
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .map(str::to_owned)
    });
    let direct = format!("http://{ip}:9000");
    // The server's cgroup, to read what CPU it used and how long its limit held it back.
    let pid = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &container])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cgroup = Cgroup::of(&pid).expect("the server's cgroup");
    let cpu_max = cgroup.limit();
    println!("server CPU limit (quota period, µs): {cpu_max}");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let probe = work.join("probe");
    std::fs::write(&probe, b"probe").unwrap();
    // running and routed: the bucket made at deploy answers on both paths
    for ep in [&gateway, &direct] {
        wait_for(60, "the server answering", || {
            let out = Command::new(&aws.bin)
                .arg("--endpoint-url")
                .arg(ep)
                .args(["s3", "ls", "s3://bench"])
                .env("AWS_ACCESS_KEY_ID", &aws.key)
                .env("AWS_SECRET_ACCESS_KEY", &aws.secret)
                .env("AWS_CA_BUNDLE", &aws.ca)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_CONFIG_FILE", aws.home.path().join("config"))
                .env(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    aws.home.path().join("credentials"),
                )
                .env("HOME", aws.home.path())
                .output()
                .ok()?;
            if out.status.success() {
                Some(())
            } else {
                std::thread::sleep(Duration::from_millis(200));
                None
            }
        });
    }
    println!("gateway {gateway}, direct {direct} (container {container}), plan {plan}");

    let (fleet_pid, node_pid) = (f.child.id(), n.child.id());
    let load_before = loadavg();
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
        let mut figures = serde_json::Map::new();
        // server CPU seconds and throttled seconds per transfer, by "path op"
        let mut server_cpu: std::collections::BTreeMap<String, Vec<[f64; 5]>> = Default::default();
        let mut put_get = |path: &str, ep: &str, run: usize| -> (f64, f64) {
            let dst = format!("s3://bench/{label}/{path}/run{run}/");
            let mut timed = |op: &str, args: &[&str]| -> Duration {
                let (u0, t0) = cgroup.stat();
                let (f0, n0, c0) = (proc_cpu(fleet_pid), proc_cpu(node_pid), children_cpu());
                let took = aws.run(ep, args);
                let (u1, t1) = cgroup.stat();
                let (f1, n1, c1) = (proc_cpu(fleet_pid), proc_cpu(node_pid), children_cpu());
                server_cpu.entry(format!("{path} {op}")).or_default().push([
                    (u1 - u0) as f64 / 1e6,
                    (t1 - t0) as f64 / 1e6,
                    f1 - f0,
                    n1 - n0,
                    c1 - c0,
                ]);
                took
            };
            let put = total_mib
                / timed(
                    "put",
                    &[
                        "s3",
                        "cp",
                        "--recursive",
                        "--quiet",
                        src.to_str().unwrap(),
                        &dst,
                    ],
                )
                .as_secs_f64();
            let down = work.join(format!("down-{label}"));
            let _ = std::fs::remove_dir_all(&down);
            let get = total_mib
                / timed(
                    "get",
                    &[
                        "s3",
                        "cp",
                        "--recursive",
                        "--quiet",
                        &dst,
                        down.to_str().unwrap(),
                    ],
                )
                .as_secs_f64();
            assert!(same_files(&src, &down), "{path} {label}: other bytes");
            // keep the volume small: the next run writes new keys
            aws.run(ep, &["s3", "rm", "--recursive", "--quiet", &dst]);
            (put, get)
        };
        let (mut gput, mut gget, mut dput, mut dget, mut copy) =
            (vec![], vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            let (p, g) = put_get("gateway", &gateway, run);
            gput.push(p);
            gget.push(g);
            let (p, g) = put_get("direct", &direct, run);
            dput.push(p);
            dget.push(g);
            copy.push(
                total_mib / plain_copy(&src, &work.join(format!("copy-{label}"))).as_secs_f64(),
            );
        }
        let (gput, gget, dput, dget, copy) = (
            median(gput),
            median(gget),
            median(dput),
            median(dget),
            median(copy),
        );
        println!(
            "s3 {label:>5} x{count:<2} aws s3 cp: gateway PUT {gput:6.1} GET {gget:6.1} MiB/s | direct PUT {dput:6.1} GET {dget:6.1} MiB/s | plain copy {copy:7.1} MiB/s"
        );
        println!(
            "             ratios: gateway/plain copy PUT {:.2} GET {:.2} | gateway/direct PUT {:.2} GET {:.2} | direct/plain copy PUT {:.2} GET {:.2}",
            gput / copy,
            gget / copy,
            gput / dput,
            gget / dget,
            dput / copy,
            dget / copy
        );
        for (k, v) in [
            ("gateway_put_mib_s", gput),
            ("gateway_get_mib_s", gget),
            ("direct_put_mib_s", dput),
            ("direct_get_mib_s", dget),
            ("plain_copy_mib_s", copy),
            ("gateway_put_ratio_vs_copy", gput / copy),
            ("gateway_get_ratio_vs_copy", gget / copy),
            ("gateway_put_ratio_vs_direct", gput / dput),
            ("gateway_get_ratio_vs_direct", gget / dget),
            ("direct_put_ratio_vs_copy", dput / copy),
            ("direct_get_ratio_vs_copy", dget / copy),
        ] {
            figures.insert(k.into(), serde_json::json!(v));
        }
        // CPU per transfer (medians): the server's cgroup (and the time its plan's limit held it
        // back), the fleet process (the gateway: TLS), latticed (the tunnel), the aws CLI
        let mut cpu_rows = serde_json::Map::new();
        for (what, v) in &server_cpu {
            let m = |i: usize| median(v.iter().map(|x| x[i]).collect());
            let (used, throttled, fleet, node, client) = (m(0), m(1), m(2), m(3), m(4));
            println!(
                "             CPU-s per transfer, {what}: server {used:.2} (throttled {throttled:.2} s), fleet+gateway {fleet:.2}, latticed {node:.2}, aws CLI {client:.2}"
            );
            cpu_rows.insert(
                what.clone(),
                serde_json::json!({"server_cpu_s": used, "server_throttled_s": throttled,
                    "fleet_gateway_cpu_s": fleet, "latticed_cpu_s": node, "aws_cli_cpu_s": client}),
            );
        }
        figures.insert(
            "cpu_per_transfer".into(),
            serde_json::Value::Object(cpu_rows),
        );
        figures.insert("object".into(), serde_json::json!(label));
        figures.insert("objects".into(), serde_json::json!(count));
        figures.insert("runs".into(), serde_json::json!(runs));
        rows.push(serde_json::Value::Object(figures));
        let _ = std::fs::remove_dir_all(&src);
    }
    let load = loadavg();
    println!("load average before {load_before}, after {load}");
    let result = serde_json::json!({
        "what": "aws s3 cp --recursive (aws CLI from build/pyenv, defaults) to one s3 workload: through the gateway (HTTPS) and directly to its container (plain HTTP on the Docker bridge); plain copy = read + write + fsync per file on the same disk",
        "plan": plan,
        "server_cpu_max": cpu_max.trim(),
        "throughput": rows,
        "loadavg_before": load_before,
        "loadavg_after": load,
        "image": image,
    });
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("s3_throughput.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("wrote {}", out.display());
    f.cli_ok(&["delete", "tput"]);
    drop(n);
}
