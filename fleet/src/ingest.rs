//! Accepting what nodes publish: topic, envelope, signature, replay window, then the store.
//!
//! The broker is not trusted. A message is applied only when the topic names a registered,
//! unrevoked node, the envelope's signed sender is that same node, the signature verifies under
//! the key the node registered, the kind belongs on that channel, and (epoch, counter) is fresh.
//! Everything refused is logged with its reason, counted in `/metrics`, and changes nothing.
//!
//! The link hands over whatever is queued (up to [`MAX_BATCH`] messages) at once: each message
//! is checked on its own, and the accepted ones are stored in one transaction (a group commit,
//! [`Ingest::handle_batch`]), so the store's round trips are paid per batch, not per message.

use crate::metrics::Metrics;
use crate::store::{Effect, IngestItem, IngestOutcome, Store, StoreError};
use lattice_wire::msg::Message;
use lattice_wire::topic::{self, Channel};
use lattice_wire::{IdentityPublic, MessageKind, Sender};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The most messages stored in one transaction.
pub const MAX_BATCH: usize = 256;

/// Why a message was refused: a stable label (the metric's `reason`) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// What an accepted message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub node_id: String,
    pub kind: MessageKind,
    /// False when the message was fresh but older than stored state (changed nothing).
    pub changed: bool,
}

#[derive(Clone, Copy)]
struct CachedNode {
    identity: IdentityPublic,
    revoked: bool,
}

pub struct Ingest {
    store: Store,
    metrics: Arc<Metrics>,
    nodes: RwLock<HashMap<String, CachedNode>>,
}

impl Ingest {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Ingest {
        Ingest {
            store,
            metrics,
            nodes: RwLock::new(HashMap::new()),
        }
    }

    /// Forgets what is cached about a node (after revocation).
    pub fn forget(&self, node_id: &str) {
        if let Ok(mut m) = self.nodes.write() {
            m.remove(node_id);
        }
    }

    async fn node_key(&self, node_id: &str) -> Result<CachedNode, Rejection> {
        if let Some(n) = self.nodes.read().ok().and_then(|m| m.get(node_id).copied()) {
            return Ok(n);
        }
        let row = self
            .store
            .node(node_id)
            .await
            .map_err(store_rejection)?
            .ok_or_else(|| Rejection::new("unknown_node", format!("no node {node_id}")))?;
        let identity = IdentityPublic::parse(&row.identity_key)
            .map_err(|e| Rejection::new("store_error", format!("stored key of {node_id}: {e}")))?;
        let n = CachedNode {
            identity,
            revoked: row.revoked,
        };
        if let Ok(mut m) = self.nodes.write() {
            m.insert(node_id.to_string(), n);
        }
        Ok(n)
    }

