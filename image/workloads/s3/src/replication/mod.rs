//! Asynchronous replication of a primary's changes to a replica (issue 6, the server half).
//!
//! - [`format`]: the journal's records and checkpoint as bytes (no I/O);
//! - [`journal`]: the journal on the volume and the queue of changes not yet acknowledged;
//!   the store appends to it in the same critical section as each change and fsyncs it
//!   before the change is acknowledged;
//! - [`ship`]: the background task sending the changes in order to the replica as signed S3
//!   requests, with capped exponential backoff, and recording how far the replica has
//!   acknowledged;
//! - [`Replication::status`]: the lag, as `GET /_lattice/replication` answers it.
//!
//! The replica is an ordinary `lattice-s3` with the same credentials. See docs/s3.md,
//! "Replication (server side)".

pub mod format;
pub mod journal;
pub mod ship;

use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use journal::{Journal, JournalError, JournalOptions, JournalStatus};
pub use ship::Target;

use crate::store::now_ms;

/// The header carrying an object's stored metadata from the primary to the replica (base64
/// of the JSON the store keeps); with it, the body is the object's stored bytes.
pub const META_HEADER: &str = "x-lattice-replica-meta";
/// The replica's answer when it stored an object with [`META_HEADER`]'s metadata.
pub const STORED_HEADER: &str = "x-lattice-replica";

/// What the shipper last learned about the replica.
#[derive(Debug, Clone, Default)]
struct Link {
    /// `None` until the first request.
    reachable: Option<bool>,
    /// The last failure (operation and status; never object names or secrets).
    last_error: Option<String>,
    caught_up: bool,
}

/// The primary's side of replication: the journal and the state of the link to the replica.
#[derive(Debug)]
pub struct Replication {
    journal: Arc<Journal>,
    link: Mutex<Link>,
}

/// The lag as the node-side supervisor reads it: counts and times, no object names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub role: &'static str,
    /// `reachable`, `unreachable`, `unknown` (not contacted yet) or `none` (not a primary).
    pub replica: &'static str,
    pub pending_changes: u64,
    pub pending_bytes: u64,
    pub oldest_pending_age_ms: u64,
    /// When the replica last acknowledged a change (ms since the epoch), in this run.
    pub last_acknowledged_ms: Option<i64>,
    pub acknowledged_seq: u64,
    pub journal_seq: u64,
    pub last_error: Option<String>,
    /// A damaged journal record: shipping has stopped before it (file and offset).
    pub journal_error: Option<String>,
}

impl Status {
    /// A server that ships nothing (standalone, or a replica).
    pub fn standalone() -> Status {
        Status {
            role: "standalone",
            replica: "none",
            pending_changes: 0,
            pending_bytes: 0,
            oldest_pending_age_ms: 0,
            last_acknowledged_ms: None,
            acknowledged_seq: 0,
            journal_seq: 0,
            last_error: None,
            journal_error: None,
        }
    }
}

impl Replication {
    pub fn new(journal: Arc<Journal>) -> Arc<Replication> {
        Arc::new(Replication {
            journal,
            link: Mutex::new(Link::default()),
        })
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        let j = self.journal.status();
        let link = self.link().clone();
        Status {
            role: "primary",
            replica: match link.reachable {
                None => "unknown",
                Some(true) => "reachable",
                Some(false) => "unreachable",
            },
            pending_changes: j.pending_changes,
            pending_bytes: j.pending_bytes,
            oldest_pending_age_ms: j
                .oldest_pending_ms
                .map_or(0, |at| u64::try_from(now_ms() - at).unwrap_or(0)),
            last_acknowledged_ms: j.last_ack_ms,
            acknowledged_seq: j.acked_seq,
            journal_seq: j.last_seq,
            last_error: link.last_error,
            journal_error: j.error,
        }
    }

    /// Records the outcome of a request to the replica; logs changes of state.
    fn reached(&self, result: Result<(), &ship::ShipError>) {
        let mut link = self.link();
        match result {
            Ok(()) => {
                if link.reachable != Some(true) {
                    tracing::info!(replica = %self.journal.target(), "replica reachable");
                }
                link.reachable = Some(true);
                link.last_error = None;
            }
            Err(e) => {
                let reachable = !matches!(e, ship::ShipError::Unreachable(_));
                if link.reachable != Some(reachable)
                    || link.last_error.as_deref() != Some(&e.to_string())
                {
                    tracing::warn!(replica = %self.journal.target(), error = %e, "replica not taking changes; retrying with backoff");
                }
                link.reachable = Some(reachable);
                link.last_error = Some(e.to_string());
                link.caught_up = false;
            }
        }
    }

    fn caught_up(&self, now: bool) {
        let mut link = self.link();
        if now && !link.caught_up {
            tracing::info!(replica = %self.journal.target(), acknowledged_seq = self.journal.status().acked_seq, "replica caught up");
        }
        link.caught_up = now;
    }
}
