//! The fleet's store: sqlx over SQLite (embedded default) or PostgreSQL, one set of portable
//! migrations (`fleet/migrations`), and every query in this module tree.
//!
//! Callers never see SQL or the backend. Each message a node sends is checked against its
//! replay window and applied in one transaction ([`Store::ingest`]), so several fleet
//! processes sharing a database agree on what was accepted even when messages reach them out
//! of order.

mod accounts;
mod audit;
pub mod gateway;
mod ingest;
mod nodes;
mod principals;
mod tokens;
mod workloads;

pub use accounts::{AccountRow, ApiTokenRow};
pub use audit::{AuditEntry, AuditFilter};
pub use ingest::{Effect, IngestItem, IngestOutcome};
pub use nodes::{NewNode, NodeRow, NodeState};
pub use tokens::{TokenProblem, TokenRow};
pub use workloads::{Listed, NextVersion, Placement, WorkloadEvent, WorkloadRow, Write};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("provisioning token refused: {0}")]
    Token(TokenProblem),
    #[error("a node with this identity key is already registered as {0}")]
    DuplicateIdentity(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    /// Every write, and every read inside a write's transaction. SQLite: the one writer
    /// connection.
    pool: AnyPool,
    /// Reads outside transactions. SQLite on a file: [`SQLITE_READERS`] more connections,
    /// which WAL lets read beside the writer and each other (ADR 0012); in memory and on
    /// PostgreSQL the same pool as `pool`.
    reader: AnyPool,
    backend: Backend,
    /// Serializes placement decisions in this process (see [`Store::placement_guard`]).
    placing: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// One lock per workload being changed in this process (see [`Store::workload_guard`]).
    changing:
        std::sync::Arc<std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>>,
    /// SQLite: the principals of recently resolved API tokens (see [`principals`]).
    principals: principals::Principals,
}

/// Read-only SQLite connections beside the writer (ADR 0012).
pub const SQLITE_READERS: u32 = 4;

/// PostgreSQL advisory lock key of placement decisions ("lattice placement").
const PLACEMENT_LOCK: i64 = 0x4c41_5454_504c_4143;

/// Held while a placement is decided and written: no other placement (in this process, or on
/// PostgreSQL in any fleet process) reads the reservations until it is dropped.
pub struct PlacementGuard {
    _local: tokio::sync::OwnedMutexGuard<()>,
    /// PostgreSQL: the pooled session holding the advisory lock. Dropping the guard unlocks it
    /// and returns it to the pool (or, with no runtime to do that on, closes it, which ends
    /// the session and releases the lock too).
    session: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl Drop for PlacementGuard {
    fn drop(&mut self) {
        let Some(c) = self.session.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let mut c = c;
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(PLACEMENT_LOCK)
                        .execute(&mut *c)
                        .await;
                    if unlocked.is_err() {
                        // Closed rather than pooled: the session ends, and its lock with it.
                        drop(c.detach());
                    }
                });
            }
            Err(_) => drop(c.detach()),
        }
    }
}

/// A pooled session waiting for the advisory lock: if the wait is given up (the future
/// dropped, a client gone), the connection is closed rather than pooled, so a lock granted
/// later ends with its session instead of staying held by a pooled connection.
struct Waiting(Option<sqlx::pool::PoolConnection<sqlx::Any>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            drop(c.detach());
        }
    }
}

/// Held while one workload is read, changed and written by this process (see
/// [`Store::workload_guard`]).
pub struct WorkloadGuard {
    key: String,
    map: std::sync::Arc<std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for WorkloadGuard {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let lock = self
            .guard
            .take()
            .map(|g| tokio::sync::OwnedMutexGuard::mutex(&g).clone());
        // The map's entry goes with its last user: nobody else holds or waits for it (they
        // would hold a clone, and clones are only taken under the map's lock).
        if let Some(lock) = lock {
            if std::sync::Arc::strong_count(&lock) == 2 {
                map.remove(&self.key);
            }
        }
    }
}

