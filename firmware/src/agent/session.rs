//! One connection's life: wait for the ConnAck, greet the fleet (subscribe, hello, status,
//! outbox), then heartbeat and handle targets until the connection ends or shutdown fires.

use super::link::{credential_refused, Link, LinkEvent};
use super::state::Action;
use super::{Agent, Applier, BrokerUrl, End};
use crate::backoff::Backoff;
use crate::shutdown::Shutdown;
use lattice_wire::msg::{Inventory, Target};
use lattice_wire::topic::{topic, Channel};
use rumqttc::ConnectionError;
use tokio::time::{sleep_until, Instant};

impl<A: Applier> Agent<A> {
    pub(super) async fn session(
        &mut self,
        mut link: Link,
        url: &BrokerUrl,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> End {
        loop {
            self.liveness.touch();
            tokio::select! {
                () = shutdown.wait() => {
                    link.close().await;
                    return End::Shutdown;
                }
                ev = link.next() => match ev {
                    LinkEvent::Connected => break,
                    LinkEvent::Message { .. } => {}
                    LinkEvent::Closed(e) => return self.lost(url, e, false),
                },
                () = sleep_until(self.next_beat) => self.offline_beat(),
                () = tokio::time::sleep(super::STATE_POLL) => {}
            }
        }
        tracing::info!(broker = %url, epoch = self.state.epoch(), "connected to the broker");
        backoff.reset();
        self.greet(&link, url, shutdown).await;
        loop {
            self.liveness.touch();
            tokio::select! {
                () = shutdown.wait() => {
                    link.close().await;
                    tracing::info!("disconnected from the broker");
                    return End::Shutdown;
                }
                ev = link.next() => match ev {
                    LinkEvent::Message { topic, payload } => {
                        self.on_message(&link, &topic, &payload).await;
                    }
                    LinkEvent::Connected => {}
                    LinkEvent::Closed(e) => return self.lost(url, e, true),
                },
                () = sleep_until(self.next_beat) => self.send_status(&link).await,
                () = tokio::time::sleep(super::STATE_POLL) => {
                    if self.applier.workloads() != self.last_states {
                        self.send_status(&link).await;
                    }
                }
            }
        }
    }

    fn lost(&self, url: &BrokerUrl, e: Option<ConnectionError>, connected: bool) -> End {
        let refused = e.as_ref().is_some_and(credential_refused);
        match (&e, connected) {
            (Some(e), _) if refused => tracing::error!(
                broker = %url,
                "the broker refused this node's credential ({e}); the node may have been \
                 revoked. Retrying slowly"
            ),
            (Some(e), true) => tracing::warn!(broker = %url, "lost the broker connection: {e}"),
            (Some(e), false) => tracing::warn!(broker = %url, "cannot connect to the broker: {e}"),
            (None, _) => tracing::warn!(broker = %url, "the broker connection closed"),
        }
        End::Lost { connected, refused }
    }

    /// After the ConnAck: subscribe to targets, hello, status, the outbox, then an event.
    async fn greet(&mut self, link: &Link, url: &BrokerUrl, shutdown: &Shutdown) {
        let target_topic = topic(self.state.node_id(), Channel::Target);
        if let Err(e) = link.subscribe(&target_topic).await {
            tracing::warn!("subscribing to {target_topic}: {e}");
            return;
        }
        let inventory = crate::inventory::read_inventory(&self.data_dir).unwrap_or_else(|e| {
            tracing::warn!("reading the inventory for hello: {e}");
            Inventory::default()
        });
        let hello = self.state.hello(inventory);
        if let Err(e) = self.publish(link, &hello).await {
            tracing::warn!("publishing hello: {e}");
            return;
        }
        self.send_status(link).await;
        self.drain_outbox(link, shutdown).await;
        let detail = format!("{url} epoch {}", self.state.epoch());
        self.emit(link, "broker_connected", detail).await;
    }

    /// Publishes a status now and restarts the heartbeat timer.
    pub(super) async fn send_status(&mut self, link: &Link) {
        self.next_beat = Instant::now() + self.state.heartbeat();
        let usage = self.sample();
        let states = self.applier.workloads();
        self.last_states = states.clone();
        let status = self.state.status(usage, states);
        match self.publish(link, &status).await {
            Ok(()) => tracing::debug!(
                applied_revision = self.state.applied_revision(),
                "status sent"
            ),
            Err(e) => tracing::debug!("status not sent: {e}"),
        }
        // What the applier's background work changed (batch paused, CPU cap lowered, …).
        for (kind, detail) in self.applier.take_events() {
            self.emit(link, &kind, detail).await;
        }
    }

    async fn on_message(&mut self, link: &Link, topic_name: &str, payload: &[u8]) {
        let expected = topic(self.state.node_id(), Channel::Target);
        if topic_name != expected {
            tracing::debug!(
                topic = topic_name,
                "ignoring a message on an unexpected topic"
            );
            return;
        }
        let actions = match self.state.on_target(payload) {
            Ok(a) => a,
            Err(reject) => {
                tracing::warn!(
                    reason = reject.reason(),
                    "rejected a target message: {reject}"
                );
                return;
            }
        };
        for action in actions {
            match action {
                Action::PersistReplay(w) => {
                    if let Err(e) = self.store.save_replay(&w) {
                        tracing::error!("persisting the fleet replay window: {e}");
                    }
                }
                Action::Apply(target) => self.apply(link, &target).await,
                Action::Heartbeat(d) => {
                    tracing::info!(secs = d.as_secs(), "heartbeat interval changed");
                    self.next_beat = self.next_beat.min(Instant::now() + d);
                }
                Action::SendStatus => self.send_status(link).await,
            }
        }
    }

    async fn apply(&mut self, link: &Link, target: &Target) {
        let revision = target.revision;
        match self.applier.apply(target) {
            Ok(()) => {
                if let Err(e) = self.store.save_target(target) {
                    tracing::error!(revision, "persisting the applied target: {e}");
                }
                self.state.mark_applied(revision);
                tracing::info!(revision, "target applied");
                self.emit(link, "target_applied", format!("revision {revision}"))
                    .await;
            }
            Err(e) => {
                tracing::warn!(revision, "applying target failed: {e}");
                self.emit(link, "target_failed", format!("revision {revision}: {e}"))
                    .await;
            }
        }
    }
}
