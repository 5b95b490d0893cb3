//! Upstreams end to end (ADR 0011): a real `lattice fleet` with its gateway declaring the test
//! registry (127.0.0.1:5000, scripts/test-images) as upstream `registry`, a real latticed
//! whose registry proxy listens on a free loopback port, and the machine's Docker engine.
//!
//! The node's target names an image of the fleet's registry, pinned by digest; the fleet hands
//! it to the node at the node's proxy, and the engine pulls it through latticed, the tunnel and
//! the gateway. Proof: the container's image reference is the proxy's address (nothing else
//! listens there), the gateway's upstream byte counter grows by at least the image's unique
//! layer, and the workload runs. An undeclared upstream name is refused with its reply code
//! and counted. Needs root, Docker and the test registry.

mod common;

use common::docker::{can_run_workloads, containers_of, docker, test_image, Cleanup};
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An image made for this test only: `base` plus one layer of `mib` MiB of random bytes,
/// pushed as `127.0.0.1:5000/test/upstream-PID-TAG`; its digest-pinned reference. The local
/// copy is removed, so a later pull must fetch the new layer from the registry.
fn unique_image(base: &str, tag: &str, mib: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut blob = vec![0u8; mib << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut blob))
        .unwrap();
    std::fs::write(dir.path().join("blob"), &blob).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY blob /blob\n"),
    )
    .unwrap();
    let name = format!("127.0.0.1:5000/test/upstream-{}-{tag}", std::process::id());
    let run = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["build", "-q", "-t", &name, &dir.path().to_string_lossy()]);
    run(&["push", &name]);
    let pinned = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &name]);
    assert!(pinned.contains("@sha256:"), "{pinned}");
    run(&["rmi", &name]);
    pinned
}

fn metrics(f: &Fleet) -> String {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "5"])
        .arg(format!("{}/metrics", f.url))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of a counter line `NAME{LABELS} VALUE` (0 when absent).
fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

const BYTES_OUT: &str = "lattice_gateway_upstream_bytes_out_total{upstream=\"registry\"}";

