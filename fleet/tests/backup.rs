//! Fleet backup and restore (issue 8, item 4), end to end with the real `lattice` binary: a
//! backup taken while the fleet runs brings the fleet back after its data directory is lost,
//! with its accounts and nodes, and its node reconnects (it pinned the fleet's key, which the
//! backup carries). Damaged backups, backups from a newer schema and restores over a live
//! fleet's directory are refused with the reason, changing nothing.

mod common;

use common::docker::{can_run_workloads, test_image, Cleanup};
use common::*;
use std::path::Path;
use std::process::Command;

fn lattice(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(lattice_bin())
        .args(args)
        .output()
        .expect("run lattice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn signup(f: &Fleet, email: &str) {
    let (ok, out, err) = lattice_as(
        &f.cli_config,
        &["signup", "--email", email],
        "a long enough password\n",
    );
    assert!(ok, "signup {email}: {out}{err}");
}

fn emails(f: &Fleet) -> String {
    f.cli_ok(&["accounts", "list", "--json"])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_fleet_comes_back_from_its_backup_and_its_node_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let (http, mqtt) = (free_port(), free_port());
    let mut fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
    let node = Node::start(&dir.path().join("node"), &fleet.provisioning("alice"));
    let id = wait_for(30, "node registered", || node.node_id());
    let _cleanup = Cleanup(id.clone());
    wait_for(30, "node online", || {
        (fleet.node(&id)["online"] == true).then_some(())
    });
    signup(&fleet, "ann@example.org");

    // While it runs.
    let b1 = dir.path().join("b1");
    let (ok, out, err) = lattice(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        "--out",
        b1.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("schema"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&b1), 0o700);
    assert_eq!(mode(&b1.join("fleet.key")), 0o600);
    assert_eq!(mode(&b1.join("fleet.db")), 0o600);
    // Not over an existing backup.
    let (ok, _, err) = lattice(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        "--out",
        b1.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("exists already"), "{err}");
    // What happens after the backup is not in it.
    signup(&fleet, "bob@example.org");

    // A damaged copy, and one claiming a newer schema, are refused before anything is written.
    let damaged = dir.path().join("damaged");
    copy_dir(&b1, &damaged);
    let mut db = std::fs::read(damaged.join("fleet.db")).unwrap();
    let at = db.len() / 2;
    db[at] ^= 0xff;
    std::fs::write(damaged.join("fleet.db"), db).unwrap();
    let (ok, _, err) = lattice(&[
        "restore",
        "--verify-only",
        "--from",
        damaged.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("fleet.db is damaged"), "{err}");
    let newer = dir.path().join("newer");
    copy_dir(&b1, &newer);
    let m = std::fs::read_to_string(newer.join("manifest.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&m).unwrap();
    m["schema_version"] = 9999.into();
    std::fs::write(newer.join("manifest.json"), m.to_string()).unwrap();
    let (ok, _, err) = lattice(&[
        "restore",
        "--verify-only",
        "--from",
        newer.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("newer Lattice"), "{err}");
    let (ok, out, err) = lattice(&["restore", "--verify-only", "--from", b1.to_str().unwrap()]);
    assert!(ok, "{out}{err}");

    // Never under a running fleet, not even told to set its files aside.
    for extra in [&[][..], &["--set-aside"][..]] {
        let mut args = vec![
            "restore",
            "--from",
            b1.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = lattice(&args);
        assert!(
            !ok && err.contains("is in use by a running fleet (pid "),
            "{extra:?}: {err}"
        );
    }
    assert!(
        emails(&fleet).contains("bob@example.org"),
        "nothing changed"
    );
    assert!(
        !std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("pre-restore-")),
        "nothing was set aside"
    );
    // Nor a second fleet on the same directory: it stops at once, saying why.
    let mut second = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["fleet", "--no-gateway", "--data"])
        .arg(&data)
        .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second fleet started on a running fleet's directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success() && err.contains("is in use by a running fleet"),
        "{err}"
    );

    // After the backup the fleet restarts (a new fleet epoch) and the node takes a target in
    // it: a restored fleet must not hand out that epoch again.
    let workloads = can_run_workloads();
    if workloads {
        fleet.kill9();
        fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
        deploy_and_see_it_applied(&fleet, &id, &node, "before");
    }
    let seen_epoch = fleet_epoch_seen_by(&node);

    // The fleet's machine is lost: a new directory from the backup, same addresses.
    fleet.kill9();
    // A stopped fleet's files are not overwritten without --set-aside (its killed process
    // left no stale lock behind).
    let (ok, _, err) = lattice(&[
        "restore",
        "--from",
        b1.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("holds a fleet already"), "{err}");
    std::fs::remove_dir_all(&data).unwrap();
    let (ok, out, err) = lattice(&[
        "restore",
        "--from",
        b1.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
    let accounts = emails(&fleet);
    assert!(accounts.contains("ann@example.org"), "{accounts}");
    assert!(!accounts.contains("bob@example.org"), "{accounts}");
    // The node never re-registered: it trusts the restored key and reconnects by itself (the
    // restored row says online from before; a message heard after the restart proves it).
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    wait_for(60, "node heard from again", || {
        let n = fleet.node(&id);
        (n["online"] == true && n["last_seen_ms"].as_u64()? > restarted).then_some(())
    });
    assert_eq!(fleet.nodes().len(), 1);
    // Its targets are accepted: the restored fleet's epoch is above the one the node saw.
    if workloads {
        deploy_and_see_it_applied(&fleet, &id, &node, "after");
        assert!(
            !node_target(&node).contains("\"before\""),
            "the node still runs what the restored fleet never deployed"
        );
        // In a new epoch, not in the one it had seen (counters past its window would also
        // get through, hiding a reused epoch for a while).
        let now_seen = fleet_epoch_seen_by(&node);
        assert!(now_seen > seen_epoch, "{now_seen} <= {seen_epoch}");
    }
    let _ = &node;
}

/// The target the node last applied, as it keeps it (`target.json`).
fn node_target(n: &Node) -> String {
    std::fs::read_to_string(n.data.join("target.json")).unwrap_or_default()
}

/// The newest fleet epoch the node has taken a message in (its replay window).
fn fleet_epoch_seen_by(node: &Node) -> u64 {
    let text = std::fs::read_to_string(node.data.join("fleet-replay.json")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["epoch"].as_u64())
        .unwrap_or(0)
}

/// Deploys a workload (its image need not exist: what counts is that the node takes the
/// target) and waits until the node has applied the target that holds it.
fn deploy_and_see_it_applied(f: &Fleet, node: &str, n: &Node, name: &str) {
    let (repo, _) = test_image()
        .split_once("@sha256:")
        .map(|(r, d)| (r.to_string(), d.to_string()))
        .unwrap();
    let image = format!("{repo}@sha256:{}", "0".repeat(64));
    f.cli_ok(&["deploy", "container", name, "--image", &image]);
    wait_for(60, &format!("node applied the target with {name}"), || {
        let n = f.node(node);
        (n["target"].as_str()?.contains(&format!("\"{name}\""))
            && n["applied_revision"] == n["target_revision"])
            .then_some(())
    });
    // The node's own copy says so too (the fleet's view alone could be fooled by a revision
    // number the node applied for another target).
    assert!(
        node_target(n).contains(&format!("\"{name}\"")),
        "{}",
        node_target(n)
    );
}

#[test]
fn set_aside_keeps_the_fleet_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let mut fleet = Fleet::start("fleet", &data, free_port(), free_port(), &["--no-gateway"]);
    let b = dir.path().join("b");
    let (ok, out, err) = lattice(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    fleet.kill9();
    let key_before = std::fs::read(data.join("fleet.key")).unwrap();
    let (ok, out, err) = lattice(&[
        "restore",
        "--from",
        b.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--set-aside",
    ]);
    assert!(ok, "{out}{err}");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pre-restore-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].path().join("fleet.key")).unwrap(),
        key_before
    );
    assert!(aside[0].path().join("fleet.db").exists());
    // A stale WAL alone (its database deleted by hand) still counts as a fleet there.
    std::fs::write(data.join("fleet.db-wal"), b"stale").unwrap();
    let (ok, _, err) = lattice(&[
        "restore",
        "--from",
        b.to_str().unwrap(),
        "--data",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert!(ok, "an empty directory takes a restore: {err}");
    for f in [
        "fleet.db",
        "fleet.key",
        "fleet-key.pem",
        "fleet-cert.pem",
        "operator.token",
    ] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let (ok, _, err) = lattice(&[
        "restore",
        "--from",
        b.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("fleet.db-wal"), "{err}");
    // No key given: no fleet.
    let (ok, _, err) = lattice(&[
        "backup",
        "--data",
        dir.path().to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("holds no fleet"), "{err}");
}
