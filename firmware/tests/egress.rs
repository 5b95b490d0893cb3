//! What a workload can reach, on the real engine and the host's real firewall, with the
//! provider's LAN and the public internet played by network namespaces this test makes:
//!
//! - `lan`: a web server on a private address (10.213.0.2) behind a veth pair;
//! - `public`: a web server on a public-range address (203.0.113.2, TEST-NET-3) the same way;
//! - the host itself: a web server on all of the host's addresses.
//!
//! A workload that declared egress reaches the public server and nothing else; a workload that
//! did not reaches nothing; neither reaches the LAN or the host; and the host can still open
//! connections to a workload (that is how the tunnel reaches it).
//!
//! Needs root, the Docker engine, `ip` (iproute2) and `iptables` (all installed by
//! `scripts/test`); skipped with a printed reason without the engine.

mod common;

use common::docker::*;
use latticed::firewall::{self, chains};
use latticed::runtime::ContainerRuntime;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MARK_LAN: &str = "lattice-lan-service";
const MARK_PUBLIC: &str = "lattice-public-service";
const MARK_HOST: &str = "lattice-host-service";

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to the host by a veth pair, serving `mark` over HTTP on
/// `ns_addr:8080` (busybox httpd). Removed, with its server, on drop.
struct Site {
    ns: String,
    server: Child,
    _root: tempfile::TempDir,
}

impl Site {
    fn new(tag: &str, host_addr: &str, ns_addr: &str, mark: &str) -> Site {
        let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let ns = format!("lt{tag}{suffix}");
        let (veth_host, veth_ns) = (format!("v{tag}{suffix}h"), format!("v{tag}{suffix}n"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &veth_host, "type", "veth", "peer", "name", &veth_ns,
        ]);
        sh(&["ip", "link", "set", &veth_ns, "netns", &ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_addr}/24"),
            "dev",
            &veth_host,
        ]);
        sh(&["ip", "link", "set", &veth_host, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            sh(&all);
        };
        in_ns(&[
            "ip",
            "addr",
            "add",
            &format!("{ns_addr}/24"),
            "dev",
            &veth_ns,
        ]);
        in_ns(&["ip", "link", "set", &veth_ns, "up"]);
        in_ns(&["ip", "link", "set", "lo", "up"]);
        in_ns(&["ip", "route", "add", "default", "via", host_addr]);
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("index.html"), mark).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "busybox", "httpd", "-f", "-p"])
            .arg(format!("{ns_addr}:8080"))
            .arg("-h")
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox httpd (Debian's busybox-static)");
        let site = Site {
            ns,
            server,
            _root: root,
        };
        // The server answers from the host before any workload is asked to reach it.
        let url = format!("{ns_addr}:8080");
        for _ in 0..50 {
            if http_get(&url).is_some_and(|b| b.contains(mark)) {
                return site;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{mark} never answered on {url} from the host");
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// `GET /` on `addr` from the host; the body, or `None` when it cannot connect.
fn http_get(addr: &str) -> Option<String> {
    let sa = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    Some(body)
}

/// A web server on every address of the host, answering `MARK_HOST`.
fn host_service() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{MARK_HOST}",
                MARK_HOST.len()
            );
        }
    });
    port
}

/// `GET /` from inside the container (busybox `nc`: the static busybox's `wget` crashes in a
/// `FROM scratch` image); the answer when it holds `mark`, else what was seen. `nc`'s exit
/// status says nothing about the connection, so the answer is what counts.
fn fetch_from(container: &str, addr: &str, mark: &str) -> Result<String, String> {
    let (host, port) = addr.split_once(':').expect("host:port");
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>&1");
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", &script])
        .output()
        .expect("docker exec");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains(mark) {
        Ok(text)
    } else {
        Err(text.trim().to_string())
    }
}

