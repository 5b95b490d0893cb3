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
mod tokens;
mod workloads;

pub use accounts::{AccountRow, ApiTokenRow};
pub use audit::{AuditEntry, AuditFilter};
pub use ingest::{Effect, IngestOutcome};
pub use nodes::{NewNode, NodeRow};
pub use tokens::{TokenProblem, TokenRow};
pub use workloads::{NextVersion, Placement, WorkloadEvent, WorkloadRow};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
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
    pool: AnyPool,
    backend: Backend,
    /// Serializes placement decisions in this process (see [`Store::placement_guard`]).
    placing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// PostgreSQL advisory lock key of placement decisions ("lattice placement").
const PLACEMENT_LOCK: i64 = 0x4c41_5454_504c_4143;

/// Held while a placement is decided and written: no other placement (in this process, or on
/// PostgreSQL in any fleet process) reads the reservations until it is dropped.
pub struct PlacementGuard {
    _local: tokio::sync::OwnedMutexGuard<()>,
    /// PostgreSQL: the session holding the advisory lock, detached from the pool; dropping it
    /// closes the connection, which ends the session and releases the lock.
    _session: Option<sqlx::AnyConnection>,
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
            // One connection: SQLite has one writer anyway, and a single connection avoids
            // SQLITE_BUSY when a read transaction upgrades to a write (ADR 0002).
            Backend::Sqlite if url.contains('?') || url.contains(":memory:") => {
                (url.to_string(), 1)
            }
            Backend::Sqlite => (format!("{url}?mode=rwc"), 1),
            Backend::Postgres => (url.to_string(), 16),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL + NORMAL: a committed transaction survives a killed process
                        // (not a power cut of the fleet host; see docs/architecture.md).
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous=NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url_full)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(url),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            placing: Default::default(),
        })
    }

    /// Takes the placement lock: every path that reads the reservations, picks a node and
    /// writes a placement (deploy, update, drain, rescheduling) holds it from the read to the
    /// write, so two placements never both take the same free room. In this process a mutex;
    /// on PostgreSQL also a session advisory lock, for the other fleet replicas.
    pub async fn placement_guard(&self) -> Result<PlacementGuard, StoreError> {
        let local = self.placing.clone().lock_owned().await;
        let session = match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                // Out of the pool before it asks for the lock: if this future is dropped while
                // it waits (a client that went away), the connection closes rather than going
                // back to the pool to take the lock later and keep it.
                let mut c = self.pool.acquire().await?.detach();
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(PLACEMENT_LOCK)
                    .execute(&mut c)
                    .await?;
                Some(c)
            }
        };
        Ok(PlacementGuard {
            _local: local,
            _session: session,
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
