//! The fleet and real `latticed` nodes on an external Mosquitto (the Debian package), with
//! per-node accounts and ACLs the fleet manages through Mosquitto's dynamic-security plugin.
//! Nodes connect over TLS to Mosquitto serving the fleet's certificate; the fleet uses the plain
//! loopback listener.
//!
//! Skipped (with a printed reason) when Mosquitto is not installed, unless `CI` is set.

mod common;

use common::*;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "lattice";

/// Mosquitto, its dynamic-security plugin and `mosquitto_ctrl`, or `None` (skip) outside CI.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let bin = PathBuf::from("/usr/sbin/mosquitto");
    let plugin = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join("mosquitto_dynamic_security.so"))
    .find(|p| p.is_file());
    let ctrl = Path::new("/usr/bin/mosquitto_ctrl").is_file();
    match (bin.is_file(), plugin, ctrl) {
        (true, Some(plugin), true) => Some((bin, plugin)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "mosquitto, its dynamic-security plugin or mosquitto_ctrl is missing \
                 (apt-get install -y mosquitto mosquitto-clients; scripts/test does it)"
            );
            eprintln!(
                "SKIPPED: mosquitto (with mosquitto_dynamic_security.so and mosquitto_ctrl) is \
                 not installed (apt-get install -y mosquitto mosquitto-clients)"
            );
            None
        }
    }
}

fn write_0600(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A Mosquitto with the dynamic-security plugin: a plain listener (the fleet, attackers) and a
/// TLS one with the fleet's certificate (nodes).
struct Mosquitto {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    tls_port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Writes the configuration and initialises the dynamic-security file with `ADMIN` and
    /// `admin_password` (does not start it).
    fn configure(bin: PathBuf, plugin: &Path, dir: &Path, admin_password: &str) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap();
        let dynsec = dir.join("dynamic-security.json");
        let out = Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&dynsec)
            .args([ADMIN, admin_password])
            .output()
            .expect("run mosquitto_ctrl");
        assert!(out.status.success(), "mosquitto_ctrl dynsec init: {out:?}");
        let (port, tls_port) = (free_port(), free_port());
        let conf = format!(
            "per_listener_settings false\nallow_anonymous false\n\
             plugin {plugin}\nplugin_opt_config_file {dynsec}\n\
             persistence false\nuser root\nlog_dest stderr\nlog_type all\n\
             max_packet_size 524288\n\
             listener {port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncertfile {d}/fleet-cert.pem\nkeyfile {d}/fleet-key.pem\n",
            plugin = plugin.display(),
            dynsec = dynsec.display(),
            d = dir.display(),
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        Mosquitto {
            bin,
            dir: dir.to_path_buf(),
            port,
            tls_port,
            child: None,
        }
    }

    /// Starts it (again) on the same ports and waits until both listeners accept.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .unwrap();
        self.child = Some(
            Command::new(&self.bin)
                .arg("-c")
                .arg(self.dir.join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn mosquitto"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.port, self.tls_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not start:\n{}",
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILL: a crash, not a clean stop.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    fn dynsec_json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("dynamic-security.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Prints the tails of these logs if the test fails while it is alive.
struct ShowLogsOnPanic(Vec<PathBuf>);

impl Drop for ShowLogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for p in &self.0 {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("----- {} (last 60 lines)\n{tail}", p.display());
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An MQTT 3.1.1 session on the plain listener: the client and its event loop after CONNACK, or
/// the connection error.
async fn connect(
    port: u16,
    client_id: &str,
    user: &str,
    password: &str,
) -> Result<(AsyncClient, EventLoop), String> {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, password)
        .set_keep_alive(Duration::from_secs(5));
    let (c, mut el) = AsyncClient::new(o, 16);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((c, el)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK within 10 s".into()),
        }
    }
}

/// Polls until a packet `want` accepts arrives.
async fn until<T>(el: &mut EventLoop, mut want: impl FnMut(&Packet) -> Option<T>) -> T {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(p))) => {
                if let Some(v) = want(&p) {
                    return v;
                }
            }
            Ok(Ok(_)) => {}
            other => panic!("MQTT session ended: {other:?}"),
        }
    }
}

