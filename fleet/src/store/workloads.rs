//! Workloads: what consumers deployed, where it was placed, and its events.

use super::nodes::{node_from_row, node_state_on, node_states_on};
use super::{from_db, to_db, Backend, Store, StoreError};
use super::{NodeRow, NodeState};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

/// A workload as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WorkloadRow {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub kind: String,
    pub plan: String,
    /// JSON of the kind's settings (image, port, env, …).
    #[serde(skip)]
    pub settings: String,
    pub node_id: Option<String>,
    /// A move in progress to this node (drain): the workload is in both nodes' targets until
    /// it runs here, then `node_id` becomes this.
    pub moving_to: Option<String>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// A rolling update in progress: what runs on `moving_to` (the old version keeps serving
    /// on `node_id` until it does).
    #[serde(skip)]
    pub next: Option<NextVersion>,
}

/// The new version of a workload during a rolling update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextVersion {
    pub plan: String,
    /// JSON of the kind's settings, as [`WorkloadRow::settings`].
    pub settings: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl WorkloadRow {
    /// The workload as it will be once its update is done (itself when none is in progress).
    pub fn as_next(&self) -> WorkloadRow {
        let mut w = self.clone();
        if let Some(n) = self.next.clone() {
            w.plan = n.plan;
            w.settings = n.settings;
            w.cpu_millis = n.cpu_millis;
            w.memory_bytes = n.memory_bytes;
            w.next = None;
        }
        w
    }
}

/// One lifecycle event of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WorkloadEvent {
    pub at_ms: u64,
    pub kind: String,
    pub detail: String,
}

fn row(r: &AnyRow) -> Result<WorkloadRow, sqlx::Error> {
    let next_plan: Option<String> = r.try_get("next_plan")?;
    let next = match next_plan {
        Some(plan) => Some(NextVersion {
            plan,
            settings: r
                .try_get::<Option<String>, _>("next_settings")?
                .unwrap_or_default(),
            cpu_millis: from_db(
                r.try_get::<Option<i64>, _>("next_cpu_millis")?
                    .unwrap_or_default(),
            ),
            memory_bytes: from_db(
                r.try_get::<Option<i64>, _>("next_memory_bytes")?
                    .unwrap_or_default(),
            ),
        }),
        None => None,
    };
    Ok(WorkloadRow {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        plan: r.try_get("plan")?,
        settings: r.try_get("settings")?,
        node_id: r.try_get("node_id")?,
        moving_to: r.try_get("moving_to")?,
        cpu_millis: from_db(r.try_get("cpu_millis")?),
        memory_bytes: from_db(r.try_get("memory_bytes")?),
        disk_bytes: from_db(r.try_get("disk_bytes")?),
        created_ms: from_db(r.try_get("created_ms")?),
        updated_ms: from_db(r.try_get("updated_ms")?),
        next,
    })
}

impl Store {
    /// Stores a new workload with its first event. `Ok(false)`: the account already has a
    /// workload of that name.
    pub async fn insert_workload(&self, w: &WorkloadRow, event: &str) -> Result<bool, StoreError> {
        self.insert_workloads(&[(w, event)]).await
    }

