-- CSV imports (core::collect::import, edge/src/routes/import.rs, edge/src/jobs/import.rs): the
-- uploaded file lies in R2 (`imports/<id>.csv`); the import queue processes it a chunk at a time
-- from `offset`, each step moving the offset and the counts in one statement, so progress is
-- readable while it runs and a repeated step stores nothing twice (row keys are message IDs).
CREATE TABLE imports (
  id          TEXT    NOT NULL PRIMARY KEY,
  source_id   TEXT    NOT NULL,
  mapping     TEXT    NOT NULL, -- JSON, validated against the header
  header      TEXT    NOT NULL, -- JSON array of the file's column names
  status      TEXT    NOT NULL, -- 'running' | 'done' | 'failed'
  attempts    INTEGER NOT NULL DEFAULT 0, -- failed tries of the current step
  bytes       INTEGER NOT NULL, -- the file's size
  offset      INTEGER NOT NULL, -- bytes read so far (a record boundary)
  rows        INTEGER NOT NULL DEFAULT 0,
  duplicates  INTEGER NOT NULL DEFAULT 0,
  accepted    INTEGER NOT NULL DEFAULT 0,
  rejected    INTEGER NOT NULL DEFAULT 0,
  actor       TEXT    NOT NULL,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX imports_running ON imports (status, updated_at);

-- The first rows refused per import, with the row number, the column and why.
CREATE TABLE import_errors (
  import_id TEXT    NOT NULL,
  row       INTEGER NOT NULL,
  col       TEXT    NOT NULL,
  code      TEXT    NOT NULL,
  message   TEXT    NOT NULL,
  PRIMARY KEY (import_id, row, col)
) WITHOUT ROWID;
