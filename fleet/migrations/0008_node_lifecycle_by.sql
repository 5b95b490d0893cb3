-- Who holds a node's lifecycle state (issue 5, item 5): 'operator' once an operator cordoned,
-- drained or decommissioned it (the provider may go further, not back), 'provider' when its
-- provider did, '' for a node nobody changed. Only an operator lifts an operator's hold.
ALTER TABLE nodes ADD COLUMN lifecycle_by TEXT NOT NULL DEFAULT '';
-- Nodes out of placement before this migration: who put them there is not known, so the safe
-- side holds (an operator lifts it).
UPDATE nodes SET lifecycle_by = 'operator' WHERE lifecycle <> 'active';
