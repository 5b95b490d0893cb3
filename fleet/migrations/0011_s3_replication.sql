-- The replication lag of S3 primaries (issue 6): the last report the gateway read from each
-- primary's `GET /_lattice/replication` (JSON as the server wrote it) and when. Kept after the
-- primary's node is lost: it is what the consumer is told at promotion.
CREATE TABLE workload_replication (
    workload_id TEXT PRIMARY KEY,
    report TEXT NOT NULL,
    read_ms BIGINT NOT NULL
);
