-- With profile shards, an identifier's assignment (`identities`) lives in its home shard,
-- beside its links (edge/migrations-profiles 0004; docs/scale.md, "The identity graph's
-- assignments"). `DB` keeps its own identifiers' assignments, and the others' until a walk
-- (`jobs::reshard`) takes them home and deletes them here.
--
-- That deletion must not edit the profiles' rows, which stay in `DB`: the trigger that kept
-- them for the Worker from before migration 0030 goes. Every later Worker edits the rows
-- itself before it deletes an assignment (an erasure, retention), so the Worker a rollback
-- may return to is the one of 0030.
DROP TRIGGER identities_member_delete;

-- The insert and move triggers stay for that Worker, and skip what a later one wrote: a row
-- at the assignment's version, and now also a row already listing the identifier (a move
-- bringing an assignment into `DB` when the shard count shrinks copies it as it was, at the
-- version its resolution had, which the row may have passed since).
DROP TRIGGER identities_member_insert;
CREATE TRIGGER identities_member_insert AFTER INSERT ON identities
WHEN NOT EXISTS (SELECT 1 FROM profile_members WHERE profile_id = NEW.profile_id
  AND seq = NEW.seq AND seq_sum = NEW.seq_sum)
  AND NOT EXISTS (SELECT 1 FROM profile_members p, json_each(p.identifiers) j
    WHERE p.profile_id = NEW.profile_id AND j.value = NEW.identifier) BEGIN
  INSERT INTO profile_member_edits
  VALUES (NEW.profile_id, NEW.identifier, 1, coalesce(NEW.last_seen, NEW.updated_at));
END;
DROP TRIGGER identities_member_move;
CREATE TRIGGER identities_member_move AFTER UPDATE OF profile_id ON identities
WHEN OLD.profile_id <> NEW.profile_id AND NOT EXISTS (SELECT 1 FROM profile_members
  WHERE profile_id = NEW.profile_id AND seq = NEW.seq AND seq_sum = NEW.seq_sum)
  AND NOT EXISTS (SELECT 1 FROM profile_members p, json_each(p.identifiers) j
    WHERE p.profile_id = NEW.profile_id AND j.value = NEW.identifier) BEGIN
  INSERT INTO profile_member_edits VALUES (NEW.profile_id, NEW.identifier, 1, max(NEW.updated_at,
    coalesce((SELECT last_seen FROM profile_members WHERE profile_id = OLD.profile_id), 0)));
  INSERT INTO profile_member_edits VALUES (OLD.profile_id, OLD.identifier, 0, NULL);
END;
