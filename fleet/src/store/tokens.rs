//! Provisioning tokens: created by operators, spent by nodes when they register.

use super::{from_db, to_db, Store, StoreError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A stored token. The secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenRow {
    pub id: String,
    #[serde(skip)]
    pub secret_hash: String,
    /// The provider (owner) the registered nodes will belong to.
    pub owner: Option<String>,
    pub max_uses: u64,
    pub uses: u64,
    pub expires_ms: u64,
    pub created_ms: u64,
}

/// Why a token was refused at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("unknown token")]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token already used up")]
    UsedUp,
}

impl TokenProblem {
    pub fn reason(self) -> &'static str {
        match self {
            TokenProblem::Unknown => "token_unknown",
            TokenProblem::Expired => "token_expired",
            TokenProblem::UsedUp => "token_used_up",
        }
    }
}

pub(super) fn token_from_row(r: &AnyRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        secret_hash: r.try_get("secret_hash")?,
        owner: r.try_get("owner")?,
        max_uses: from_db(r.try_get("max_uses")?),
        uses: from_db(r.try_get("uses")?),
        expires_ms: from_db(r.try_get("expires_ms")?),
        created_ms: from_db(r.try_get("created_ms")?),
    })
}

impl TokenRow {
    pub(super) fn check(&self, now_ms: u64) -> Result<(), TokenProblem> {
        if now_ms >= self.expires_ms {
            Err(TokenProblem::Expired)
        } else if self.uses >= self.max_uses {
            Err(TokenProblem::UsedUp)
        } else {
            Ok(())
        }
    }
}

impl Store {
    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, secret_hash, owner, max_uses, uses, expires_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(t.owner.clone())
        .bind(to_db(t.max_uses))
        .bind(to_db(t.uses))
        .bind(to_db(t.expires_ms))
        .bind(to_db(t.created_ms))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Checks, without spending it, that the token whose secret hashes to `secret_hash` could
    /// register a node now: registration asks this before it creates a broker account, so a
    /// bad token costs the broker nothing. `register_node` checks again in its transaction.
    /// The token with this secret hash, if it can register a node now.
    pub async fn check_token(
        &self,
        secret_hash: &str,
        now_ms: u64,
    ) -> Result<TokenRow, StoreError> {
        let token = self
            .token_by_secret_hash(secret_hash)
            .await?
            .ok_or(StoreError::Token(TokenProblem::Unknown))?;
        token.check(now_ms).map_err(StoreError::Token)?;
        Ok(token)
    }

    /// The token with this secret hash, usable or not.
    pub async fn token_by_secret_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<TokenRow>, StoreError> {
        Ok(sqlx::query("SELECT * FROM tokens WHERE secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(self.pool())
            .await?
            .map(|r| token_from_row(&r))
            .transpose()?)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_ms")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }
}
