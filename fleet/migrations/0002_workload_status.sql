-- What each workload on a node is doing, as its latest applied status reported (JSON list of
-- lattice_wire::msg::WorkloadStatus).
ALTER TABLE nodes ADD COLUMN workloads TEXT NOT NULL DEFAULT '[]';