/// Node messages the fleet refused so far, whatever the reason.
fn refused_total(f: &Fleet) -> u64 {
    let key = fleet_key(f);
    let rt = runtime();
    let text = rt.block_on(async {
        let c = lattice_wire::pin::pinned_http_client(&key, Duration::from_secs(10)).unwrap();
        c.get(format!("{}/metrics", f.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    text.lines()
        .filter(|l| l.starts_with("lattice_messages_rejected_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

fn fleet_key(f: &Fleet) -> lattice_wire::IdentityPublic {
    let cli = std::fs::read_to_string(&f.cli_config).unwrap();
    let key = cli
        .lines()
        .find_map(|l| l.strip_prefix("fleet_key = "))
        .unwrap()
        .trim_matches('"');
    lattice_wire::IdentityPublic::parse(key).unwrap()
}

fn online(f: &Fleet, id: &str) -> bool {
    f.node(id)["online"].as_bool() == Some(true)
}

fn secret(n: &Node) -> String {
    std::fs::read_to_string(n.data.join("broker.secret"))
        .unwrap()
        .trim()
        .to_string()
}

/// `lattice fleet` on `broker`, nodes told to use its TLS listener. Started before Mosquitto is
/// up when `broker` is not running yet (the fleet then waits for it).
fn fleet_args(m: &Mosquitto, http: u16, password_file: &Path) -> Vec<String> {
    vec![
        "--http".into(),
        format!("127.0.0.1:{http}"),
        "--broker".into(),
        m.url(),
        "--broker-user".into(),
        ADMIN.into(),
        "--broker-password-file".into(),
        password_file.display().to_string(),
        "--node-broker-url".into(),
        format!("mqtts://127.0.0.1:{}", m.tls_port),
    ]
}

fn launch(data: &Path, args: &[String]) -> Fleet {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Fleet::launch("fleet", data, &args, &data.join("cli.toml"))
}

#[test]
fn fleet_and_nodes_run_on_mosquitto_with_per_node_acls_revocation_and_restarts() {
    let Some((bin, plugin)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let admin_password = format!("adm-{}", hex::encode(rand::random::<[u8; 12]>()));
    let password_file = dir.path().join("broker-password");
    write_0600(&password_file, &format!("{admin_password}\n"));
    let mut m = Mosquitto::configure(bin, &plugin, &dir.path().join("mosquitto"), &admin_password);
    let data = dir.path().join("fleet");
    let _logs = ShowLogsOnPanic(vec![
        data.with_extension("fleet.log"),
        m.dir.join("mosquitto.log"),
        dir.path().join("a.log"),
        dir.path().join("b.log"),
        dir.path().join("c.log"),
    ]);

    // The fleet starts first: it writes its certificate, then waits for the broker.
    let args = fleet_args(&m, free_port(), &password_file);
    let starting = {
        let data = data.clone();
        std::thread::spawn(move || launch(&data, &args))
    };
    let log = data.with_extension("fleet.log");
    wait_for(30, "the fleet to wait for the broker", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot reach the MQTT broker")
            .then_some(())
    });
    // The operator hands Mosquitto the fleet's certificate and key (nodes pin that key).
    for f in ["fleet-cert.pem", "fleet-key.pem"] {
        std::fs::copy(data.join(f), m.dir.join(f)).unwrap();
    }
    m.start();
    let f = starting
        .join()
        .expect("fleet started once the broker was up");
    let text = f.log_text();
    assert!(
        text.contains("dynamic-security ready"),
        "the fleet connected by itself: {text}"
    );
    // Its role is in place and given to its user.
    let ds = m.dynsec_json();
    let fleet_role = ds["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rolename"] == "lattice-fleet")
        .expect("role lattice-fleet");
    assert!(fleet_role["acls"]
        .to_string()
        .contains("lattice/v1/nodes/+/target"));
    let admin = ds["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["username"] == ADMIN)
        .unwrap();
    assert!(
        admin["roles"].to_string().contains("lattice-fleet"),
        "{admin}"
    );

    // Two real nodes register, connect over TLS to Mosquitto and follow their targets.
    let a = Node::start(&dir.path().join("a"), &f.provisioning("alice"));
    let b_prov = f.provisioning("bob");
    let mut b = Node::start(&dir.path().join("b"), &b_prov);
    let a_id = wait_for(30, "a registered", || a.node_id());
    let b_id = wait_for(30, "b registered", || b.node_id());
    let reg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.data.join("registration.json")).unwrap())
            .unwrap();
    assert_eq!(
        reg["broker_urls"],
        serde_json::json!([format!("mqtts://127.0.0.1:{}", m.tls_port)]),
        "nodes get --node-broker-url"
    );
    for id in [&a_id, &b_id] {
        wait_for(30, "node online", || online(&f, id).then_some(()));
        wait_for(30, "first target acknowledged", || {
            (f.node(id)["applied_revision"].as_u64() == Some(1)).then_some(())
        });
    }
    let db = format!("sqlite://{}", data.join("fleet.db").display());
    let rev = runtime().block_on(async {
        let store = lattice_fleet::store::Store::open(&db).await.unwrap();
        store.set_target(&a_id, "[]").await.unwrap()
    });
    wait_for(30, "new target acknowledged", || {
        (f.node(&a_id)["applied_revision"].as_u64() == Some(rev)).then_some(())
    });
    // Each node has its own client (client id = user name = node id) and role.
    let ds = m.dynsec_json();
    let client = ds["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["username"] == a_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(client["clientid"], a_id.as_str());
    assert!(client["roles"]
        .to_string()
        .contains(&format!("lattice-node-{a_id}")));

    // B's credential, in an attacker's own MQTT client (B's latticed is stopped so the two do
    // not take the client id from each other).
    b.kill9();
    let b_secret = secret(&b);
    let a_status = format!("lattice/v1/nodes/{a_id}/status");
    let refused_before = refused_total(&f);
    let rt = runtime();
    rt.block_on(async {
        let wrong_id = connect(m.port, "not-b", &b_id, &b_secret).await;
        assert!(
            wrong_id.is_err(),
            "B's credential only works with client id B"
        );
        let (c, mut el) = connect(m.port, &b_id, &b_id, &b_secret).await.unwrap();
        c.subscribe_many([
            rumqttc::SubscribeFilter::new(
                format!("lattice/v1/nodes/{a_id}/target"),
                QoS::AtLeastOnce,
            ),
            rumqttc::SubscribeFilter::new("lattice/v1/nodes/#".into(), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(a_status.clone(), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(
                format!("lattice/v1/nodes/{b_id}/target"),
                QoS::AtLeastOnce,
            ),
        ])
        .await
        .unwrap();
        let codes = until(&mut el, |p| match p {
            Packet::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await;
        assert_eq!(
            codes[..3],
            [SubscribeReasonCode::Failure; 3],
            "A's target, everything, A's status: refused"
        );
        assert!(
            matches!(codes[3], SubscribeReasonCode::Success(_)),
            "its own target: granted"
        );
        // A message on A's topic is dropped by the broker; one on B's own topic reaches the
        // fleet (garbage, so it is refused and counted) and marks the order.
        c.publish(a_status.clone(), QoS::AtLeastOnce, false, b"as-a".to_vec())
            .await
            .unwrap();
        c.publish(
            format!("lattice/v1/nodes/{b_id}/status"),
            QoS::AtLeastOnce,
            false,
            b"garbage".to_vec(),
        )
        .await
        .unwrap();
        let mut acks = 0;
        until(&mut el, |p| {
            acks += usize::from(matches!(p, Packet::PubAck(_)));
            (acks == 2).then_some(())
        })
        .await;
    });
    wait_for(20, "B's own message at the fleet", || {
        (refused_total(&f) > refused_before).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        refused_total(&f),
        refused_before + 1,
        "the message on A's topic never reached the fleet"
    );
    assert!(!f.log_text().contains(&a_status), "{}", f.log_text());
    let mosquitto_log = m.log_text();
    assert!(
        mosquitto_log.contains(&format!("Denied PUBLISH from {b_id}")),
        "{mosquitto_log}"
    );
    let b = Node::start(&b.data, &b_prov);
    wait_for(30, "b back online", || online(&f, &b_id).then_some(()));

    // Revoked: A's connection is cut by the broker and it cannot come back.
    let attempts = |n: &Node| n.log_text().matches("connecting to the broker").count();
    let before = attempts(&a);
    f.cli_ok(&["node", "revoke", &a_id]);
    wait_for(30, "A disconnected and refused", || {
        (attempts(&a) > before && a.log_text().contains("refused this node's credential"))
            .then_some(())
    });
    let a_secret = secret(&a);
    let refused = rt.block_on(connect(m.port, &a_id, &a_id, &a_secret));
    assert!(refused.is_err(), "a revoked node cannot connect");
    assert_eq!(
        m.dynsec_json()["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["username"] == a_id.as_str())
            .unwrap()["disabled"],
        true
    );

    // Mosquitto crashes and comes back: the fleet and B reconnect by themselves. (Whoever is
    // first: a hello sent before the fleet's link is back is lost to it, so liveness is judged
    // by what the fleet hears after the restart, and by a target getting through.)
    let connects = |n: &Node| n.log_text().matches("connected to the broker").count();
    let b_connects = connects(&b);
    m.kill();
    // A node registering meanwhile is refused with 503 (no account can be made), nothing is
    // stored and its token is not spent; latticed retries by itself.
    let c_prov = f.provisioning("carol");
    let c = Node::start(&dir.path().join("c"), &c_prov);
    wait_for(
        30,
        "C's registration refused while the broker is down",
        || {
            f.log_text()
                .contains("cannot create the node's broker account")
                .then_some(())
        },
    );
    assert_eq!(f.nodes().len(), 2, "no half-registered node");
    let tokens: Vec<serde_json::Value> =
        serde_json::from_str(&f.cli_ok(&["tokens", "list", "--json"])).unwrap();
    assert!(
        tokens
            .iter()
            .any(|t| t["owner"] == "carol" && t["uses"] == 0),
        "{tokens:?}"
    );
    let restarted_ms = lattice_wire::now_ms();
    m.start();
    wait_for(60, "B heard from through the restarted broker", || {
        let n = f.node(&b_id);
        (n["online"] == true && n["last_seen_ms"].as_u64().unwrap() > restarted_ms).then_some(())
    });
    assert!(connects(&b) > b_connects, "B made a new connection");
    let rev = runtime().block_on(async {
        let store = lattice_fleet::store::Store::open(&db).await.unwrap();
        store.set_target(&b_id, "[]").await.unwrap()
    });
    wait_for(30, "a target to B through the restarted broker", || {
        (f.node(&b_id)["applied_revision"].as_u64() == Some(rev)).then_some(())
    });
    // The fleet's account management reconnected too: C registers and comes online.
    let c_id = wait_for(90, "C registered after the restart", || c.node_id());
    wait_for(30, "C online", || online(&f, &c_id).then_some(()));
    // A is still refused.
    assert!(rt
        .block_on(connect(m.port, &a_id, &a_id, &a_secret))
        .is_err());
    assert!(!online(&f, &a_id));

    // No password reaches the fleet's log.
    let text = f.log_text();
    for (what, s) in [
        ("the fleet's broker password", admin_password.as_str()),
        ("A's broker password", a_secret.as_str()),
        ("B's broker password", b_secret.as_str()),
        ("C's broker password", secret(&c).as_str()),
    ] {
        assert!(!text.contains(s), "{what} is in the fleet log");
    }
}

/// Runs `lattice fleet ARGS` expecting it to fail at start; returns its stderr.
fn failing_fleet(data: &Path, args: &[String]) -> String {
    let mut child = Command::new(lattice_bin())
        .arg("fleet")
        .arg("--data")
        .arg(data)
        .args(args)
        .env("LATTICE_CLI_CONFIG", data.join("cli.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lattice fleet {args:?} did not stop");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wrong_broker_credentials_and_missing_rights_stop_the_fleet_with_clear_errors() {
    let Some((bin, plugin)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mosquitto::configure(bin, &plugin, &dir.path().join("mosquitto"), "right-pw");
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    let key = lattice_fleet::secrets::fleet_key(&dir.path().join("keys")).unwrap();
    let tls = lattice_fleet::tls::self_signed(&key, &["127.0.0.1".to_string()]).unwrap();
    lattice_fleet::tls::write_pem_files(&tls, &m.dir).unwrap();
    m.start();

    // Wrong password: named user, no password, at once.
    let wrong = dir.path().join("wrong");
    write_0600(&wrong, "the-wrong-password\n");
    let err = failing_fleet(&dir.path().join("f1"), &fleet_args(&m, free_port(), &wrong));
    assert!(
        err.contains(&format!("refused user {ADMIN}")) && err.contains("--broker-password-file"),
        "{err}"
    );
    assert!(!err.contains("the-wrong-password"), "{err}");

    // A user without dynamic-security rights.
    let out = Command::new("mosquitto_ctrl")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &m.port.to_string(),
            "-u",
            ADMIN,
            "-P",
            "right-pw",
        ])
        .args(["dynsec", "createClient", "plain", "-p", "plain-pw"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let plain = dir.path().join("plain");
    write_0600(&plain, "plain-pw");
    let mut args = fleet_args(&m, free_port(), &plain);
    args[5] = "plain".into();
    let err = failing_fleet(&dir.path().join("f2"), &args);
    assert!(
        err.contains("user plain may not subscribe") && err.contains("dynsec init"),
        "{err}"
    );

    // The fleet's own connections over TLS (mqtts://) pin the fleet key: a fleet whose key the
    // broker serves gets in; another fleet's key is refused with a clear error.
    let mqtts = format!("mqtts://127.0.0.1:{}", m.tls_port);
    let right = dir.path().join("right");
    write_0600(&right, "right-pw");
    let mut args = fleet_args(&m, free_port(), &right);
    args[3] = mqtts.clone();
    let f = launch(&dir.path().join("keys"), &args);
    assert!(f.log_text().contains("dynamic-security ready"));
    drop(f);
    let err = failing_fleet(&dir.path().join("f4"), &args);
    assert!(
        err.contains("TLS with the MQTT broker") && err.contains("fleet-cert.pem"),
        "{err}"
    );

    // Flags are checked before anything starts.
    let mut args = fleet_args(&m, free_port(), &wrong);
    args[3] = "http://127.0.0.1:1".into();
    let err = failing_fleet(&dir.path().join("f3"), &args);
    assert!(
        err.contains("--broker: ") && err.contains("mqtt://"),
        "{err}"
    );
}
