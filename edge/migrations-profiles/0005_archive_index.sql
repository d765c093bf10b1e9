-- The archive's index by person beside the identity graph (docs/scale.md, "The archive's index
-- in the profile shards"): a person key's entries live in the database its text hashes to
-- (core::archive::spread). The objects they name stay in `DB`, so an entry holds the object's
-- ID. Tombstones are written in every database by an erasure, before it reads the entries:
-- a compaction or a walk writing an entry after it is refused. Tables as `DB` holds them
-- (edge/migrations 0022).

CREATE TABLE archive_people (
  person INTEGER NOT NULL,
  object INTEGER NOT NULL,
  PRIMARY KEY (person, object)
) WITHOUT ROWID;
-- Retention deletes the entries of the objects it deletes.
CREATE INDEX archive_people_by_object ON archive_people (object);

CREATE TABLE archive_tombstones (
  person    INTEGER NOT NULL PRIMARY KEY,
  erased_at INTEGER NOT NULL
) WITHOUT ROWID;
