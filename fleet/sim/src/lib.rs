//! Simulated Lattice nodes against a real fleet and broker.
//!
//! Each simulated node makes its own Ed25519 and X25519 keys, registers over the fleet's pinned
//! HTTPS API with a provisioning token (latticed's own [`latticed::register::register`]), then
//! connects to the broker the fleet named as a real MQTT client with its own credential (the
//! same [`latticed::agent::link`] latticed uses), under a signed last will. It says hello, sends
//! a signed status every heartbeat, and judges every target the fleet sends with latticed's
//! [`AgentState`] (signature, seal, recipient, replay window). An accepted target is "applied"
//! at once: every workload in it is reported `Running` from then on, so the fleet's scheduler,
//! lifecycle and gateway see a node that works. Nothing touches Docker, cgroups or the disk.
//!
//! What the nodes do is counted in [`Counters`] (make them with [`Counters::new`] right before
//! [`run`]); [`Counters::snapshot`] reads them at any time.

use lattice_wire::msg::{Inventory, Usage, WorkloadState, WorkloadStatus};
use lattice_wire::pin::{MemoryPin, PinHolder};
use lattice_wire::register::Provisioning;
use lattice_wire::rotation::FleetPin;
use lattice_wire::topic::{topic, Channel};
use lattice_wire::{EncryptionKey, IdentityKey, Message, ReplayWindow};
use latticed::agent::link::{self as agent_link, Link, LinkEvent, LinkParams};
use latticed::agent::{Action, AgentState, BrokerUrl, StateInit};
use latticed::backoff::Backoff;
use latticed::identity::{BrokerSecret, NodeKeys};
use latticed::register::{register, RegisterError, RegisterOptions};
use latticed::shutdown::Shutdown;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What every simulated node looks like and how the simulation runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub provisioning: Provisioning,
    /// How many nodes to run.
    pub nodes: usize,
    /// Registrations in flight at once.
    pub concurrency: usize,
    /// Each node's advertised capacity.
    pub cpus: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Overrides the fleet's heartbeat interval (as latticed's `--heartbeat-secs` does).
    pub heartbeat_override: Option<u32>,
    /// MQTT keep-alive of each node's connection.
    pub keep_alive: Duration,
    /// Connect here instead of to the broker URLs the fleet hands out at registration.
    pub broker_override: Option<BrokerUrl>,
    /// Host name prefix: node `i` calls itself `{prefix}-{i}`.
    pub hostname_prefix: String,
}

impl SimConfig {
    pub fn new(provisioning: Provisioning, nodes: usize) -> SimConfig {
        SimConfig {
            provisioning,
            nodes,
            concurrency: 16,
            cpus: 4,
            memory_bytes: 8 << 30,
            disk_bytes: 100 << 30,
            heartbeat_override: None,
            keep_alive: Duration::from_secs(60),
            broker_override: None,
            hostname_prefix: "sim".into(),
        }
    }

    fn inventory(&self, i: usize) -> Inventory {
        Inventory {
            hostname: format!("{}-{i}", self.hostname_prefix),
            cpu_model: "lattice-sim".into(),
            cpu_count: self.cpus,
            memory_bytes: self.memory_bytes,
            disk_total_bytes: self.disk_bytes,
            disk_free_bytes: self.disk_bytes,
            kernel: "simulated".into(),
            arch: std::env::consts::ARCH.into(),
        }
    }
}

/// Live counters of the whole simulation.
#[derive(Debug, Default)]
pub struct Counters {
    pub registered: AtomicU64,
    pub registration_failures: AtomicU64,
    /// Connections up right now.
    pub connected: AtomicI64,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub refused_credentials: AtomicU64,
    pub hellos: AtomicU64,
    pub statuses: AtomicU64,
    pub targets_received: AtomicU64,
    pub targets_applied: AtomicU64,
    pub targets_refused: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Sum of registration latencies, in microseconds (for the mean).
    pub registration_us: AtomicU64,
    /// Microseconds from the start of [`run`] until the last node's registration ended
    /// (registered or refused); 0 until then.
    pub registrations_done_us: AtomicU64,
    first_error: Mutex<Option<String>>,
    started: Option<Instant>,
    nodes: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    pub registered: u64,
    pub registration_failures: u64,
    pub connected: i64,
    pub connects: u64,
    pub disconnects: u64,
    pub refused_credentials: u64,
    pub hellos: u64,
    pub statuses: u64,
    pub targets_received: u64,
    pub targets_applied: u64,
    pub targets_refused: u64,
    pub publish_errors: u64,
    pub registration_mean_ms: f64,
    /// Seconds from the start until every node had registered or been refused.
    pub registration_secs: Option<f64>,
    /// Registrations per second over that time (so far, while it lasts).
    pub registrations_per_sec: f64,
    /// The first failure any node met (registration refused, broker refused, …).
    pub first_error: Option<String>,
}

