//! Test harness: the real `lattice-s3` binary on a loopback port with a temporary data
//! directory, and the real clients (aws CLI, boto3) from the venv `scripts/test` installs in
//! build/pyenv. Without that venv the tests skip with a message, unless CI is set: then they
//! fail.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIDLATTICETEST";
pub const SECRET_KEY: &str = "test-secret-0123456789";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .canonicalize()
        .expect("workspace root")
}

/// The venv with `aws` and boto3, or `None` (after saying why) when the test should skip.
pub fn venv() -> Option<PathBuf> {
    let venv = std::env::var_os("LATTICE_S3_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/pyenv"));
    let ok = venv.join("bin/aws").is_file()
        && Command::new(venv.join("bin/python"))
            .args(["-c", "import boto3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(venv);
    }
    let msg = format!(
        "the aws CLI and boto3 are not installed in {} (scripts/test installs them)",
        venv.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
    args: Vec<String>,
    access_key: String,
    secret_key: String,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, ACCESS_KEY, SECRET_KEY, &[])
    }

    pub fn start_with(data: &Path, access_key: &str, secret_key: &str, extra: &[&str]) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(data, access_key, secret_key, &args, "127.0.0.1:0");
        Server {
            child,
            addr,
            data: data.to_owned(),
            args,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    /// Started with `RUST_LOG=rust_log` and its stderr written to `log`.
    pub fn start_logging(data: &Path, rust_log: &str, log: &Path) -> Server {
        let stderr = std::fs::File::create(log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-s3"))
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("LATTICE_S3_ACCESS_KEY", ACCESS_KEY)
            .env("LATTICE_S3_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting lattice-s3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reading the address");
        let addr = line
            .trim()
            .strip_prefix("lattice-s3 listening on ")
            .unwrap_or_else(|| panic!("lattice-s3 did not start: {line:?}"))
            .to_owned();
        Server {
            child,
            addr,
            data: data.to_owned(),
            args: Vec::new(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // the port may take a moment to be free again
            match try_spawn(
                &self.data,
                &self.access_key,
                &self.secret_key,
                &self.args,
                &self.addr,
            ) {
                Ok((child, addr)) => {
                    self.child = child;
                    self.addr = addr;
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("restarting lattice-s3: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(data: &Path, ak: &str, sk: &str, args: &[String], listen: &str) -> (Child, String) {
    try_spawn(data, ak, sk, args, listen).unwrap_or_else(|e| panic!("starting lattice-s3: {e}"))
}

fn try_spawn(
    data: &Path,
    ak: &str,
    sk: &str,
    args: &[String],
    listen: &str,
) -> Result<(Child, String), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lattice-s3"))
        .arg("--listen")
        .arg(listen)
        .arg("--data")
        .arg(data)
        .args(args)
        .env("LATTICE_S3_ACCESS_KEY", ak)
        .env("LATTICE_S3_SECRET_KEY", sk)
        .env("RUST_LOG", "warn,s3s::ops=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    match line.trim().strip_prefix("lattice-s3 listening on ") {
        Some(addr) => Ok((child, addr.to_owned())),
        None => {
            let _ = child.kill();
            let status = child.wait().map_err(|e| e.to_string())?;
            Err(format!(
                "lattice-s3 did not start ({status}); first line: {line:?}"
            ))
        }
    }
}

/// Runs the clients against a server with given credentials.
pub struct Clients {
    pub venv: PathBuf,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub home: tempfile::TempDir,
}

impl Clients {
    pub fn new(venv: &Path, server: &Server) -> Clients {
        Clients::with_keys(venv, &server.endpoint(), ACCESS_KEY, SECRET_KEY)
    }

    pub fn with_keys(venv: &Path, endpoint: &str, ak: &str, sk: &str) -> Clients {
        let home = tempfile::tempdir().expect("temp dir");
        // s3v4 presigning: both clients default to SigV2 for presigned URLs otherwise.
        std::fs::write(
            home.path().join("config"),
            "[default]\nregion = us-east-1\ns3 =\n    signature_version = s3v4\n",
        )
        .expect("aws config");
        Clients {
            venv: venv.to_owned(),
            endpoint: endpoint.to_owned(),
            access_key: ak.to_owned(),
            secret_key: sk.to_owned(),
            home,
        }
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_CONFIG_FILE", self.home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("credentials"),
            )
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("S3_ENDPOINT", &self.endpoint)
            .env("HOME", self.home.path())
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    /// `aws --endpoint-url ENDPOINT ARGS...`
    pub fn aws(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.venv.join("bin/aws"));
        cmd.arg("--endpoint-url").arg(&self.endpoint).args(args);
        self.env(&mut cmd);
        cmd.output().expect("running aws")
    }

    /// Like `aws` but fails the test unless it succeeds; returns stdout.
    pub fn aws_ok(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `aws` expecting it to fail with S3 error `code`.
    pub fn aws_err(&self, args: &[&str], code: &str) {
        let out = self.aws(args);
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

    /// Runs a Python script with boto3 importable; `s3` is a client on the endpoint.
    pub fn python(&self, script: &str) -> Output {
        let prelude = "import os, sys, json, boto3, botocore\n\
            from botocore.exceptions import ClientError\n\
            s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'])\n\
            def code(fn, *a, **kw):\n    try:\n        fn(*a, **kw)\n        return 'OK'\n    except ClientError as e:\n        return e.response['Error']['Code']\n";
        let mut cmd = Command::new(self.venv.join("bin/python"));
        cmd.arg("-c").arg(format!("{prelude}{script}"));
        self.env(&mut cmd);
        cmd.output().expect("running python")
    }

    pub fn python_ok(&self, script: &str) -> String {
        let out = self.python(script);
        assert!(
            out.status.success(),
            "python failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Files under `data/tmp` (temporary files of writes in progress).
pub fn temp_files(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("tmp"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}
