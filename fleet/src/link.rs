//! The fleet's MQTT link: one client on the broker (the embedded one or any other), that
//! ingests what nodes publish and sends them their targets.
//!
//! rumqttc's event loop is polled by one task; publishes are handed to a worker over a bounded
//! channel so a slow store never stalls keep-alives. The client reconnects by itself and
//! re-subscribes on every ConnAck.

use crate::ingest::{Ingest, MAX_BATCH};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::store::{NodeRow, Store};
use lattice_wire::msg::{Message, Target, WorkloadSpec};
use lattice_wire::topic::{self, Channel};
use lattice_wire::{EncryptionPublic, Envelope, IdentityKey, MessageKind, Sender};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where and as whom the fleet connects to the broker. `Debug` hides the password.
#[derive(Clone)]
pub struct LinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: String,
    pub password: String,
    /// `$share/{group}/` prefix for the subscription, so several fleet replicas split the
    /// node traffic (MQTT 5 shared subscriptions; Mosquitto and EMQX accept it on 3.1.1 too).
    pub share_group: Option<String>,
    /// TLS (an external broker at `mqtts://`, pinned to the fleet key); `None`: plain MQTT.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub heartbeat_secs: u32,
    pub resend_every: Duration,
    pub offline_after: Duration,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("share_group", &self.share_group)
            .field("tls", &self.tls.is_some())
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("resend_every", &self.resend_every)
            .field("offline_after", &self.offline_after)
            .finish()
    }
}

/// Signs and seals what the fleet sends, under this process's own epoch (a new one each time
/// the process becomes the leader: nodes refuse an epoch older than the last they saw).
pub struct Outbound {
    key: IdentityKey,
    /// (epoch, last counter used under it).
    seq: Mutex<(u64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("node {node}: stored encryption key is invalid: {reason}")]
    NodeKey { node: String, reason: String },
    #[error("node {node}: stored target is not valid JSON: {reason}")]
    Target { node: String, reason: String },
    #[error("encoding for node {node}: {source}")]
    Wire {
        node: String,
        #[source]
        source: lattice_wire::WireError,
    },
}

impl Outbound {
    pub fn new(key: IdentityKey, epoch: u64) -> Outbound {
        Outbound {
            key,
            seq: Mutex::new((epoch, 0)),
        }
    }

    /// Sends under `epoch` from now on, counting from 1 again.
    pub fn set_epoch(&self, epoch: u64) {
        *self.seq.lock().unwrap_or_else(|e| e.into_inner()) = (epoch, 0);
    }

    pub fn epoch(&self) -> u64 {
        self.seq.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn key(&self) -> &IdentityKey {
        &self.key
    }

    /// Signs `message` for `recipient` (sealed when `seal_to` is given). Each call uses a fresh
    /// counter: a re-sent target is a new envelope carrying the same revision.
    pub fn seal(
        &self,
        recipient: Option<&str>,
        message: &Message,
        seal_to: Option<&EncryptionPublic>,
    ) -> Result<Vec<u8>, lattice_wire::WireError> {
        let (epoch, counter) = {
            let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
            seq.1 += 1;
            *seq
        };
        let header = Envelope {
            sender: Sender::Fleet,
            recipient: recipient.map(str::to_string),
            epoch,
            counter,
            timestamp_ms: lattice_wire::now_ms(),
            kind: message.kind(),
            sealed: seal_to.is_some(),
        };
        lattice_wire::envelope::encode(&header, message, &self.key, seal_to)
    }

    /// The node's current target, sealed to it.
    pub fn target(&self, node: &NodeRow, heartbeat_secs: u32) -> Result<Vec<u8>, OutboundError> {
        let enc =
            EncryptionPublic::parse(&node.encryption_key).map_err(|e| OutboundError::NodeKey {
                node: node.id.clone(),
                reason: e.to_string(),
            })?;
        let workloads: Vec<WorkloadSpec> =
            serde_json::from_str(&node.target).map_err(|e| OutboundError::Target {
                node: node.id.clone(),
                reason: e.to_string(),
            })?;
        let msg = Message::Target(Target {
            revision: node.target_revision,
            workloads,
            heartbeat_secs,
        });
        self.seal(Some(&node.id), &msg, Some(&enc))
            .map_err(|source| OutboundError::Wire {
                node: node.id.clone(),
                source,
            })
    }
}

/// A handle to send targets through the running link.
#[derive(Clone)]
pub struct Link {
    client: AsyncClient,
    outbound: Arc<Outbound>,
    metrics: Arc<Metrics>,
    heartbeat_secs: u32,
    leadership: Leadership,
}

impl Link {
    /// Sends `node` its current target (QoS 1), if this replica leads; a follower sends
    /// nothing (the leader's re-send timer sends what is stored).
    pub async fn send_target(&self, node: &NodeRow) {
        if !self.leadership.is_leader() {
            return;
        }
        let bytes = match self.outbound.target(node, self.heartbeat_secs) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot build target");
                return;
            }
        };
        let t = topic::topic(&node.id, Channel::Target);
        match self.client.publish(t, QoS::AtLeastOnce, false, bytes).await {
            Ok(()) => self.metrics.count_out(MessageKind::Target.as_str()),
            Err(e) => tracing::warn!(node = %node.id, error = %e, "cannot queue target"),
        }
    }
}

