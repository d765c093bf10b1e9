-- Smaller per-person state in D1 (docs/scale.md, #18).

-- Dedup keys filed by the UTC day their window ends, and kept to the end of that day: expiry
-- deletes whole past days by the table's key, so neither the expiry time nor its index (over
-- a third of a key's bytes) is stored. The lookup seeks each day that can hold a live key
-- (core::plan::insert_events).
CREATE TABLE event_keys_by_day (
  day INTEGER NOT NULL, -- UTC epoch day the source's dedup window ends
  key INTEGER NOT NULL,
  PRIMARY KEY (day, key)
) WITHOUT ROWID;
INSERT OR IGNORE INTO event_keys_by_day (day, key) SELECT expires_at / 86400000, key FROM event_keys;
DROP TABLE event_keys;
ALTER TABLE event_keys_by_day RENAME TO event_keys;

-- The next link `seq` from a one-row counter instead of max(seq) over an index of every link
-- (an index as large as a quarter of the links' own bytes). Triggers keep the counter at the
-- highest seq written, so a seq is never handed out twice, even after an erasure deletes the
-- newest link.
CREATE TABLE identity_link_seq (
  id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL
);
-- Started above every seq written so far, including those of assignments whose links an
-- erasure deleted (the assignment guard compares against them).
INSERT INTO identity_link_seq (id, seq) SELECT 1, max(
  coalesce((SELECT max(seq) FROM identity_links), 0),
  coalesce((SELECT max(seq) FROM identities), 0));
CREATE TRIGGER identity_links_seq_insert AFTER INSERT ON identity_links BEGIN
  UPDATE identity_link_seq SET seq = NEW.seq WHERE id = 1 AND seq < NEW.seq;
END;
CREATE TRIGGER identity_links_seq_update AFTER UPDATE OF seq ON identity_links BEGIN
  UPDATE identity_link_seq SET seq = NEW.seq WHERE id = 1 AND seq < NEW.seq;
END;
DROP INDEX identity_links_seq;

-- Link set keys shortened to 128 bits of their SHA-256 (core::identity::graph_plan::set_key):
-- the key is stored in every link and every member row.
UPDATE identity_links SET set_key = substr(set_key, 1, 32) WHERE length(set_key) > 32;
UPDATE link_members SET set_key = substr(set_key, 1, 32) WHERE length(set_key) > 32;

-- Evidence rows' first_at was written and never read.
ALTER TABLE item_interactions DROP COLUMN first_at;
ALTER TABLE item_pair_evidence DROP COLUMN first_at;
