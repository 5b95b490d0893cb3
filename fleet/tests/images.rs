//! `lattice images` and the fleet's registry against the real things: the Docker engine, the
//! registry the test set-up runs on 127.0.0.1:5000 (scripts/test-images; `LATTICE_REGISTRY`
//! for another address) and Debian's docker-registry binary.
//!
//! Outside CI a test whose Docker engine, registry or binary is missing is skipped with the
//! reason printed; under CI (`CI` set) that is a failure.

mod common;

use lattice_fleet::cli::registry;
use std::process::Command;

fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have this: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
}

fn registry_addr() -> String {
    std::env::var("LATTICE_REGISTRY").unwrap_or_else(|_| registry::DEFAULT_ADDR.to_string())
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn registry_answers(addr: &str) -> bool {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(registry::answers(addr))
}

/// The test image (build/test-images.env), present in the local engine; None (skipped) without
/// the Docker engine, the registry or the image.
fn test_image_here() -> Option<String> {
    if !docker_answers() {
        skip("no Docker engine answers (`docker info`)");
        return None;
    }
    let addr = registry_addr();
    if !registry_answers(&addr) {
        skip(&format!(
            "no registry answers at {addr} (run scripts/test-images)"
        ));
        return None;
    }
    let env = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/test-images.env");
    if !env.exists() {
        skip(&format!(
            "{} is missing (run scripts/test-images)",
            env.display()
        ));
        return None;
    }
    let image = common::docker::test_image();
    // Present locally (it is where scripts/test-images built it; pulled otherwise).
    if common::docker::docker(&["image", "inspect", "--format", "{{.Id}}", &image]).is_empty() {
        let ok = Command::new("docker")
            .args(["pull", "-q", &image])
            .status()
            .unwrap()
            .success();
        assert!(ok, "docker pull {image}");
    }
    Some(image)
}

fn lattice(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(args)
        .env("LATTICE_REGISTRY", registry_addr())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run lattice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The registry's `Docker-Content-Digest` for a manifest (OCI and Docker media types accepted).
fn manifest_digest(addr: &str, repo: &str, reference: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-m",
            "10",
            "-I",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.list.v2+json",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
        ])
        .output()
        .expect("curl");
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("docker-content-digest")
            .then(|| v.trim().to_string())
    })
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Removes local tags, even when the test failed.
struct Untag(Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        for t in &self.0 {
            common::docker::docker(&["rmi", t]);
        }
    }
}

