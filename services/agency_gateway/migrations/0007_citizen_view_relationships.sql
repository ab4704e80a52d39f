-- An agency holds a citizen only while one of its relationships with them is in force: the row
-- keeps those relationships (this agency's only) to decide again as time passes.
-- depends: 0006_client_denials
ALTER TABLE citizen_view ADD COLUMN relationships jsonb NOT NULL DEFAULT '[]';

-- Rows written before relationships existed have no reason on record: the retention sweep
-- decides them again at once, which purges them (with their agency-topic tombstones).
UPDATE citizen_view SET next_expiry = now() WHERE NOT erased;
