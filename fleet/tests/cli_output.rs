//! How the `lattice` CLI ends: one error line (all causes, no stack backtrace even with
//! `RUST_BACKTRACE=1` in the environment), and quietly when its reader goes away
//! (`lattice … | head`).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_lattice");

#[test]
fn a_failing_command_prints_one_error_line_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["keys", "show", "--data"])
        .arg(dir.path())
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "Error: {} holds no fleet (no fleet.key)\n",
            dir.path().display()
        )
    );
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    lattice_fleet::secrets::fleet_key(dir.path()).unwrap();
    // The reading end is closed before the command writes a byte.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["keys", "show", "--data"])
        .arg(dir.path())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
    // Ended by SIGPIPE, as `cat` or `ls` would be.
    assert_eq!(out.status.signal(), Some(13), "{:?}", out.status);
}

/// `lattice workload explain` takes an existing workload's name or a would-be deploy's flags,
/// not both: mixing them is refused before any fleet is asked, naming the flag.
#[test]
fn workload_explain_refuses_a_name_with_would_be_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (
            &["workload", "explain", "web", "--plan", "large"][..],
            "--plan",
        ),
        (
            &["workload", "explain", "--account", "a-1"][..],
            "--account",
        ),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env("LATTICE_CLI_CONFIG", dir.path().join("none.toml"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    // Well formed, but no CLI config: one error line saying so, nothing sent.
    let out = Command::new(BIN)
        .args(["workload", "explain", "web", "--json"])
        .env("LATTICE_CLI_CONFIG", dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("Error: no CLI config at "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
