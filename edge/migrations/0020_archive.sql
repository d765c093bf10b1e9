-- The raw event archive in R2 (core::archive, edge/src/jobs/archive.rs, docs/archive.md). Each
-- stored event is claimed by one archive claim, whose objects (one per day and source) hold it;
-- `archived_at` is set once they are written. The sweep queues again what nobody claimed or
-- finished (the partial index holds only events in flight, and, once, every event stored
-- before this migration: the first sweeps archive them).
ALTER TABLE events ADD COLUMN archive_object TEXT;
ALTER TABLE events ADD COLUMN archived_at INTEGER;
CREATE INDEX events_unarchived ON events (received_at) WHERE archived_at IS NULL;
-- Which events a claim's objects hold: to build them, and to rebuild them after an erasure.
CREATE INDEX events_by_archive_object ON events (archive_object) WHERE archive_object IS NOT NULL;

-- Objects an erasure (or redaction) changed the events of: the sweep rebuilds each from the
-- rows D1 still holds, once its claim is finished and the note is old enough that no consumer
-- can still be writing the claim.
CREATE TABLE archive_rewrites (
  claim     TEXT    NOT NULL,
  day       INTEGER NOT NULL, -- UTC epoch day
  source_id TEXT    NOT NULL,
  noted_at  INTEGER NOT NULL,
  PRIMARY KEY (claim, day, source_id)
) WITHOUT ROWID;
CREATE INDEX archive_rewrites_noted ON archive_rewrites (noted_at);

-- The sweep's question for claims nobody finished.
CREATE INDEX events_claimed_unmarked ON events (received_at)
  WHERE archived_at IS NULL AND archive_object IS NOT NULL;

-- An event replaced after its dedup window leaves its old line in its claim's object: the
-- object is noted for rebuilding, so the archive holds one line per stored event, as D1 does.
CREATE TRIGGER events_replaced_in_archive AFTER UPDATE OF received_at ON events
WHEN OLD.archive_object IS NOT NULL AND OLD.received_at <> NEW.received_at
BEGIN
  INSERT INTO archive_rewrites (claim, day, source_id, noted_at)
  VALUES (OLD.archive_object, OLD.received_at / 86400000, OLD.source_id, NEW.received_at)
  ON CONFLICT (claim, day, source_id) DO UPDATE SET noted_at = max(noted_at, excluded.noted_at);
END;
