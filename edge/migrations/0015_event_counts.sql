-- Events stored per UTC day (epoch day), source and type (core::collect::live::count_stored),
-- written in the batch that stores them: the console's overview reads these, never the events.
CREATE TABLE event_counts (
  day       INTEGER NOT NULL,
  source_id TEXT    NOT NULL,
  type      TEXT    NOT NULL,
  count     INTEGER NOT NULL,
  PRIMARY KEY (day, source_id, type)
) WITHOUT ROWID;
