-- The raw event archive in R2 (core::archive, edge/src/jobs/archive.rs): when each stored event
-- was written to the archive. NULL until then; the sweep queues again what stays NULL, so the
-- partial index holds only the events in flight (and, once, every event stored before this
-- migration: the first sweeps archive them).
ALTER TABLE events ADD COLUMN archived_at INTEGER;
CREATE INDEX events_unarchived ON events (received_at) WHERE archived_at IS NULL;
