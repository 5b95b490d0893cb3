//! The MQTT control loop of a registered node.
//!
//! For every connection attempt the agent persists a new epoch, signs a last will under it
//! (counter 0) and opens a fresh [`link::Link`]. Once the broker accepts, it subscribes to its
//! target topic, publishes a hello and a status, delivers what queued up in the outbox while
//! it was away, and then sends a status every heartbeat. Targets from the fleet are judged by
//! [`AgentState`] and applied through an [`Applier`]. On any disconnect it reconnects with
//! exponential backoff and jitter (1 s to 30 s; straight to 30 s when the broker refuses its
//! credential), queueing telemetry and events in the outbox meanwhile.
//!
//! Start one in-process from an existing registration with [`Agent::new`] and
//! [`Agent::run`]; [`crate::daemon::run`] does registration first.

mod apply;
pub mod link;
mod outbound;
mod session;
mod state;
mod store;

pub use apply::{Applier, ApplyError, RecordingApplier};
pub use link::{BrokerUrl, LinkError};
pub use state::{Action, AgentState, Reject, StateInit, WILL_REASON};
pub use store::{AgentStore, StoreError, EPOCH_FILE, REPLAY_FILE, TARGET_FILE};

use crate::backoff::Backoff;
use crate::identity::{BrokerSecret, NodeKeys, Registration};
use crate::inventory::UsageSampler;
use crate::outbox::{Outbox, OutboxError};
use crate::shutdown::Shutdown;
use crate::watchdog::Liveness;
use lattice_wire::pin::PinHolder;
use lattice_wire::{KeyError, WireError};
use link::{Link, LinkParams};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// File name of the outbox in the data directory.
pub const OUTBOX_FILE: &str = "outbox.log";

/// How to run an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    pub keys: NodeKeys,
    pub registration: Registration,
    pub broker_secret: BrokerSecret,
    /// Local heartbeat interval that wins over the fleet's.
    pub heartbeat_override: Option<u32>,
    pub outbox_max_bytes: u64,
    pub keep_alive: Duration,
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// The fleet key pin shared with the node's other TLS clients (the tunnel); `None`: the
    /// agent loads `fleet-pin.json` (or the registration's key) itself.
    pub fleet_pin: Option<Arc<dyn PinHolder>>,
    /// Touched by the agent's loop at least every [`STATE_POLL`], for systemd's watchdog
    /// ([`crate::watchdog`]).
    pub liveness: Liveness,
}

