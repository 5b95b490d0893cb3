//! Everything the agent sends upward: signed publishes while connected, and the outbox
//! (postcard-encoded `Message`s, topic suffix = channel name) while it is not.
//!
//! Queued messages are signed only when they are finally sent, under the epoch and counter of
//! that connection. A record is popped only after its publish was handed to the MQTT client,
//! so delivery is at-least-once (the fleet's replay window and idempotent handlers absorb the
//! rare duplicate). Status is never queued: it is current state, and a fresh one follows
//! every hello.

use super::link::Link;
use super::{Agent, Applier};
use crate::outbox::Priority;
use crate::shutdown::Shutdown;
use lattice_wire::msg::{Event, Telemetry, Usage};
use lattice_wire::topic::topic;
use lattice_wire::{Message, MessageKind, WireError};

#[derive(Debug, thiserror::Error)]
pub(super) enum PublishError {
    #[error("{0} messages are not published by nodes")]
    NotUpward(&'static str),
    #[error("signing: {0}")]
    Seal(#[from] WireError),
    #[error("the connection is gone: {0}")]
    Link(#[from] rumqttc::ClientError),
}

fn queueable(kind: MessageKind) -> bool {
    matches!(kind, MessageKind::Event | MessageKind::Telemetry)
}

impl<A: Applier> Agent<A> {
    /// Queues an event for delivery after the next (re)connect, e.g. `registered` before
    /// [`Agent::run`] starts.
    pub fn queue_event(&mut self, kind: &str, detail: impl Into<String>) {
        let msg = event(kind, detail.into());
        self.enqueue(Priority::Event, &msg);
    }

    /// How many messages wait in the outbox.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    pub(super) fn enqueue(&mut self, prio: Priority, msg: &Message) {
        let kind = msg.kind();
        let Some(channel) = kind.channel().filter(|_| queueable(kind)) else {
            tracing::warn!(kind = kind.as_str(), "not queueing a message of this kind");
            return;
        };
        let bytes = match postcard::to_allocvec(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), "cannot encode for the outbox: {e}");
                return;
            }
        };
        match self.outbox.push(prio, channel.as_str(), &bytes) {
            Ok(o) if !o.stored => {
                tracing::debug!(kind = kind.as_str(), "outbox full: telemetry dropped")
            }
            Ok(o) if o.dropped_telemetry + o.dropped_events > 0 => tracing::warn!(
                dropped_telemetry = o.dropped_telemetry,
                dropped_events = o.dropped_events,
                "outbox full: dropped older messages"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(kind = kind.as_str(), "cannot queue: {e}"),
        }
    }

    pub(super) fn sample(&mut self) -> Usage {
        match self.sampler.sample() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("sampling usage: {e}");
                Usage::default()
            }
        }
    }

    /// A heartbeat while disconnected: a telemetry sample for the outbox.
    pub(super) fn offline_beat(&mut self) {
        self.next_beat = tokio::time::Instant::now() + self.state.heartbeat();
        let sample = (lattice_wire::now_ms(), self.sample());
        let msg = Message::Telemetry(Telemetry {
            samples: vec![sample],
        });
        self.enqueue(Priority::Telemetry, &msg);
    }

    /// Signs `msg` under the current epoch and hands it to the connection (QoS 1).
    pub(super) async fn publish(&mut self, link: &Link, msg: &Message) -> Result<(), PublishError> {
        let kind = msg.kind();
        let channel = kind
            .channel()
            .filter(|c| c.is_upward())
            .ok_or(PublishError::NotUpward(kind.as_str()))?;
        let bytes = self.state.seal(msg)?;
        link.publish(topic(self.state.node_id(), channel), bytes)
            .await?;
        Ok(())
    }

    /// Publishes an event now, or queues it if that fails.
    pub(super) async fn emit(&mut self, link: &Link, kind: &str, detail: String) {
        let msg = event(kind, detail);
        if let Err(e) = self.publish(link, &msg).await {
            tracing::debug!("event {kind} queued: {e}");
            self.enqueue(Priority::Event, &msg);
        }
    }

    /// Delivers the outbox in order. Stops early (leaving the rest queued) when the
    /// connection fails or shutdown fires.
    pub(super) async fn drain_outbox(&mut self, link: &Link, shutdown: &Shutdown) {
        let mut sent = 0usize;
        while let Some(record) = self.outbox.peek() {
            if shutdown.is_triggered() {
                break;
            }
            match postcard::from_bytes::<Message>(&record.payload) {
                Ok(msg) if queueable(msg.kind()) => match self.publish(link, &msg).await {
                    Ok(()) => sent += 1,
                    Err(PublishError::Link(e)) => {
                        tracing::debug!("outbox delivery interrupted: {e}");
                        break;
                    }
                    Err(e) => tracing::warn!("dropping queued {}: {e}", record.topic_suffix),
                },
                Ok(msg) => tracing::warn!(
                    kind = msg.kind().as_str(),
                    "dropping a queued message of a kind that is never queued"
                ),
                Err(e) => tracing::warn!(
                    suffix = %record.topic_suffix,
                    "dropping an undecodable queued message: {e}"
                ),
            }
            if let Err(e) = self.outbox.pop() {
                tracing::warn!("outbox pop: {e}");
            }
        }
        if sent > 0 {
            tracing::info!(sent, left = self.outbox.len(), "delivered queued messages");
            if let Err(e) = self.outbox.sync() {
                tracing::warn!("outbox sync: {e}");
            }
        }
    }
}

fn event(kind: &str, detail: String) -> Message {
    Message::Event(Event {
        at_ms: lattice_wire::now_ms(),
        kind: kind.to_string(),
        detail,
    })
}
