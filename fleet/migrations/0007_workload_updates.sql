-- A rolling update in progress (issue 5, item 5): the new plan and settings run on the node in
-- `moving_to` while the old ones keep serving on `node_id`. When the new copy runs they replace
-- `plan`, `settings` and the reservation; if it fails they are dropped and the old one stays.
ALTER TABLE workloads ADD COLUMN next_plan TEXT;
ALTER TABLE workloads ADD COLUMN next_settings TEXT;
ALTER TABLE workloads ADD COLUMN next_cpu_millis BIGINT;
ALTER TABLE workloads ADD COLUMN next_memory_bytes BIGINT;
