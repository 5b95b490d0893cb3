//! Accounts and their API tokens. Passwords arrive here already hashed (argon2id, in
//! `crate::accounts`); tokens as SHA-256 of the token.

use super::{from_db, to_db, Store, StoreError};
use crate::api::Role;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A stored account. The password hash is never serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AccountRow {
    pub id: String,
    /// Lower-cased; the login name.
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(skip)]
    pub password_hash: String,
    pub created_ms: u64,
    pub disabled: bool,
}

/// A stored API token. Only the SHA-256 of the token is kept, and never serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApiTokenRow {
    pub id: String,
    pub account_id: String,
    pub name: String,
    #[serde(skip)]
    pub secret_hash: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

pub(super) fn parse_role(s: &str) -> Result<Role, sqlx::Error> {
    s.parse()
        .map_err(|_| sqlx::Error::Decode(format!("unknown role {s:?}").into()))
}

fn account_from_row(r: &AnyRow) -> Result<AccountRow, sqlx::Error> {
    Ok(AccountRow {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        role: parse_role(&r.try_get::<String, _>("role")?)?,
        password_hash: r.try_get("password_hash")?,
        created_ms: from_db(r.try_get("created_ms")?),
        disabled: r.try_get::<i64, _>("disabled")? != 0,
    })
}

fn api_token_from_row(r: &AnyRow) -> Result<ApiTokenRow, sqlx::Error> {
    Ok(ApiTokenRow {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        name: r.try_get("name")?,
        secret_hash: r.try_get("secret_hash")?,
        created_ms: from_db(r.try_get("created_ms")?),
        expires_ms: from_db(r.try_get("expires_ms")?),
    })
}

impl Store {
    /// Stores a new account. `Ok(false)` when the email is already taken (nothing changes).
    pub async fn create_account(&self, a: &AccountRow) -> Result<bool, StoreError> {
        let _forget = self.principals.forget_on_drop();
        let done = sqlx::query(
            "INSERT INTO accounts (id, email, name, role, password_hash, created_ms, disabled) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (email) DO NOTHING",
        )
        .bind(&a.id)
        .bind(&a.email)
        .bind(&a.name)
        .bind(a.role.as_str())
        .bind(&a.password_hash)
        .bind(to_db(a.created_ms))
        .bind(i64::from(a.disabled))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn account(&self, id: &str) -> Result<Option<AccountRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    /// The account whose (lower-cased) email is `email`.
    pub async fn account_by_email(&self, email: &str) -> Result<Option<AccountRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM accounts WHERE email = $1")
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    pub async fn accounts(&self) -> Result<Vec<AccountRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM accounts ORDER BY created_ms, id")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(account_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Changes an account's role and/or disabled flag. Returns the account as it is now, or
    /// `None` when there is no such account.
    pub async fn update_account(
        &self,
        id: &str,
        role: Option<Role>,
        disabled: Option<bool>,
    ) -> Result<Option<AccountRow>, StoreError> {
        let _forget = self.principals.forget_on_drop();
        let mut tx = self.pool().begin().await?;
        if let Some(r) = role {
            sqlx::query("UPDATE accounts SET role = $1 WHERE id = $2")
                .bind(r.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(d) = disabled {
            sqlx::query("UPDATE accounts SET disabled = $1 WHERE id = $2")
                .bind(i64::from(d))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    /// Replaces an account's password hash and deletes every API token it holds, in one
    /// transaction. False when there is no such account.
    pub async fn set_password(&self, id: &str, password_hash: &str) -> Result<bool, StoreError> {
        let _forget = self.principals.forget_on_drop();
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_tokens WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_api_token(&self, t: &ApiTokenRow) -> Result<(), StoreError> {
        let _forget = self.principals.forget_on_drop();
        sqlx::query(
            "INSERT INTO api_tokens (id, account_id, name, secret_hash, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.account_id)
        .bind(&t.name)
        .bind(&t.secret_hash)
        .bind(to_db(t.created_ms))
        .bind(to_db(t.expires_ms))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// API tokens of `account`, or of every account when `None`, oldest first.
    pub async fn api_tokens(&self, account: Option<&str>) -> Result<Vec<ApiTokenRow>, StoreError> {
        let rows = match account {
            Some(a) => {
                sqlx::query(
                    "SELECT * FROM api_tokens WHERE account_id = $1 ORDER BY created_ms, id",
                )
                .bind(a)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM api_tokens ORDER BY created_ms, id")
                    .fetch_all(self.pool())
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(api_token_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Deletes `account`'s expired tokens and all but its `keep` newest tokens named `name`
    /// (login tokens pile up otherwise: one per login). Returns how many went.
    pub async fn prune_api_tokens(
        &self,
        account: &str,
        name: &str,
        keep: u32,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let _forget = self.principals.forget_on_drop();
        let done = sqlx::query(
            "DELETE FROM api_tokens WHERE account_id = $1 AND (expires_ms <= $2 OR (name = $3 \
             AND id NOT IN (SELECT id FROM api_tokens WHERE account_id = $1 AND name = $3 \
             ORDER BY created_ms DESC, id DESC LIMIT $4)))",
        )
        .bind(account)
        .bind(to_db(now_ms))
        .bind(name)
        .bind(i64::from(keep))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// How many tokens `account` holds, apart from those named `except`.
    pub async fn count_api_tokens(&self, account: &str, except: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_tokens WHERE account_id = $1 AND name <> $2",
        )
        .bind(account)
        .bind(except)
        .fetch_one(self.pool())
        .await?;
        Ok(from_db(row.try_get("n")?))
    }

    /// Deletes token `id` if it belongs to `account` (any account when `None`). Returns the
    /// deleted token; `None` when there was no such token for that account.
    pub async fn delete_api_token(
        &self,
        id: &str,
        account: Option<&str>,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        let _forget = self.principals.forget_on_drop();
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(api_token_from_row)
            .transpose()?;
        let Some(t) = row.filter(|t| account.is_none_or(|a| a == t.account_id)) else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(t))
    }

    /// Who holds the token whose SHA-256 is `secret_hash`: its account id and role, when the
    /// token exists, has not expired at `now_ms`, and its account is not disabled.
    pub async fn token_principal(
        &self,
        secret_hash: &str,
        now_ms: u64,
    ) -> Result<Option<(String, Role)>, StoreError> {
        // SQLite: recently resolved tokens are answered from memory (`principals`).
        let generation = match self.principals.get(secret_hash, now_ms) {
            Ok(found) => return Ok(Some(found)),
            Err(generation) => generation,
        };
        let row = sqlx::query(
            "SELECT a.id AS id, a.role AS role, t.expires_ms AS expires_ms FROM api_tokens t \
             JOIN accounts a ON a.id = t.account_id \
             WHERE t.secret_hash = $1 AND t.expires_ms > $2 AND a.disabled = 0",
        )
        .bind(secret_hash)
        .bind(to_db(now_ms))
        .fetch_optional(self.reader())
        .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let id: String = r.try_get("id")?;
                let role = parse_role(&r.try_get::<String, _>("role")?)?;
                let expires_ms = from_db(r.try_get("expires_ms")?);
                self.principals
                    .remember(secret_hash, generation, &id, role, expires_ms);
                Ok(Some((id, role)))
            }
        }
    }
}
