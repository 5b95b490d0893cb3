//! The NAT test, in network namespaces this test makes:
//!
//! ```text
//!  ns lt-prov-N (provider)        ns lt-rtr-N (home router)          root ns (fleet + gateway)
//!  latticed  10.231.N.2 ── veth ── 10.231.N.1 | MASQUERADE 10.232.N.2 ── veth ── 10.232.N.1
//!                                                                                 10.233.N.1
//!  ns lt-cons-N (consumer) 10.233.N.2 ── veth ───────────────────────────────────────┘
//! ```
//!
//! The provider has no inbound reachability (nobody routes to 10.231.N.0/24; the router only
//! masquerades outgoing traffic); the consumer can reach only the gateway's address
//! (10.233.N.1; no default route). curl and a TCP client in the consumer namespace reach an
//! HTTP server and a TCP echo server placed on the node by a target, through the gateway and
//! the node's tunnel; direct connections to the node, its router and the containers fail.
//!
//! The containers run on the machine's one Docker engine in the root namespace; latticed
//! reaches them from its namespace through the router, which stands in for the provider's
//! own host reaching its own containers (two `DOCKER-USER` rules let exactly that traffic
//! through Docker's isolation of internal networks). Needs root, Docker, iproute2, iptables,
//! curl and the test image.
//!
//! Upstreams (ADR 0011): the fleet declares the test registry (127.0.0.1:5000 of the root
//! namespace, which the provider cannot reach) as upstream `registry`; from inside the
//! provider namespace the test image's manifest and config, fetched by digest at latticed's
//! registry proxy (127.0.0.1:5001 of that namespace), come through the tunnel and match their
//! digests. (The one Docker engine lives in the root namespace, so its own pulls cannot be
//! put behind this NAT; `upstreams.rs` has the engine pull through a proxy.)

mod common;

use common::docker::{can_run_workloads, docker, test_image, Cleanup};
use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "{cmd}: {out}");
    out
}

/// The namespaces, links and rules of one test; removed when dropped.
struct Net {
    n: u32,
    prov: String,
    rtr: String,
    cons: String,
}

impl Net {
    fn new() -> Net {
        let n = 20 + std::process::id() % 200;
        let net = Net {
            n,
            prov: format!("lt-prov-{n}"),
            rtr: format!("lt-rtr-{n}"),
            cons: format!("lt-cons-{n}"),
        };
        net.teardown();
        let Net {
            prov, rtr, cons, ..
        } = &net;
        for ns in [prov, rtr, cons] {
            must(&format!("ip netns add {ns}"));
            must(&format!("ip -n {ns} link set lo up"));
        }
        // provider LAN: prov <-> router
        must(&format!(
            "ip link add ltl{n}a netns {prov} type veth peer name ltl{n}b netns {rtr}"
        ));
        must(&format!(
            "ip -n {prov} addr add 10.231.{n}.2/24 dev ltl{n}a"
        ));
        must(&format!("ip -n {prov} link set ltl{n}a up"));
        must(&format!("ip -n {prov} route add default via 10.231.{n}.1"));
        must(&format!("ip -n {rtr} addr add 10.231.{n}.1/24 dev ltl{n}b"));
        must(&format!("ip -n {rtr} link set ltl{n}b up"));
        // router WAN: router <-> root
        must(&format!(
            "ip link add ltw{n}a type veth peer name ltw{n}b netns {rtr}"
        ));
        must(&format!("ip addr add 10.232.{n}.1/24 dev ltw{n}a"));
        must(&format!("ip link set ltw{n}a up"));
        must(&format!("ip -n {rtr} addr add 10.232.{n}.2/24 dev ltw{n}b"));
        must(&format!("ip -n {rtr} link set ltw{n}b up"));
        must(&format!("ip -n {rtr} route add default via 10.232.{n}.1"));
        must(&format!(
            "ip netns exec {rtr} sysctl -qw net.ipv4.ip_forward=1"
        ));
        must(&format!(
            "ip netns exec {rtr} iptables -t nat -A POSTROUTING -s 10.231.{n}.0/24 -o ltw{n}b -j MASQUERADE"
        ));
        // Nothing from the WAN side gets in unless it belongs to a connection from inside.
        must(&format!(
            "ip netns exec {rtr} iptables -A FORWARD -i ltw{n}b -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP"
        ));
        // consumer: cons <-> root, no default route
        must(&format!(
            "ip link add ltc{n}a type veth peer name ltc{n}b netns {cons}"
        ));
        must(&format!("ip addr add 10.233.{n}.1/24 dev ltc{n}a"));
        must(&format!("ip link set ltc{n}a up"));
        must(&format!(
            "ip -n {cons} addr add 10.233.{n}.2/24 dev ltc{n}b"
        ));
        must(&format!("ip -n {cons} link set ltc{n}b up"));
        // latticed's egress firewall writes its chains with iptables in its own network
        // namespace; the engine's real chains are in the root namespace, so give it a
        // DOCKER-USER to hook into there (the firewall is tested on its own, issue 3).
        must(&format!("ip netns exec {prov} iptables -N DOCKER-USER"));
        // The provider's "host" reaches its own containers (see the module docs).
        must(&format!(
            "iptables -I DOCKER-USER 1 -i ltw{n}a -s 10.232.{n}.2 -j ACCEPT"
        ));
        must(&format!(
            "iptables -I DOCKER-USER 1 -o ltw{n}a -d 10.232.{n}.2 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
        ));
        net
    }

