//! Fleet key rotation (issue 8, "fleet recovery"), end to end with the real `lattice` and
//! `latticed` binaries: `lattice keys rotate` against a stopped fleet's data directory, the
//! fleet restarted with the new key, and its node, never re-provisioned, follows the chain of
//! rotation statements in the fleet's certificate, pins the new key (`fleet-pin.json`), takes
//! targets signed by it, and reconnects after its own restart; a node offline across two
//! rotations walks both. A server whose rotation statement is forged (signed by another key) is
//! refused and the node keeps its pin.

mod common;

use common::docker::can_run_workloads;
use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

fn rotate(data: &Path) -> String {
    let (ok, out, err) = lattice(&["keys", "rotate", "--data", data.to_str().unwrap()]);
    assert!(ok, "keys rotate: {out}{err}");
    // "new fleet key:    KEY (epoch N)"
    out.lines()
        .find_map(|l| l.strip_prefix("new fleet key:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no new key in {out}"))
        .to_string()
}

/// The node's pinned fleet key and epoch from `fleet-pin.json` (None: still the provisioned key).
fn node_pin(node: &Node) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(node.data.join("fleet-pin.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((v["key"].as_str()?.to_string(), v["epoch"].as_u64()?))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the fleet has heard from `id` after `since_ms`.
fn heard_from_since(fleet: &Fleet, id: &str, since_ms: u64) {
    wait_for(90, "node heard from again", || {
        let n = fleet.node(id);
        (n["online"] == true && n["last_seen_ms"].as_u64()? > since_ms).then_some(())
    });
}

/// Deploys a workload (its image need not exist: what counts is that the node takes the
/// target, signed by the fleet's current key) and waits until the node applied it.
fn deploy_and_see_it_applied(f: &Fleet, id: &str, n: &Node, name: &str) {
    let image = format!("127.0.0.1:5000/lattice/none@sha256:{}", "0".repeat(64));
    f.cli_ok(&["deploy", "container", name, "--image", &image]);
    wait_for(60, &format!("node applied the target with {name}"), || {
        let v = f.node(id);
        (v["target"].as_str()?.contains(&format!("\"{name}\""))
            && v["applied_revision"] == v["target_revision"])
            .then_some(())
    });
    let own = std::fs::read_to_string(n.data.join("target.json")).unwrap_or_default();
    assert!(own.contains(&format!("\"{name}\"")), "{own}");
}

#[test]
fn a_rotated_fleet_key_reaches_its_node_without_reprovisioning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let (http, mqtt) = (free_port(), free_port());
    let mut fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
    let provisioning = fleet.provisioning("alice");
    let mut node = Node::start(&dir.path().join("node"), &provisioning);
    let id = wait_for(30, "node registered", || node.node_id());
    let _cleanup = common::docker::Cleanup(id.clone());
    wait_for(30, "node online", || {
        (fleet.node(&id)["online"] == true).then_some(())
    });
    let workloads = can_run_workloads();
    if workloads {
        deploy_and_see_it_applied(&fleet, &id, &node, "before");
    }
    assert_eq!(node_pin(&node), None, "no rotation yet");
    // A provisioning string made before the rotation, used after it.
    let early = fleet.provisioning("bob");

    // Not while the fleet runs: it would keep serving the old key with a chain on disk that
    // says otherwise.
    let before = std::fs::read(data.join("fleet.key")).unwrap();
    let (ok, _, err) = lattice(&["keys", "rotate", "--data", data.to_str().unwrap()]);
    assert!(!ok && err.contains("is in use by a running fleet"), "{err}");
    assert_eq!(std::fs::read(data.join("fleet.key")).unwrap(), before);
    // Rotate while the fleet is stopped, then start it again with the new key.
    fleet.kill9();
    let k1 = rotate(&data);
    let (ok, out, err) = lattice(&["keys", "show", "--data", data.to_str().unwrap()]);
    assert!(
        ok && out.contains(&format!("fleet key: {k1} (epoch 1)")),
        "{out}{err}"
    );
    let restarted = now_ms();
    let mut fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
    // The CLI config the fleet rewrote pins the new key (the CLI would follow the chain too).
    let cli = std::fs::read_to_string(&fleet.cli_config).unwrap();
    assert!(cli.contains(&k1), "{cli}");

    // The node follows the statement in the certificate, pins the new key and reconnects.
    heard_from_since(&fleet, &id, restarted);
    assert_eq!(node_pin(&node), Some((k1.clone(), 1)));
    assert!(
        node.log_text().contains("fleet key rotated"),
        "{}",
        node.log_text()
    );
    if workloads {
        deploy_and_see_it_applied(&fleet, &id, &node, "after");
    }

    // A node provisioned with a string from before the rotation (it names the old key)
    // registers through the chain and pins the new key.
    let late = Node::start(&dir.path().join("late"), &early);
    let late_id = wait_for(60, "late node registered", || late.node_id());
    let _late_cleanup = common::docker::Cleanup(late_id.clone());
    wait_for(60, "late node online", || {
        (fleet.node(&late_id)["online"] == true).then_some(())
    });
    assert_eq!(node_pin(&late), Some((k1.clone(), 1)));
    drop(late);

    // A node restarted after the rotation loads its new pin and reconnects.
    node.kill9();
    let restarted = now_ms();
    node = Node::start(&node.data.clone(), &provisioning);
    heard_from_since(&fleet, &id, restarted);
    assert_eq!(node_pin(&node), Some((k1.clone(), 1)));
    if workloads {
        deploy_and_see_it_applied(&fleet, &id, &node, "again");
    }

    // Offline across two more rotations: the node walks the whole chain at its next
    // connection.
    node.kill9();
    fleet.kill9();
    let _k2 = rotate(&data);
    let k3 = rotate(&data);
    let restarted = now_ms();
    let fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
    let node = Node::start(&node.data.clone(), &provisioning);
    heard_from_since(&fleet, &id, restarted);
    assert_eq!(node_pin(&node), Some((k3, 3)));
    if workloads {
        deploy_and_see_it_applied(&fleet, &id, &node, "walked");
    }
    assert_eq!(
        fleet.nodes().len(),
        2,
        "never re-registered (the node and the late one)"
    );
}

/// A TLS server on `addr` showing `cert` (and signing with `key`): every connection is
/// handshaken and dropped. Stops when `stop` is set.
fn fake_tls_server(
    addr: &str,
    tls: &lattice_fleet::tls::FleetTls,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    let config = lattice_fleet::tls::server_config(tls).unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut handshakes = 0;
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut sock, _)) => {
                    sock.set_nonblocking(false).unwrap();
                    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                        .unwrap();
                    let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    handshakes += 1;
                    while conn.is_handshaking() {
                        if conn.complete_io(&mut sock).is_err() {
                            break;
                        }
                    }
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        handshakes
    })
}

