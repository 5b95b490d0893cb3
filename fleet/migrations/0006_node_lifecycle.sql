-- Node lifecycle (issue 5, item 5): 'active' (takes new work), 'cordoned' (takes none),
-- 'draining' (cordoned; its movable workloads move to other nodes), 'decommissioning' (draining;
-- revoked once empty) and 'decommissioned' (revoked, out of placement for good).
ALTER TABLE nodes ADD COLUMN lifecycle TEXT NOT NULL DEFAULT 'active';
-- A move in progress: the workload is also in this node's target, and its placement switches
-- to it once it reports the workload running there (the old copy keeps serving until then).
ALTER TABLE workloads ADD COLUMN moving_to TEXT;
