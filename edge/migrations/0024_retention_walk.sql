-- Inactive anonymous profiles are found by walking `identities` in key order from a saved
-- position (core::privacy::retention), not through an index of every identifier's activity:
-- that index held each identifier's text once more, about 18 bytes of D1 per event, for a
-- query the retention run makes once a day (docs/scale.md, #18).
DROP INDEX IF EXISTS identities_activity;
CREATE TABLE walk_cursors (
  name  TEXT NOT NULL PRIMARY KEY,
  after TEXT NOT NULL -- the last key walked; '' to start over
) WITHOUT ROWID;
