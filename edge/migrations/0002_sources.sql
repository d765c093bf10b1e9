-- Sources configured at runtime (in addition to the SOURCES setting in wrangler.toml).
-- `config` is the same JSON object as one SOURCES entry: {"id", "origins", "ip", "analyticsDenied",
-- "dedupWindowDays"}. Write keys are public by design (they ship in every page), so they are
-- stored as they are.
CREATE TABLE sources (
  write_key  TEXT    NOT NULL PRIMARY KEY,
  config     TEXT    NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