    /// Stores new workloads, each with its first event, all or none (an S3 primary and its
    /// replica). `Ok(false)`: one of the names is taken in its account; nothing is stored.
    pub async fn insert_workloads(&self, ws: &[(&WorkloadRow, &str)]) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        if !tx.insert_workloads(ws).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Starts a write of several steps in one transaction on the writer connection (a
    /// workload's change, its nodes' target rewrites and its audit row): one `BEGIN`, one
    /// `COMMIT` and one trip through the pool instead of one each per step. Dropped without
    /// [`Write::commit`], nothing of it is stored.
    pub async fn write(&self) -> Result<Write, StoreError> {
        Ok(Write {
            tx: self.pool().begin().await?,
            backend: self.backend(),
        })
    }

    /// The workload with id `id`, whatever its account.
    pub async fn workload_by_id(&self, id: &str) -> Result<Option<WorkloadRow>, StoreError> {
        let r = sqlx::query("SELECT * FROM workloads WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// Records the replication report last read from S3 primary `id` (JSON) at `read_ms`:
    /// not for a workload deleted meanwhile, and never over a report read later (several
    /// gateway processes read the same primaries).
    pub async fn record_replication(
        &self,
        id: &str,
        report: &str,
        read_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workload_replication (workload_id, report, read_ms) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM workloads WHERE id = $1) \
             ON CONFLICT (workload_id) DO UPDATE SET report = excluded.report, \
             read_ms = excluded.read_ms WHERE workload_replication.read_ms <= excluded.read_ms",
        )
        .bind(id)
        .bind(report)
        .bind(to_db(read_ms))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The replication report last read from S3 primary `id`, and when (ms).
    pub async fn replication(&self, id: &str) -> Result<Option<(String, u64)>, StoreError> {
        let r =
            sqlx::query("SELECT report, read_ms FROM workload_replication WHERE workload_id = $1")
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
        Ok(match r {
            Some(r) => Some((r.try_get("report")?, from_db(r.try_get("read_ms")?))),
            None => None,
        })
    }

    /// Promotes S3 replica `replica` in place of `primary`, in one transaction: the primary's
    /// row, its replication report and its replica link go; the replica's row takes the
    /// primary's name and `settings`, inherits its events and gets `event`. `Ok(false)`: one of
    /// them is gone already (another fleet process promoted it), nothing changed.
    pub async fn promote_replica(
        &self,
        primary: &WorkloadRow,
        replica: &WorkloadRow,
        settings: &str,
        at_ms: u64,
        event: (&str, &str),
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let gone = sqlx::query("DELETE FROM workloads WHERE id = $1 AND updated_ms = $2")
            .bind(&primary.id)
            .bind(to_db(primary.updated_ms))
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM workload_replication WHERE workload_id = $1 OR workload_id = $2")
            .bind(&primary.id)
            .bind(&replica.id)
            .execute(&mut *tx)
            .await?;
        let promoted = sqlx::query(
            "UPDATE workloads SET name = $1, settings = $2, updated_ms = $3 \
             WHERE id = $4 AND updated_ms = $5",
        )
        .bind(&primary.name)
        .bind(settings)
        .bind(to_db(at_ms))
        .bind(&replica.id)
        .bind(to_db(replica.updated_ms))
        .execute(&mut *tx)
        .await?;
        if promoted.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE workload_events SET workload_id = $1 WHERE workload_id = $2")
            .bind(&replica.id)
            .bind(&primary.id)
            .execute(&mut *tx)
            .await?;
        insert_event(
            &mut tx,
            self.backend(),
            &replica.id,
            at_ms,
            event.0,
            event.1,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An account's workloads (every account's for `None`), by name.
    pub async fn workloads(&self, account: Option<&str>) -> Result<Vec<WorkloadRow>, StoreError> {
        Ok(workloads_on(&mut *self.reader().acquire().await?, account).await?)
    }

    /// What a list of workloads shows, read on one connection (one pool round trip instead
    /// of one per query): an account's workloads (every account's for `None`) by name, every
    /// node's state by id, and the newest `newest` events of each workload (oldest first).
    pub async fn workloads_listed(
        &self,
        account: Option<&str>,
        newest: usize,
    ) -> Result<Listed, StoreError> {
        let mut c = self.reader().acquire().await?;
        let rows = workloads_on(&mut c, account).await?;
        let nodes = node_states_on(&mut c)
            .await?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let ids: Vec<&str> = rows.iter().map(|w| w.id.as_str()).collect();
        let events = events_of_on(&mut c, &ids, |marks| newest_events_sql(marks, newest)).await?;
        Ok(Listed {
            rows,
            nodes,
            events,
        })
    }

    /// What the view of workload `w` is built from, read on one connection: its node's state
    /// (`None` when unplaced or the node is gone) and all its events, oldest first.
    pub async fn workload_view_parts(
        &self,
        w: &WorkloadRow,
    ) -> Result<(Option<NodeState>, Vec<WorkloadEvent>), StoreError> {
        let mut c = self.reader().acquire().await?;
        view_parts_on(&mut c, w).await
    }

    /// [`Store::workload`] with [`Store::workload_view_parts`], on one connection.
    #[allow(clippy::type_complexity)]
    pub async fn workload_with_view_parts(
        &self,
        account: &str,
        name: &str,
    ) -> Result<Option<(WorkloadRow, Option<NodeState>, Vec<WorkloadEvent>)>, StoreError> {
        let mut c = self.reader().acquire().await?;
        let Some(w) = workload_on(&mut c, account, name).await? else {
            return Ok(None);
        };
        let (node, events) = view_parts_on(&mut c, &w).await?;
        Ok(Some((w, node, events)))
    }

    /// What every placed workload reserves, for a placement: rows with their id, account,
    /// kind, plan, node, move and resources (and an update's new ones); `name` and `settings`
    /// are empty. On the writer connection, like [`Store::nodes_for_placement`].
    pub async fn reservations(&self) -> Result<Vec<WorkloadRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, '' AS name, kind, plan, '' AS settings, node_id, moving_to, \
             cpu_millis, memory_bytes, disk_bytes, created_ms, updated_ms, next_plan, \
             '' AS next_settings, next_cpu_millis, next_memory_bytes FROM workloads \
             WHERE node_id IS NOT NULL OR moving_to IS NOT NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// The workload `name` of `account`.
    pub async fn workload(
        &self,
        account: &str,
        name: &str,
    ) -> Result<Option<WorkloadRow>, StoreError> {
        Ok(workload_on(&mut *self.reader().acquire().await?, account, name).await?)
    }

    /// Every workload in `node`'s target: placed on it, or moving to it.
    pub async fn workloads_on(&self, node: &str) -> Result<Vec<WorkloadRow>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM workloads WHERE node_id = $1 OR moving_to = $1 ORDER BY id")
                .bind(node)
                .fetch_all(self.reader())
                .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Rebuilds `node`'s target from every workload placed on it or moving to it (`build`
    /// turns them into the target's JSON) and bumps its revision, in one transaction, so the
    /// list it is built from is the one it replaces: on PostgreSQL the node's row is locked
    /// first (rewrites of one node's target, from any fleet process, run one after another);
    /// on SQLite the one writer connection runs one transaction at a time. `Ok(None)`: no such
    /// node.
    pub async fn rewrite_target<F>(&self, node: &str, build: F) -> Result<Option<u64>, StoreError>
    where
        F: FnOnce(&[WorkloadRow]) -> Result<String, StoreError>,
    {
        let mut tx = self.write().await?;
        let Some(n) = tx.rewrite_target(node, build).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(n.target_revision))
    }

    /// Deletes a workload, its events and its replication report; `false` if it was not there.
    pub async fn delete_workload(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.delete_workloads(&[id]).await? == 1)
    }

    /// Deletes workloads with their events and replication reports, all in one transaction
    /// (an S3 primary and its replica); how many were there.
    pub async fn delete_workloads(&self, ids: &[&str]) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let gone = tx.delete_workloads(ids).await?;
        tx.commit().await?;
        Ok(gone)
    }

