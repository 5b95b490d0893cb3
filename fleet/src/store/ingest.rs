//! Applying node messages: replay check and effect in one transaction.

use super::{from_db, to_db, Backend, Store, StoreError};
use lattice_wire::replay::{ReplayError, ReplayWindow};
use sqlx::Row;

/// What an accepted message changes.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A (re)connect: the node's connection epoch, inventory and firmware.
    Hello {
        inventory_json: String,
        firmware_version: String,
        applied_revision: u64,
    },
    /// A heartbeat: applied only when newer than the stored status.
    Status {
        usage_json: String,
        applied_revision: u64,
        /// JSON of the workloads' states.
        workloads_json: String,
    },
    /// An event, kept in order by (epoch, counter).
    Event {
        at_ms: u64,
        kind: String,
        detail: String,
    },
    /// Telemetry: counts as being heard from.
    Telemetry,
}

/// SQL that adds the outage ending now (`now`, a bound parameter) to `down_ms` when a node that
/// was offline comes back under `condition`: counted from when it was last heard of (or
/// registered), but not from before the newest fleet process started watching (its
/// `fleet_epochs` row): while the fleet itself was down (an upgrade, a restore) nobody could
/// hear the node, and that is not the node's downtime. Reads the row's old values, as every
/// assignment of one UPDATE does.
fn downtime_until(now: &str, condition: &str) -> String {
    let heard = "(CASE WHEN last_seen_ms > registered_ms THEN last_seen_ms ELSE registered_ms END)";
    let watching = "(SELECT COALESCE(MAX(started_ms), 0) FROM fleet_epochs)";
    let since = format!("(CASE WHEN {heard} > {watching} THEN {heard} ELSE {watching} END)");
    format!(
        "down_ms = down_ms + CASE WHEN online = 0 AND {condition} THEN \
         (CASE WHEN {now} > {since} THEN {now} - {since} ELSE 0 END) ELSE 0 END"
    )
}

/// The result of [`Store::ingest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Applied,
    /// Accepted (fresh) but older than the stored status, so it changed nothing.
    Stale,
    Replayed(ReplayError),
}

impl Store {
    /// Checks (`sender`, `epoch`, `counter`) against the stored replay window and applies
    /// `effect`, all in one transaction. A replay changes nothing.
    pub async fn ingest(
        &self,
        node_id: &str,
        epoch: u64,
        counter: u64,
        effect: Effect,
        now_ms: u64,
    ) -> Result<IngestOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let sender = format!("node:{node_id}");
        // Lock the sender's window row for the whole transaction, so two fleet processes on
        // PostgreSQL cannot both accept the same (epoch, counter). SQLite has one connection
        // and one writer, so it needs no row lock (and has no FOR UPDATE).
        sqlx::query(
            "INSERT INTO replay (sender, epoch, top, bitmap) VALUES ($1, 0, 0, 0) \
             ON CONFLICT (sender) DO NOTHING",
        )
        .bind(&sender)
        .execute(&mut *tx)
        .await?;
        let select = match self.backend() {
            Backend::Postgres => {
                "SELECT epoch, top, bitmap FROM replay WHERE sender = $1 FOR UPDATE"
            }
            Backend::Sqlite => "SELECT epoch, top, bitmap FROM replay WHERE sender = $1",
        };
        let r = sqlx::query(select)
            .bind(&sender)
            .fetch_one(&mut *tx)
            .await?;
        let mut window = ReplayWindow {
            epoch: from_db(r.try_get("epoch")?),
            top: from_db(r.try_get("top")?),
            bitmap: from_db(r.try_get("bitmap")?),
        };
        if let Err(e) = window.accept(epoch, counter) {
            return Ok(IngestOutcome::Replayed(e));
        }
        // Upsert portable between SQLite and PostgreSQL.
        sqlx::query(
            "INSERT INTO replay (sender, epoch, top, bitmap) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sender) DO UPDATE SET epoch = excluded.epoch, top = excluded.top, \
             bitmap = excluded.bitmap",
        )
        .bind(&sender)
        .bind(to_db(window.epoch))
        .bind(to_db(window.top))
        .bind(to_db(window.bitmap))
        .execute(&mut *tx)
        .await?;

