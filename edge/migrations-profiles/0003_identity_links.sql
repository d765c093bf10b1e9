-- The identity graph's links beside the profiles' state (docs/scale.md, "The identity graph's
-- links"): an identifier's member rows live in the database its text hashes to, with a copy of
-- every link it is in (core::identity::spread). Tables and the `seq` counter as `DB` holds
-- them (edge/migrations 0003, 0010, 0023). The counter starts at 0: written with several
-- databases, a `seq` is at least the clock (core::identity::graph_plan::link_copies).

CREATE TABLE identity_links (
  set_key     TEXT    NOT NULL PRIMARY KEY,  -- 128 bits of sha256 of the sorted identifier text forms
  seq         INTEGER NOT NULL,
  timestamp   INTEGER NOT NULL,              -- event time (ms)
  message_key TEXT    NOT NULL,              -- "<source>/<messageId>"
  identifiers TEXT    NOT NULL,              -- JSON array of identifier text forms
  claimed     TEXT                           -- JSON array of the identifiers it only claims
) WITHOUT ROWID;

CREATE TABLE link_members (
  identifier TEXT NOT NULL,
  set_key    TEXT NOT NULL,
  PRIMARY KEY (identifier, set_key)
) WITHOUT ROWID;

CREATE TABLE identity_link_seq (
  id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL
);
INSERT INTO identity_link_seq (id, seq) VALUES (1, 0);
CREATE TRIGGER identity_links_seq_insert AFTER INSERT ON identity_links BEGIN
  UPDATE identity_link_seq SET seq = NEW.seq WHERE id = 1 AND seq < NEW.seq;
END;
CREATE TRIGGER identity_links_seq_update AFTER UPDATE OF seq ON identity_links BEGIN
  UPDATE identity_link_seq SET seq = NEW.seq WHERE id = 1 AND seq < NEW.seq;
END;
