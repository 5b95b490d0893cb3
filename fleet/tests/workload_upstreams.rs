//! Workload upstreams end to end (ADR 0011): `lattice deploy container client --upstream web`
//! on a real fleet with its gateway and a real latticed on the machine's Docker engine. The
//! client container finds `IP:PORT` in `WEB_ADDR` and fetches the web workload's page there:
//! latticed's listener on the client's bridge, the node's tunnel, the gateway (which lets the
//! stream through only because the client's target declares it) and the web workload's
//! tunnel stream. The client may reach latticed's listeners on the host and nothing else: a
//! service the test runs on the host on every address at the client's second upstream port
//! (so latticed cannot listen there) stays out of reach, as does the port after. Needs root,
//! Docker and the test image.

mod common;

use common::docker::*;
use common::*;
use std::io::{Read, Write};
use std::process::Command;

/// The client's second upstream port (`hardening::UPSTREAM_PORT_BASE` + 1), where the test's
/// host service listens first.
const NEXT_PORT: u16 = latticed::runtime::hardening::UPSTREAM_PORT_BASE + 1;

#[test]
fn a_workload_reaches_another_through_its_upstream_and_nothing_else_on_the_host() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    // A service on the host, on every address, at a port next to the upstream's: what a
    // provider might run. The workload must not reach it.
    let host_service = std::net::TcpListener::bind(("0.0.0.0", NEXT_PORT))
        .unwrap_or_else(|e| panic!("port {NEXT_PORT} on the host: {e}"));
    std::thread::spawn(move || {
        for mut c in host_service.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-secret\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let (n, _id, _cleanup) = online_node(&f, &dir.path().join("node"), "alice");

    f.cli_ok(&[
        "deploy",
        "container",
        "web",
        "--image",
        &image,
        "--port",
        "8080",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo upstream-page-42 > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    ]);
    f.cli_ok(&[
        "deploy",
        "container",
        "web2",
        "--image",
        &image,
        "--port",
        "8080",
        "--",
        "sh",
        "-c",
        "exec httpd -f -p 8080 -h /tmp",
    ]);
    // Refused at deploy, naming what was wrong: a workload that does not exist, a port the
    // web workload does not declare.
    let (ok, _, err) = f.cli(&[
        "deploy",
        "container",
        "x",
        "--image",
        &image,
        "--upstream",
        "nope",
    ]);
    assert!(!ok && err.contains("no workload of that name"), "{err}");
    let (ok, _, err) = f.cli(&[
        "deploy",
        "container",
        "x",
        "--image",
        &image,
        "--upstream",
        "web:9999",
    ]);
    assert!(!ok && err.contains("port 9999"), "{err}");

    f.cli_ok(&[
        "deploy",
        "container",
        "client",
        "--image",
        &image,
        "--upstream",
        "web",
        "--upstream",
        "web2",
        "--",
        "sh",
        "-c",
        "echo addr=$WEB_ADDR web2=$WEB2_ADDR; \
         gw=${WEB_ADDR%:*}; port=${WEB_ADDR##*:}; \
         get() { printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $1 $2; }; \
         while :; do \
           if get $gw $port | grep upstream-page; then break; fi; sleep 1; \
         done; \
         for p in NEXT $((NEXT + 1)); do \
           if get $gw $p | grep -q host-secret; then echo HOST-REACHED-$p; else echo HOST-BLOCKED-$p; fi; \
         done; \
         exec sleep 3600"
            .replace("NEXT", &NEXT_PORT.to_string())
            .as_str(),
    ]);
    // Its owner sees what it reaches, and in which variables.
    let shown = f.cli_ok(&["workload", "show", "client"]);
    assert!(
        shown.contains("upstream web:8080 in WEB_ADDR")
            && shown.contains("upstream web2:8080 in WEB2_ADDR"),
        "{shown}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let logs = loop {
        let (ok, out, err) = f.cli(&["logs", "client"]);
        if ok && out.matches("HOST-").count() >= 2 {
            break out;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "the client did not fetch the page and probe the host within 120 s.\n\
                 client logs: {out}{err}\nworkloads: {}\nnode log:\n{}\nfleet log:\n{}",
                f.cli(&["workloads", "--json"]).1,
                n.log_text(),
                f.log_text()
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    assert!(logs.contains("upstream-page-42"), "{logs}");
    for p in [NEXT_PORT, NEXT_PORT + 1] {
        assert!(logs.contains(&format!("HOST-BLOCKED-{p}")), "{logs}");
    }
    assert!(!logs.contains("REACHED"), "{logs}");
    // The address is the client's bridge on the host, at the first upstream port.
    let addr = logs
        .lines()
        .find_map(|l| l.strip_prefix("addr=")?.split_whitespace().next())
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        addr.ends_with(&format!(
            ":{}",
            latticed::runtime::hardening::UPSTREAM_PORT_BASE
        )),
        "{addr}"
    );
    // The stream went through the gateway as a workload upstream.
    let metrics = Command::new("curl")
        .args(["-sk", "--max-time", "5"])
        .arg(format!("{}/metrics", f.url))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let streams = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("lattice_gateway_upstream_streams_total{upstream=\"workload\"}")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(streams >= 1.0, "{metrics}");
}