        let outcome = match effect {
            Effect::Hello {
                inventory_json,
                firmware_version,
                applied_revision,
            } => {
                let r = sqlx::query(&format!(
                    "UPDATE nodes SET online = 1, offline_reason = '', conn_epoch = $1, \
                     {}, last_seen_ms = $2, inventory = $3, firmware_version = $4, \
                     applied_revision = $5 WHERE id = $6 AND conn_epoch <= $1",
                    downtime_until("$2", "1 = 1")
                ))
                .bind(to_db(epoch))
                .bind(to_db(now_ms))
                .bind(inventory_json)
                .bind(firmware_version)
                .bind(to_db(applied_revision))
                .bind(node_id)
                .execute(&mut *tx)
                .await?;
                applied_if(r.rows_affected())
            }
            Effect::Status {
                usage_json,
                applied_revision,
                workloads_json,
            } => {
                // Newer than what is stored: a later epoch, or the same epoch and a higher counter.
                let r = sqlx::query(&format!(
                    "UPDATE nodes SET usage = $1, applied_revision = $2, {}, last_seen_ms = $3, \
                     status_epoch = $4, status_counter = $5, \
                     online = CASE WHEN $4 >= conn_epoch THEN 1 ELSE online END, \
                     offline_reason = CASE WHEN $4 >= conn_epoch THEN '' ELSE offline_reason END, \
                     conn_epoch = CASE WHEN $4 > conn_epoch THEN $4 ELSE conn_epoch END, \
                     workloads = $7 \
                     WHERE id = $6 AND (status_epoch < $4 OR (status_epoch = $4 AND status_counter < $5))",
                    downtime_until("$3", "$4 >= conn_epoch")
                ))
                .bind(usage_json)
                .bind(to_db(applied_revision))
                .bind(to_db(now_ms))
                .bind(to_db(epoch))
                .bind(to_db(counter))
                .bind(node_id)
                .bind(workloads_json)
                .execute(&mut *tx)
                .await?;
                applied_if(r.rows_affected())
            }
            Effect::Event {
                at_ms,
                kind,
                detail,
            } => {
                sqlx::query(
                    "INSERT INTO node_events (node_id, epoch, counter, at_ms, kind, detail, received_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(node_id)
                .bind(to_db(epoch))
                .bind(to_db(counter))
                .bind(to_db(at_ms))
                .bind(kind)
                .bind(detail)
                .bind(to_db(now_ms))
                .execute(&mut *tx)
                .await?;
                touch(&mut tx, node_id, now_ms).await?;
                IngestOutcome::Applied
            }
            Effect::Telemetry => {
                touch(&mut tx, node_id, now_ms).await?;
                IngestOutcome::Applied
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Applies a node's MQTT last will: marks it offline only if `epoch` is its current
    /// connection epoch and no newer connection has been seen. Returns whether it changed.
    pub async fn accept_will(
        &self,
        node_id: &str,
        epoch: u64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE nodes SET online = 0, offline_reason = $1 \
             WHERE id = $2 AND conn_epoch = $3 AND online = 1",
        )
        .bind(reason)
        .bind(node_id)
        .bind(to_db(epoch))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The node's events in delivery order (epoch, counter), newest last.
    pub async fn node_events(
        &self,
        node_id: &str,
        limit: u32,
    ) -> Result<Vec<(u64, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, kind, detail FROM (SELECT * FROM node_events WHERE node_id = $1 \
             ORDER BY epoch DESC, counter DESC LIMIT $2) AS t ORDER BY epoch, counter",
        )
        .bind(node_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    from_db(r.try_get("at_ms")?),
                    r.try_get("kind")?,
                    r.try_get("detail")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

fn applied_if(rows: u64) -> IngestOutcome {
    if rows == 1 {
        IngestOutcome::Applied
    } else {
        IngestOutcome::Stale
    }
}

async fn touch(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    node_id: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE nodes SET last_seen_ms = $1 WHERE id = $2 AND last_seen_ms < $1")
        .bind(to_db(now_ms))
        .bind(node_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
