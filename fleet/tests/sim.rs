//! `lattice-sim` against a real `lattice fleet` and its embedded broker: simulated nodes
//! register with real keys, stay online on their heartbeats, take a workload the scheduler
//! places on one of them and report it running, and leave cleanly (no last will). A token with
//! too few uses is named in the error (bad files: `fleet/sim/tests/cli.rs`).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn token(f: &Fleet, uses: u32, dir: &std::path::Path) -> std::path::PathBuf {
    let out = f.cli_ok(&[
        "tokens",
        "create",
        "--owner",
        "alice",
        "--uses",
        &uses.to_string(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let path = dir.join(format!("prov-{uses}"));
    std::fs::write(&path, v["provisioning"].as_str().unwrap()).unwrap();
    path
}

/// Waits for a JSON progress line of the simulator that satisfies `f`.
fn progress(
    rx: &mpsc::Receiver<serde_json::Value>,
    secs: u64,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(v) if f(&v) => return v,
            Ok(v) => last = v,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("simulator: {what} not seen within {secs} s; last progress: {last}");
}

#[test]
fn simulated_nodes_register_heartbeat_take_a_workload_and_leave_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let prov = token(&f, 12, dir.path());
    let mut sim = Command::new(workspace_bin("lattice-sim"))
        .arg("--provisioning-file")
        .arg(&prov)
        .args(["--nodes", "12", "--json", "--progress-secs", "1"])
        .args(["--cpus", "2", "--memory-mib", "4096"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lattice-sim");
    let stdout = sim.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    progress(&rx, 60, "12 nodes connected", |v| v["connected"] == 12);

    // The fleet sees twelve online nodes with the capacity the simulator offered.
    let nodes = wait_for(20, "12 nodes online", || {
        let n = f.nodes();
        (n.iter().filter(|n| n["online"] == true).count() == 12).then_some(n)
    });
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let shown = f.node(&ids[0]);
    let inventory: serde_json::Value =
        serde_json::from_str(shown["inventory"].as_str().unwrap()).unwrap();
    assert_eq!(inventory["cpu_count"], 2, "{shown}");
    assert_eq!(inventory["memory_bytes"], 4u64 << 30, "{shown}");
    assert!(
        inventory["hostname"].as_str().unwrap().starts_with("sim-"),
        "{shown}"
    );

    // Heartbeats keep coming (the fleet's interval here is 2 s).
    let before = progress(&rx, 10, "statuses", |v| v["statuses"].as_u64() > Some(0));
    let later = progress(&rx, 20, "three more heartbeat rounds", |v| {
        v["statuses"].as_u64().unwrap() >= before["statuses"].as_u64().unwrap() + 36
    });
    assert_eq!(later["disconnects"], 0, "{later}");

    // The scheduler places a workload on a simulated node, which takes the sealed target and
    // reports the workload running.
    let image = format!("127.0.0.1:5000/lattice/sim@sha256:{}", "0".repeat(64));
    let out = f.cli_ok(&["deploy", "container", "web", "--image", &image, "--json"]);
    let w: serde_json::Value = serde_json::from_str(&out).unwrap();
    let node = w["node"].as_str().unwrap().to_string();
    assert!(ids.contains(&node), "placed off the simulated nodes: {w}");
    wait_for(30, "web running on a simulated node", || {
        let (ok, out, _) = f.cli(&["workload", "show", "web", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v["state"] == "running").then_some(())
    });
    let applied = progress(&rx, 10, "the target applied", |v| {
        v["targets_applied"].as_u64() >= Some(1)
    });
    assert_eq!(applied["targets_refused"], 0, "{applied}");

    // SIGTERM: every node disconnects cleanly, so no last will marks any offline; they go
    // offline only when their heartbeats stop being heard.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sim.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let last = progress(&rx, 20, "the final report", |v| v["final"] == true);
    assert!(sim.wait().unwrap().success());
    assert_eq!(last["registered"], 12, "{last}");
    assert_eq!(last["registration_failures"], 0, "{last}");
    assert_eq!(last["connected"], 0, "{last}");
    assert!(last["first_error"].is_null(), "{last}");
    assert!(last["registration_secs"].as_f64().unwrap() > 0.0, "{last}");
    let gone = wait_for(30, "all simulated nodes offline", || {
        let n = f.nodes();
        n.iter().all(|n| n["online"] == false).then_some(n)
    });
    for n in gone {
        let n = f.node(n["id"].as_str().unwrap());
        assert_eq!(n["offline_reason"], "heartbeat timeout", "{n}");
    }
}

#[test]
fn too_few_token_uses_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let prov = token(&f, 2, dir.path());
    let out = Command::new(workspace_bin("lattice-sim"))
        .arg("--provisioning-file")
        .arg(&prov)
        .args(["--nodes", "3", "--secs", "8", "--concurrency", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("registered 2/3"), "{err}");
    assert!(err.contains("1 failed"), "{err}");
    assert!(err.contains("first error: registration of node"), "{err}");
    // Two nodes registered and the third was refused: the fleet holds exactly two.
    assert_eq!(f.nodes().len(), 2);
}