/// latticed with a config file setting its registry proxy address.
fn node_with_proxy(data: &std::path::Path, provisioning: &str, proxy: &str) -> Node {
    std::fs::create_dir_all(data).unwrap();
    let prov = data.join("provisioning");
    std::fs::write(&prov, provisioning).unwrap();
    let config = data.with_extension("toml");
    std::fs::write(&config, format!("registry_proxy = \"{proxy}\"\n")).unwrap();
    let log = data.with_extension("log");
    let child = Command::new(workspace_bin("latticed"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .arg("--provisioning-file")
        .arg(&prov)
        .env("RUST_LOG", "info,latticed=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn latticed");
    Node {
        child,
        data: data.to_path_buf(),
        log,
    }
}

#[test]
fn a_node_pulls_the_fleets_pinned_images_through_its_tunnel() {
    if !can_run_workloads() {
        return;
    }
    let base = test_image();
    let image = unique_image(&base, "web", 4);
    let proxy = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let apps = format!("127.0.0.1:{}", free_port());
    let apps_tls = format!("127.0.0.1:{}", free_port());
    let tcp = 24000 + (std::process::id() % 300) as u16 * 3;
    let range = format!("{tcp}-{}", tcp + 2);
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[
            "--apps-http",
            &apps,
            "--apps-https",
            &apps_tls,
            "--apps-tcp-ports",
            &range,
            "--upstream-registry",
            "127.0.0.1:5000",
            "--node-registry-proxy",
            &proxy,
        ],
    );
    let n = node_with_proxy(&dir.path().join("node"), &f.provisioning("alice"), &proxy);
    let id = wait_for(20, "registration", || n.node_id());
    let _cleanup = Cleanup(id.clone());
    wait_for(30, "node online", || {
        (f.node(&id)["online"] == true).then_some(())
    });
    wait_for(20, "registry proxy listening", || {
        n.log_text()
            .contains("registry proxy listening")
            .then_some(())
    });
    let before = counter(&metrics(&f), BYTES_OUT);

    let started = Instant::now();
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
        "test -s /blob && mkdir -p /tmp/www && echo pulled-through-the-tunnel > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    ]);
    let shown = wait_for(120, "web running", || {
        let (ok, out, _) = f.cli(&["workload", "show", "web", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v["state"] == "running").then_some(v)
    });
    let took = started.elapsed();
    // The workload's own record keeps the fleet registry's reference; the node got the proxy's.
    assert_eq!(shown["image"], image.as_str(), "{shown}");
    let container = containers_of(&id);
    assert_eq!(container.lines().count(), 1, "{container}");
    let used = docker(&["inspect", "--format", "{{.Config.Image}}", container.trim()]);
    let digest = image.split_once('@').unwrap().1;
    let expected = image.replacen("127.0.0.1:5000", &proxy, 1);
    assert_eq!(used, expected, "the engine pulled at the node's proxy");
    assert!(used.ends_with(digest));
    let pulled = counter(&metrics(&f), BYTES_OUT) - before;
    assert!(
        pulled >= 4 << 20,
        "the 4 MiB layer came through the gateway's upstream ({pulled} bytes)\n{}",
        metrics(&f)
    );
    eprintln!(
        "deploy to running through the tunnel: {:.1} s, {pulled} bytes from the registry upstream",
        took.as_secs_f64()
    );
    // The workload serves (through the gateway, the other direction).
    let host = "web--operator.lattice-apps.localhost";
    let body = wait_for(30, "web answers through the gateway", || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "--resolve"])
            .arg(format!(
                "{host}:{}:127.0.0.1",
                apps.rsplit_once(':').unwrap().1
            ))
            .arg(format!(
                "http://{host}:{}/",
                apps.rsplit_once(':').unwrap().1
            ))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("pulled-through-the-tunnel").then_some(text)
    });
    assert_eq!(body.trim(), "pulled-through-the-tunnel");

    // Pull time of a larger image, through the node's proxy and the tunnel vs directly.
    let big = unique_image(&base, "big", 32);
    let timed_pull = |r: &str| {
        let t = Instant::now();
        let out = Command::new("docker")
            .args(["pull", "-q", r])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = t.elapsed().as_secs_f64();
        docker(&["rmi", r]);
        s
    };
    let through = timed_pull(&big.replacen("127.0.0.1:5000", &proxy, 1));
    let direct = timed_pull(&big);
    eprintln!("pull of a 32 MiB layer: through the tunnel {through:.2} s, direct {direct:.2} s");

    // The registry is read-only through the tunnel: a push (here its first request, starting
    // a blob upload) is cut off before the registry sees it whole, and counted; reads pass.
    let ask = |req: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    let read = ask("GET /v2/ HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n");
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    let push = ask(
        "POST /v2/lattice/evil/blobs/uploads/ HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n",
    );
    // The registry answers an upload start with 202 Accepted; nothing came back at all.
    assert!(push.is_empty(), "a node started an upload: {push}");
    // Nor may it list (or pull by tag) other accounts' repositories.
    let listed = ask("GET /v2/_catalog HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n");
    assert!(listed.is_empty(), "a node listed the registry: {listed}");
    let refusals = counter(
        &metrics(&f),
        "lattice_gateway_upstream_refused_total{reason=\"not_a_read\"}",
    );
    assert!(refusals >= 1, "{}", metrics(&f));

    // Anything but a declared name is refused by the gateway with its code, and counted:
    // a client holding this node's key asks for another upstream (it takes over the node's
    // tunnel, so this comes last).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(async {
        let keys = latticed::identity::load_or_generate(&n.data).unwrap();
        let (reg, _) = latticed::identity::load_registration(&n.data, &keys)
            .unwrap()
            .unwrap();
        let opts = lattice_tunnel::ClientOptions::new(
            f.http.clone(),
            keys.identity.clone(),
            reg.fleet_public().unwrap(),
        );
        struct NoDial;
        impl lattice_tunnel::Dialer for NoDial {
            fn dial(
                &self,
                _: lattice_tunnel::Open,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<
                            Output = Result<tokio::net::TcpStream, lattice_tunnel::Reply>,
                        > + Send
                        + '_,
                >,
            > {
                Box::pin(async { Err(lattice_tunnel::Reply::Unavailable) })
            }
        }
        let client = lattice_tunnel::client::spawn(opts, std::sync::Arc::new(NoDial)).unwrap();
        let opener = client.upstreams();
        let wait = Duration::from_secs(10);
        let refused = opener.open("backup", wait).await.err();
        // The declared one is still carried for this node.
        assert!(opener.open("registry", wait).await.is_ok());
        refused
    });
    assert!(
        matches!(
            refused,
            Some(lattice_tunnel::UpstreamError::Refused {
                reply: lattice_tunnel::Reply::UpstreamNotDeclared,
                ..
            })
        ),
        "{refused:?}"
    );
    let text = metrics(&f);
    assert!(
        counter(
            &text,
            "lattice_gateway_upstream_refused_total{reason=\"upstream_not_declared\"}"
        ) >= 1,
        "{text}"
    );
    drop(n);
}
