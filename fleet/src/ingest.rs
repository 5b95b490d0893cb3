//! Accepting what nodes publish: topic, envelope, signature, replay window, then the store.
//!
//! The broker is not trusted. A message is applied only when the topic names a registered,
//! unrevoked node, the envelope's signed sender is that same node, the signature verifies under
//! the key the node registered, the kind belongs on that channel, and (epoch, counter) is fresh.
//! Everything refused is logged with its reason, counted in `/metrics`, and changes nothing.

use crate::metrics::Metrics;
use crate::store::{Effect, IngestOutcome, Store, StoreError};
use lattice_wire::msg::Message;
use lattice_wire::topic::{self, Channel};
use lattice_wire::{IdentityPublic, MessageKind, Sender};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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
        let res = self.handle_inner(topic, payload, now_ms).await;
        match &res {
            Ok(a) => {
                self.metrics.count_in(a.kind.as_str());
                tracing::debug!(node = %a.node_id, kind = a.kind.as_str(), changed = a.changed, "accepted");
            }
            Err(r) => {
                self.metrics.reject(r.reason);
                tracing::warn!(topic, reason = r.reason, detail = %r.detail, "refused node message");
            }
        }
        res
    }

    async fn handle_inner(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Accepted, Rejection> {
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
                // Signed at CONNECT, published by the broker later: accepted by signature and
                // by matching the current connection epoch, never by counter freshness.
                let changed = self
                    .store
                    .accept_will(node_id, h.epoch, &w.reason)
                    .await
                    .map_err(store_rejection)?;
                return Ok(Accepted {
                    node_id: node_id.to_string(),
                    kind,
                    changed,
                });
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
        let outcome = self
            .store
            .ingest(node_id, h.epoch, h.counter, effect, now_ms)
            .await
            .map_err(store_rejection)?;
        match outcome {
            IngestOutcome::Replayed(e) => Err(Rejection::new(e.reason(), e.to_string())),
            IngestOutcome::Applied | IngestOutcome::Stale => {
                if channel == Channel::Status {
                    let lag = lattice_wire::now_ms().saturating_sub(h.timestamp_ms);
                    self.metrics.heartbeat_lag.observe(lag as f64 / 1000.0);
                }
                Ok(Accepted {
                    node_id: node_id.to_string(),
                    kind,
                    changed: outcome == IngestOutcome::Applied,
                })
            }
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn store_rejection(e: StoreError) -> Rejection {
    Rejection::new("store_error", e.to_string())
}
