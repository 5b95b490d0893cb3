//! External programs behind a trait. The builder, `provision`, `inspect` and `qemu` describe
//! each program run as a [`Cmd`]; a [`Runner`] runs it. [`SystemRunner`] runs real programs
//! (found on `PATH`, or the error names the Debian package to install); [`FakeRunner`] records
//! commands for the planning tests.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Debian package that provides a program the image tools run.
pub fn debian_package(program: &str) -> &'static str {
    match program {
        "mmdebstrap" => "mmdebstrap",
        "mkfs.ext4" | "debugfs" | "e2fsck" => "e2fsprogs",
        "mkfs.vfat" => "dosfstools",
        "mcopy" | "mmd" | "mdir" | "mtype" => "mtools",
        "sfdisk" => "fdisk",
        "grub-mkstandalone" => "grub-common",
        "qemu-img" => "qemu-utils",
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-system-aarch64" => "qemu-system-arm",
        "dd" | "cp" | "truncate" | "sha256sum" => "coreutils",
        "chroot" => "coreutils",
        "systemctl" => "systemd",
        "ssh" | "ssh-keygen" => "openssh-client",
        _ => "(unknown package)",
    }
}

/// One program run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<OsString>,
    /// Written to the program's standard input.
    pub stdin: Option<Vec<u8>>,
    /// Capture standard output (returned by [`Runner::run`]) instead of inheriting it.
    pub capture: bool,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            stdin: None,
            capture: false,
        }
    }
    pub fn arg(mut self, a: impl Into<OsString>) -> Cmd {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Cmd {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }
    pub fn capture(mut self) -> Cmd {
        self.capture = true;
        self
    }
    /// The command line as a shell would show it (for logs and errors).
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "missing tools on this machine: {}; install with: apt-get install {}",
        .0.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", "),
        .0.iter().map(|(_, pkg)| *pkg).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(" ")
    )]
    Missing(Vec<(String, &'static str)>),
    #[error("missing file {path} (Debian package {package})")]
    MissingFile {
        path: PathBuf,
        package: &'static str,
    },
    #[error("running `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(":\n{}", .stderr) })]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
}

/// Runs commands.
pub trait Runner {
    /// Fails with [`ToolError::Missing`] naming every absent program and its package.
    fn require(&mut self, programs: &[&str]) -> Result<(), ToolError>;
    /// Runs `cmd` to completion; returns its standard output if captured (else empty).
    fn run(&mut self, cmd: &Cmd) -> Result<Vec<u8>, ToolError>;
}

/// Runs real programs found on a search path.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    path: OsString,
}

impl SystemRunner {
    /// Searches the process's `PATH` (plus the sbin directories, which root's tools live in).
    pub fn new() -> SystemRunner {
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        path.push(":/usr/sbin:/sbin");
        SystemRunner { path }
    }

    /// Searches exactly `path` (tests use a directory that lacks a tool).
    pub fn with_path(path: impl Into<OsString>) -> SystemRunner {
        SystemRunner { path: path.into() }
    }

    fn find(&self, program: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path)
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    }
}

impl Default for SystemRunner {
    fn default() -> Self {
        SystemRunner::new()
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Runner for SystemRunner {
    fn require(&mut self, programs: &[&str]) -> Result<(), ToolError> {
        let missing: Vec<(String, &'static str)> = programs
            .iter()
            .filter(|p| self.find(p).is_none())
            .map(|p| (p.to_string(), debian_package(p)))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ToolError::Missing(missing))
        }
    }

    fn run(&mut self, cmd: &Cmd) -> Result<Vec<u8>, ToolError> {
        let exe = self.find(&cmd.program).ok_or_else(|| {
            ToolError::Missing(vec![(cmd.program.clone(), debian_package(&cmd.program))])
        })?;
        let mut c = Command::new(exe);
        c.args(&cmd.args)
            .env("PATH", &self.path)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if cmd.capture {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stderr(Stdio::piped());
        let spawn = |source| ToolError::Spawn {
            cmd: cmd.display(),
            source,
        };
        let mut child = c.spawn().map_err(spawn)?;
        if let (Some(data), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
            use std::io::Write;
            stdin.write_all(data).map_err(spawn)?;
        }
        // stderr is both shown (progress of long steps) and kept for the error message.
        let stderr = child.stderr.take();
        let show = !cmd.capture;
        let echo = std::thread::spawn(move || {
            use std::io::{BufRead, BufReader};
            let mut kept = Vec::new();
            if let Some(e) = stderr {
                for line in BufReader::new(e).lines().map_while(Result::ok) {
                    if show {
                        eprintln!("    {line}");
                    }
                    kept.push(line);
                    if kept.len() > 40 {
                        kept.remove(0);
                    }
                }
            }
            kept.join("\n")
        });
        let out = child.wait_with_output().map_err(spawn)?;
        let stderr = echo.join().unwrap_or_default();
        if !out.status.success() {
            return Err(ToolError::Failed {
                cmd: cmd.display(),
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(out.stdout)
    }
}

/// Records commands; answers captured ones from a table; can be told to fail.
#[derive(Debug, Default)]
pub struct FakeRunner {
    pub ran: Vec<Cmd>,
    pub required: Vec<String>,
    /// Programs that are "not installed".
    pub missing: Vec<String>,
    /// Output for captured commands, by program name.
    pub outputs: Vec<(String, Vec<u8>)>,
    /// Fail the command whose display contains this text.
    pub fail_on: Option<String>,
}

impl Runner for FakeRunner {
    fn require(&mut self, programs: &[&str]) -> Result<(), ToolError> {
        self.required.extend(programs.iter().map(|p| p.to_string()));
        let missing: Vec<(String, &'static str)> = programs
            .iter()
            .filter(|p| self.missing.iter().any(|m| m == *p))
            .map(|p| (p.to_string(), debian_package(p)))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ToolError::Missing(missing))
        }
    }

    fn run(&mut self, cmd: &Cmd) -> Result<Vec<u8>, ToolError> {
        self.ran.push(cmd.clone());
        if let Some(f) = &self.fail_on {
            if cmd.display().contains(f.as_str()) {
                return Err(ToolError::Failed {
                    cmd: cmd.display(),
                    status: "exit status: 1".into(),
                    stderr: "told to fail".into(),
                });
            }
        }
        Ok(self
            .outputs
            .iter()
            .find(|(p, _)| *p == cmd.program)
            .map(|(_, o)| o.clone())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_debian_package() {
        let empty = tempfile::tempdir().unwrap();
        let mut r = SystemRunner::with_path(empty.path());
        let e = r
            .require(&["mmdebstrap", "mkfs.vfat", "mcopy"])
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("mmdebstrap, mkfs.vfat, mcopy"), "{msg}");
        assert!(
            msg.contains("apt-get install dosfstools mmdebstrap mtools"),
            "{msg}"
        );
    }

    #[test]
    fn a_tool_on_the_path_is_found_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("hello-tool");
        std::fs::write(&tool, "#!/bin/sh\necho \"hi $1\"; cat\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut r = SystemRunner::with_path(format!("{}:/bin:/usr/bin", dir.path().display()));
        r.require(&["hello-tool"]).unwrap();
        let out = r
            .run(&Cmd::new("hello-tool").arg("you").stdin("!").capture())
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "hi you\n!");
    }

    #[test]
    fn a_failing_tool_reports_its_command_and_stderr() {
        let mut r = SystemRunner::new();
        let e = r
            .run(&Cmd::new("sh").args(["-c", "echo broken >&2; exit 3"]))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("broken"), "{msg}");
    }
}