#[test]
fn a_pushed_image_is_pinned_by_the_registrys_digest_and_pulls_by_it() {
    let Some(image) = test_image_here() else {
        return;
    };
    let addr = registry_addr();
    // The test image under a local-only name, pushed to a repository of its own.
    let local = format!("{}:v1", unique("lattice-images-test"));
    let repo = format!("test/{}", unique("pushed"));
    let mut untag = Untag(vec![local.clone(), format!("{addr}/{repo}:latest")]);
    assert_eq!(
        Command::new("docker")
            .args(["tag", &image, &local])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    let (ok, out, err) = lattice(&["images", "push", &local, "--as", &repo]);
    assert!(ok, "lattice images push failed: {err}");
    let reference = out.trim();
    let digest = reference
        .strip_prefix(&format!("{addr}/{repo}@"))
        .unwrap_or_else(|| panic!("not {addr}/{repo}@…: {reference:?}"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // `--as REPO` without a tag pushes `latest`: the registry's digest for it is the printed one.
    assert_eq!(
        manifest_digest(&addr, &repo, "latest").as_deref(),
        Some(digest),
        "the registry's manifest digest for {repo}:latest"
    );
    // Pulled by that digest (after removing every local name of it in this repository).
    for t in &untag.0[1..] {
        common::docker::docker(&["rmi", t]);
    }
    let pull = Command::new("docker")
        .args(["pull", "-q", reference])
        .output()
        .unwrap();
    assert!(
        pull.status.success(),
        "docker pull {reference}: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    untag.0.push(reference.to_string());
}

#[test]
fn pushing_a_missing_image_names_it() {
    if !docker_answers() {
        return skip("no Docker engine answers (`docker info`)");
    }
    let missing = format!("{}:nope", unique("lattice-no-such-image"));
    let (ok, out, err) = lattice(&["images", "push", &missing]);
    assert!(!ok, "pushed a missing image: {out}");
    assert!(
        err.contains(&format!(
            "no image \"{missing}\" in the local Docker engine"
        )),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
}

#[test]
fn pushing_without_a_registry_names_the_address() {
    let Some(image) = test_image_here() else {
        return;
    };
    let addr = format!("127.0.0.1:{}", common::free_port());
    let (ok, out, err) = lattice(&["images", "push", &image, "--registry", &addr]);
    assert!(!ok, "pushed to nothing: {out}");
    assert!(
        err.contains(&format!("no registry answers at {addr}")),
        "{err}"
    );
}

#[test]
fn an_invalid_repository_name_is_refused_before_anything_runs() {
    let (ok, _, err) = lattice(&["images", "push", "busybox", "--as", "Not/Valid"]);
    assert!(!ok);
    assert!(
        err.contains("\"Not/Valid\" is not a valid repository name"),
        "{err}"
    );
}

#[tokio::test]
async fn the_supervisor_starts_docker_registry_and_reuses_one_that_answers() {
    let bin = std::path::Path::new(registry::DEFAULT_BIN);
    if !bin.exists() {
        return skip(&format!(
            "{} is missing (apt-get install docker-registry)",
            bin.display()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let first = registry::ensure(addr, &dir.path().join("registry"), bin)
        .await
        .expect("docker-registry starts");
    assert!(
        matches!(first, registry::Registry::Started { .. }),
        "{first:?}"
    );
    assert!(registry::answers(&addr.to_string()).await);
    // Its configuration and storage are where we said.
    let config = std::fs::read_to_string(dir.path().join("registry/config.yml")).unwrap();
    assert!(config.contains(&format!("addr: {addr}")), "{config}");
    assert!(dir.path().join("registry/storage").is_dir());
    // A second start finds it answering and leaves it alone.
    let second = registry::ensure(addr, &dir.path().join("other"), bin)
        .await
        .unwrap();
    assert!(
        matches!(second, registry::Registry::Reused { .. }),
        "{second:?}"
    );
    assert!(
        second.describe().contains("reused"),
        "{}",
        second.describe()
    );
    assert!(!dir.path().join("other").exists());
    second.stop().await;
    assert!(
        registry::answers(&addr.to_string()).await,
        "stopping a reused registry stopped it"
    );
    // Ours stops with us.
    first.stop().await;
    assert!(!registry::answers(&addr.to_string()).await);
}

#[tokio::test]
async fn the_supervisor_refuses_an_address_taken_by_something_else() {
    // An HTTP server that is not a registry.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
                .await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = registry::ensure(
        addr,
        dir.path(),
        std::path::Path::new(registry::DEFAULT_BIN),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("not an OCI registry"), "{e}");
}

#[test]
fn images_build_makes_a_busybox_image_that_runs_from_the_registry() {
    if Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .map_or(true, |o| String::from_utf8_lossy(&o.stdout).contains("=>"))
    {
        return skip("no static /bin/busybox (apt-get install busybox-static)");
    }
    if test_image_here().is_none() {
        return;
    }
    let addr = registry_addr();
    let (ok, out, err) = lattice(&["images", "build", "--only", "busybox"]);
    assert!(ok, "lattice images build failed: {err}");
    // One NAME=REF line, pinned by the registry's digest; progress went to stderr.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let reference = lines[0]
        .strip_prefix("busybox=")
        .unwrap_or_else(|| panic!("not busybox=REF: {out}"));
    let digest = reference
        .strip_prefix(&format!("{addr}/lattice/busybox@"))
        .unwrap_or_else(|| panic!("not {addr}/lattice/busybox@…: {reference}"));
    assert!(err.contains("building"), "{err}");
    assert_eq!(
        manifest_digest(&addr, "lattice/busybox", digest).as_deref(),
        Some(digest)
    );
    // FROM scratch + busybox: it runs, with its applets and a minimal /etc.
    let run = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            reference,
            "sh",
            "-c",
            "echo ran; head -n 1 /etc/passwd",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "ran\nroot:x:0:0:root:/:/bin/sh\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn images_build_refuses_an_unknown_name() {
    let (ok, _, err) = lattice(&["images", "build", "--only", "nope"]);
    assert!(!ok);
    assert!(
        err.contains("no image \"nope\" to build (there are: busybox, s3)"),
        "{err}"
    );
}
