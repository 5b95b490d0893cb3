//! `lattice images`: workload images into the fleet's registry. `push` takes an image from the
//! local Docker engine; `build` makes the project's own images (no public registry: FROM
//! scratch with Debian's static busybox, or the static lattice-s3) and pushes them. Both print
//! digest-pinned references, which is what `lattice deploy container --image` takes.

use super::registry;
use anyhow::Context;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args, Clone)]
pub struct RegistryTarget {
    /// The fleet's registry (host:port; plain HTTP on loopback).
    #[arg(long, value_name = "ADDR", env = "LATTICE_REGISTRY", default_value = registry::DEFAULT_ADDR)]
    pub registry: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImagesCmd {
    /// Pushes an image from the local Docker engine into the fleet's registry and prints its
    /// digest-pinned reference (REGISTRY/REPO@sha256:…).
    Push {
        /// The local image (name[:tag], or an id).
        image: String,
        /// Repository (and tag) in the registry: REPO[:TAG] (default: the local name and tag).
        #[arg(long = "as", value_name = "REPO[:TAG]")]
        as_repo: Option<String>,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Builds the project's workload images (FROM scratch, no public registry: Debian's static
    /// busybox; the static lattice-s3), pushes them and prints NAME=REF per image.
    Build {
        /// Only this image (repeatable): busybox, s3.
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// A static lattice-s3 for the s3 image (default: built by cargo from this checkout,
        /// as scripts/test-images does).
        #[arg(long, value_name = "PATH")]
        s3_binary: Option<PathBuf>,
        /// Debian's static busybox (package busybox-static).
        #[arg(long, value_name = "PATH", default_value = "/bin/busybox")]
        busybox: PathBuf,
        #[command(flatten)]
        target: RegistryTarget,
    },
}

pub async fn run(cmd: ImagesCmd) -> anyhow::Result<()> {
    match cmd {
        ImagesCmd::Push {
            image,
            as_repo,
            target,
        } => {
            let is_id = image.starts_with("sha256:")
                || (image.len() >= 12 && image.bytes().all(|b| b.is_ascii_hexdigit()));
            let (repo, tag) = match &as_repo {
                Some(r) => split_tag(r),
                None if is_id => {
                    anyhow::bail!("{image} is an image id: name it with --as REPO[:TAG]")
                }
                None => default_repo(&image),
            };
            check_repo(&repo)?;
            check_tag(&tag)?;
            let docker = engine().await?;
            let reference = push(&docker, &image, &target.registry, &repo, &tag).await?;
            println!("{reference}");
            Ok(())
        }
        ImagesCmd::Build {
            only,
            s3_binary,
            busybox,
            target,
        } => build(&only, s3_binary, &busybox, &target.registry).await,
    }
}

/// The local Docker engine (DOCKER_HOST's unix socket, or /var/run/docker.sock).
pub async fn engine() -> anyhow::Result<Docker> {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".to_string());
    Docker::connect_with_unix(&socket, 600, bollard::API_DEFAULT_VERSION)
        .with_context(|| format!("Docker socket {socket}"))?
        .negotiate_version()
        .await
        .with_context(|| {
            format!("the Docker engine does not answer at {socket} (is dockerd running?)")
        })
}

/// Splits `REPO[:TAG]` (a `:` after the last `/` is the tag); no tag is `latest`.
pub fn split_tag(s: &str) -> (String, String) {
    let s = s.split('@').next().unwrap_or(s);
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[slash..].rfind(':') {
        Some(i) => (s[..slash + i].to_string(), s[slash + i + 1..].to_string()),
        None => (s.to_string(), "latest".to_string()),
    }
}

/// The repository and tag a local image keeps in the registry: its name without a registry
/// host (a first component with `.` or `:`, or `localhost`) and without a digest; its tag or
/// `latest`.
pub fn default_repo(image: &str) -> (String, String) {
    let (repo, tag) = split_tag(image);
    let repo = match repo.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            rest.to_string()
        }
        _ => repo,
    };
    (repo, tag)
}