impl AgentConfig {
    /// Defaults: no heartbeat override, 8 MiB outbox, 15 s keep-alive, reconnect 1 s..30 s.
    pub fn new(
        data_dir: PathBuf,
        keys: NodeKeys,
        registration: Registration,
        broker_secret: BrokerSecret,
    ) -> Self {
        AgentConfig {
            data_dir,
            keys,
            registration,
            broker_secret,
            heartbeat_override: None,
            outbox_max_bytes: crate::config::DEFAULT_OUTBOX_MAX_BYTES,
            keep_alive: Duration::from_secs(60),
            reconnect_base: Duration::from_secs(1),
            reconnect_cap: Duration::from_secs(30),
            fleet_pin: None,
            liveness: Liveness::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("registration: fleet key: {0}")]
    FleetKey(#[source] KeyError),
    #[error("registration: {0}")]
    BrokerUrl(#[from] LinkError),
    #[error("registration lists no broker URL")]
    NoBroker,
    #[error("the pinned fleet key: {0}")]
    Pin(#[source] crate::fleet_pin::PinFileError),
    #[error("opening the outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("advancing the connection epoch: {0}")]
    Epoch(#[source] StoreError),
    #[error("signing the last will: {0}")]
    Will(#[source] WireError),
}

/// How a session ended.
enum End {
    Shutdown,
    Lost { connected: bool, refused: bool },
}

/// A registered node's MQTT agent.
pub struct Agent<A: Applier = RecordingApplier> {
    state: AgentState,
    store: AgentStore,
    outbox: Outbox,
    sampler: UsageSampler,
    applier: A,
    data_dir: PathBuf,
    urls: Vec<BrokerUrl>,
    fleet_pin: Arc<dyn PinHolder>,
    secret: BrokerSecret,
    keep_alive: Duration,
    reconnect_base: Duration,
    reconnect_cap: Duration,
    next_beat: Instant,
    /// The workloads' states in the last status sent: a change is reported at once (within
    /// [`STATE_POLL`]), not at the next heartbeat, so the fleet sees a new copy running (and
    /// finishes a move or update) seconds sooner.
    last_states: Vec<lattice_wire::msg::WorkloadStatus>,
    liveness: Liveness,
}

/// How often the workloads' states are compared with the last status sent.
pub const STATE_POLL: Duration = Duration::from_millis(500);

impl Agent<RecordingApplier> {
    /// An agent that records targets without running anything.
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        Agent::with_applier(config, RecordingApplier::default())
    }
}

impl<A: Applier> Agent<A> {
    /// An agent applying targets with `applier`. Opens (and locks) the outbox.
    pub fn with_applier(config: AgentConfig, mut applier: A) -> Result<Self, AgentError> {
        let reg = config.registration;
        let fleet_key = reg.fleet_public().map_err(AgentError::FleetKey)?;
        let urls = reg
            .broker_urls
            .iter()
            .map(|u| BrokerUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LinkError::from)?;
        if urls.is_empty() {
            return Err(AgentError::NoBroker);
        }
        let fleet_pin = match config.fleet_pin {
            Some(p) => p,
            None => crate::fleet_pin::PersistentPin::load(&config.data_dir, fleet_key)
                .map_err(AgentError::Pin)?,
        };
        let store = AgentStore::new(&config.data_dir);
        let target = store.load_target();
        // A restarted supervisor keeps reconciling toward the target it last applied (and
        // adopts what runs) without waiting for the fleet to send a newer revision.
        if let Some(t) = &target {
            if let Err(e) = applier.apply(t) {
                tracing::warn!(revision = t.revision, error = %e, "stored target cannot be re-applied");
            }
        }
        let heartbeat_secs = target
            .as_ref()
            .map(|t| t.heartbeat_secs)
            .filter(|h| *h != 0)
            .unwrap_or(reg.heartbeat_secs);
        let state = AgentState::new(StateInit {
            node_id: reg.node_id,
            keys: config.keys,
            fleet_pin: fleet_pin.clone(),
            heartbeat_secs,
            heartbeat_override: config.heartbeat_override,
            applied_revision: target.map_or(0, |t| t.revision),
            replay: store.load_replay(),
        });
        let outbox = Outbox::open(&config.data_dir.join(OUTBOX_FILE), config.outbox_max_bytes)?;
        Ok(Agent {
            next_beat: Instant::now() + state.heartbeat(),
            last_states: Vec::new(),
            state,
            store,
            outbox,
            sampler: UsageSampler::new(config.data_dir.clone()),
            applier,
            data_dir: config.data_dir,
            urls,
            fleet_pin,
            secret: config.broker_secret,
            keep_alive: config.keep_alive,
            reconnect_base: config.reconnect_base,
            reconnect_cap: config.reconnect_cap,
            liveness: config.liveness,
        })
    }

    /// The applier, e.g. to inspect what a [`RecordingApplier`] recorded.
    pub fn applier(&self) -> &A {
        &self.applier
    }

    /// Runs until `shutdown` fires, then disconnects cleanly (so no last will fires).
    /// Returns an error only for failures that retrying cannot fix (the epoch file cannot be
    /// written).
    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<(), AgentError> {
        let mut backoff = Backoff::new(self.reconnect_base, self.reconnect_cap);
        let mut url_index = 0usize;
        self.liveness.arm();
        loop {
            self.liveness.touch();
            if shutdown.is_triggered() {
                return Ok(());
            }
            let url = self.urls[url_index % self.urls.len()].clone();
            let epoch = self.store.next_epoch().map_err(AgentError::Epoch)?;
            self.state.begin_epoch(epoch);
            let will = self.state.will().map_err(AgentError::Will)?;
            let node_id = self.state.node_id().to_string();
            let options = link::options(LinkParams {
                url: &url,
                node_id: &node_id,
                password: &self.secret,
                will_topic: lattice_wire::topic::topic(
                    &node_id,
                    lattice_wire::topic::Channel::Will,
                ),
                will,
                fleet_pin: self.fleet_pin.clone(),
                keep_alive: self.keep_alive,
            })?;
            tracing::info!(broker = %url, epoch, "connecting to the broker");
            match self
                .session(Link::open(options), &url, &mut shutdown, &mut backoff)
                .await
            {
                End::Shutdown => return Ok(()),
                End::Lost { connected, refused } => {
                    if !connected {
                        url_index = url_index.wrapping_add(1);
                    }
                    if refused {
                        backoff.saturate();
                    }
                }
            }
            let delay = backoff.next_delay();
            tracing::info!(retry_in_ms = delay.as_millis() as u64, "will reconnect");
            if self.wait_offline(delay, &mut shutdown).await {
                return Ok(());
            }
        }
    }

    /// Waits `delay` while keeping the heartbeat (as queued telemetry). True on shutdown.
    async fn wait_offline(&mut self, delay: Duration, shutdown: &mut Shutdown) -> bool {
        let until = Instant::now() + delay;
        loop {
            self.liveness.touch();
            tokio::select! {
                () = tokio::time::sleep_until(until) => return false,
                () = shutdown.wait() => return true,
                () = tokio::time::sleep_until(self.next_beat) => self.offline_beat(),
                () = tokio::time::sleep(STATE_POLL) => {}
            }
        }
    }
}
