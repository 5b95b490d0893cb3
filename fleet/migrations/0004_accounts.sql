-- Accounts, their API tokens, and the audit log (issue 5, item 1).
-- Portable between SQLite and PostgreSQL: TEXT and BIGINT only.

-- One row per person or service. `email` is stored lower-cased and is the login name;
-- `password_hash` is an argon2id PHC string (parameters inside it); `role` is consumer,
-- provider or operator.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0
);

-- Bearer tokens of accounts (from login or created explicitly). Only SHA-256 of the token is
-- kept; the token itself is shown once.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX api_tokens_account ON api_tokens (account_id);

-- Security-relevant actions, append-only. Pages go newest first by (at_ms, id).
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms, id);
CREATE INDEX audit_log_actor ON audit_log (actor, at_ms);