/// Starts the link: returns a handle, and runs until the process ends. Every replica ingests;
/// only while `leadership` says so does it send targets and run the timers.
pub fn start(
    cfg: LinkConfig,
    store: Store,
    ingest: Arc<Ingest>,
    outbound: Arc<Outbound>,
    metrics: Arc<Metrics>,
    leadership: Leadership,
) -> Link {
    let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_credentials(&cfg.username, &cfg.password);
    // 60 s: rumqttd answers PINGREQs behind its routing work, which grows with the fleet
    // (docs/benchmarks.md); liveness comes from heartbeats and the will, not keep-alive.
    opts.set_keep_alive(Duration::from_secs(60));
    // Accept packets up to twice the wire limit (the broker's limit too), so an oversized
    // envelope is refused by the decoder with a reason rather than breaking the connection.
    opts.set_max_packet_size(
        2 * lattice_wire::MAX_MESSAGE_BYTES + 1024,
        lattice_wire::MAX_MESSAGE_BYTES + 1024,
    );
    opts.set_inflight(1000);
    opts.set_clean_session(true);
    if let Some(config) = &cfg.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config.clone()),
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let link = Link {
        client: client.clone(),
        outbound,
        metrics: metrics.clone(),
        heartbeat_secs: cfg.heartbeat_secs,
        leadership: leadership.clone(),
    };
    let filters: Vec<String> = topic::fleet_filters()
        .into_iter()
        .map(|f| match &cfg.share_group {
            Some(g) => format!("$share/{g}/{f}"),
            None => f,
        })
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(50_000);

    // Poll the event loop; reconnect with backoff on errors.
    let sub_client = client.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(filters = ?filters, "fleet connected to broker");
                    let subs = filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = sub_client.subscribe_many(subs).await {
                        tracing::error!(error = %e, "cannot subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx
                        .send((p.topic.clone(), p.payload.to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker connection lost");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    });

    // Ingest worker: takes whatever is queued (up to MAX_BATCH messages) and hands it to
    // ingest, which applies it in arrival order in one store transaction; sends a lagging node
    // its target as soon as it says hello.
    let worker_link = link.clone();
    let worker_store = store.clone();
    tokio::spawn(async move {
        let mut queued = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
            let now = lattice_wire::now_ms();
            let results = ingest.handle_batch(&queued, now).await;
            queued.clear();
            for a in results.into_iter().flatten() {
                if a.kind == MessageKind::Hello {
                    if let Ok(Some(node)) = worker_store.node(&a.node_id).await {
                        if node.applied_revision < node.target_revision {
                            worker_link.send_target(&node).await;
                        }
                    }
                }
            }
        }
    });

    // Timers: re-send unacknowledged targets; mark silent nodes offline.
    let timer_link = link.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.resend_every);
        loop {
            tick.tick().await;
            if !leadership.is_leader() {
                continue;
            }
            match store.unacknowledged_targets().await {
                Ok(nodes) => {
                    for n in nodes {
                        timer_link.send_target(&n).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list unacknowledged targets"),
            }
            let before =
                lattice_wire::now_ms().saturating_sub(cfg.offline_after.as_millis() as u64);
            match store.mark_silent_offline(before).await {
                Ok(ids) => {
                    for id in ids {
                        tracing::info!(node = %id, "node offline: heartbeat timeout");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check heartbeats"),
            }
        }
    });
    link
}
