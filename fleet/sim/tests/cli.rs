//! `lattice-sim`'s command line on bad input: each refusal names what was wrong and no node
//! is started. (Runs against a real fleet are in `fleet/tests/sim.rs`; this file also makes
//! cargo build the binary those tests run.)

use std::process::Command;

fn sim(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice-sim"))
        .args(args)
        .output()
        .expect("run lattice-sim");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_file_without_a_provisioning_string_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "not a provisioning string").unwrap();
    let (code, err) = sim(&["--provisioning-file", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{} does not hold a provisioning string",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn a_missing_file_and_zero_nodes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let (code, err) = sim(&["--provisioning-file", missing.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "reading the provisioning file {}",
            missing.display()
        )),
        "{err}"
    );
    let (code, err) = sim(&[
        "--provisioning-file",
        missing.to_str().unwrap(),
        "--nodes",
        "0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--nodes"), "{err}");
}
