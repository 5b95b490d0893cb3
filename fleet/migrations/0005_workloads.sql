-- Consumers' workloads: what was asked for (kind, plan, the kind's settings as JSON), where the
-- scheduler put it, and its lifecycle events. A name is unique per account.
CREATE TABLE workloads (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    plan TEXT NOT NULL,
    settings TEXT NOT NULL,
    node_id TEXT,
    cpu_millis BIGINT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    disk_bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    UNIQUE (account_id, name)
);

CREATE INDEX workloads_node ON workloads (node_id);

CREATE TABLE workload_events (
    workload_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);

CREATE INDEX workload_events_workload ON workload_events (workload_id, at_ms);
