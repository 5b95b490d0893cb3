//! The audit log: append-only rows of who did what to what, read newest first in pages.

use super::{from_db, to_db, Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at_ms: u64,
    /// Account id of whoever acted (`operator` for the operator credential, `anonymous` for an
    /// unauthenticated caller).
    pub actor: String,
    /// Stable action name, e.g. `login.failure`, `api_token.created`, `workload.deleted`.
    pub action: String,
    /// What it was done to (an account, token or workload id).
    pub target: String,
    /// Free text for people; never a secret.
    pub detail: String,
}

/// Which entries to read. Every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// At or after this time.
    pub since_ms: Option<u64>,
    /// Strictly before this time.
    pub until_ms: Option<u64>,
    /// Only entries older than this position (a page's `next`): `(at_ms, id)`.
    pub before: Option<(u64, String)>,
    /// At most this many (newest first).
    pub limit: u32,
}

fn entry_from_row(r: &AnyRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: r.try_get("id")?,
        at_ms: from_db(r.try_get("at_ms")?),
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: r.try_get("detail")?,
    })
}

/// The insert of entry `e`.
fn insert_query(e: &AuditEntry) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO audit_log (id, at_ms, actor, action, target, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&e.id)
    .bind(to_db(e.at_ms))
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.detail)
}

/// Inserts entry `e` in transaction `tx` (a write's own, see [`super::Write::audit`]).
pub(super) async fn insert_audit_on(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &AuditEntry,
) -> Result<(), sqlx::Error> {
    insert_query(e).execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    pub async fn insert_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        insert_query(e).execute(self.pool()).await?;
        Ok(())
    }

    /// Entries matching `f`, newest first (ties broken by id, so pages never overlap).
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        // Every condition is always present; a NULL parameter switches it off. Casts keep
        // PostgreSQL from guessing the type of a NULL.
        let rows = sqlx::query(
            "SELECT * FROM audit_log \
             WHERE (CAST($1 AS TEXT) IS NULL OR actor = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR action = $2) \
               AND (CAST($3 AS BIGINT) IS NULL OR at_ms >= $3) \
               AND (CAST($4 AS BIGINT) IS NULL OR at_ms < $4) \
               AND (CAST($5 AS BIGINT) IS NULL OR at_ms < $5 OR (at_ms = $5 AND id < $6)) \
             ORDER BY at_ms DESC, id DESC LIMIT $7",
        )
        .bind(f.actor.clone())
        .bind(f.action.clone())
        .bind(f.since_ms.map(to_db))
        .bind(f.until_ms.map(to_db))
        .bind(f.before.as_ref().map(|b| to_db(b.0)))
        .bind(f.before.as_ref().map(|b| b.1.clone()).unwrap_or_default())
        .bind(i64::from(f.limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(entry_from_row).collect::<Result<_, _>>()?)
    }
}
