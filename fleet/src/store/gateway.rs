//! The gateway's rows: TCP port assignments and per-workload traffic totals.

use super::{from_db, to_db, Store, StoreError};
use sqlx::Row;

/// Traffic the gateway counted for one workload since it was first routed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub workload_id: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: u64,
}

impl Store {
    /// The gateway port of `(workload_id, target_port)`: the one assigned before, else the
    /// lowest free port in `range` (inclusive). `None` when the range is full.
    pub async fn gateway_port(
        &self,
        workload_id: &str,
        target_port: u16,
        range: (u16, u16),
        now_ms: u64,
    ) -> Result<Option<u16>, StoreError> {
        for _ in 0..3 {
            if let Some(r) = sqlx::query(
                "SELECT port FROM gateway_ports WHERE workload_id = $1 AND target_port = $2",
            )
            .bind(workload_id)
            .bind(i64::from(target_port))
            .fetch_optional(self.pool())
            .await?
            {
                return Ok(u16::try_from(r.try_get::<i64, _>("port")?).ok());
            }
            let used: Vec<i64> = sqlx::query(
                "SELECT port FROM gateway_ports WHERE port >= $1 AND port <= $2 ORDER BY port",
            )
            .bind(i64::from(range.0))
            .bind(i64::from(range.1))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("port"))
            .collect::<Result<_, _>>()?;
            let Some(free) =
                (range.0..=range.1).find(|p| used.binary_search(&i64::from(*p)).is_err())
            else {
                return Ok(None);
            };
            // Another fleet process may take the same port at once: the primary key refuses
            // one of us, who then looks again.
            let inserted = sqlx::query(
                "INSERT INTO gateway_ports (port, workload_id, target_port, created_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(i64::from(free))
            .bind(workload_id)
            .bind(i64::from(target_port))
            .bind(to_db(now_ms))
            .execute(self.pool())
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(Some(free));
            }
        }
        Ok(None)
    }

    /// Adds traffic to a workload's totals.
    pub async fn add_gateway_traffic(&self, t: &Traffic, now_ms: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gateway_traffic (workload_id, bytes_in, bytes_out, connections, updated_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workload_id) DO UPDATE SET \
             bytes_in = gateway_traffic.bytes_in + excluded.bytes_in, \
             bytes_out = gateway_traffic.bytes_out + excluded.bytes_out, \
             connections = gateway_traffic.connections + excluded.connections, \
             updated_ms = excluded.updated_ms",
        )
        .bind(&t.workload_id)
        .bind(to_db(t.bytes_in))
        .bind(to_db(t.bytes_out))
        .bind(to_db(t.connections))
        .bind(to_db(now_ms))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn gateway_traffic(&self) -> Result<Vec<Traffic>, StoreError> {
        let rows = sqlx::query("SELECT * FROM gateway_traffic ORDER BY workload_id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Traffic {
                    workload_id: r.try_get("workload_id")?,
                    bytes_in: from_db(r.try_get("bytes_in")?),
                    bytes_out: from_db(r.try_get("bytes_out")?),
                    connections: from_db(r.try_get("connections")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
