-- Runtime settings uploaded through the admin API (D1 is the truth; KV caches them):
-- `config:personalisation` holds the computed-traits, segments, recommendations and slots
-- documents that replace the committed config/*.json.
CREATE TABLE IF NOT EXISTS settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