impl Counters {
    /// Counters of a run starting now.
    pub fn new() -> Counters {
        Counters {
            started: Some(Instant::now()),
            ..Counters::default()
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let registered = get(&self.registered);
        let done_us = get(&self.registrations_done_us);
        let registration_secs = (done_us > 0).then(|| done_us as f64 / 1e6);
        let elapsed = self
            .started
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let over = registration_secs.unwrap_or(elapsed).max(1e-6);
        Snapshot {
            registration_secs,
            registrations_per_sec: registered as f64 / over,
            registered,
            registration_failures: get(&self.registration_failures),
            connected: self.connected.load(Ordering::Relaxed),
            connects: get(&self.connects),
            disconnects: get(&self.disconnects),
            refused_credentials: get(&self.refused_credentials),
            hellos: get(&self.hellos),
            statuses: get(&self.statuses),
            targets_received: get(&self.targets_received),
            targets_applied: get(&self.targets_applied),
            targets_refused: get(&self.targets_refused),
            publish_errors: get(&self.publish_errors),
            registration_mean_ms: if registered == 0 {
                0.0
            } else {
                get(&self.registration_us) as f64 / registered as f64 / 1000.0
            },
            first_error: self
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn error(&self, what: String) {
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(what);
        }
    }

    fn add(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one registration's end; the last one of the run records the time.
    fn registration_ended(&self, ok: bool) {
        let (mine, other) = if ok {
            (&self.registered, &self.registration_failures)
        } else {
            (&self.registration_failures, &self.registered)
        };
        let n = mine.fetch_add(1, Ordering::SeqCst) + 1 + other.load(Ordering::SeqCst);
        if n == self.nodes.load(Ordering::SeqCst) {
            let us = self
                .started
                .map(|s| s.elapsed().as_micros() as u64)
                .unwrap_or(1)
                .max(1);
            self.registrations_done_us.store(us, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the provisioning string's fleet key: {0}")]
    FleetKey(String),
    #[error("asked for 0 nodes")]
    NoNodes,
}

/// Runs `cfg.nodes` simulated nodes until `shutdown` fires; then every node disconnects
/// cleanly (no last will) and this returns. Nodes whose registration is refused stop (counted
/// in `registration_failures`, the reason in [`Snapshot::first_error`]); the others keep
/// reconnecting with latticed's backoff whenever their connection drops.
pub async fn run(
    cfg: SimConfig,
    counters: Arc<Counters>,
    shutdown: Shutdown,
) -> Result<(), SimError> {
    if cfg.nodes == 0 {
        return Err(SimError::NoNodes);
    }
    counters.nodes.store(cfg.nodes as u64, Ordering::SeqCst);
    let fleet_key = cfg
        .provisioning
        .fleet_public()
        .map_err(|e| SimError::FleetKey(e.to_string()))?;
    // One pin for all: a fleet key rotation moves every simulated node at once.
    let pin: Arc<dyn PinHolder> = Arc::new(MemoryPin::new(FleetPin::provisioned(fleet_key)));
    let cfg = Arc::new(cfg);
    let gate = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..cfg.nodes {
        let (cfg, counters, gate, pin, shutdown) = (
            cfg.clone(),
            counters.clone(),
            gate.clone(),
            pin.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move { node(i, cfg, counters, gate, pin, shutdown).await });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One simulated node: register, then stay connected until shutdown.
async fn node(
    i: usize,
    cfg: Arc<SimConfig>,
    counters: Arc<Counters>,
    gate: Arc<Semaphore>,
    pin: Arc<dyn PinHolder>,
    mut shutdown: Shutdown,
) {
    let keys = NodeKeys {
        identity: IdentityKey::generate(),
        encryption: EncryptionKey::generate(),
    };
    let inventory = cfg.inventory(i);
    let enrolled = {
        let _permit = tokio::select! {
            p = gate.acquire() => p,
            () = shutdown.wait() => return,
        };
        let opts = RegisterOptions {
            timeout: Duration::from_secs(30),
            max_attempts: Some(8),
            ..RegisterOptions::default()
        };
        let started = Instant::now();
        match register(
            &cfg.provisioning,
            &keys,
            inventory.clone(),
            &opts,
            &mut shutdown,
        )
        .await
        {
            Ok(e) => {
                counters
                    .registration_us
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                counters.registration_ended(true);
                e
            }
            Err(RegisterError::Cancelled) => return,
            Err(e) => {
                counters.registration_ended(false);
                counters.error(format!("registration of node {i}: {e}"));
                return;
            }
        }
    };
    let urls: Vec<BrokerUrl> = match &cfg.broker_override {
        Some(u) => vec![u.clone()],
        None => enrolled
            .registration
            .broker_urls
            .iter()
            .filter_map(|u| BrokerUrl::parse(u).ok())
            .collect(),
    };
    if urls.is_empty() {
        counters.error(format!(
            "node {}: the fleet handed out no usable broker URL ({:?})",
            enrolled.registration.node_id, enrolled.registration.broker_urls
        ));
        return;
    }
    let mut sim = SimNode {
        state: AgentState::new(StateInit {
            node_id: enrolled.registration.node_id.clone(),
            keys,
            fleet_pin: pin.clone(),
            heartbeat_secs: enrolled.registration.heartbeat_secs,
            heartbeat_override: cfg.heartbeat_override,
            applied_revision: 0,
            replay: ReplayWindow::default(),
        }),
        secret: enrolled.secret,
        pin,
        inventory,
        workloads: Vec::new(),
        counters,
        epoch: 0,
    };
    sim.run(&urls, cfg.keep_alive, &mut shutdown).await;
}

struct SimNode {
    state: AgentState,
    secret: BrokerSecret,
    pin: Arc<dyn PinHolder>,
    inventory: Inventory,
    workloads: Vec<WorkloadStatus>,
    counters: Arc<Counters>,
    /// Connection epochs; in memory (a simulated node never restarts).
    epoch: u64,
}

enum Ended {
    Shutdown,
    Lost { connected: bool, refused: bool },
}

impl SimNode {
    async fn run(&mut self, urls: &[BrokerUrl], keep_alive: Duration, shutdown: &mut Shutdown) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut url_index = 0usize;
        while !shutdown.is_triggered() {
            let url = &urls[url_index % urls.len()];
            self.epoch += 1;
            self.state.begin_epoch(self.epoch);
            let will = match self.state.will() {
                Ok(w) => w,
                Err(e) => {
                    self.counters.error(format!("signing a will: {e}"));
                    return;
                }
            };
            let node_id = self.state.node_id().to_string();
            let options = agent_link::options(LinkParams {
                url,
                node_id: &node_id,
                password: &self.secret,
                will_topic: topic(&node_id, Channel::Will),
                will,
                fleet_pin: self.pin.clone(),
                keep_alive,
            });
            let options = match options {
                Ok(o) => o,
                Err(e) => {
                    self.counters.error(format!("broker {url}: {e}"));
                    return;
                }
            };
            match self
                .session(Link::open(options), shutdown, &mut backoff)
                .await
            {
                Ended::Shutdown => return,
                Ended::Lost { connected, refused } => {
                    if !connected {
                        url_index = url_index.wrapping_add(1);
                    }
                    if refused {
                        Counters::add(&self.counters.refused_credentials);
                        backoff.saturate();
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    async fn session(
        &mut self,
        mut link: Link,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Ended {
        tokio::select! {
            ev = link.next() => match ev {
                LinkEvent::Connected => {}
                LinkEvent::Message { .. } => {}
                LinkEvent::Closed(e) => {
                    let refused = e.as_ref().is_some_and(agent_link::credential_refused);
                    if let Some(e) = e {
                        self.counters.error(format!("node {}: cannot connect to the broker: {e}", self.state.node_id()));
                    }
                    return Ended::Lost { connected: false, refused };
                }
            },
            () = shutdown.wait() => {
                link.close().await;
                return Ended::Shutdown;
            }
        }
        backoff.reset();
        Counters::add(&self.counters.connects);
        self.counters.connected.fetch_add(1, Ordering::Relaxed);
        let ended = self.connected(&mut link, shutdown).await;
        self.counters.connected.fetch_sub(1, Ordering::Relaxed);
        if matches!(ended, Ended::Shutdown) {
            link.close().await;
        } else {
            Counters::add(&self.counters.disconnects);
        }
        ended
    }

    async fn connected(&mut self, link: &mut Link, shutdown: &mut Shutdown) -> Ended {
        let node_id = self.state.node_id().to_string();
        let target_topic = topic(&node_id, Channel::Target);
        if link.subscribe(&target_topic).await.is_err() {
            return Ended::Lost {
                connected: true,
                refused: false,
            };
        }
        let hello = self.state.hello(self.inventory.clone());
        if self.publish(link, &hello).await {
            Counters::add(&self.counters.hellos);
        }
        self.send_status(link).await;
        // Nodes boot at random moments: the first regular heartbeat comes at a random point
        // of the interval, then every interval (latticed's own rhythm).
        let every = self.state.heartbeat();
        let first = every.mul_f64(rand::random_range(0.0..1.0));
        let mut next_beat = tokio::time::Instant::now() + first;
        loop {
            tokio::select! {
                () = shutdown.wait() => return Ended::Shutdown,
                () = tokio::time::sleep_until(next_beat) => {
                    next_beat += self.state.heartbeat();
                    self.send_status(link).await;
                }
                ev = link.next() => match ev {
                    LinkEvent::Message { topic: t, payload } => {
                        if t == target_topic {
                            self.on_target(link, &payload).await;
                        }
                    }
                    LinkEvent::Connected => {}
                    LinkEvent::Closed(e) => {
                        let refused = e.as_ref().is_some_and(agent_link::credential_refused);
                        return Ended::Lost { connected: true, refused };
                    }
                },
            }
        }
    }

    async fn on_target(&mut self, link: &Link, payload: &[u8]) {
        Counters::add(&self.counters.targets_received);
        let actions = match self.state.on_target(payload) {
            Ok(a) => a,
            Err(reject) => {
                Counters::add(&self.counters.targets_refused);
                self.counters.error(format!(
                    "node {} refused a target: {reject}",
                    self.state.node_id()
                ));
                return;
            }
        };
        for action in actions {
            match action {
                Action::Apply(target) => {
                    self.workloads = target
                        .workloads
                        .iter()
                        .map(|w| WorkloadStatus {
                            id: w.id.clone(),
                            state: WorkloadState::Running,
                            restarts: 0,
                        })
                        .collect();
                    self.state.mark_applied(target.revision);
                    Counters::add(&self.counters.targets_applied);
                }
                Action::SendStatus => self.send_status(link).await,
                Action::PersistReplay(_) | Action::Heartbeat(_) => {}
            }
        }
    }

    async fn send_status(&mut self, link: &Link) {
        let usage = Usage {
            cpu_percent_x100: 1_000,
            memory_used_bytes: self.inventory.memory_bytes / 10,
            memory_total_bytes: self.inventory.memory_bytes,
            disk_used_bytes: 0,
            disk_total_bytes: self.inventory.disk_total_bytes,
            ..Usage::default()
        };
        let status = self.state.status(usage, self.workloads.clone());
        if self.publish(link, &status).await {
            Counters::add(&self.counters.statuses);
        }
    }

    /// Signs and queues `msg`; false (counted) when it could not be queued.
    async fn publish(&mut self, link: &Link, msg: &Message) -> bool {
        let Some(channel) = msg.kind().channel() else {
            return false;
        };
        let bytes = match self.state.seal(msg) {
            Ok(b) => b,
            Err(e) => {
                self.counters.error(format!("signing: {e}"));
                Counters::add(&self.counters.publish_errors);
                return false;
            }
        };
        let t = topic(self.state.node_id(), channel);
        if link.publish(t, bytes).await.is_err() {
            Counters::add(&self.counters.publish_errors);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_time_is_taken_when_the_last_node_ends_either_way() {
        let c = Counters::new();
        c.nodes.store(3, Ordering::SeqCst);
        c.registration_ended(true);
        c.registration_ended(false);
        assert_eq!(c.snapshot().registration_secs, None);
        std::thread::sleep(Duration::from_millis(5));
        c.registration_ended(true);
        let s = c.snapshot();
        let secs = s.registration_secs.expect("done");
        assert!(secs >= 0.005, "{secs}");
        assert_eq!((s.registered, s.registration_failures), (2, 1));
        assert!((s.registrations_per_sec - 2.0 / secs).abs() < 1e-6);
    }

    #[test]
    fn the_first_error_is_kept() {
        let c = Counters::new();
        c.error("first".into());
        c.error("second".into());
        assert_eq!(c.snapshot().first_error.as_deref(), Some("first"));
    }
}