    /// Changes S3 primary `primary`'s replica in one transaction: its settings become
    /// `settings` (which name the new replica, or none), `add` is stored (a new replica, with
    /// its first event), `remove` is deleted (the replica it had), and `event` goes to the
    /// primary. `Ok(false)`: the primary changed meanwhile (compared by `updated_ms`) or the
    /// new replica's name is taken; nothing changed.
    pub async fn relink_replica(
        &self,
        primary: &WorkloadRow,
        settings: &str,
        add: Option<(&WorkloadRow, &str)>,
        remove: Option<&str>,
        at_ms: u64,
        event: (&str, &str),
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE workloads SET settings = $1, updated_ms = $2 WHERE id = $3 AND updated_ms = $4",
        )
        .bind(settings)
        .bind(to_db(at_ms))
        .bind(&primary.id)
        .bind(to_db(primary.updated_ms))
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(id) = remove {
            delete_on(&mut tx, id).await?;
        }
        if let Some((w, first)) = add {
            if !insert_on(&mut tx, w, first, self.backend()).await? {
                return Ok(false);
            }
        }
        insert_event(
            &mut tx,
            self.backend(),
            &primary.id,
            at_ms,
            event.0,
            event.1,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Appends an event to a workload's history.
    pub async fn workload_event(
        &self,
        id: &str,
        at_ms: u64,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        insert_event(&mut tx, self.backend(), id, at_ms, kind, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The events of each of `ids` (oldest first), in one query per 500 ids.
    pub async fn workload_events_of(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<WorkloadEvent>>, StoreError> {
        let mut c = self.reader().acquire().await?;
        Ok(events_of_on(&mut c, ids, |marks| {
            format!(
                "SELECT workload_id, at_ms, kind, detail FROM workload_events \
                 WHERE workload_id IN ({marks}) ORDER BY workload_id, at_ms"
            )
        })
        .await?)
    }

    /// The newest `newest` events of each of `ids` (oldest first), in one query per 500 ids:
    /// only those rows leave the database (what a list shows of each workload).
    pub async fn newest_workload_events_of(
        &self,
        ids: &[&str],
        newest: usize,
    ) -> Result<std::collections::HashMap<String, Vec<WorkloadEvent>>, StoreError> {
        Ok(
            events_of_on(&mut *self.reader().acquire().await?, ids, |marks| {
                newest_events_sql(marks, newest)
            })
            .await?,
        )
    }

    /// A workload's events, oldest first.
    pub async fn workload_events(&self, id: &str) -> Result<Vec<WorkloadEvent>, StoreError> {
        Ok(events_on(&mut *self.reader().acquire().await?, id).await?)
    }

    /// Compare-and-set on a workload's placement, with an event, in one transaction: applies
    /// `change` only while the workload is where the caller saw it (`node_id = from` and
    /// `moving_to` as given), so two fleet processes (or a restarted one) never move it twice.
    /// `Ok(false)`: it was changed or deleted meanwhile; nothing was written.
    pub async fn move_workload(
        &self,
        id: &str,
        seen: (&str, Option<&str>),
        change: Placement<'_>,
        at_ms: u64,
        event: (&str, &str),
    ) -> Result<bool, StoreError> {
        let (from, seen_moving) = seen;
        let (node, moving) = match change {
            Placement::StartMove { to } => (from, Some(to)),
            Placement::FinishMove { to } => (to, None),
            Placement::CancelMove => (from, None),
            Placement::Reschedule { to } => (to, None),
        };
        // A finished move makes an update's new version the workload's; a cancelled one drops
        // it. Starting a move or rescheduling leaves it as it is.
        let next = match change {
            Placement::FinishMove { .. } => {
                ", plan = COALESCE(next_plan, plan), settings = COALESCE(next_settings, settings), \
                 cpu_millis = COALESCE(next_cpu_millis, cpu_millis), \
                 memory_bytes = COALESCE(next_memory_bytes, memory_bytes), next_plan = NULL, \
                 next_settings = NULL, next_cpu_millis = NULL, next_memory_bytes = NULL"
            }
            Placement::CancelMove => {
                ", next_plan = NULL, next_settings = NULL, next_cpu_millis = NULL, \
                 next_memory_bytes = NULL"
            }
            Placement::StartMove { .. } | Placement::Reschedule { .. } => "",
        };
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "UPDATE workloads SET node_id = $1, moving_to = $2, updated_ms = $3{next} \
             WHERE id = $4 AND node_id = $5 AND COALESCE(moving_to, '') = $6"
        );
        let r = sqlx::query(&sql)
            .bind(node)
            .bind(moving)
            .bind(to_db(at_ms))
            .bind(id)
            .bind(from)
            .bind(seen_moving.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(&mut tx, self.backend(), id, at_ms, event.0, event.1).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Starts a rolling update, compare-and-set like [`Store::move_workload`]: while the
    /// workload is on `seen`'s node with no move in progress and still `seen`'s plan and
    /// settings (the version the update was made from), `next` is to run on `to` (another
    /// node) and the old version keeps serving until it does. `Ok(false)`: it was changed,
    /// moved or deleted meanwhile; nothing was written.
    pub async fn start_update(
        &self,
        seen: &WorkloadRow,
        to: &str,
        next: &NextVersion,
        at_ms: u64,
        event: (&str, &str),
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        if !tx.start_update(seen, to, next, at_ms, event).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces a workload's plan and settings where it is (its node recreates it), while it is
    /// where `seen` says (node, no move in progress) and still `seen`'s plan and settings.
    /// `Ok(false)`: it was changed, moved or deleted meanwhile; nothing was written.
    pub async fn update_in_place(
        &self,
        seen: &WorkloadRow,
        new: &NextVersion,
        at_ms: u64,
        event: (&str, &str),
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        if !tx.update_in_place(seen, new, at_ms, event).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// Several writes in one transaction on the writer connection (see [`Store::write`]); each
/// step is the [`Store`] method of the same name without its own transaction. A step that
/// answers `false` (a compare-and-set that lost) wrote nothing, but the steps before it did:
/// drop the write to undo them.
pub struct Write {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
}

impl Write {
    /// Commits every step.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// [`Store::insert_workloads`]: `Ok(false)` when one of the names is taken.
    pub async fn insert_workloads(
        &mut self,
        ws: &[(&WorkloadRow, &str)],
    ) -> Result<bool, StoreError> {
        for (w, event) in ws {
            if !insert_on(&mut self.tx, w, event, self.backend).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Store::delete_workloads`]: how many were there.
    pub async fn delete_workloads(&mut self, ids: &[&str]) -> Result<u64, StoreError> {
        let mut gone = 0;
        for id in ids {
            gone += delete_on(&mut self.tx, id).await?;
        }
        Ok(gone)
    }

    /// Appends an audit entry, stored only if the write commits: a write that fails leaves
    /// none claiming it was done.
    pub async fn audit(&mut self, e: &super::AuditEntry) -> Result<(), StoreError> {
        super::audit::insert_audit_on(&mut self.tx, e).await?;
        Ok(())
    }

    /// [`Store::rewrite_target`]; the node's row as written (the row read in the transaction,
    /// with its new target and revision), for sending the target without reading it again. On
    /// PostgreSQL the node's row stays locked until the write ends: a write that rewrites
    /// several nodes' targets does them in id order, so two such writes cannot each hold the
    /// node the other waits for.
    pub async fn rewrite_target<F>(
        &mut self,
        node: &str,
        build: F,
    ) -> Result<Option<NodeRow>, StoreError>
    where
        F: FnOnce(&[WorkloadRow]) -> Result<String, StoreError>,
    {
        let lock = match self.backend {
            Backend::Postgres => "SELECT * FROM nodes WHERE id = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT * FROM nodes WHERE id = $1",
        };
        let Some(seen) = sqlx::query(lock)
            .bind(node)
            .fetch_optional(&mut *self.tx)
            .await?
        else {
            return Ok(None);
        };
        let mut n = node_from_row(&seen)?;
        n.target_revision += 1;
        let rows =
            sqlx::query("SELECT * FROM workloads WHERE node_id = $1 OR moving_to = $1 ORDER BY id")
                .bind(node)
                .fetch_all(&mut *self.tx)
                .await?;
        let placed = rows.iter().map(row).collect::<Result<Vec<_>, _>>()?;
        n.target = build(&placed)?;
        sqlx::query("UPDATE nodes SET target = $1, target_revision = $2 WHERE id = $3")
            .bind(&n.target)
            .bind(to_db(n.target_revision))
            .bind(node)
            .execute(&mut *self.tx)
            .await?;
        Ok(Some(n))
    }

    /// [`Store::start_update`].
    pub async fn start_update(
        &mut self,
        seen: &WorkloadRow,
        to: &str,
        next: &NextVersion,
        at_ms: u64,
        event: (&str, &str),
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE workloads SET moving_to = $1, next_plan = $2, next_settings = $3, \
             next_cpu_millis = $4, next_memory_bytes = $5, updated_ms = $6 \
             WHERE id = $7 AND node_id = $8 AND moving_to IS NULL AND plan = $9 \
             AND settings = $10",
        )
        .bind(to)
        .bind(&next.plan)
        .bind(&next.settings)
        .bind(to_db(next.cpu_millis))
        .bind(to_db(next.memory_bytes))
        .bind(to_db(at_ms))
        .bind(&seen.id)
        .bind(seen.node_id.as_deref().unwrap_or(""))
        .bind(&seen.plan)
        .bind(&seen.settings)
        .execute(&mut *self.tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(
            &mut self.tx,
            self.backend,
            &seen.id,
            at_ms,
            event.0,
            event.1,
        )
        .await?;
        Ok(true)
    }

    /// [`Store::update_in_place`].
    pub async fn update_in_place(
        &mut self,
        seen: &WorkloadRow,
        new: &NextVersion,
        at_ms: u64,
        event: (&str, &str),
    ) -> Result<bool, StoreError> {
        let id = seen.id.as_str();
        let r = sqlx::query(
            "UPDATE workloads SET plan = $1, settings = $2, cpu_millis = $3, memory_bytes = $4, \
             updated_ms = $5 WHERE id = $6 AND COALESCE(node_id, '') = $7 AND moving_to IS NULL \
             AND plan = $8 AND settings = $9",
        )
        .bind(&new.plan)
        .bind(&new.settings)
        .bind(to_db(new.cpu_millis))
        .bind(to_db(new.memory_bytes))
        .bind(to_db(at_ms))
        .bind(id)
        .bind(seen.node_id.as_deref().unwrap_or(""))
        .bind(&seen.plan)
        .bind(&seen.settings)
        .execute(&mut *self.tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(&mut self.tx, self.backend, id, at_ms, event.0, event.1).await?;
        Ok(true)
    }
}

/// What [`Store::workloads_listed`] reads.
pub struct Listed {
    /// By name (by account and name for every account's).
    pub rows: Vec<WorkloadRow>,
    /// Every node's state, by node id.
    pub nodes: HashMap<String, NodeState>,
    /// The newest events of each workload listed, oldest first, by workload id.
    pub events: HashMap<String, Vec<WorkloadEvent>>,
}

/// [`Store::workloads`] on connection `c` (one of several reads of a request on one
/// connection: each connection taken from the pool costs round trips to its thread).
async fn workloads_on(
    c: &mut AnyConnection,
    account: Option<&str>,
) -> Result<Vec<WorkloadRow>, sqlx::Error> {
    let rows = match account {
        Some(a) => {
            sqlx::query("SELECT * FROM workloads WHERE account_id = $1 ORDER BY name")
                .bind(a)
                .fetch_all(&mut *c)
                .await?
        }
        None => {
            sqlx::query("SELECT * FROM workloads ORDER BY account_id, name")
                .fetch_all(&mut *c)
                .await?
        }
    };
    rows.iter().map(row).collect()
}

/// [`Store::workload`] on connection `c`.
async fn workload_on(
    c: &mut AnyConnection,
    account: &str,
    name: &str,
) -> Result<Option<WorkloadRow>, sqlx::Error> {
    let r = sqlx::query("SELECT * FROM workloads WHERE account_id = $1 AND name = $2")
        .bind(account)
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
    r.as_ref().map(row).transpose()
}

/// [`Store::workload_view_parts`] on connection `c`.
async fn view_parts_on(
    c: &mut AnyConnection,
    w: &WorkloadRow,
) -> Result<(Option<NodeState>, Vec<WorkloadEvent>), StoreError> {
    let node = match &w.node_id {
        Some(id) => node_state_on(c, id).await?,
        None => None,
    };
    Ok((node, events_on(c, &w.id).await?))
}

/// [`Store::workload_events`] on connection `c`.
async fn events_on(c: &mut AnyConnection, id: &str) -> Result<Vec<WorkloadEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at_ms, kind, detail FROM workload_events WHERE workload_id = $1 ORDER BY at_ms",
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(WorkloadEvent {
                at_ms: from_db(r.try_get("at_ms")?),
                kind: r.try_get("kind")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}

/// The query of the newest `newest` events of the workloads whose ids are bound to `marks`.
fn newest_events_sql(marks: &str, newest: usize) -> String {
    format!(
        "SELECT workload_id, at_ms, kind, detail FROM (SELECT workload_id, at_ms, kind, \
         detail, ROW_NUMBER() OVER (PARTITION BY workload_id ORDER BY at_ms DESC) AS nth \
         FROM workload_events WHERE workload_id IN ({marks})) e WHERE nth <= {newest} \
         ORDER BY workload_id, at_ms"
    )
}

/// Events of `ids` by workload on connection `c`, 500 ids a query: `sql` makes the query
/// from the chunk's placeholders (`$1, $2, ...`) and returns `workload_id, at_ms, kind,
/// detail` rows.
async fn events_of_on(
    c: &mut AnyConnection,
    ids: &[&str],
    sql: impl Fn(&str) -> String,
) -> Result<HashMap<String, Vec<WorkloadEvent>>, sqlx::Error> {
    let mut out: HashMap<String, Vec<WorkloadEvent>> = Default::default();
    for chunk in ids.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = sql(&marks.join(", "));
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut *c).await? {
            let id: String = r.try_get("workload_id")?;
            out.entry(id).or_default().push(WorkloadEvent {
                at_ms: from_db(r.try_get("at_ms")?),
                kind: r.try_get("kind")?,
                detail: r.try_get("detail")?,
            });
        }
    }
    Ok(out)
}

/// How [`Store::move_workload`] changes a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<'a> {
    /// Also run it on `to` (drain: the old copy serves until the new one runs).
    StartMove { to: &'a str },
    /// It runs on `to`: place it there, off the old node.
    FinishMove { to: &'a str },
    /// Give up the move in progress; it stays where it is.
    CancelMove,
    /// Place it on `to` at once (its node is lost).
    Reschedule { to: &'a str },
}

/// Deletes workload `id` with its events and replication report in `tx`; rows deleted.
async fn delete_on(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
) -> Result<u64, sqlx::Error> {
    for table in ["workload_events", "workload_replication"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE workload_id = $1"))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(sqlx::query("DELETE FROM workloads WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// Inserts `w` with its first event in `tx`; `false` (nothing inserted) when its account
/// already has a workload of that name.
async fn insert_on(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    w: &WorkloadRow,
    event: &str,
    backend: Backend,
) -> Result<bool, sqlx::Error> {
    let exists = sqlx::query("SELECT id FROM workloads WHERE account_id = $1 AND name = $2")
        .bind(&w.account_id)
        .bind(&w.name)
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_some() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO workloads (id, account_id, name, kind, plan, settings, node_id, \
         cpu_millis, memory_bytes, disk_bytes, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&w.id)
    .bind(&w.account_id)
    .bind(&w.name)
    .bind(&w.kind)
    .bind(&w.plan)
    .bind(&w.settings)
    .bind(&w.node_id)
    .bind(to_db(w.cpu_millis))
    .bind(to_db(w.memory_bytes))
    .bind(to_db(w.disk_bytes))
    .bind(to_db(w.created_ms))
    .bind(to_db(w.updated_ms))
    .execute(&mut **tx)
    .await?;
    insert_event(tx, backend, &w.id, w.created_ms, "created", event).await?;
    Ok(true)
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    id: &str,
    at_ms: u64,
    kind: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    let insert =
        "INSERT INTO workload_events (workload_id, at_ms, kind, detail) VALUES ($1, $2, $3, $4)";
    // Only the newest events are kept: every change adds one, and every show and list
    // returns them all.
    let trim = format!(
        "DELETE FROM workload_events WHERE workload_id = $1 AND at_ms < \
         (SELECT at_ms FROM workload_events WHERE workload_id = $1 ORDER BY at_ms DESC \
         LIMIT 1 OFFSET {})",
        KEPT_EVENTS - 1
    );
    // SQLite: both statements in one round trip to the connection's worker thread (it runs a
    // query's statements one after the other, binding `$N` to the same argument in each).
    // PostgreSQL takes one statement per prepared query (and a data-modifying CTE would trim
    // from the snapshot before the insert).
    let both = format!("{insert}; {trim}");
    let first = match backend {
        Backend::Sqlite => both.as_str(),
        Backend::Postgres => insert,
    };
    sqlx::query(first)
        .bind(id)
        .bind(to_db(at_ms))
        .bind(kind)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    if backend == Backend::Postgres {
        sqlx::query(&trim).bind(id).execute(&mut **tx).await?;
    }
    Ok(())
}

/// How many events a workload keeps (the newest).
pub const KEPT_EVENTS: usize = 100;