    /// Handles one MQTT publish. Logs and counts the outcome.
    pub async fn handle(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Accepted, Rejection> {
        let one = [(topic.to_string(), payload.to_vec())];
        self.handle_batch(&one, now_ms)
            .await
            .pop()
            .unwrap_or_else(|| Err(Rejection::new("store_error", "no outcome")))
    }

    /// Handles MQTT publishes in arrival order, with the outcomes handling them one by one
    /// would have: each is checked on its own (topic, envelope, sender, key, signature,
    /// channel), and the effects of those accepted are applied together in one store
    /// transaction ([`Store::ingest_batch`]). A will is applied on its own after everything
    /// before it. If the transaction fails, the messages are applied one by one, so a bad one
    /// costs only itself. Every message gets one result, logged and counted, in order.
    pub async fn handle_batch(
        &self,
        msgs: &[(String, Vec<u8>)],
        now_ms: u64,
    ) -> Vec<Result<Accepted, Rejection>> {
        let mut results: Vec<Option<Result<Accepted, Rejection>>> = vec![None; msgs.len()];
        let mut batch = Batch::default();
        for (i, (topic, payload)) in msgs.iter().enumerate() {
            match self.check(topic, payload, now_ms).await {
                Err(r) => results[i] = Some(Err(r)),
                Ok(Checked::Will {
                    node_id,
                    epoch,
                    reason,
                }) => {
                    // Signed at CONNECT, published by the broker later: accepted by signature
                    // and by matching the current connection epoch, never by counter
                    // freshness. Whatever came before it is applied first.
                    self.apply(&mut batch, &mut results).await;
                    results[i] = Some(
                        self.store
                            .accept_will(&node_id, epoch, &reason)
                            .await
                            .map(|changed| Accepted {
                                node_id,
                                kind: MessageKind::Will,
                                changed,
                            })
                            .map_err(store_rejection),
                    );
                }
                Ok(Checked::Effect(p, item)) => {
                    batch.pending.push((i, p));
                    batch.items.push(item);
                }
            }
        }
        self.apply(&mut batch, &mut results).await;
        results
            .into_iter()
            .zip(msgs)
            .map(|(r, (topic, _))| {
                let r = r.unwrap_or_else(|| Err(Rejection::new("store_error", "no outcome")));
                match &r {
                    Ok(a) => {
                        self.metrics.count_in(a.kind.as_str());
                        tracing::debug!(node = %a.node_id, kind = a.kind.as_str(), changed = a.changed, "accepted");
                    }
                    Err(e) => {
                        self.metrics.reject(e.reason);
                        tracing::warn!(topic = topic.as_str(), reason = e.reason, detail = %e.detail, "refused node message");
                    }
                }
                r
            })
            .collect()
    }

    /// Applies the batch's effects (one transaction, or one by one if that fails) and puts
    /// each message's result at its index. Leaves the batch empty.
    async fn apply(&self, batch: &mut Batch, results: &mut [Option<Result<Accepted, Rejection>>]) {
        if batch.items.is_empty() {
            return;
        }
        let outcomes: Vec<Result<IngestOutcome, StoreError>> = match self
            .store
            .ingest_batch(&batch.items)
            .await
        {
            Ok(o) => o.into_iter().map(Ok).collect(),
            Err(e) if batch.items.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, messages = batch.items.len(), "batch of node messages not stored; storing them one by one");
                let mut each = Vec::with_capacity(batch.items.len());
                for item in &batch.items {
                    let o = self.store.ingest_batch(std::slice::from_ref(item)).await;
                    each.push(o.and_then(|mut o| {
                        o.pop()
                            .ok_or_else(|| StoreError::Corrupt("no outcome".into()))
                    }));
                }
                each
            }
        };
        batch.items.clear();
        for ((i, p), outcome) in batch.pending.drain(..).zip(outcomes) {
            results[i] = Some(match outcome {
                Err(e) => Err(store_rejection(e)),
                Ok(IngestOutcome::Replayed(e)) => Err(Rejection::new(e.reason(), e.to_string())),
                Ok(o @ (IngestOutcome::Applied | IngestOutcome::Stale)) => {
                    // Observed once stored (committed), per message.
                    if p.kind.channel() == Some(Channel::Status) {
                        let lag = lattice_wire::now_ms().saturating_sub(p.timestamp_ms);
                        self.metrics.heartbeat_lag.observe(lag as f64 / 1000.0);
                    }
                    Ok(Accepted {
                        node_id: p.node_id,
                        kind: p.kind,
                        changed: o == IngestOutcome::Applied,
                    })
                }
            });
        }
    }

    /// Every check of one message, in order; what it would change if accepted.
    async fn check(&self, topic: &str, payload: &[u8], now_ms: u64) -> Result<Checked, Rejection> {
        let (node_id, channel) = topic::parse(topic)
            .ok_or_else(|| Rejection::new("bad_topic", format!("not a node topic: {topic:.80}")))?;
        if !channel.is_upward() {
            return Err(Rejection::new(
                "bad_topic",
                format!("{channel} is not an upward channel"),
            ));
        }
        let unverified = lattice_wire::envelope::decode(payload)
            .map_err(|e| Rejection::new(e.reason(), e.to_string()))?;
        if unverified.header.sender != Sender::Node(node_id.to_string()) {
            return Err(Rejection::new(
                "sender_mismatch",
                format!(
                    "topic names node {node_id}, envelope claims {}",
                    unverified.header.sender
                ),
            ));
        }
        let node = self.node_key(node_id).await?;
        if node.revoked {
            return Err(Rejection::new(
                "revoked",
                format!("node {node_id} is revoked"),
            ));
        }
        let opened = unverified
            .open(&node.identity, None)
            .map_err(|e| Rejection::new(e.reason(), e.to_string()))?;
        let kind = opened.message.kind();
        if kind.from_fleet() || kind.channel() != Some(channel) {
            return Err(Rejection::new(
                "wrong_channel",
                format!("{} does not belong on {channel}", kind.as_str()),
            ));
        }
        let h = &opened.header;
        let effect = match opened.message {
            Message::Will(w) => {
                return Ok(Checked::Will {
                    node_id: node_id.to_string(),
                    epoch: h.epoch,
                    reason: w.reason,
                })
            }
            Message::Hello(hello) => Effect::Hello {
                inventory_json: json(&hello.inventory),
                firmware_version: hello.firmware_version,
                applied_revision: hello.applied_revision,
            },
            Message::Status(s) => Effect::Status {
                usage_json: json(&s.usage),
                applied_revision: s.applied_revision,
                workloads_json: json(&s.workloads),
            },
            Message::Event(e) => Effect::Event {
                at_ms: e.at_ms,
                kind: e.kind,
                detail: e.detail,
            },
            Message::Telemetry(_) => Effect::Telemetry,
            Message::Target(_) | Message::Registered(_) => {
                return Err(Rejection::new(
                    "wrong_channel",
                    "fleet-only message from a node",
                ))
            }
        };
        Ok(Checked::Effect(
            Pending {
                node_id: node_id.to_string(),
                kind,
                timestamp_ms: h.timestamp_ms,
            },
            IngestItem {
                node_id: node_id.to_string(),
                epoch: h.epoch,
                counter: h.counter,
                effect,
                now_ms,
            },
        ))
    }
}

/// A message that passed every check.
enum Checked {
    /// A last will: applied on its own ([`Store::accept_will`]).
    Will {
        node_id: String,
        epoch: u64,
        reason: String,
    },
    /// Anything else: an effect for the store, and what to report once it is stored.
    Effect(Pending, IngestItem),
}

/// What is reported about a message in a batch once its effect is stored.
struct Pending {
    node_id: String,
    kind: MessageKind,
    /// The envelope's, for the heartbeat lag.
    timestamp_ms: u64,
}

/// Checked messages waiting for one store transaction: `pending[k]` (the message's index in
/// the batch, and what to report) belongs to `items[k]`.
#[derive(Default)]
struct Batch {
    pending: Vec<(usize, Pending)>,
    items: Vec<IngestItem>,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn store_rejection(e: StoreError) -> Rejection {
    Rejection::new("store_error", e.to_string())
}

#[cfg(test)]
mod tests;
