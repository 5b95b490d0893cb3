//! The agent's protocol decisions, free of I/O: signing what the node sends under the current
//! (epoch, counter), and judging what the fleet sends.
//!
//! [`AgentState::on_target`] turns raw bytes from the target topic into [`Action`]s the driver
//! carries out (persist the replay window, apply a target, send a status), or a [`Reject`]
//! naming why the bytes were refused. Nothing here touches the disk or the network, so every
//! decision is unit-tested with plain `#[test]`s.

use crate::identity::NodeKeys;
use lattice_wire::envelope::{self, Envelope};
use lattice_wire::msg::{Hello, Inventory, Status, Target, Usage, Will, WorkloadStatus};
use lattice_wire::pin::PinHolder;
use lattice_wire::{Message, MessageKind, ReplayError, ReplayWindow, Sender, WireError};
use std::sync::Arc;
use std::time::Duration;

/// The reason the node's last will gives.
pub const WILL_REASON: &str = "connection lost";

/// What the driver must do after a message was accepted, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Persist the fleet's replay window (the message was fresh).
    PersistReplay(ReplayWindow),
    /// Apply this newer target; on success call [`AgentState::mark_applied`].
    Apply(Target),
    /// The heartbeat interval changed to this.
    Heartbeat(Duration),
    /// Publish a status now (it acknowledges the applied revision).
    SendStatus,
}

/// Why bytes from the target topic were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("sent by {0}, but only the fleet may send targets")]
    NotFromFleet(Sender),
    #[error("addressed to {got:?}, not to this node ({ours})")]
    WrongRecipient { got: Option<String>, ours: String },
    #[error("a {0} message arrived on the target topic")]
    WrongKind(&'static str),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

impl Reject {
    /// A short stable label for logs (and, later, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Wire(e) => e.reason(),
            Reject::NotFromFleet(_) => "not_from_fleet",
            Reject::WrongRecipient { .. } => "wrong_recipient",
            Reject::WrongKind(_) => "wrong_kind",
            Reject::Replay(e) => e.reason(),
        }
    }
}

/// Where the agent starts from.
#[derive(Debug, Clone)]
pub struct StateInit {
    pub node_id: String,
    pub keys: NodeKeys,
    /// The pinned fleet key (it follows the fleet's key rotations).
    pub fleet_pin: Arc<dyn PinHolder>,
    /// The fleet's heartbeat interval (registration, or the last applied target).
    pub heartbeat_secs: u32,
    /// A local override that wins over the fleet's interval.
    pub heartbeat_override: Option<u32>,
    pub applied_revision: u64,
    pub replay: ReplayWindow,
}

/// The agent's protocol state.
#[derive(Debug)]
pub struct AgentState {
    node_id: String,
    keys: NodeKeys,
    fleet_pin: Arc<dyn PinHolder>,
    epoch: u64,
    counter: u64,
    applied_revision: u64,
    fleet_heartbeat: u32,
    heartbeat_override: Option<u32>,
    replay: ReplayWindow,
}

impl AgentState {
    pub fn new(init: StateInit) -> Self {
        AgentState {
            node_id: init.node_id,
            keys: init.keys,
            fleet_pin: init.fleet_pin,
            epoch: 0,
            counter: 0,
            applied_revision: init.applied_revision,
            fleet_heartbeat: init.heartbeat_secs,
            heartbeat_override: init.heartbeat_override,
            replay: init.replay,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn applied_revision(&self) -> u64 {
        self.applied_revision
    }

    /// Seconds between heartbeats: the local override, else the fleet's (at least 1).
    pub fn heartbeat(&self) -> Duration {
        let secs = self.heartbeat_override.unwrap_or(self.fleet_heartbeat);
        Duration::from_secs(u64::from(secs.max(1)))
    }

    /// Starts a new connection epoch (freshly persisted by the caller); counters restart at 0.
    pub fn begin_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.counter = 0;
    }

    /// Signs `message` as this node under the next (epoch, counter).
    pub fn seal(&mut self, message: &Message) -> Result<Vec<u8>, WireError> {
        let header = Envelope {
            sender: Sender::Node(self.node_id.clone()),
            recipient: None,
            epoch: self.epoch,
            counter: self.counter,
            timestamp_ms: lattice_wire::now_ms(),
            kind: message.kind(),
            sealed: false,
        };
        let bytes = envelope::encode(&header, message, &self.keys.identity, None)?;
        self.counter += 1;
        Ok(bytes)
    }

    /// The last will for the connection about to be made: call right after
    /// [`AgentState::begin_epoch`], so it carries counter 0 of the new epoch.
    pub fn will(&mut self) -> Result<Vec<u8>, WireError> {
        self.seal(&Message::Will(Will {
            reason: WILL_REASON.to_string(),
        }))
    }

    pub fn hello(&self, inventory: Inventory) -> Message {
        Message::Hello(Hello {
            firmware_version: env!("CARGO_PKG_VERSION").to_string(),
            inventory,
            applied_revision: self.applied_revision,
        })
    }

    pub fn status(&self, usage: Usage, workloads: Vec<WorkloadStatus>) -> Message {
        Message::Status(Status {
            applied_revision: self.applied_revision,
            usage,
            workloads,
        })
    }

    /// Judges bytes that arrived on this node's target topic.
    pub fn on_target(&mut self, bytes: &[u8]) -> Result<Vec<Action>, Reject> {
        let unverified = envelope::decode(bytes)?;
        let header = &unverified.header;
        if header.sender != Sender::Fleet {
            return Err(Reject::NotFromFleet(header.sender.clone()));
        }
        if header.recipient.as_deref() != Some(self.node_id.as_str()) {
            return Err(Reject::WrongRecipient {
                got: header.recipient.clone(),
                ours: self.node_id.clone(),
            });
        }
        if header.kind != MessageKind::Target {
            return Err(Reject::WrongKind(header.kind.as_str()));
        }
        // The key pinned now: after a rotation, the new one (the TLS handshake that brought
        // this message moved the pin first).
        let fleet_key = self.fleet_pin.pin().key;
        let opened = unverified.open(&fleet_key, Some(&self.keys.encryption))?;
        let Message::Target(target) = opened.message else {
            return Err(Reject::WrongKind(opened.message.kind().as_str()));
        };
        self.replay
            .accept(opened.header.epoch, opened.header.counter)?;
        let mut actions = vec![Action::PersistReplay(self.replay)];
        if target.revision > self.applied_revision {
            if target.heartbeat_secs != 0 && target.heartbeat_secs != self.fleet_heartbeat {
                let before = self.heartbeat();
                self.fleet_heartbeat = target.heartbeat_secs;
                if self.heartbeat() != before {
                    actions.push(Action::Heartbeat(self.heartbeat()));
                }
            }
            actions.push(Action::Apply(target));
        }
        actions.push(Action::SendStatus);
        Ok(actions)
    }

    /// Records that the target with `revision` was applied.
    pub fn mark_applied(&mut self, revision: u64) {
        self.applied_revision = self.applied_revision.max(revision);
    }
}

#[cfg(test)]
mod tests;
