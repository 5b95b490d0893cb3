//! Two nodes of one provider behind a real fleet with its gateway: the rig of the node
//! lifecycle and workload update tests (real `lattice fleet`, real latticed processes, real
//! containers on the machine's Docker engine).

use super::docker::Cleanup;
use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP/1.1 request through the gateway; (status, body), `None` if the connection failed.
pub fn http_get(addr: SocketAddr, host: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

pub struct Rig {
    pub _dir: tempfile::TempDir,
    pub fleet: Fleet,
    pub a: Node,
    pub b: Node,
    pub a_id: String,
    pub b_id: String,
    pub apps: SocketAddr,
    pub _cleanup: (Cleanup, Cleanup),
}

/// A fleet (grace 3 s) with two nodes of one provider, both online.
pub fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let apps: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let https = format!("127.0.0.1:{}", free_port());
    let tcp = 23000 + (std::process::id() % 300) as u16 * 20;
    let range = format!("{tcp}-{}", tcp + 19);
    let apps_s = apps.to_string();
    let fleet = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[
            "--apps-http",
            &apps_s,
            "--apps-https",
            &https,
            "--apps-tcp-ports",
            &range,
            "--node-lost-grace-secs",
            "3",
        ],
    );
    let a = Node::start(&dir.path().join("a"), &fleet.provisioning("alice"));
    let b = Node::start(&dir.path().join("b"), &fleet.provisioning("alice"));
    let a_id = wait_for(20, "a registered", || a.node_id());
    let b_id = wait_for(20, "b registered", || b.node_id());
    let cleanup = (Cleanup(a_id.clone()), Cleanup(b_id.clone()));
    for id in [&a_id, &b_id] {
        wait_for(30, "node online", || {
            (fleet.node(id)["online"] == true).then_some(())
        });
    }
    Rig {
        _dir: dir,
        fleet,
        a,
        b,
        a_id,
        b_id,
        apps,
        _cleanup: cleanup,
    }
}

impl Rig {
    /// Deploys container `name` (with the rest of the `lattice deploy` arguments) onto node a
    /// (b cordoned meanwhile) and waits until it runs there.
    pub fn deploy_on_a(&self, name: &str, args: &[&str]) {
        let out = self.fleet.cli_ok(&["node", "cordon", &self.b_id]);
        assert!(out.contains("cordoned"), "{out}");
        let mut cmd = vec!["deploy", "container", name, "--json"];
        cmd.extend_from_slice(args);
        let out = self.fleet.cli_ok(&cmd);
        let w: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            w["node"],
            self.a_id.as_str(),
            "a cordoned node took new work: {w}"
        );
        self.wait_running(name, &self.a_id);
        self.fleet.cli_ok(&["node", "uncordon", &self.b_id]);
    }

    pub fn show(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.fleet.cli_ok(&["workload", "show", name, "--json"])).unwrap()
    }

    pub fn wait_running(&self, name: &str, node: &str) -> serde_json::Value {
        wait_for(90, &format!("{name} running on {node}"), || {
            let (ok, out, _) = self.fleet.cli(&["workload", "show", name, "--json"]);
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            (ok && v["state"] == "running" && v["node"] == node).then_some(v)
        })
    }
}

pub fn event_kinds(w: &serde_json::Value) -> Vec<String> {
    w["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

pub fn event<'a>(w: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    w["events"].as_array()?.iter().find(|e| e["kind"] == kind)
}