/// A repository name as the distribution spec allows: `/`-separated components of lowercase
/// letters and digits joined by `.`, `_`, `__` or runs of `-`.
pub fn check_repo(repo: &str) -> anyhow::Result<()> {
    let ok = !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && c.bytes().all(|x| {
                    x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-')
                })
                && !c.contains("..")
                && !c.contains("___")
                && !c.contains("._")
                && !c.contains("_.")
                && !c.contains(".-")
                && !c.contains("-.")
                && !c.contains("_-")
                && !c.contains("-_")
        });
    anyhow::ensure!(
        ok,
        "{repo:?} is not a valid repository name (lowercase letters and digits, separated by \
         '.', '_', '__' or '-', components joined by '/'); choose one with --as REPO[:TAG]"
    );
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> anyhow::Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    anyhow::ensure!(
        ok,
        "{tag:?} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)"
    );
    Ok(())
}

/// Tags `local` as `REGISTRY/REPO:TAG`, pushes it, and returns `REGISTRY/REPO@sha256:…`.
pub async fn push(
    docker: &Docker,
    local: &str,
    registry_addr: &str,
    repo: &str,
    tag: &str,
) -> anyhow::Result<String> {
    match docker.inspect_image(local).await {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => anyhow::bail!(
            "no image {local:?} in the local Docker engine (`docker images` lists what there is)"
        ),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "inspecting {local:?} in the Docker engine: {e}"
            ))
        }
    }
    match registry::probe(registry_addr).await {
        registry::Probe::Registry => {}
        registry::Probe::NotARegistry(why) => {
            anyhow::bail!("no OCI registry at {registry_addr}: {why}")
        }
        registry::Probe::Nothing(why) => anyhow::bail!(
            "no registry answers at {registry_addr} ({why}); start one with `lattice up`, or \
             name the fleet's with --registry ADDR (or LATTICE_REGISTRY)"
        ),
    }
    let name = format!("{registry_addr}/{repo}");
    docker
        .tag_image(
            local,
            Some(TagImageOptions {
                repo: Some(name.clone()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .with_context(|| format!("tagging {local} as {name}:{tag}"))?;
    eprintln!("pushing {local} to {name}:{tag}");
    let mut stream = docker.push_image(
        &name,
        Some(PushImageOptions {
            tag: Some(tag.to_string()),
            platform: None,
        }),
        None,
    );
    let mut digest = None;
    let (mut pushed, mut present) = (0, 0);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            anyhow::anyhow!("the registry at {registry_addr} refused the push of {name}:{tag}: {e}")
        })?;
        let Some(status) = info.status else { continue };
        // The last line: "TAG: digest: sha256:… size: N".
        if let Some(d) = digest_in(&status) {
            digest = Some(d);
        } else if status == "Pushed" {
            pushed += 1;
        } else if status == "Layer already exists" || status.starts_with("Mounted from") {
            present += 1;
        }
    }
    eprintln!("  layers: {pushed} pushed, {present} already there");
    let digest = match digest {
        Some(d) => d,
        None => manifest_digest(registry_addr, repo, tag)
            .await?
            .with_context(|| {
                format!(
                    "the registry at {registry_addr} has no manifest {repo}:{tag} after the push"
                )
            })?,
    };
    Ok(format!("{name}@{digest}"))
}

/// The `sha256:…` digest in a push status line.
fn digest_in(status: &str) -> Option<String> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let d = rest.split_whitespace().next()?;
    let hex = d.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| d.to_string())
}

/// Media types a manifest HEAD accepts (index first: multi-platform pushes).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// The registry's `Docker-Content-Digest` for `REPO:REFERENCE` (None: no such manifest).
pub async fn manifest_digest(
    registry_addr: &str,
    repo: &str,
    reference: &str,
) -> anyhow::Result<Option<String>> {
    let url = format!(
        "{}/v2/{repo}/manifests/{reference}",
        registry::base_url(registry_addr)
    );
    let r = reqwest::Client::new()
        .head(&url)
        .header("Accept", MANIFEST_ACCEPT)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("HEAD {url}"))?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    anyhow::ensure!(r.status().is_success(), "HEAD {url}: {}", r.status());
    Ok(r.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string))
}

/// The project's workload images: (name, repository in the registry).
pub const IMAGES: &[(&str, &str)] = &[("busybox", "lattice/busybox"), ("s3", "lattice/s3")];

