//! Test helpers: a real mosquitto broker, an observing MQTT client, and a registered node.
#![allow(dead_code)]

pub mod docker;
pub mod fleet;

use lattice_wire::envelope::{self, Envelope, Opened};
use lattice_wire::msg::Target;
use lattice_wire::topic::{self, Channel};
use lattice_wire::{IdentityKey, Message, Sender};
use latticed::agent::{Agent, AgentConfig};
use latticed::identity::{self, BrokerSecret, NodeKeys, Registration};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const NODE_PASSWORD: &str = "node-secret";
pub const OBSERVER: &str = "observer";
const OBSERVER_PASSWORD: &str = "observer-secret";

/// The mosquitto binary, or `None` (the caller skips with a printed reason). Also sets up
/// logging (`RUST_LOG=latticed=debug cargo test -- --nocapture` to watch the agent).
pub fn mosquitto() -> Option<PathBuf> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    let found = dirs
        .into_iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: mosquitto is not installed (apt-get install -y mosquitto)");
    }
    found
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto process with a password file (users: `node_id` and the observer).
pub struct Broker {
    bin: PathBuf,
    conf: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    /// `tls`: (port, cert PEM, key PEM) for an extra TLS listener.
    pub fn start(
        bin: &Path,
        dir: &Path,
        node_id: &str,
        tls: Option<(u16, String, String)>,
    ) -> Broker {
        let port = free_port();
        let passwd = dir.join("passwd");
        for (i, (user, pw)) in [(node_id, NODE_PASSWORD), (OBSERVER, OBSERVER_PASSWORD)]
            .into_iter()
            .enumerate()
        {
            let mut cmd = Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            let ok = cmd
                .args(["-b", passwd.to_str().unwrap(), user, pw])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("mosquitto_passwd (ships with mosquitto)");
            assert!(ok.success());
        }
        let persist = dir.join("persist");
        std::fs::create_dir_all(&persist).unwrap();
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {}\n\
             persistence true\npersistence_location {}/\nautosave_interval 1\n\
             user root\nlog_dest stderr\nlistener {port} 127.0.0.1\n",
            passwd.display(),
            persist.display(),
        );
        if let Some((tls_port, cert, key)) = tls {
            std::fs::write(dir.join("cert.pem"), cert).unwrap();
            std::fs::write(dir.join("key.pem"), key).unwrap();
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncertfile {0}/cert.pem\nkeyfile {0}/key.pem\n",
                dir.display()
            ));
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut b = Broker {
            bin: bin.to_path_buf(),
            conf: conf_path,
            port,
            child: None,
        };
        b.restart();
        b
    }

    /// (Re)starts the process on the same port and waits until it listens.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.conf.with_extension("log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start; see its log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An MQTT client subscribed to every node topic, with a persistent session so it misses
/// nothing across a broker restart.
pub struct Observer {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    pub async fn connect(port: u16) -> Observer {
        let mut o = MqttOptions::new(OBSERVER, "127.0.0.1", port);
        o.set_credentials(OBSERVER, OBSERVER_PASSWORD)
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(300 * 1024, 300 * 1024);
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sub = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) if !a.session_present => {
                        let _ = sub.try_subscribe("lattice/v1/nodes/+/+", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(("$suback".to_string(), vec![]));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let (t, _) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("observer subscribed")
            .unwrap();
        assert_eq!(t, "$suback");
        Observer { client, rx, task }
    }

    /// The next message from `node` whose opened form satisfies `want`. Every message from
    /// the node on the way must verify under `key` on the topic of its kind.
    pub async fn expect(
        &mut self,
        node: &Node,
        what: &str,
        want: impl Fn(&Opened) -> bool,
    ) -> Opened {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((t, payload))) = got else {
                panic!("timed out waiting for {what}");
            };
            let Some((id, channel)) = topic::parse(&t) else {
                continue;
            };
            if id != node.id || channel == Channel::Target {
                continue;
            }
            let opened = envelope::decode(&payload)
                .and_then(|u| u.open(&node.keys.identity.public(), None))
                .unwrap_or_else(|e| panic!("message on {t} does not verify: {e}"));
            assert_eq!(opened.header.sender, Sender::Node(node.id.clone()));
            assert_eq!(opened.header.kind.channel(), Some(channel), "on {t}");
            if want(&opened) {
                return opened;
            }
        }
    }

    /// Collects every message from `node` for `d`.
    pub async fn collect(&mut self, node: &Node, d: Duration) -> Vec<Opened> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some((t, payload))) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if topic::parse(&t).is_some_and(|(id, c)| id == node.id && c != Channel::Target) {
                let u = envelope::decode(&payload).unwrap();
                out.push(u.open(&node.keys.identity.public(), None).unwrap());
            }
        }
        out
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A registered node's files and keys, and the fleet key that signs its targets.
pub struct Node {
    pub id: String,
    pub dir: PathBuf,
    pub keys: NodeKeys,
    pub fleet: IdentityKey,
    pub fleet_counter: u64,
}

