//! The `latticed` binary end to end against a scripted fleet and a real mosquitto: first boot
//! registers (and says how long it took), SIGTERM disconnects cleanly, a restart reuses the
//! registration, SIGKILL fires the signed will; systemd's notify protocol and watchdog. Also
//! the configuration surface.

mod common;

use common::fleet::{FakeFleet, Reply};
use common::{kind_is, Broker, Node, Observer, NODE_PASSWORD};
use lattice_wire::MessageKind;
use latticed::config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_latticed");

#[test]
fn prints_a_default_config_it_accepts() {
    let out = Command::new(BIN)
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(Config::parse(&text).unwrap(), Config::default());
}

#[test]
fn a_bad_config_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("latticed.toml");
    std::fs::write(
        &conf,
        "heartbeat_secs = 0\noutbox_max_bytes = 1\nprovisioning = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["heartbeat_secs:", "outbox_max_bytes:", "provisioning:"] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
}

/// The image's `lattice-wifi@.service` runs `latticed --write-wpa-config`: a good file gives a
/// private configuration; a bad one exits with EX_CONFIG (78, which the unit does not restart
/// on) and a message naming the file and line, never the passphrase.
#[test]
fn write_wpa_config_exits_78_on_a_bad_file_and_writes_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let wifi = dir.path().join("wifi");
    let out_conf = dir.path().join("run/wlan0.conf");
    std::fs::write(&wifi, "ssid=Home\npsk=hunter2\n").unwrap();
    let out = Command::new(BIN)
        .arg("--write-wpa-config")
        .args([&wifi, &out_conf])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(lattice_wire::wifi::EXIT_CONFIG));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains(&*wifi.to_string_lossy()),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!out_conf.exists());

    std::fs::write(&wifi, "ssid=Home\npsk=correct horse battery\n").unwrap();
    let out = Command::new(BIN)
        .arg("--write-wpa-config")
        .args([&wifi, &out_conf])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = std::fs::read_to_string(&out_conf).unwrap();
    assert!(
        conf.contains("key_mgmt=WPA-PSK") && !conf.contains("correct horse"),
        "{conf}"
    );
}

fn spawn(data: &Path, provisioning: &str, log: &Path) -> Child {
    spawn_with(data, provisioning, log, &[])
}

fn spawn_with(data: &Path, provisioning: &str, log: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(BIN)
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(data)
        .arg("--provisioning")
        .arg(provisioning)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "latticed did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_boot_registers_restart_reuses_and_signals_behave() {
    let Some(bin) = common::mosquitto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&bin, dir.path(), "n-bin", None);
    let fleet = FakeFleet::start(
        vec![Reply::Register {
            node_id: "n-bin".into(),
            broker_url: format!("mqtt://127.0.0.1:{}", broker.port),
            password: NODE_PASSWORD.into(),
        }],
        None,
    );
    let provisioning = fleet.provisioning("tok-secret-1").encode();
    let data = dir.path().join("data");
    let mut obs = Observer::connect(broker.port).await;

    let log1 = dir.path().join("run1.log");
    let mut child = spawn(&data, &provisioning, &log1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.join("registration.json").exists() {
        assert!(Instant::now() < deadline, "no registration within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node = Node {
        id: "n-bin".into(),
        dir: data.clone(),
        keys: latticed::identity::load_or_generate(&data).unwrap(),
        fleet: fleet.key.clone(),
        fleet_counter: 0,
    };
    let hello = obs
        .expect(&node, "hello", |o| kind_is(o, MessageKind::Hello))
        .await;
    obs.expect(
        &node,
        "registered event",
        |o| matches!(&o.message, lattice_wire::Message::Event(e) if e.kind == "registered"),
    )
    .await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());
    let after = obs.collect(&node, Duration::from_millis(1000)).await;
    assert!(!after.iter().any(|o| kind_is(o, MessageKind::Will)));
    let text = std::fs::read_to_string(&log1).unwrap();
    assert!(text.contains("registered in "), "{text}");
    assert!(
        !text.contains("tok-secret-1") && !text.contains(NODE_PASSWORD),
        "{text}"
    );

    // Restart: no second registration, same identity, higher epoch.
    let log2 = dir.path().join("run2.log");
    let mut child = spawn(&data, &provisioning, &log2);
    let hello2 = obs
        .expect(&node, "hello after restart", |o| {
            kind_is(o, MessageKind::Hello) && o.header.epoch > hello.header.epoch
        })
        .await;
    assert_eq!(fleet.request_count(), 1, "registered twice");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let will = obs
        .expect(&node, "will", |o| kind_is(o, MessageKind::Will))
        .await;
    assert_eq!(will.header.epoch, hello2.header.epoch);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(text.contains("already registered"), "{text}");
}

/// What systemd sees of a latticed started as `Type=notify` with `WatchdogSec=`: `READY=1`
/// first (before enrolling, so waiting for the fleet is no start timeout), a status that names
/// the node once it runs, `WATCHDOG=1` about every third of `WATCHDOG_USEC` while it runs, and
/// `STOPPING=1` on SIGTERM. Nothing but those is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_systemds_notify_protocol_and_feeds_the_watchdog() {
    let Some(bin) = common::mosquitto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&bin, dir.path(), "n-sd", None);
    let fleet = FakeFleet::start(
        vec![Reply::Register {
            node_id: "n-sd".into(),
            broker_url: format!("mqtt://127.0.0.1:{}", broker.port),
            password: NODE_PASSWORD.into(),
        }],
        None,
    );
    let provisioning = fleet.provisioning("tok-secret-sd").encode();
    let data = dir.path().join("data");
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let log = dir.path().join("sd.log");
    let mut child = spawn_with(
        &data,
        &provisioning,
        &log,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "900000"),
        ],
    );
    let mut seen: Vec<(Instant, String)> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let wait = Duration::from_secs(15);
    // Until the node runs and 6 pings came after that.
    loop {
        let n = tokio::time::timeout(wait, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("nothing from latticed for 15 s; seen {seen:?}"))
            .unwrap();
        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
        seen.push((Instant::now(), text));
        let running = seen
            .iter()
            .position(|(_, t)| t == "STATUS=node n-sd: supervising\n");
        if let Some(at) = running {
            if seen[at..]
                .iter()
                .filter(|(_, t)| t == "WATCHDOG=1\n")
                .count()
                >= 6
            {
                break;
            }
        }
    }
    assert_eq!(seen[0].1, "READY=1\n", "{seen:?}");
    assert!(
        seen.iter()
            .all(|(_, t)| t == "READY=1\n" || t == "WATCHDOG=1\n" || t.starts_with("STATUS=")),
        "{seen:?}"
    );
    let pings: Vec<Instant> = seen
        .iter()
        .filter(|(_, t)| t == "WATCHDOG=1\n")
        .map(|(at, _)| *at)
        .collect();
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap < Duration::from_millis(900),
            "a gap of {gap:?} between pings: systemd would have restarted latticed"
        );
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    loop {
        let n = tokio::time::timeout(wait, sock.recv(&mut buf))
            .await
            .expect("no STOPPING=1 after SIGTERM")
            .unwrap();
        if &buf[..n] == b"STOPPING=1\n" {
            break;
        }
    }
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("feeding systemd's watchdog"), "{text}");
}