// The build inputs are scripts/test-images.d's, compiled in: one copy for the script and us.
const BUSYBOX_DOCKERFILE: &str = include_str!("../../../scripts/test-images.d/busybox.Dockerfile");
const S3_DOCKERFILE: &str = include_str!("../../../scripts/test-images.d/s3.Dockerfile");
const PASSWD: &str = include_str!("../../../scripts/test-images.d/passwd");
const GROUP: &str = include_str!("../../../scripts/test-images.d/group");

/// `lattice images build`: each image in `only` (all when empty), built and pushed; prints
/// `NAME=REF` lines.
pub async fn build(
    only: &[String],
    s3_binary: Option<PathBuf>,
    busybox: &Path,
    registry_addr: &str,
) -> anyhow::Result<()> {
    for name in only {
        anyhow::ensure!(
            IMAGES.iter().any(|(n, _)| n == name),
            "no image {name:?} to build (there are: {})",
            IMAGES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let wanted: Vec<(&str, &str)> = IMAGES
        .iter()
        .copied()
        .filter(|(n, _)| only.is_empty() || only.iter().any(|o| o == n))
        .collect();
    let docker = engine().await?;
    anyhow::ensure!(
        registry::answers(registry_addr).await,
        "no registry answers at {registry_addr}; start one with `lattice up`, or name the \
         fleet's with --registry ADDR (or LATTICE_REGISTRY)"
    );
    for (name, repo) in wanted {
        let ctx = Context_::new(name)?;
        match name {
            "busybox" => busybox_context(&ctx.0, busybox)?,
            _ => s3_context(&ctx.0, s3_binary.as_deref())?,
        }
        let tag = format!("{registry_addr}/{repo}:latest");
        eprintln!("building {tag}");
        build_context(&docker, &ctx.0, &tag).await?;
        let reference = push(&docker, &tag, registry_addr, repo, "latest").await?;
        println!("{name}={reference}");
    }
    Ok(())
}

/// A build context directory, removed when dropped.
struct Context_(PathBuf);

impl Context_ {
    fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "lattice-images-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Context_ {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails unless `bin` is a static executable (a FROM scratch image has no loader).
fn ensure_static(bin: &Path, hint: &str) -> anyhow::Result<()> {
    anyhow::ensure!(bin.is_file(), "{} not found ({hint})", bin.display());
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        !text.contains("=>"),
        "{} is dynamically linked; a FROM scratch image cannot run it ({hint})",
        bin.display()
    );
    Ok(())
}

fn tmp_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// rootfs/bin/busybox with its applets as symlinks, a minimal /etc, /tmp; the Dockerfile.
fn busybox_context(ctx: &Path, busybox: &Path) -> anyhow::Result<()> {
    ensure_static(
        busybox,
        "Debian's static busybox: apt-get install busybox-static, or pass --busybox PATH",
    )?;
    let root = ctx.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("etc"))?;
    tmp_dir(&root.join("tmp"))?;
    std::fs::copy(busybox, root.join("bin/busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("{} --list", busybox.display()))?;
    anyhow::ensure!(list.status.success(), "{} --list failed", busybox.display());
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    std::fs::write(root.join("etc/passwd"), PASSWD)?;
    std::fs::write(root.join("etc/group"), GROUP)?;
    std::fs::write(ctx.join("Dockerfile"), BUSYBOX_DOCKERFILE)?;
    Ok(())
}

/// rootfs/lattice-s3 (static), /data, /tmp; the Dockerfile.
fn s3_context(ctx: &Path, s3_binary: Option<&Path>) -> anyhow::Result<()> {
    let bin = match s3_binary {
        Some(p) => p.to_path_buf(),
        None => cargo_static_s3()?,
    };
    ensure_static(
        &bin,
        "build it with RUSTFLAGS='-C target-feature=+crt-static' and --target, or leave out \
         --s3-binary",
    )?;
    let root = ctx.join("rootfs");
    std::fs::create_dir_all(root.join("data"))?;
    tmp_dir(&root.join("tmp"))?;
    std::fs::copy(&bin, root.join("lattice-s3"))
        .with_context(|| format!("copying {}", bin.display()))?;
    std::fs::write(ctx.join("Dockerfile"), S3_DOCKERFILE)?;
    Ok(())
}

/// Builds the static lattice-s3 from the checkout this binary was built from, exactly as
/// scripts/test-images does (same target directory, so either reuses the other's build).
fn cargo_static_s3() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    anyhow::ensure!(
        root.join("image/workloads/s3/Cargo.toml").exists(),
        "the lattice source checkout ({}) is not here to build lattice-s3 from; pass \
         --s3-binary PATH (a static lattice-s3)",
        root.display()
    );
    let vv = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV (is Rust installed? or pass --s3-binary PATH)")?;
    let host = String::from_utf8_lossy(&vv.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("no host triple in rustc -vV")?;
    let build = root.join("build");
    std::fs::create_dir_all(&build)?;
    let target_dir = build.join("s3-static-target");
    let log_path = build.join("images.s3-build.log");
    eprintln!(
        "building the static lattice-s3 (cargo, target dir {}, log {})",
        target_dir.display(),
        log_path.display()
    );
    let log = std::fs::File::create(&log_path)?;
    let status = std::process::Command::new("cargo")
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "lattice-s3",
            "--bin",
            "lattice-s3",
            "--target",
            &host,
            "--target-dir",
        ])
        .arg(&target_dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running cargo (or pass --s3-binary PATH)")?;
    anyhow::ensure!(
        status.success(),
        "building the static lattice-s3 failed ({status}); see {}",
        log_path.display()
    );
    Ok(target_dir.join(&host).join("release/lattice-s3"))
}

/// `docker build` of a context directory (tarred by tar(1), legacy builder), tagged `tag`.
async fn build_context(docker: &Docker, ctx: &Path, tag: &str) -> anyhow::Result<()> {
    let tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(ctx)
        .args(["--owner=0", "--group=0", "--numeric-owner", "-cf", "-", "."])
        .output()
        .await
        .context("running tar")?;
    anyhow::ensure!(
        tar.status.success(),
        "tar of {} failed: {}",
        ctx.display(),
        String::from_utf8_lossy(&tar.stderr)
    );
    let mut stream = docker.build_image(
        bollard::query_parameters::BuildImageOptions {
            t: Some(tag.to_string()),
            rm: true,
            ..Default::default()
        },
        None,
        Some(bollard::body_full(tar.stdout.into())),
    );
    let mut output = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            anyhow::anyhow!(
                "docker build of {tag} failed: {e}; output: {}",
                output.join("")
            )
        })?;
        if let Some(e) = info.error {
            anyhow::bail!(
                "docker build of {tag} failed: {e}; output: {}",
                output.join("")
            );
        }
        if let Some(line) = info.stream {
            output.push(line);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repo_and_tag() {
        assert_eq!(split_tag("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(split_tag("a/b:v1"), ("a/b".into(), "v1".into()));
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            default_repo("127.0.0.1:5000/lattice/busybox:test"),
            ("lattice/busybox".into(), "test".into())
        );
        assert_eq!(
            default_repo("127.0.0.1:5000/lattice/busybox@sha256:ab"),
            ("lattice/busybox".into(), "latest".into())
        );
        assert_eq!(
            default_repo("library/nginx:1.27"),
            ("library/nginx".into(), "1.27".into())
        );
    }

    #[test]
    fn repository_names_follow_the_distribution_spec() {
        for ok in ["a", "lattice/busybox", "a.b_c__d--e/f-0"] {
            check_repo(ok).unwrap();
        }
        for bad in ["", "A", "a//b", "-a", "a-", "a/", "a..b", "a b", "a___b"] {
            assert!(check_repo(bad).is_err(), "{bad:?}");
        }
        check_tag("v1.0_rc-2").unwrap();
        assert!(check_tag(".x").is_err());
        assert!(check_tag("a:b").is_err());
    }

    #[test]
    fn the_digest_comes_from_the_last_status_line() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            digest_in(&format!("test: digest: {d} size: 527")),
            Some(d.clone())
        );
        assert_eq!(digest_in("Pushed"), None);
        assert_eq!(digest_in("x: digest: sha256:zz size: 1"), None);
    }
}
