//! `lattice logs` end to end: a workload on a real latticed node writes to stdout and stderr;
//! its owner reads the logs through the fleet (API → gateway → the node's tunnel → the Docker
//! engine), whole, the last lines only, or followed live; another account gets 404; a node
//! that is gone gets a clear 503. Needs root, Docker and the test image (`scripts/test-images`).

mod common;

use common::docker::*;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The highest `tick-N` in `text`.
fn last_tick(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("tick-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn owners_read_follow_and_tail_their_workloads_logs_and_nobody_else_can() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let (mut n, _id, _cleanup) = online_node(&f, &dir.path().join("node"), "alice");

    f.cli_ok(&[
        "deploy",
        "container",
        "talker",
        "--image",
        &image,
        "--",
        "sh",
        "-c",
        "echo hello-out; echo hello-err >&2; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
    ]);
    wait_for(90, "talker running", || {
        let (ok, out, _) = f.cli(&["workload", "show", "talker", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v["state"] == "running").then_some(())
    });

    // Whole logs: stdout and stderr, as the container wrote them.
    let all = wait_for(30, "the first ticks in the logs", || {
        let (ok, out, _) = f.cli(&["logs", "talker"]);
        (ok && last_tick(&out) >= 2).then_some(out)
    });
    assert!(all.contains("hello-out\n"), "{all}");
    assert!(all.contains("hello-err\n"), "{all}");
    assert!(all.contains("tick-1\n"), "{all}");

    // The last line only, with its timestamp.
    let tail = f.cli_ok(&["logs", "talker", "--tail", "1", "--timestamps"]);
    assert_eq!(tail.lines().count(), 1, "{tail:?}");
    let line = tail.lines().next().unwrap();
    let (stamp, text) = line.split_once(' ').expect("timestamp then text");
    assert!(
        stamp.starts_with("20") && stamp.contains('T'),
        "RFC 3339 time first: {line:?}"
    );
    assert!(text.starts_with("tick-"), "{line:?}");

    // Following: lines written after the command started keep arriving.
    let seen_before = last_tick(&f.cli_ok(&["logs", "talker"]));
    let mut follow = Command::new(lattice_bin())
        .args(["logs", "talker", "--follow", "--tail", "0"])
        .env("LATTICE_CLI_CONFIG", &f.cli_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut live = Vec::new();
    while live.len() < 3 {
        let line = lines
            .next()
            .expect("the follow ended early")
            .expect("reading the follow");
        let n = last_tick(&line);
        assert!(
            n > seen_before,
            "--tail 0 --follow printed old line {line:?}"
        );
        live.push(n);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "followed lines come about once a second"
        );
    }
    assert!(live.windows(2).all(|w| w[1] == w[0] + 1), "{live:?}");
    follow.kill().unwrap();
    let _ = follow.wait();

    // Another account: the name does not exist for it.
    let ann = dir.path().join("ann.toml");
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(&f.cli_config).unwrap()).unwrap();
    let key = cfg["fleet_key"].as_str().unwrap().to_string();
    let pw = "ann's long passphrase 1\n";
    for cmd in ["signup", "login"] {
        let (ok, out, err) = lattice_as(
            &ann,
            &[
                cmd,
                "--email",
                "ann@example.org",
                "--fleet",
                &f.url,
                "--fleet-key",
                &key,
            ],
            pw,
        );
        assert!(ok, "{cmd}: {out}{err}");
    }
    let (ok, out, err) = lattice_as(&ann, &["logs", "talker"], "");
    assert!(
        !ok && err.contains("no workload named") && err.contains("404"),
        "{err}"
    );
    assert!(!out.contains("tick-"), "{out}");

    // A workload that does not exist, and then a node that is gone: clear errors.
    let (ok, _, err) = f.cli(&["logs", "nothing"]);
    assert!(!ok && err.contains("no workload named"), "{err}");
    n.kill9();
    // Until the tunnel's idle timeout (20 s) the node only fails to answer; then it is offline.
    wait_for(90, "the gateway notices the node is gone", || {
        let (ok, _, err) = f.cli(&["logs", "talker"]);
        assert!(!ok && err.contains("503"), "{err}");
        err.contains("is offline").then_some(())
    });
}
