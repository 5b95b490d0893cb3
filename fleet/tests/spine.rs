//! The spine end to end: real `lattice` and `latticed` processes, the embedded broker over TLS,
//! SQLite, the CLI. Each test starts its own fleet on free loopback ports.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn online(f: &Fleet, id: &str) -> bool {
    f.node(id)["online"].as_bool() == Some(true)
}

#[test]
fn lattice_up_shows_the_local_node_online_without_login() {
    let dir = tempfile::tempdir().unwrap();
    // The default CLI config holds one left by an instance whose data directory is gone:
    // `lattice up` takes it over.
    let default_cli = dir.path().join("default-cli.toml");
    std::fs::write(
        &default_cli,
        "fleet_url = \"https://127.0.0.1:1\"\nfleet_key = \"x\"\n\
         operator_token_file = \"/nonexistent/operator.token\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let f = Fleet::start_with_cli(
        "up",
        &dir.path().join("data"),
        free_port(),
        free_port(),
        &[],
        &default_cli,
    );
    let node = wait_for(30, "the local node online", || {
        f.nodes().into_iter().find(|n| n["online"] == true)
    });
    eprintln!(
        "local node online {} ms after `lattice up` started",
        started.elapsed().as_millis()
    );
    assert_eq!(node["owner"], "local");
    // The operator credential is a 0600 file; the CLI config names it but never holds it.
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.path().join("data/operator.token");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cli = std::fs::read_to_string(&f.cli_config).unwrap();
    assert!(!cli.contains(std::fs::read_to_string(&secret).unwrap().trim()));
    // `lattice nodes` (table) names it as online.
    let table = f.cli_ok(&["nodes"]);
    assert!(
        table.contains(node["id"].as_str().unwrap()) && table.contains("online"),
        "{table}"
    );
}

#[test]
fn a_node_registers_stays_known_and_follows_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let mut f = Fleet::start("fleet", &dir.path().join("fleet"), http, mqtt, &[]);
    let prov = f.provisioning("alice");
    let started = Instant::now();
    let mut n = Node::start(&dir.path().join("node"), &prov);
    let id = wait_for(20, "registration", || n.node_id());
    eprintln!(
        "registered {} ms after latticed started",
        started.elapsed().as_millis()
    );
    wait_for(20, "node online", || online(&f, &id).then_some(()));
    let shown = f.node(&id);
    assert_eq!(shown["owner"], "alice");
    let inv: serde_json::Value =
        serde_json::from_str(shown["inventory"].as_str().unwrap()).unwrap();
    assert_eq!(
        inv["hostname"],
        nix::unistd::gethostname()
            .unwrap()
            .to_string_lossy()
            .as_ref()
    );
    assert!(inv["cpu_count"].as_u64().unwrap() >= 1);
    // Its first target (revision 1, empty) was sent at hello and is acknowledged.
    wait_for(20, "first target acknowledged", || {
        (f.node(&id)["applied_revision"].as_u64() == Some(1)).then_some(())
    });
    // A heartbeat carries usage.
    wait_for(10, "usage", || {
        (!f.node(&id)["usage"].as_str().unwrap_or("").is_empty()).then_some(())
    });

    // The same token cannot register a second node: its latticed says why and keeps waiting
    // for a valid provisioning (slowly), instead of exiting.
    let mut second = Node::start(&dir.path().join("node2"), &prov);
    wait_for(20, "second latticed to report the refusal", || {
        let log = second.log_text();
        (log.contains("used up") && log.contains("Retrying")).then_some(())
    });
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "a refused first boot must not exit: {}",
        second.log_text()
    );
    assert!(!dir.path().join("node2/registration.json").exists());
    assert_eq!(f.nodes().len(), 1);
    let _ = second.child.kill();
    let _ = second.child.wait();

    // A new target revision reaches the node, which acknowledges it.
    let db = format!("sqlite://{}", dir.path().join("fleet/fleet.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rev = rt.block_on(async {
        let store = lattice_fleet::store::Store::open(&db).await.unwrap();
        store.set_target(&id, "[]").await.unwrap()
    });
    wait_for(20, "target acknowledged", || {
        (f.node(&id)["applied_revision"].as_u64() == Some(rev)).then_some(())
    });

    // SIGKILL: the broker fires the signed last will and the node is offline at once.
    n.kill9();
    let killed = Instant::now();
    let reason = wait_for(15, "offline by last will", || {
        let s = f.node(&id);
        (s["online"] == false).then_some(s["offline_reason"].as_str().unwrap().to_string())
    });
    assert_eq!(
        reason, "connection lost",
        "offline by the will, not by heartbeat age"
    );
    eprintln!("offline {} ms after SIGKILL", killed.elapsed().as_millis());
    // Restarted, it keeps its identity: same id, no second node.
    let n = Node::start(&dir.path().join("node"), &prov);
    wait_for(20, "node back online", || online(&f, &id).then_some(()));
    assert_eq!(n.node_id().as_deref(), Some(id.as_str()));
    assert_eq!(f.nodes().len(), 1);

    // SIGKILL of the fleet loses no node; the node reconnects by itself once it is back.
    f.kill9();
    let f = Fleet::start("fleet", &dir.path().join("fleet"), http, mqtt, &[]);
    assert_eq!(f.nodes().len(), 1);
    wait_for(60, "node reconnected to the restarted fleet", || {
        online(&f, &id).then_some(())
    });

    // Revoked: refused from now on.
    f.cli_ok(&["node", "revoke", &id]);
    let s = f.node(&id);
    assert_eq!(
        (s["revoked"].as_bool(), s["online"].as_bool()),
        (Some(true), Some(false))
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        f.node(&id)["online"],
        false,
        "a revoked node must not come back online"
    );
}

