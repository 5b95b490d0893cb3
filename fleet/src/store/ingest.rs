//! Applying node messages: replay check and effect in one transaction, one message or a
//! batch of them (a group commit).

use super::{from_db, to_db, Backend, Store, StoreError};
use lattice_wire::replay::{ReplayError, ReplayWindow};
use sqlx::Row;
use std::collections::BTreeMap;

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

/// One checked node message for [`Store::ingest_batch`]: whose, under which (epoch, counter),
/// what it changes, and when it was received.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub node_id: String,
    pub epoch: u64,
    pub counter: u64,
    pub effect: Effect,
    pub now_ms: u64,
}

/// A sender's replay window as read in a batch, and whether the batch advanced it.
type Windows = BTreeMap<String, (ReplayWindow, bool)>;

impl Store {
    /// Checks (`sender`, `epoch`, `counter`) against the stored replay window and applies
    /// `effect`, all in one transaction. A replay changes nothing. A batch of one.
    pub async fn ingest(
        &self,
        node_id: &str,
        epoch: u64,
        counter: u64,
        effect: Effect,
        now_ms: u64,
    ) -> Result<IngestOutcome, StoreError> {
        let item = IngestItem {
            node_id: node_id.to_string(),
            epoch,
            counter,
            effect,
            now_ms,
        };
        let mut outcomes = self.ingest_batch(std::slice::from_ref(&item)).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no outcome for an ingested message".into()))
    }

    /// Applies `items` in ONE transaction (a group commit), with exactly the outcomes that
    /// applying them one by one in this order would have: each sender's replay window is read
    /// once, advanced in memory item by item (a repeated (epoch, counter) within the batch is
    /// `Replayed`), and written once; each node's effects apply in arrival order, so a status
    /// older than one before it is `Stale`. All or nothing: after an error nothing is stored,
    /// and the caller can retry the items one by one.
    ///
    /// The senders' window rows are locked (PostgreSQL: `FOR UPDATE`) in sorted order for the
    /// whole transaction, so fleet processes ingesting overlapping batches at once wait for
    /// each other instead of deadlocking, and never both accept the same (epoch, counter).
    /// Effects are applied node by node in sorted order too (arrival order within a node).
    pub async fn ingest_batch(
        &self,
        items: &[IngestItem],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool().begin().await?;
        let mut senders: Vec<String> = items.iter().map(|i| sender(&i.node_id)).collect();
        senders.sort();
        senders.dedup();
        let mut windows = self.lock_windows(&mut tx, &senders).await?;

        // Replay check in arrival order, in memory.
        let mut outcomes = Vec::with_capacity(items.len());
        let mut fresh = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let (window, advanced) = windows.get_mut(&sender(&item.node_id)).ok_or_else(|| {
                StoreError::Corrupt(format!("no replay row for node {}", item.node_id))
            })?;
            match window.accept(item.epoch, item.counter) {
                Ok(()) => {
                    *advanced = true;
                    fresh.push(i);
                    outcomes.push(IngestOutcome::Applied);
                }
                Err(e) => outcomes.push(IngestOutcome::Replayed(e)),
            }
        }
        // Effects node by node (a stable sort: arrival order within a node).
        fresh.sort_by(|a, b| items[*a].node_id.cmp(&items[*b].node_id));
        for i in fresh {
            outcomes[i] = apply(&mut tx, &items[i]).await?;
        }
        write_windows(&mut tx, &windows).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Creates the missing replay rows of `senders` (sorted, distinct) and reads them all,
    /// locked in that order on PostgreSQL until the transaction ends (SQLite has one writer
    /// connection, so it needs no row lock, and has no `FOR UPDATE`).
    async fn lock_windows(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        senders: &[String],
    ) -> Result<Windows, StoreError> {
        // Statements whose text depends on the batch size are not kept prepared (one per
        // size would churn the statement cache), except the common single-sender case.
        let keep = senders.len() == 1;
        let sql = format!(
            "INSERT INTO replay (sender, epoch, top, bitmap) VALUES {} \
             ON CONFLICT (sender) DO NOTHING",
            rows(senders.len(), 1, ", 0, 0, 0")
        );
        let mut q = sqlx::query(&sql).persistent(keep);
        for s in senders {
            q = q.bind(s.as_str());
        }
        q.execute(&mut **tx).await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let list = (1..=senders.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT sender, epoch, top, bitmap FROM replay WHERE sender IN ({list}) \
             ORDER BY sender{lock}"
        );
        let mut q = sqlx::query(&sql).persistent(keep);
        for s in senders {
            q = q.bind(s.as_str());
        }
        let found = q.fetch_all(&mut **tx).await?;
        found
            .iter()
            .map(|r| {
                let w = ReplayWindow {
                    epoch: from_db(r.try_get("epoch")?),
                    top: from_db(r.try_get("top")?),
                    bitmap: from_db(r.try_get("bitmap")?),
                };
                Ok((r.try_get("sender")?, (w, false)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
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

fn sender(node_id: &str) -> String {
    format!("node:{node_id}")
}

/// `n` rows of a VALUES list, each `width` numbered parameters followed by `rest`:
/// `($1, $2, 0), ($3, $4, 0)`.
fn rows(n: usize, width: usize, rest: &str) -> String {
    (0..n)
        .map(|r| {
            let params = (1..=width)
                .map(|c| format!("${}", r * width + c))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({params}{rest})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the windows the batch advanced, in one statement (portable upsert).
async fn write_windows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    windows: &Windows,
) -> Result<(), StoreError> {
    let advanced: Vec<(&String, &ReplayWindow)> = windows
        .iter()
        .filter(|(_, (_, a))| *a)
        .map(|(s, (w, _))| (s, w))
        .collect();
    if advanced.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO replay (sender, epoch, top, bitmap) VALUES {} \
         ON CONFLICT (sender) DO UPDATE SET epoch = excluded.epoch, top = excluded.top, \
         bitmap = excluded.bitmap",
        rows(advanced.len(), 4, "")
    );
    let mut q = sqlx::query(&sql).persistent(advanced.len() == 1);
    for (s, w) in advanced {
        q = q
            .bind(s.as_str())
            .bind(to_db(w.epoch))
            .bind(to_db(w.top))
            .bind(to_db(w.bitmap));
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Applies one fresh item's effect inside the batch's transaction.
async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    item: &IngestItem,
) -> Result<IngestOutcome, StoreError> {
    let (node_id, epoch, counter, now_ms) =
        (item.node_id.as_str(), item.epoch, item.counter, item.now_ms);
    let outcome = match &item.effect {
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
            .bind(inventory_json.as_str())
            .bind(firmware_version.as_str())
            .bind(to_db(*applied_revision))
            .bind(node_id)
            .execute(&mut **tx)
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
            .bind(usage_json.as_str())
            .bind(to_db(*applied_revision))
            .bind(to_db(now_ms))
            .bind(to_db(epoch))
            .bind(to_db(counter))
            .bind(node_id)
            .bind(workloads_json.as_str())
            .execute(&mut **tx)
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
            .bind(to_db(*at_ms))
            .bind(kind.as_str())
            .bind(detail.as_str())
            .bind(to_db(now_ms))
            .execute(&mut **tx)
            .await?;
            touch(tx, node_id, now_ms).await?;
            IngestOutcome::Applied
        }
        Effect::Telemetry => {
            touch(tx, node_id, now_ms).await?;
            IngestOutcome::Applied
        }
    };
    Ok(outcome)
}
