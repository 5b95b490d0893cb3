-- The spine: tokens, nodes, replay windows, fleet epochs, node events.
-- Portable between SQLite and PostgreSQL: TEXT and BIGINT only; bytes travel as base64 text,
-- booleans as 0/1, JSON as text.

CREATE TABLE fleet_epochs (
    epoch BIGINT PRIMARY KEY,
    started_ms BIGINT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    owner TEXT,
    max_uses BIGINT NOT NULL,
    uses BIGINT NOT NULL DEFAULT 0,
    expires_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    owner TEXT,
    token_id TEXT NOT NULL,
    identity_key TEXT NOT NULL UNIQUE,
    encryption_key TEXT NOT NULL,
    broker_secret_hash TEXT NOT NULL,
    inventory TEXT NOT NULL,
    firmware_version TEXT NOT NULL DEFAULT '',
    registered_ms BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    online BIGINT NOT NULL DEFAULT 0,
    offline_reason TEXT NOT NULL DEFAULT 'never connected',
    conn_epoch BIGINT NOT NULL DEFAULT 0,
    last_seen_ms BIGINT NOT NULL DEFAULT 0,
    status_epoch BIGINT NOT NULL DEFAULT 0,
    status_counter BIGINT NOT NULL DEFAULT 0,
    usage TEXT NOT NULL DEFAULT '',
    applied_revision BIGINT NOT NULL DEFAULT 0,
    target_revision BIGINT NOT NULL DEFAULT 0,
    target TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE replay (
    sender TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    top BIGINT NOT NULL,
    bitmap BIGINT NOT NULL
);

CREATE TABLE node_events (
    node_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    counter BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, epoch, counter)
);