#[test]
fn operator_commands_report_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let (ok, _, err) = f.cli(&["node", "show", "n-nope"]);
    assert!(!ok);
    assert!(err.contains("no node n-nope"), "{err}");
    let (ok, _, err) = f.cli(&["tokens", "create", "--uses", "0"]);
    assert!(!ok);
    assert!(err.contains("uses must be between"), "{err}");
    // Without a CLI config the error says what to do.
    let out = std::process::Command::new(lattice_bin())
        .args(["nodes"])
        .env("LATTICE_CLI_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lattice up"));
}

/// Tries an MQTT CONNECT on the plain listener; returns whether the broker accepted it.
fn mqtt_connects(port: u16, user: &str, password: &str) -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut o = rumqttc::MqttOptions::new(user, "127.0.0.1", port);
        o.set_credentials(user, password);
        let (_c, mut el) = rumqttc::AsyncClient::new(o, 10);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)))) => {
                    return a.code == rumqttc::ConnectReturnCode::Success
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    })
}

#[test]
fn lattice_broker_runs_alone_and_authenticates_against_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet");
    let (id, secret) = {
        let f = Fleet::start("fleet", &data, free_port(), free_port(), &[]);
        let n = Node::start(&dir.path().join("node"), &f.provisioning("bob"));
        let id = wait_for(20, "registration", || n.node_id());
        let secret = std::fs::read_to_string(n.data.join("broker.secret")).unwrap();
        (id, secret.trim().to_string())
    };
    let plain = free_port();
    let mut child = std::process::Command::new(lattice_bin())
        .args(["broker", "--data"])
        .arg(&data)
        .args(["--mqtt", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt-plain", &format!("127.0.0.1:{plain}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    assert!(
        lines.any(|l| l.map(|l| l == "ready").unwrap_or(false)),
        "broker did not start"
    );
    let accepted = mqtt_connects(plain, &id, &secret);
    let wrong = mqtt_connects(plain, &id, "not-the-secret");
    let stranger = mqtt_connects(plain, "n-stranger", &secret);
    let _ = child.kill();
    let _ = child.wait();
    assert!(accepted, "the registered node's credential is accepted");
    assert!(!wrong, "a wrong secret is refused at CONNECT");
    assert!(!stranger, "an unknown client is refused at CONNECT");
}

#[test]
fn a_fleet_on_postgresql_registers_and_keeps_nodes_across_a_restart() {
    let Some(url) = fresh_postgres("lattice_e2e") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let mut f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        http,
        mqtt,
        &["--database", &url],
    );
    let n = Node::start(&dir.path().join("node"), &f.provisioning("pg"));
    let id = wait_for(20, "registration", || n.node_id());
    wait_for(20, "node online", || online(&f, &id).then_some(()));
    assert!(
        !dir.path().join("fleet/fleet.db").exists(),
        "no SQLite file beside PostgreSQL"
    );
    f.kill9();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        http,
        mqtt,
        &["--database", &url],
    );
    assert_eq!(f.nodes().len(), 1);
    wait_for(60, "node back on the restarted fleet", || {
        online(&f, &id).then_some(())
    });
}