fn inspect(container: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, container])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn workloads_reach_the_public_internet_only_by_declaring_egress_and_never_the_lan_or_host() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let lan = Site::new("l", "10.213.0.1", "10.213.0.2", MARK_LAN);
    let public = Site::new("p", "203.0.113.1", "203.0.113.2", MARK_PUBLIC);
    let host_port = host_service();

    // Both serve busybox httpd on 8080 so the host can check it still reaches them.
    let serve = "mkdir -p /tmp/www && echo workload > /tmp/www/index.html && \
                 exec httpd -f -p 8080 -h /tmp/www";
    let mut open = spec("w-open", serve);
    open.egress = true;
    let closed = spec("w-closed", serve);
    let open_id = node.run(&open).await;
    let closed_id = node.run(&closed).await;
    for id in [&open_id, &closed_id] {
        node.wait_for(id, 20, |s| {
            matches!(s, latticed::runtime::ContainerStatus::Running { .. })
        })
        .await;
    }

    // The node's chains exist, are jumped to, and name both bridges.
    let c = chains(&node.id);
    let rules = Command::new("iptables").args(["-S"]).output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.contains(&format!("-A DOCKER-USER -j {}", c.forward)),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("-A INPUT -j {}", c.input)),
        "{rules}"
    );
    for w in ["w-open", "w-closed"] {
        let br = firewall::bridge_name(&node.id, w);
        assert!(
            rules.contains(&format!("-i {br} ")),
            "no rule for {br}:\n{rules}"
        );
    }

    let public_addr = "203.0.113.2:8080";
    let lan_addr = "10.213.0.2:8080";
    // Positive control first: the set-up works, so the refusals below are the firewall's.
    let body = fetch_from(&open_id, public_addr, MARK_PUBLIC)
        .expect("egress workload reaches the public site");
    assert!(body.contains(MARK_PUBLIC), "{body}");

    for (name, id) in [("egress", &open_id), ("closed", &closed_id)] {
        let gateway = inspect(id, "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}");
        for (addr, mark) in [
            (lan_addr.to_string(), MARK_LAN),
            (format!("10.213.0.1:{host_port}"), MARK_HOST),
            (format!("203.0.113.1:{host_port}"), MARK_HOST),
            (format!("{gateway}:{host_port}"), MARK_HOST),
        ] {
            let got = fetch_from(id, &addr, mark);
            assert!(got.is_err(), "{name} workload reached {addr}: {got:?}");
        }
    }
    let got = fetch_from(&closed_id, public_addr, MARK_PUBLIC);
    assert!(
        got.is_err(),
        "a workload without egress reached {public_addr}: {got:?}"
    );
    // The host's services are up (they are refused, not absent).
    assert!(http_get(&format!("127.0.0.1:{host_port}")).is_some_and(|b| b.contains(MARK_HOST)));

    // The host still opens connections to workloads (the tunnel's direction).
    for id in [&open_id, &closed_id] {
        let ip = inspect(
            id,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        );
        let body = http_get(&format!("{ip}:8080"));
        assert!(
            body.as_deref().is_some_and(|b| b.contains("workload")),
            "host cannot reach workload at {ip}: {body:?}"
        );
    }

    // Removing a workload removes its rules; the other's stay.
    let observed = node
        .rt
        .list_owned(&node.id)
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.container_id == open_id)
        .unwrap();
    node.rt.remove(&node.id, &observed, true).await.unwrap();
    let rules = Command::new("iptables")
        .args(["-S", &c.forward])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains(&firewall::bridge_name(&node.id, "w-open")),
        "{rules}"
    );
    assert!(
        rules.contains(&firewall::bridge_name(&node.id, "w-closed")),
        "{rules}"
    );

    // The last one gone: the node leaves no chains and no jumps in the host's tables.
    let observed = node
        .rt
        .list_owned(&node.id)
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.container_id == closed_id)
        .unwrap();
    node.rt.remove(&node.id, &observed, true).await.unwrap();
    let all = Command::new("iptables").args(["-S"]).output().unwrap();
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(
        !all.contains(&c.forward) && !all.contains(&c.input),
        "chains left behind: {all}"
    );
    drop((lan, public));
}

#[tokio::test]
async fn a_firewall_that_cannot_be_set_fails_the_create_and_nothing_runs() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let fw = std::sync::Arc::new(latticed::firewall::fake::FakeFirewall::new());
    fw.fail_with(Some("iptables: the kernel said no"));
    let rt = latticed::runtime::docker::DockerRuntime::with_firewall(
        node.rt.options().clone(),
        fw.clone(),
    );
    let err = rt
        .create(
            &node.id,
            &spec("w-fw", "sleep 3600"),
            "h",
            &node.cgroup_parent,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the kernel said no"), "{err}");
    let containers = node.rt.list_owned(&node.id).await.unwrap();
    assert!(containers.is_empty(), "{containers:?}");
}
