-- Identity graph. Links (which identifiers one event carried) are the truth; identities
-- (identifier -> profile) are derived from them by seam-core's deterministic partition and can
-- always be recomputed. Traits are stored per identifier, so merges move no data.

-- One row per distinct identifier set, keeping the earliest event that carried it (a later
-- event with the same set can never change the partition). `seq` grows with every change and
-- orders what each request saw.
CREATE TABLE identity_links (
  set_key     TEXT    NOT NULL PRIMARY KEY,  -- sha256 of the sorted identifier text forms
  seq         INTEGER NOT NULL,
  timestamp   INTEGER NOT NULL,              -- event time (ms)
  message_key TEXT    NOT NULL,              -- "<source>/<messageId>"
  identifiers TEXT    NOT NULL               -- JSON array of identifier text forms
) WITHOUT ROWID;
CREATE UNIQUE INDEX identity_links_seq ON identity_links (seq);

-- Identifier -> the link sets it appears in: the edges walked to load a connected component.
CREATE TABLE link_members (
  identifier TEXT NOT NULL,
  set_key    TEXT NOT NULL,
  PRIMARY KEY (identifier, set_key)
) WITHOUT ROWID;

-- Current assignment. Written with a guard on `seq` so a request that saw more links always
-- wins over one that saw fewer, whatever order their writes land in.
CREATE TABLE identities (
  identifier TEXT    NOT NULL PRIMARY KEY,
  profile_id TEXT    NOT NULL,
  seq        INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX identities_by_profile ON identities (profile_id);

-- Trait values per identifier: last-write-wins (or first-write-wins for $set_once) by event time.
CREATE TABLE trait_values (
  identifier  TEXT    NOT NULL,
  key         TEXT    NOT NULL,
  once        INTEGER NOT NULL,
  value       TEXT    NOT NULL,  -- JSON
  timestamp   INTEGER NOT NULL,
  message_key TEXT    NOT NULL,
  PRIMARY KEY (identifier, key, once)
) WITHOUT ROWID;

-- Audit: which event caused which merge, and which merges were refused.
CREATE TABLE merges (
  from_profile TEXT    NOT NULL,
  into_profile TEXT    NOT NULL,
  message_key  TEXT    NOT NULL,
  merged_at    INTEGER NOT NULL,
  PRIMARY KEY (from_profile, into_profile)
) WITHOUT ROWID;
CREATE INDEX merges_into ON merges (into_profile);

CREATE TABLE identity_conflicts (
  message_key     TEXT    NOT NULL,
  refused         TEXT    NOT NULL,
  reason          TEXT    NOT NULL,
  profile_id      TEXT    NOT NULL,
  refused_profile TEXT    NOT NULL,
  recorded_at     INTEGER NOT NULL,
  PRIMARY KEY (message_key, refused, reason)
) WITHOUT ROWID;
CREATE INDEX identity_conflicts_profile ON identity_conflicts (profile_id);
