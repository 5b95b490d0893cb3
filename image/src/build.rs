//! Executes a [`Plan`]: checks every tool first, then runs the steps in order with progress
//! (step number, label, time taken; long tools show their own output indented).

use crate::plan::{Plan, Step};
use crate::tools::{Cmd, Runner, ToolError};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    #[error("{what} {path}: {source}")]
    Fs {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing the tree: accounts with an empty or default password: {0:?}")]
    Passwords(Vec<String>),
    #[error(
        "the build must run as root (mmdebstrap's root mode keeps file owners for mkfs.ext4 -d)"
    )]
    NotRoot,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub bytes: u64,
    /// Blocks actually allocated (raw images are sparse).
    pub allocated: u64,
    pub sha256: String,
}

fn fs_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Fs {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs every step of `plan`; returns the checksummed outputs.
pub fn execute(plan: &Plan, runner: &mut dyn Runner) -> Result<Vec<Artifact>, BuildError> {
    runner.require(&plan.tools)?;
    let total = plan.steps.len();
    let mut artifacts = Vec::new();
    let started = Instant::now();
    for (i, step) in plan.steps.iter().enumerate() {
        let t = Instant::now();
        match step {
            Step::Run { label, cmd } => {
                eprintln!("[{:>2}/{total}] {label}", i + 1);
                runner.run(cmd)?;
                let secs = t.elapsed().as_secs_f64();
                if secs >= 1.0 {
                    eprintln!("        {label}: {secs:.1} s");
                }
            }
            Step::Remove(p) => remove(p)?,
            Step::MkDir { path, mode } => mkdir(path, *mode)?,
            Step::WriteFile {
                path,
                contents,
                mode,
            } => write_file(path, contents, *mode)?,
            Step::CopyFile { from, to, mode } => {
                let bytes = std::fs::read(from).map_err(fs_err("reading", from))?;
                write_file(to, &bytes, *mode)?;
            }
            Step::CheckShadow { root } => {
                let path = root.join("etc/shadow");
                let shadow = std::fs::read_to_string(&path).map_err(fs_err("reading", &path))?;
                let bad = crate::system::accounts_with_password_problems(&shadow);
                if !bad.is_empty() {
                    return Err(BuildError::Passwords(bad));
                }
            }
            Step::Manifest { root, header, outs } => {
                let packages = runner.run(
                    &Cmd::new("chroot")
                        .arg(root)
                        .args(["dpkg-query", "-W", "-f=${Package} ${Version}\\n"])
                        .capture(),
                )?;
                let built = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let text = format!(
                    "{header}BUILT_UNIX={built}\n\n[packages]\n{}",
                    String::from_utf8_lossy(&packages)
                );
                for out in outs {
                    write_file(out, text.as_bytes(), 0o644)?;
                }
            }
            Step::Checksums { files, out } => {
                eprintln!("[{:>2}/{total}] checksums", i + 1);
                let mut sums = String::new();
                for f in files {
                    let a = artifact(f)?;
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    sums.push_str(&format!("{}  {}\n", a.sha256, name.unwrap_or_default()));
                    artifacts.push(a);
                }
                write_file(out, sums.as_bytes(), 0o644)?;
            }
        }
    }
    eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(artifacts)
}

/// Size, allocated size and SHA-256 of a file.
pub fn artifact(path: &Path) -> Result<Artifact, BuildError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(fs_err("reading", path))?;
    let mut f = std::fs::File::open(path).map_err(fs_err("reading", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(fs_err("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Artifact {
        path: path.to_path_buf(),
        bytes: meta.len(),
        allocated: meta.blocks() * 512,
        sha256: hex::encode(h.finalize()),
    })
}

fn remove(p: &Path) -> Result<(), BuildError> {
    let r = match std::fs::symlink_metadata(p) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
    };
    r.map_err(fs_err("removing", p))
}

fn mkdir(p: &Path, mode: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).map_err(fs_err("creating", p))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(fs_err("setting the mode of", p))
}