#[test]
fn a_forged_rotation_is_refused_and_the_node_keeps_its_pin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let (http, mqtt) = (free_port(), free_port());
    let mut fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
    let node = Node::start(&dir.path().join("node"), &fleet.provisioning("alice"));
    let id = wait_for(30, "node registered", || node.node_id());
    let _cleanup = common::docker::Cleanup(id.clone());
    wait_for(30, "node online", || {
        (fleet.node(&id)["online"] == true).then_some(())
    });
    let fleet_key = lattice_wire::IdentityPublic::parse(
        std::fs::read_to_string(&fleet.cli_config)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("fleet_key = "))
            .unwrap()
            .trim_matches('"'),
    )
    .unwrap();

    // The fleet goes away; in its place on the MQTT port, someone shows its own key with a
    // statement "fleet key → attacker's key" that the attacker signed itself.
    fleet.kill9();
    let attacker = lattice_wire::IdentityKey::generate();
    let mut forged =
        lattice_wire::rotation::RotationStatement::sign(&attacker, &attacker.public(), 1, now_ms());
    forged.old_key = fleet_key;
    let chain = lattice_wire::rotation::RotationChain {
        statements: vec![forged],
    };
    let tls = lattice_fleet::tls::self_signed_with_chain(&attacker, &[], &chain).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = fake_tls_server(&format!("127.0.0.1:{mqtt}"), &tls, stop.clone());
    wait_for(90, "the node refuses the forged rotation", || {
        node.log_text()
            .contains("fleet key rotation refused")
            .then_some(())
    });
    let log = node.log_text();
    assert!(log.contains("bad_signature"), "{log}");
    assert!(!log.contains("fleet key rotated"), "{log}");
    assert_eq!(node_pin(&node), None, "the node keeps the provisioned pin");
    stop.store(true, Ordering::Relaxed);
    assert!(server.join().unwrap() >= 1);

    // The real fleet comes back with its real key: the node reconnects to it.
    let restarted = now_ms();
    let fleet = Fleet::start("fleet", &data, http, mqtt, &["--no-gateway"]);
    heard_from_since(&fleet, &id, restarted);
    assert_eq!(node_pin(&node), None);
}
