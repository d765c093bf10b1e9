-- The Worker writes each profile's row itself, whole, with the version of the links it was
-- computed from (`core::identity::graph_plan::graph_writes`), instead of triggers on
-- `identities` editing it an identifier at a time: the rows can then move to the profiles'
-- own shards, where no trigger on `identities` reaches (docs/scale.md, step two), and a merge
-- writes each row once instead of once per moving identifier.
-- A row the triggers below make (for an older Worker) has no version of its own: -1, which no
-- assignment's `seq` is, so every later assignment into it is still seen as not accounted for.
ALTER TABLE profile_members ADD COLUMN seq INTEGER NOT NULL DEFAULT -1;
ALTER TABLE profile_members ADD COLUMN seq_sum INTEGER NOT NULL DEFAULT 0;
-- A row's version is its newest assignment's (the bare column comes from the row with the max).
UPDATE profile_members SET (seq, seq_sum) = (SELECT coalesce(max(i.seq), 0), coalesce(i.seq_sum, 0)
  FROM json_each(profile_members.identifiers) j CROSS JOIN identities i ON i.identifier = j.value);

-- A profile ID a resolution found no longer in use (absorbed, or one an older view of the
-- same links could make), at the resolution's version: no row of an older view is written
-- under it. Kept an hour (`graph_plan::sweep_tombstones`).
CREATE TABLE profile_tombstones (
  profile_id TEXT    NOT NULL PRIMARY KEY,
  seq        INTEGER NOT NULL,
  seq_sum    INTEGER NOT NULL,
  at         INTEGER NOT NULL  -- ms, of the latest write
) WITHOUT ROWID;
CREATE INDEX profile_tombstones_by_time ON profile_tombstones (at);

-- The triggers stay for a Worker from before 0030 (between migrate and deploy, or after a
-- rollback): it writes assignments without rows. This Worker writes the rows first, in the
-- same batch, at the version of the assignments that follow: an assignment whose profile's
-- row is at its version is accounted for, and the triggers skip it. (An older Worker's
-- assignment at the same version as this Worker's row computed the same partition from the
-- same links, which that row holds already.) A deletion always goes through them: this
-- Worker's erasure has edited the rows first, and the trigger finds nothing to do.
DROP TRIGGER identities_member_insert;
CREATE TRIGGER identities_member_insert AFTER INSERT ON identities
WHEN NOT EXISTS (SELECT 1 FROM profile_members WHERE profile_id = NEW.profile_id
  AND seq = NEW.seq AND seq_sum = NEW.seq_sum) BEGIN
  INSERT INTO profile_member_edits
  VALUES (NEW.profile_id, NEW.identifier, 1, coalesce(NEW.last_seen, NEW.updated_at));
END;
DROP TRIGGER identities_member_move;
CREATE TRIGGER identities_member_move AFTER UPDATE OF profile_id ON identities
WHEN OLD.profile_id <> NEW.profile_id AND NOT EXISTS (SELECT 1 FROM profile_members
  WHERE profile_id = NEW.profile_id AND seq = NEW.seq AND seq_sum = NEW.seq_sum) BEGIN
  INSERT INTO profile_member_edits VALUES (NEW.profile_id, NEW.identifier, 1, max(NEW.updated_at,
    coalesce((SELECT last_seen FROM profile_members WHERE profile_id = OLD.profile_id), 0)));
  INSERT INTO profile_member_edits VALUES (OLD.profile_id, OLD.identifier, 0, NULL);
END;
