//! Helpers for the hardware tests: the cached image, a fleet process, a QEMU guest with its
//! serial log, and commands in the guest over SSH (a key provisioned for the test).
//!
//! The tests run only with `LATTICE_HW_TESTS=1` (scripts/test and scripts/hw-test set it), as
//! root: building the image needs root, booting it takes minutes under software emulation.

pub mod fleet;
pub mod guest;
pub mod image;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// True when the hardware tests should run; otherwise they print why they skip.
pub fn enabled(test: &str) -> bool {
    let on = std::env::var("LATTICE_HW_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("{test}: skipped (set LATTICE_HW_TESTS=1, as scripts/hw-test does)");
    }
    on
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A workspace binary (`LATTICE_HW_<NAME>` overrides, else `target/<profile>/<name>` beside
/// the test executable).
pub fn workspace_bin(name: &str) -> PathBuf {
    let var = format!("LATTICE_HW_{}", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build -p lattice-fleet -p latticed` first (or set {var})",
        p.display()
    );
    p
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
