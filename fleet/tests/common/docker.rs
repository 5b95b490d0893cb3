//! Helpers for fleet tests that run real workloads on the machine's Docker engine.

use std::process::Command;

/// True when the machine can run real workloads (root and a Docker engine); otherwise prints
/// why the test is skipped, and fails under CI, where both must be there.
pub fn can_run_workloads() -> bool {
    if std::path::Path::new("/var/run/docker.sock").exists() && nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI needs root and Docker");
    eprintln!("SKIPPED: needs root and a Docker engine");
    false
}

/// The digest-pinned test image from `build/test-images.env` (made by `scripts/test-images`).
pub fn test_image() -> String {
    let env = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/test-images.env");
    let text = std::fs::read_to_string(&env)
        .unwrap_or_else(|_| panic!("{} is missing: run scripts/test-images", env.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("LATTICE_TEST_IMAGE="))
        .expect("LATTICE_TEST_IMAGE in test-images.env")
        .trim()
        .to_string()
}

/// The docker CLI's trimmed standard output.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ids of the containers labelled with `node`, one per line.
pub fn containers_of(node: &str) -> String {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=io.lattice.node={node}"),
    ])
}

/// Removes whatever a node left in the engine and its envelope, even when the test failed.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers_of(&self.0).lines() {
            docker(&["rm", "-f", "-v", id]);
        }
        for kind in ["network", "volume"] {
            let names = docker(&[
                kind,
                "ls",
                "-q",
                "--filter",
                &format!("label=io.lattice.node={}", self.0),
            ]);
            for n in names.lines() {
                docker(&[kind, "rm", n]);
            }
        }
        super::remove_envelope(&self.0);
        // The node's firewall chains (a SIGKILLed latticed leaves them behind).
        use latticed::firewall::Firewall;
        if let Err(e) = latticed::firewall::iptables::Iptables::new().clear(&self.0) {
            eprintln!("cleanup of node {}: firewall: {e}", self.0);
        }
    }
}

/// A latticed in `data`, registered with `f` (provisioned for `owner`) and online, with the
/// [`Cleanup`] of what it will leave in the engine (declared after the node, so dropped first).
pub fn online_node(
    f: &super::Fleet,
    data: &std::path::Path,
    owner: &str,
) -> (super::Node, String, Cleanup) {
    let n = super::Node::start(data, &f.provisioning(owner));
    let id = super::wait_for(20, "registration", || n.node_id());
    let cleanup = Cleanup(id.clone());
    super::wait_for(20, "node online", || {
        (f.node(&id)["online"] == true).then_some(())
    });
    (n, id, cleanup)
}
