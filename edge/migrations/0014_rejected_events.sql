-- The console's live view (core::collect::live): events rejected at ingest, with their code and
-- reason but not their bodies, kept a week.
CREATE TABLE rejected_events (
  received_at INTEGER NOT NULL,
  source_id   TEXT    NOT NULL,
  message_id  TEXT,
  code        TEXT    NOT NULL,
  message     TEXT    NOT NULL
);
CREATE INDEX rejected_events_by_time ON rejected_events (received_at);
