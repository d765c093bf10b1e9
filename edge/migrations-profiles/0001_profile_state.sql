-- A profile shard (`PROFILES_1` … `PROFILES_{n-1}` when `PROFILE_SHARDS` is n; shard 0 is `DB`,
-- whose migrations in edge/migrations created these tables first). Each shard holds the
-- personalisation state of the profiles core::personalise::shard assigns to it, in the same
-- tables as `DB`: the state row (deflated computed state and memberships, version-guarded)
-- and the segment memberships. docs/scale.md, "Profile shards".

CREATE TABLE profile_personalisation (
  profile_id  TEXT    NOT NULL PRIMARY KEY,
  state       TEXT    NOT NULL,              -- a deflated blob (core::personalise::stored)
  version     INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  check_at    INTEGER                        -- when the segment sweep looks again (NULL: never)
) WITHOUT ROWID;
CREATE INDEX profile_personalisation_due ON profile_personalisation (check_at) WHERE check_at IS NOT NULL;

CREATE TABLE segment_memberships (
  profile_id  TEXT    NOT NULL,
  segment     TEXT    NOT NULL,
  entered_at  INTEGER NOT NULL,
  exited_at   INTEGER,
  PRIMARY KEY (profile_id, segment)
) WITHOUT ROWID;
CREATE INDEX segment_memberships_current ON segment_memberships (segment, exited_at);
