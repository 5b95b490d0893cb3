-- The gateway: one TCP port per (workload, declared port), stable across restarts; and the
-- traffic it saw per workload, for billing (egress is what the gateway counted, never what a
-- node claims).
CREATE TABLE gateway_ports (
    port BIGINT PRIMARY KEY,
    workload_id TEXT NOT NULL,
    target_port BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (workload_id, target_port)
);

CREATE TABLE gateway_traffic (
    workload_id TEXT PRIMARY KEY,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    connections BIGINT NOT NULL DEFAULT 0,
    updated_ms BIGINT NOT NULL
);
