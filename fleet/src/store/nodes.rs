//! Nodes: registration, lookup, revocation, targets, liveness.

use super::tokens::token_from_row;
use super::{from_db, to_db, Store, StoreError, TokenProblem};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;

/// What registration stores about a new node.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub id: String,
    pub identity_key: String,
    pub encryption_key: String,
    pub broker_secret_hash: String,
    /// JSON of `lattice_wire::msg::Inventory`.
    pub inventory: String,
}

/// A node as stored. Secrets (the broker credential's hash) are never serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeRow {
    pub id: String,
    pub owner: Option<String>,
    pub token_id: String,
    pub identity_key: String,
    pub encryption_key: String,
    #[serde(skip)]
    pub broker_secret_hash: String,
    /// JSON text of the node's inventory.
    pub inventory: String,
    pub firmware_version: String,
    pub registered_ms: u64,
    pub revoked: bool,
    pub online: bool,
    pub offline_reason: String,
    pub conn_epoch: u64,
    pub last_seen_ms: u64,
    /// JSON text of the latest usage (empty before the first heartbeat).
    pub usage: String,
    pub applied_revision: u64,
    pub target_revision: u64,
    /// JSON text of the target's workloads.
    pub target: String,
    /// JSON text of the workloads' actual states, from the latest applied status.
    pub workloads: String,
    /// `active`, `cordoned`, `draining`, `decommissioning` or `decommissioned`
    /// ([`crate::lifecycle::NodeLifecycle`]); only active nodes take new work.
    pub lifecycle: String,
    /// Who holds that state: `operator`, `provider`, or empty (nobody changed it).
    pub lifecycle_by: String,
    /// JSON of the provider's offer ([`crate::offers::NodeOffer`]); empty: the defaults.
    pub offer: String,
    /// Milliseconds offline since it registered, up to its last return (see [`NodeRow::reliability`]).
    pub down_ms: u64,
}

impl NodeRow {
    /// The fraction of the time since it registered that the node was online, at `now_ms`
    /// (an outage in progress counts from when it was last heard of); 1.0 for a node
    /// registered this very moment.
    pub fn reliability(&self, now_ms: u64) -> f64 {
        let span = now_ms.saturating_sub(self.registered_ms);
        if span == 0 {
            return 1.0;
        }
        let mut down = self.down_ms;
        if !self.online {
            down = down
                .saturating_add(now_ms.saturating_sub(self.last_seen_ms.max(self.registered_ms)));
        }
        (1.0 - down as f64 / span as f64).clamp(0.0, 1.0)
    }
}

/// What a workload's view needs of its node: whether it is up, and what it last reported
/// (without the node's target and inventory, which views never show).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    pub id: String,
    pub online: bool,
    pub offline_reason: String,
    /// JSON of the node's last reported workload statuses.
    pub workloads: String,
}

impl From<&NodeRow> for NodeState {
    fn from(n: &NodeRow) -> NodeState {
        NodeState {
            id: n.id.clone(),
            online: n.online,
            offline_reason: n.offline_reason.clone(),
            workloads: n.workloads.clone(),
        }
    }
}

fn state_from_row(r: &AnyRow) -> Result<NodeState, sqlx::Error> {
    Ok(NodeState {
        id: r.try_get("id")?,
        online: r.try_get::<i64, _>("online")? != 0,
        offline_reason: r.try_get("offline_reason")?,
        workloads: r.try_get("workloads")?,
    })
}

const STATE_COLUMNS: &str = "id, online, offline_reason, workloads";

pub(super) fn node_from_row(r: &AnyRow) -> Result<NodeRow, sqlx::Error> {
    Ok(NodeRow {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        token_id: r.try_get("token_id")?,
        identity_key: r.try_get("identity_key")?,
        encryption_key: r.try_get("encryption_key")?,
        broker_secret_hash: r.try_get("broker_secret_hash")?,
        inventory: r.try_get("inventory")?,
        firmware_version: r.try_get("firmware_version")?,
        registered_ms: from_db(r.try_get("registered_ms")?),
        revoked: r.try_get::<i64, _>("revoked")? != 0,
        online: r.try_get::<i64, _>("online")? != 0,
        offline_reason: r.try_get("offline_reason")?,
        conn_epoch: from_db(r.try_get("conn_epoch")?),
        last_seen_ms: from_db(r.try_get("last_seen_ms")?),
        usage: r.try_get("usage")?,
        applied_revision: from_db(r.try_get("applied_revision")?),
        target_revision: from_db(r.try_get("target_revision")?),
        target: r.try_get("target")?,
        workloads: r.try_get("workloads")?,
        lifecycle: r.try_get("lifecycle")?,
        lifecycle_by: r.try_get("lifecycle_by")?,
        offer: r.try_get("offer")?,
        down_ms: from_db(r.try_get("down_ms")?),
    })
}