/// `u64` values are stored in BIGINT columns bit-for-bit.
pub(crate) fn to_db(v: u64) -> i64 {
    v as i64
}
pub(crate) fn from_db(v: i64) -> u64 {
    v as u64
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates the database at `url`
    /// (`sqlite:///path/fleet.db`, `sqlite::memory:`, `postgres://…`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let (url_full, max) = match backend {
            // One writer connection: SQLite has one writer anyway, and a single connection
            // avoids SQLITE_BUSY when a read transaction upgrades to a write (ADR 0002).
            Backend::Sqlite if url.contains('?') || url.contains(":memory:") => {
                (url.to_string(), 1)
            }
            Backend::Sqlite => (format!("{url}?mode=rwc"), 1),
            Backend::Postgres => (url.to_string(), 16),
        };
        let open = |max: u32, read_only: bool| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                // SQLite: no ping before each use. sqlx pings every connection it returns to
                // the pool already (which also rolls back what a dropped query left open),
                // and an idle in-process connection cannot be lost meanwhile; each ping is a
                // round trip to the connection's worker thread (two thread wake-ups), and
                // was a third of the worker round trips of an API read (docs/benchmarks.md).
                // PostgreSQL keeps the ping: an idle session can be cut by the network.
                .test_before_acquire(backend == Backend::Postgres)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            if read_only {
                                // The database is in WAL mode already (the writer set it).
                                sqlx::query("PRAGMA query_only=1")
                                    .execute(&mut *conn)
                                    .await?;
                            } else {
                                // WAL + NORMAL: a committed transaction survives a killed
                                // process (not a power cut of the fleet host; see
                                // docs/architecture.md).
                                sqlx::query("PRAGMA journal_mode=WAL")
                                    .execute(&mut *conn)
                                    .await?;
                                sqlx::query("PRAGMA synchronous=NORMAL")
                                    .execute(&mut *conn)
                                    .await?;
                            }
                            sqlx::query("PRAGMA busy_timeout=5000")
                                .execute(&mut *conn)
                                .await?;
                        } else {
                            // A session whose replica is cut off by the network ends after
                            // a few seconds, and any advisory lock it held with it.
                            sqlx::query(crate::leader::SESSION_TIMEOUTS)
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
        };
        let failed = |source| StoreError::Open {
            url: redact(url),
            source,
        };
        let pool = open(max, false).connect(&url_full).await.map_err(failed)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        // An in-memory database is one connection's own: it has no readers beside it.
        let reader = if backend == Backend::Sqlite && !url.contains(":memory:") {
            open(SQLITE_READERS, true)
                .connect(&url_full)
                .await
                .map_err(failed)?
        } else {
            pool.clone()
        };
        Ok(Store {
            pool,
            reader,
            backend,
            placing: Default::default(),
            changing: Default::default(),
            principals: principals::Principals::new(backend == Backend::Sqlite),
        })
    }

    /// Takes this process's lock on workload `key` (account and name): the changes of one
    /// workload made here run one after the other, in the order they asked, while changes of
    /// other workloads run beside them. Other fleet processes are not held back: a change
    /// they write meanwhile makes this one's compare-and-set fail, and it is made again on
    /// the latest version.
    pub async fn workload_guard(&self, key: &str) -> WorkloadGuard {
        let lock = {
            let mut map = self.changing.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        WorkloadGuard {
            key: key.to_string(),
            map: self.changing.clone(),
            guard: Some(guard),
        }
    }

    /// Takes the placement lock: every path that reads the reservations, picks a node and
    /// writes a placement (deploy, update, drain, rescheduling) holds it from the read to the
    /// write, so two placements never both take the same free room. In this process a mutex;
    /// on PostgreSQL also a session advisory lock, for the other fleet replicas.
    pub async fn placement_guard(&self) -> Result<PlacementGuard, StoreError> {
        let asked = std::time::Instant::now();
        let local = self.placing.clone().lock_owned().await;
        let session = match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                // If this future is dropped while it waits (a client that went away),
                // `Waiting` closes the connection rather than pooling it, so it cannot take the
                // lock later and keep it. A session that holds it goes back to the pool after
                // its unlock (a new connection per placement cost a PostgreSQL backend each).
                let mut waiting = Waiting(Some(self.pool.acquire().await?));
                if let Some(c) = waiting.0.as_mut() {
                    sqlx::query("SELECT pg_advisory_lock($1)")
                        .bind(PLACEMENT_LOCK)
                        .execute(&mut **c)
                        .await?;
                }
                waiting.0.take()
            }
        };
        tracing::debug!(target: "lattice_fleet::timing", wait_us = asked.elapsed().as_micros() as u64, "placement lock taken");
        Ok(PlacementGuard {
            _local: local,
            session,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A new epoch for this fleet process: every fleet process sends under its own epoch, so
    /// nodes' replay windows never see a (sender, epoch, counter) twice.
    pub async fn next_fleet_epoch(&self, now_ms: u64) -> Result<u64, StoreError> {
        // Two processes starting at once may pick the same MAX + 1; the primary key refuses
        // the second, which then tries again.
        let mut last = None;
        for _ in 0..10 {
            let mut tx = self.pool.begin().await?;
            let row: AnyRow = sqlx::query("SELECT COALESCE(MAX(epoch), 0) AS e FROM fleet_epochs")
                .fetch_one(&mut *tx)
                .await?;
            // Never below the clock (ms): a fleet restored from an older backup, whose table
            // has forgotten the epochs handed out since, still starts above all of them (nodes
            // refuse a fleet epoch they have seen, or a lower one).
            let next = (from_db(row.try_get::<i64, _>("e")?) + 1).max(now_ms);
            let inserted =
                sqlx::query("INSERT INTO fleet_epochs (epoch, started_ms) VALUES ($1, $2)")
                    .bind(to_db(next))
                    .bind(to_db(now_ms))
                    .execute(&mut *tx)
                    .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(next);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(StoreError::Db(last.unwrap_or(sqlx::Error::RowNotFound)))
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// For reads outside a transaction (see [`Store::reader`]'s field): on SQLite they do not
    /// queue behind the writer's statements.
    pub(crate) fn reader(&self) -> &AnyPool {
        &self.reader
    }
}

/// Removes a password from a database URL before it is logged or returned.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
