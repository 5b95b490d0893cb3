-- What a provider offers with a node (fleet/src/offers.rs): region, labels, storage classes,
-- 24/7 or not, asking price; JSON, empty for the defaults (no region, 24/7, no price).
ALTER TABLE nodes ADD COLUMN offer TEXT NOT NULL DEFAULT '';
