//! The principals of API tokens recently resolved by this process (SQLite only): every API
//! request resolves its bearer token, and on SQLite that query was a third to a half of a
//! read's round trips to the database's threads (docs/benchmarks.md, "## API").
//!
//! Exact in this process: every store method that writes accounts or API tokens forgets the
//! whole cache when it ends ([`Principals::forget_on_drop`]), and a lookup that ran while
//! such a write was in progress does not fill it (a generation count). Entries also end after
//! [`TTL`], in case something else writes the database file (the fleet is its only writer:
//! `fleet.lock`). Not used on PostgreSQL, where other fleet replicas write the same tables.

use crate::api::Role;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a resolved token is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(5);

/// At most this many tokens are remembered; past it the cache starts again empty.
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
struct Entry {
    account_id: String,
    role: Role,
    /// The token's own expiry.
    expires_ms: u64,
    cached: Instant,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<String, Entry>,
    /// Bumped by every write of accounts or tokens.
    generation: u64,
}

/// Shared by every clone of a store.
#[derive(Clone, Default)]
pub(super) struct Principals {
    inner: Arc<Mutex<Inner>>,
    enabled: bool,
}

/// Forgets every entry when dropped (at the end of a write, however it ends).
pub(super) struct Forget<'a>(&'a Principals);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.by_hash.clear();
        inner.generation += 1;
    }
}

impl Principals {
    pub(super) fn new(enabled: bool) -> Principals {
        Principals {
            inner: Default::default(),
            enabled,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken at the start of every write of accounts or API tokens.
    pub(super) fn forget_on_drop(&self) -> Forget<'_> {
        Forget(self)
    }

    /// The cached principal of `hash` if it is still valid at `now_ms`; else the generation
    /// to hand to [`Principals::remember`] after asking the database.
    pub(super) fn get(&self, hash: &str, now_ms: u64) -> Result<(String, Role), u64> {
        let mut inner = self.lock();
        if !self.enabled {
            return Err(inner.generation);
        }
        match inner.by_hash.get(hash) {
            Some(e) if now_ms < e.expires_ms && e.cached.elapsed() < TTL => {
                Ok((e.account_id.clone(), e.role))
            }
            Some(_) => {
                inner.by_hash.remove(hash);
                Err(inner.generation)
            }
            None => Err(inner.generation),
        }
    }

    /// Remembers what the database said of `hash`, unless a write of accounts or tokens
    /// happened since `generation` was read (the answer may be older than that write).
    pub(super) fn remember(
        &self,
        hash: &str,
        generation: u64,
        account_id: &str,
        role: Role,
        expires_ms: u64,
    ) {
        let mut inner = self.lock();
        if !self.enabled || inner.generation != generation {
            return;
        }
        if inner.by_hash.len() >= MAX_ENTRIES {
            inner.by_hash.clear();
        }
        inner.by_hash.insert(
            hash.to_string(),
            Entry {
                account_id: account_id.to_string(),
                role,
                expires_ms,
                cached: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_during_a_lookup_keeps_its_answer_out() {
        let p = Principals::new(true);
        let generation = p.get("h", 1).unwrap_err();
        drop(p.forget_on_drop());
        p.remember("h", generation, "a", Role::Consumer, 10);
        assert!(p.get("h", 1).is_err());
        let generation = p.get("h", 1).unwrap_err();
        p.remember("h", generation, "a", Role::Consumer, 10);
        assert_eq!(p.get("h", 1), Ok(("a".to_string(), Role::Consumer)));
        // The token's expiry holds in the cache too.
        assert!(p.get("h", 10).is_err());
    }

    #[test]
    fn disabled_never_answers() {
        let p = Principals::new(false);
        let generation = p.get("h", 1).unwrap_err();
        p.remember("h", generation, "a", Role::Consumer, 10);
        assert!(p.get("h", 1).is_err());
    }
}
