-- Each identifier's assignment to its profile in the identifier's home shard, beside its links
-- (docs/scale.md, "The identity graph's assignments"): resolution reads and writes them where
-- it reads the links, and a point read by identifier is one key seek in one database. As `DB`
-- holds them (edge/migrations 0003, 0026), without the columns no Worker writes any more
-- (`last_seen`) and without triggers: the profiles' rows are in `DB`, written by the Worker.
CREATE TABLE identities (
  identifier TEXT    NOT NULL PRIMARY KEY,
  profile_id TEXT    NOT NULL,
  seq        INTEGER NOT NULL,
  seq_sum    INTEGER NOT NULL DEFAULT 0,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