impl Store {
    /// Spends one use of the token whose secret hashes to `secret_hash` and stores the node, in
    /// one transaction: a refused token or a duplicate identity changes nothing.
    pub async fn register_node(
        &self,
        secret_hash: &str,
        node: &NewNode,
        now_ms: u64,
    ) -> Result<NodeRow, StoreError> {
        let mut tx = self.pool().begin().await?;
        let token = sqlx::query("SELECT * FROM tokens WHERE secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| token_from_row(&r))
            .transpose()?
            .ok_or(StoreError::Token(TokenProblem::Unknown))?;
        token.check(now_ms).map_err(StoreError::Token)?;
        if let Some(r) = sqlx::query("SELECT id FROM nodes WHERE identity_key = $1")
            .bind(&node.identity_key)
            .fetch_optional(&mut *tx)
            .await?
        {
            return Err(StoreError::DuplicateIdentity(r.try_get("id")?));
        }
        // The use count is re-checked in the UPDATE itself so concurrent registrations on
        // PostgreSQL cannot overspend a token.
        let spent =
            sqlx::query("UPDATE tokens SET uses = uses + 1 WHERE id = $1 AND uses < max_uses")
                .bind(&token.id)
                .execute(&mut *tx)
                .await?;
        if spent.rows_affected() != 1 {
            return Err(StoreError::Token(TokenProblem::UsedUp));
        }
        sqlx::query(
            // Revision 1 is the empty target: every node gets a target at its first hello and
            // acknowledges it, so "applied < target" always means "not yet in effect".
            "INSERT INTO nodes (id, owner, token_id, identity_key, encryption_key, \
             broker_secret_hash, inventory, registered_ms, target_revision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)",
        )
        .bind(&node.id)
        .bind(token.owner.clone())
        .bind(&token.id)
        .bind(&node.identity_key)
        .bind(&node.encryption_key)
        .bind(&node.broker_secret_hash)
        .bind(&node.inventory)
        .bind(to_db(now_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.node(&node.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("node {} vanished after insert", node.id)))
    }

    pub async fn node(&self, id: &str) -> Result<Option<NodeRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        Ok(row.map(|r| node_from_row(&r)).transpose()?)
    }

    /// The [`NodeState`] of node `id`.
    pub async fn node_state(&self, id: &str) -> Result<Option<NodeState>, StoreError> {
        Ok(node_state_on(&mut *self.reader().acquire().await?, id).await?)
    }

    /// Every node's [`NodeState`].
    pub async fn node_states(&self) -> Result<Vec<NodeState>, StoreError> {
        Ok(node_states_on(&mut *self.reader().acquire().await?).await?)
    }

    /// Every node, in registration order, for a placement: without its target, last report
    /// and usage (`target`, `workloads` and `usage` are empty), which the scheduler does not
    /// read. On the writer connection: a placement holds the placement lock while it reads,
    /// and must not queue behind the API's reads on the readers (ADR 0012).
    pub async fn nodes_for_placement(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, owner, token_id, identity_key, encryption_key, broker_secret_hash, \
             inventory, firmware_version, registered_ms, revoked, online, offline_reason, \
             conn_epoch, last_seen_ms, '' AS usage, applied_revision, target_revision, \
             '' AS target, '' AS workloads, lifecycle, lifecycle_by, offer, down_ms \
             FROM nodes ORDER BY registered_ms, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(node_from_row).collect::<Result<_, _>>()?)
    }