impl Node {
    pub fn register(dir: &Path, id: &str, broker_url: String, fleet: IdentityKey) -> Node {
        let keys = identity::load_or_generate(dir).unwrap();
        let reg = Registration {
            node_id: id.into(),
            broker_urls: vec![broker_url],
            heartbeat_secs: 10,
            fleet_key: fleet.public().to_string(),
            fleet_url: "https://127.0.0.1:1".into(),
            identity_key: keys.identity.public().to_string(),
        };
        identity::save_registration(dir, &reg, &BrokerSecret::new(NODE_PASSWORD)).unwrap();
        Node {
            id: id.into(),
            dir: dir.to_path_buf(),
            keys,
            fleet,
            fleet_counter: 0,
        }
    }

    /// An agent for this node as a restarted process would build it: keys and
    /// registration loaded from disk, a 1 s heartbeat, fast reconnects.
    pub fn agent(&self) -> Agent {
        self.agent_with(|c| c.reconnect_cap = Duration::from_secs(2))
    }

    /// Like [`Node::agent`] with the default reconnect policy, then `tweak`.
    pub fn agent_with(&self, tweak: impl FnOnce(&mut AgentConfig)) -> Agent {
        Agent::new(self.config(tweak)).unwrap()
    }

    /// An agent applying targets with `applier`, configured as [`Node::agent_with`].
    pub fn agent_applying<A: latticed::agent::Applier>(
        &self,
        applier: A,
        tweak: impl FnOnce(&mut AgentConfig),
    ) -> Agent<A> {
        Agent::with_applier(self.config(tweak), applier).unwrap()
    }

    fn config(&self, tweak: impl FnOnce(&mut AgentConfig)) -> AgentConfig {
        let keys = identity::load_or_generate(&self.dir).unwrap();
        let (reg, secret) = identity::load_registration(&self.dir, &keys)
            .unwrap()
            .unwrap();
        let mut c = AgentConfig::new(self.dir.clone(), keys, reg, secret);
        c.heartbeat_override = Some(1);
        tweak(&mut c);
        c
    }

    pub fn epoch_file(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("epoch"))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// A target envelope from the fleet (epoch 1, next counter).
    pub fn target(&mut self, revision: u64) -> Vec<u8> {
        let msg = Message::Target(Target {
            revision,
            workloads: vec![],
            heartbeat_secs: 0,
        });
        let header = Envelope {
            sender: Sender::Fleet,
            recipient: Some(self.id.clone()),
            epoch: 1,
            counter: self.fleet_counter,
            timestamp_ms: lattice_wire::now_ms(),
            kind: msg.kind(),
            sealed: true,
        };
        self.fleet_counter += 1;
        let to = self.keys.encryption.public();
        envelope::encode(&header, &msg, &self.fleet, Some(&to)).unwrap()
    }
}

pub fn kind_is(o: &Opened, k: lattice_wire::MessageKind) -> bool {
    o.header.kind == k
}
