-- Uptime history for the scheduler's reliability (issue 5, item 4): the milliseconds a node
-- has been offline since it registered, added up each time it comes back (the outage is
-- counted from when it was last heard of). Reliability = 1 - downtime / time since registered.
ALTER TABLE nodes ADD COLUMN down_ms BIGINT NOT NULL DEFAULT 0;