    /// Every node, in registration order.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY registered_ms, id")
            .fetch_all(self.reader())
            .await?;
        Ok(rows.iter().map(node_from_row).collect::<Result<_, _>>()?)
    }

    /// Revokes a node: its broker credential stops working and its messages are refused.
    /// Returns false when there is no such node.
    pub async fn revoke_node(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE nodes SET revoked = 1, online = 0, offline_reason = 'revoked' WHERE id = $1",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sets a node's lifecycle state and who holds it, compare-and-set: only while it is still
    /// `from`, held by `from_by` (as the caller saw it). False when it changed meanwhile (or
    /// there is no such node).
    pub async fn set_node_lifecycle(
        &self,
        id: &str,
        (from, from_by): (&str, &str),
        to: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE nodes SET lifecycle = $1, lifecycle_by = $2 WHERE id = $3 AND lifecycle = $4 \
             AND lifecycle_by = $5",
        )
        .bind(to)
        .bind(by)
        .bind(id)
        .bind(from)
        .bind(from_by)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// After a restore from a backup: nodes may have applied targets of revisions the restored
    /// database has forgotten (handed out after the backup), and they ignore any target whose
    /// revision is not above what they applied. Every node's target revision goes to at least
    /// `now_ms` (revisions then count up from there) and its applied revision to 0, so the
    /// fleet sends each node the restored target and the node takes it. Returns the nodes.
    pub async fn after_restore(&self, now_ms: u64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE nodes SET target_revision = CASE WHEN target_revision < $1 THEN $1 \
             ELSE target_revision END, applied_revision = 0",
        )
        .bind(to_db(now_ms))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    /// Replaces a node's offer (JSON of [`crate::offers::NodeOffer`]); false when there is no
    /// such node.
    pub async fn set_node_offer(&self, id: &str, offer_json: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE nodes SET offer = $1 WHERE id = $2")
            .bind(offer_json)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Replaces a node's target workloads (JSON) and bumps its revision; returns the revision.
    pub async fn set_target(&self, id: &str, workloads_json: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE nodes SET target = $1, target_revision = target_revision + 1 WHERE id = $2",
        )
        .bind(workloads_json)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT target_revision FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(from_db(row.try_get("target_revision")?))
    }

    /// [`Store::set_target`], compare-and-set: only while the node's target revision is still
    /// `seen_revision` (the caller read it before it read what the target is built from).
    /// `Ok(None)`: another writer got there first; read again and retry.
    pub async fn set_target_if(
        &self,
        id: &str,
        workloads_json: &str,
        seen_revision: u64,
    ) -> Result<Option<u64>, StoreError> {
        let r = sqlx::query(
            "UPDATE nodes SET target = $1, target_revision = target_revision + 1 \
             WHERE id = $2 AND target_revision = $3",
        )
        .bind(workloads_json)
        .bind(id)
        .bind(to_db(seen_revision))
        .execute(self.pool())
        .await?;
        Ok((r.rows_affected() == 1).then_some(seen_revision + 1))
    }

    /// Online nodes whose applied revision lags their target: the fleet re-sends to these.
    pub async fn unacknowledged_targets(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM nodes WHERE online = 1 AND revoked = 0 AND applied_revision < target_revision",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(node_from_row).collect::<Result<_, _>>()?)
    }

    /// Marks offline every online node not heard from since `before_ms`; returns their ids.
    pub async fn mark_silent_offline(&self, before_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query("SELECT id FROM nodes WHERE online = 1 AND last_seen_ms < $1")
            .bind(to_db(before_ms))
            .fetch_all(&mut *tx)
            .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        sqlx::query(
            "UPDATE nodes SET online = 0, offline_reason = 'heartbeat timeout' \
             WHERE online = 1 AND last_seen_ms < $1",
        )
        .bind(to_db(before_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// (online, offline) node counts, revoked nodes excluded.
    pub async fn node_counts(&self) -> Result<(u64, u64), StoreError> {
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(online), 0) AS BIGINT) AS on_n, COUNT(*) AS all_n FROM nodes WHERE revoked = 0",
        )
        .fetch_one(self.pool())
        .await?;
        let on = from_db(r.try_get("on_n")?);
        let all = from_db(r.try_get("all_n")?);
        Ok((on, all.saturating_sub(on)))
    }
}

/// [`Store::node_state`] on connection `c` (one of several reads of a request on one
/// connection: each connection taken from the pool costs round trips to its thread).
pub(super) async fn node_state_on(
    c: &mut AnyConnection,
    id: &str,
) -> Result<Option<NodeState>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {STATE_COLUMNS} FROM nodes WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(state_from_row).transpose()
}

/// [`Store::node_states`] on connection `c`.
pub(super) async fn node_states_on(c: &mut AnyConnection) -> Result<Vec<NodeState>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {STATE_COLUMNS} FROM nodes"))
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(state_from_row).collect()
}