fn write_file(p: &Path, contents: &[u8], mode: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(fs_err("creating", dir))?;
    }
    // Replace symlinks (e.g. /etc/hostname pointing elsewhere) instead of writing through them.
    if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(p).map_err(fs_err("removing", p))?;
    }
    std::fs::write(p, contents).map_err(fs_err("writing", p))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(fs_err("setting the mode of", p))
}

/// True when running as root (the real build needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::plan::{plan, BuildSpec};
    use crate::tools::FakeRunner;

    fn spec(dir: &Path) -> BuildSpec {
        let latticed = dir.join("latticed-bin");
        std::fs::write(&latticed, b"\x7fELF fake").unwrap();
        let mut s = BuildSpec::new(Arch::X86_64, latticed, "0.1.0");
        s.work_dir = dir.join("work");
        s.out_dir = dir.join("out");
        s
    }

    /// The fake mmdebstrap makes no tree: keep the one the test lays out.
    fn keep_tree(p: &mut Plan) {
        p.steps
            .retain(|s| !matches!(s, Step::Remove(r) if r.ends_with("rootfs")));
    }

    #[test]
    fn a_missing_tool_stops_the_build_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(&spec(dir.path())).unwrap();
        let mut r = FakeRunner {
            missing: vec!["mkfs.vfat".into()],
            ..FakeRunner::default()
        };
        let e = execute(&p, &mut r).unwrap_err();
        assert!(
            e.to_string()
                .contains("install with: apt-get install dosfstools"),
            "{e}"
        );
        assert!(r.ran.is_empty());
    }

    #[test]
    fn steps_run_in_order_and_write_the_tree_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let mut p = plan(&s).unwrap();
        keep_tree(&mut p);
        // mmdebstrap is faked: give the tree what the checks read.
        let root = s.work_dir.join("rootfs");
        let mut r = FakeRunner {
            outputs: vec![(
                "chroot".into(),
                b"docker.io 20.10.24\nrauc 1.8-2\n".to_vec(),
            )],
            fail_on: Some("qemu-img".into()),
            ..FakeRunner::default()
        };
        // The fake mmdebstrap leaves no shadow file: the shadow check fails, naming the path.
        let e = execute(&p, &mut r).unwrap_err();
        assert!(e.to_string().contains("etc/shadow"), "{e}");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/shadow"), "root:*:1::::::\n").unwrap();
        // Raw image files for the checksum step are not made by the fake: stop at qemu-img.
        let e = execute(&p, &mut r).unwrap_err();
        assert!(e.to_string().contains("qemu-img"), "{e}");
        let release = std::fs::read_to_string(root.join("etc/lattice/release")).unwrap();
        assert!(
            release.starts_with("LATTICE_IMAGE=lattice-0.1.0-x86_64\n"),
            "{release}"
        );
        assert!(release.contains("[packages]\ndocker.io 20.10.24\n"));
        assert_eq!(
            std::fs::read(root.join("usr/bin/latticed")).unwrap(),
            b"\x7fELF fake"
        );
        assert!(root.join("etc/systemd/system/latticed.service").exists());
        assert!(s.out_dir.join("lattice-0.1.0-x86_64.release").exists());
    }

    #[test]
    fn a_tree_with_an_empty_password_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let mut p = plan(&s).unwrap();
        keep_tree(&mut p);
        let root = s.work_dir.join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/shadow"), "root::1::::::\n").unwrap();
        let e = execute(&p, &mut FakeRunner::default()).unwrap_err();
        assert!(
            matches!(e, BuildError::Passwords(ref v) if v == &["root"]),
            "{e}"
        );
    }

    #[test]
    fn artifact_hashes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        let a = artifact(&f).unwrap();
        assert_eq!(a.bytes, 3);
        assert_eq!(
            a.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