    fn teardown(&self) {
        let n = self.n;
        for ns in [&self.prov, &self.rtr, &self.cons] {
            sh(&format!("ip netns del {ns} 2>/dev/null"));
        }
        for l in ["ltw", "ltc"] {
            sh(&format!("ip link del {l}{n}a 2>/dev/null"));
        }
        sh(&format!(
            "iptables -D DOCKER-USER -i ltw{n}a -s 10.232.{n}.2 -j ACCEPT 2>/dev/null"
        ));
        sh(&format!(
            "iptables -D DOCKER-USER -o ltw{n}a -d 10.232.{n}.2 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT 2>/dev/null"
        ));
    }

    /// Runs `cmd` in the consumer namespace.
    fn consumer(&self, cmd: &str) -> (bool, String) {
        sh(&format!("ip netns exec {} {cmd}", self.cons))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A Python one-liner TCP client: sends `msg`, prints what comes back.
fn tcp_client(addr: &str, port: u16, msg: &str) -> String {
    format!(
        "python3 -c \"import socket; s=socket.create_connection(('{addr}',{port}),timeout=5); \
         s.sendall(b'{msg}'); print(s.recv(100).decode())\""
    )
}

#[test]
fn a_node_behind_nat_serves_consumers_only_through_the_gateway() {
    if !can_run_workloads() {
        return;
    }
    let image = test_image();
    let net = Net::new();
    let n = net.n;
    let wan = format!("10.232.{n}.1");
    let gw_ip = format!("10.233.{n}.1");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let (api, mqtt, apps) = (free_port(), free_port(), free_port());
    let tcp_first = 23000 + (n as u16 % 200) * 10;
    let range = format!("{tcp_first}-{}", tcp_first + 9);
    let (api_s, mqtt_s, apps_s, apps_tls) = (
        format!("0.0.0.0:{api}"),
        format!("0.0.0.0:{mqtt}"),
        format!("0.0.0.0:{apps}"),
        format!("0.0.0.0:{}", free_port()),
    );
    let fleet = Fleet::launch(
        "fleet",
        &data,
        &[
            "--http",
            &api_s,
            "--mqtt",
            &mqtt_s,
            "--public-host",
            &wan,
            "--apps-http",
            &apps_s,
            "--apps-https",
            &apps_tls,
            "--apps-tcp-ip",
            "0.0.0.0",
            "--apps-tcp-ports",
            &range,
            "--upstream-registry",
            "127.0.0.1:5000",
        ],
        &data.join("cli.toml"),
    );

    // latticed in the provider namespace, behind the router.
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    std::fs::write(node_dir.join("provisioning"), fleet.provisioning("alice")).unwrap();
    let log = dir.path().join("node.log");
    // nsenter switches only the network namespace (`ip netns exec` would also remount /sys,
    // hiding the cgroup hierarchy latticed needs for its envelope).
    let latticed = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.prov))
        .arg("--")
        .arg(workspace_bin("latticed"))
        .arg("--data-dir")
        .arg(&node_dir)
        .arg("--provisioning-file")
        .arg(node_dir.join("provisioning"))
        .env("RUST_LOG", "info,latticed=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("latticed in the provider namespace");
    let node_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let node_id = wait_for(30, "registration through NAT", || {
        // (the node registers over HTTPS through its router)
        let text = std::fs::read_to_string(node_dir.join("registration.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["node_id"].as_str().map(str::to_string)
    });
    // Dropped in reverse order: latticed is stopped first, then what it left is removed.
    let _cleanup = Cleanup(node_id.clone());
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Guard(latticed);

    let spec = serde_json::json!([
        {"id": "w-web", "name": "web", "image": image,
         "command": ["sh", "-c", "mkdir -p /tmp/www && echo hello-through-nat > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
         "cpu_millis": 200, "memory_bytes": 33554432, "pids_max": 64, "ports": [8080]},
        {"id": "w-echo", "name": "echo", "image": image,
         "command": ["nc", "-ll", "-p", "7000", "-e", "cat"],
         "cpu_millis": 200, "memory_bytes": 33554432, "pids_max": 64, "ports": [7000]},
    ]);
    let db = format!("sqlite://{}", data.join("fleet.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(lattice_fleet::store::Store::open(&db)).unwrap();
    rt.block_on(store.set_target(&node_id, &spec.to_string()))
        .unwrap();

    // curl from the consumer namespace, by name, pointed at the gateway's address.
    let host = "web.lattice-apps.localhost";
    let curl =
        format!("curl -sS --max-time 5 --resolve {host}:{apps}:{gw_ip} http://{host}:{apps}/");
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let body = loop {
        let (ok, out) = net.consumer(&curl);
        if ok && out.contains("hello-through-nat") {
            break out;
        }
        last = out;
        assert!(
            std::time::Instant::now() < deadline,
            "no answer through the gateway; last: {last}\nnode log:\n{}\nfleet log:\n{}",
            node_log(),
            fleet.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = last;
    assert_eq!(body.trim(), "hello-through-nat", "{}", node_log());

    // A TCP client reaches the echo workload on its gateway port.
    let port = rt
        .block_on(store.gateway_port("w-echo", 7000, (tcp_first, tcp_first + 9), 0))
        .unwrap()
        .unwrap();
    let echo = wait_for(30, "TCP echo through the gateway", || {
        let (ok, out) = net.consumer(&tcp_client(&gw_ip, port, "ping-nat"));
        (ok && out.contains("ping-nat")).then_some(out)
    });
    assert_eq!(echo.trim(), "ping-nat");

    // The provider reaches the fleet's registry only through its tunnel: directly nothing
    // answers, at latticed's registry proxy the test image comes by digest.
    let (repo, digest) = image
        .strip_prefix("127.0.0.1:5000/")
        .and_then(|r| r.split_once("@sha256:"))
        .expect("the test image is in the test registry");
    let in_prov = |cmd: &str| sh(&format!("ip netns exec {} {cmd}", net.prov));
    for direct in ["127.0.0.1:5000", &format!("{wan}:5000")] {
        let (ok, out) = in_prov(&format!("curl -sS --max-time 3 http://{direct}/v2/"));
        assert!(
            !ok,
            "the provider reached the registry at {direct} directly: {out}"
        );
    }
    let accept =
        "application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,\
                  application/vnd.docker.distribution.manifest.list.v2+json,\
                  application/vnd.docker.distribution.manifest.v2+json";
    let fetch = |path: &str, file: &std::path::Path| {
        in_prov(&format!(
            "curl -sSf --max-time 10 -H 'Accept: {accept}' -o {} http://127.0.0.1:5001/v2/{repo}/{path}",
            file.display()
        ))
    };
    let sha256 =
        |file: &std::path::Path| must(&format!("sha256sum {}", file.display()))[..64].to_string();
    let manifest = dir.path().join("manifest.json");
    let (ok, out) = wait_for(30, "the registry proxy in the provider namespace", || {
        let r = fetch(&format!("manifests/sha256:{digest}"), &manifest);
        r.0.then_some(r)
    });
    assert!(ok, "{out}");
    assert_eq!(
        sha256(&manifest),
        digest,
        "the manifest came whole, by digest"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    // An image manifest names its config; an index names manifests: either is a blob or
    // manifest to fetch by digest in turn.
    let (next, path) = match m["config"]["digest"].as_str() {
        Some(d) => (d.to_string(), "blobs"),
        None => (
            m["manifests"][0]["digest"].as_str().unwrap().to_string(),
            "manifests",
        ),
    };
    let blob = dir.path().join("next");
    let (ok, out) = fetch(&format!("{path}/{next}"), &blob);
    assert!(ok, "{out}");
    assert_eq!(format!("sha256:{}", sha256(&blob)), next);
    let metrics = must(&format!("curl -sk --max-time 5 {}/metrics", fleet.url));
    assert!(
        metrics.contains("lattice_gateway_upstream_bytes_out_total{upstream=\"registry\"}"),
        "{metrics}"
    );

    // Direct connections fail: to the node, to its router, to the containers.
    let container_ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &format!("lattice-{node_id}-w-web"),
    ]);
    assert!(!container_ip.is_empty());
    for (addr, port) in [
        (format!("10.231.{n}.2"), 8080u16),
        (format!("10.232.{n}.2"), 8080),
        (container_ip.clone(), 8080),
    ] {
        let (ok, out) = net.consumer(&tcp_client(&addr, port, "x"));
        assert!(!ok, "consumer reached {addr}:{port} directly: {out}");
    }
    // A listener on the provider machine is unreachable from outside, even for a host on the
    // router's WAN side that routes to the provider's LAN: the router lets in only replies.
    let seen = dir.path().join("accepted");
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &net.prov, "python3", "-c"])
        .arg(format!(
            "import socket\ns=socket.socket()\ns.setsockopt(1,2,1)\ns.bind(('0.0.0.0',9999))\n\
             s.listen()\nopen('{p}','w').write('ready\\n')\nwhile True:\n  c,_=s.accept()\n  \
             open('{p}','a').write('accepted\\n')\n  c.close()\n",
            p = seen.display()
        ))
        .spawn()
        .unwrap();
    wait_for(10, "listener in the provider namespace", || {
        std::fs::read_to_string(&seen)
            .ok()
            .filter(|t| t.contains("ready"))
    });
    // Control: inside the provider namespace it answers.
    let (ok, out) = sh(&format!(
        "ip netns exec {} python3 -c \"import socket; socket.create_connection(('10.231.{n}.2',9999),timeout=3)\"",
        net.prov
    ));
    assert!(ok, "control connection failed: {out}");
    must(&format!("ip route add 10.231.{n}.0/24 via 10.232.{n}.2"));
    let sock: SocketAddr = format!("10.231.{n}.2:9999").parse().unwrap();
    let direct = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2));
    assert!(direct.is_err(), "the fleet's host reached {sock} directly");
    let (ok, _) = net.consumer(&tcp_client(&format!("10.231.{n}.2"), 9999, "x"));
    assert!(!ok, "the consumer reached the provider directly");
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(
        text.matches("accepted").count(),
        1,
        "only the control got in: {text}"
    );
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(node_log().contains("tunnel connected"), "{}", node_log());
    drop(guard);
    drop(fleet);
}
