-- A row per profile with its identifiers, in place of the index of `identities` by profile
-- (docs/scale.md, "The identity graph's assignments"): every read by profile (the ingest
-- batch's view, the profile API and console, exports, erasure's subject, retention, the
-- census) is one key seek into a row that can later live in the profile's own shard, beside
-- its state. Kept by triggers on `identities`, so it changes in the same transaction as the
-- assignments, whichever Worker writes them (the old one too, between migrate and deploy).
-- A profile without identifiers has no row. Its `last_seen` is what retention walks for
-- inactive anonymous profiles: ingest touches the visitor's profile row, no longer each of
-- its identifiers (`identities.last_seen` is no longer written).
-- The identifiers come last: a large profile's list spills to overflow pages, which reading
-- the other columns (ingest's touch, retention's walk) then does not follow.
CREATE TABLE profile_members (
  profile_id  TEXT    NOT NULL PRIMARY KEY,
  identified  INTEGER NOT NULL,  -- 1 when one is an email or a user ID
  last_seen   INTEGER NOT NULL,  -- ms; the latest activity of the profile or what joined it
  identifiers TEXT    NOT NULL   -- JSON array of identifier text forms, in no order
) WITHOUT ROWID;

INSERT INTO profile_members (profile_id, identified, last_seen, identifiers)
SELECT profile_id,
  max((identifier >= 'email:' AND identifier < 'email;')
    OR (identifier >= 'user_id:' AND identifier < 'user_id;')),
  max(coalesce(last_seen, updated_at)), json_group_array(identifier)
FROM identities GROUP BY profile_id;

-- Retention's walk goes over profiles now: its saved position (an identifier) starts over.
DELETE FROM walk_cursors WHERE name = 'inactive_anonymous_profiles';

-- How many profiles there are and how many are identified (core::identity::census): kept by
-- the rows' triggers, so counting reads one row instead of every identifier.
CREATE TABLE profile_totals (
  id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  profiles   INTEGER NOT NULL,
  identified INTEGER NOT NULL
);
INSERT INTO profile_totals (id, profiles, identified)
SELECT 1, count(*), coalesce(sum(identified), 0) FROM profile_members;

CREATE TRIGGER profile_members_insert AFTER INSERT ON profile_members BEGIN
  UPDATE profile_totals SET profiles = profiles + 1, identified = identified + NEW.identified
  WHERE id = 1;
END;
CREATE TRIGGER profile_members_delete AFTER DELETE ON profile_members BEGIN
  UPDATE profile_totals SET profiles = profiles - 1, identified = identified - OLD.identified
  WHERE id = 1;
END;
CREATE TRIGGER profile_members_identified AFTER UPDATE OF identified ON profile_members
WHEN OLD.identified <> NEW.identified BEGIN
  UPDATE profile_totals SET identified = identified + NEW.identified - OLD.identified WHERE id = 1;
END;

-- An identifier joins its profile's row (made when it is the first) or leaves it (the row goes
-- with its last identifier): one trigger each, on a view that stores nothing, so the three
-- triggers on `identities` below share them. The leave's update reads the row as it was. A
-- joining identifier brings its activity (`seen`): a merge is as recent as its newest part.
CREATE VIEW profile_member_edits AS
  SELECT NULL AS profile_id, NULL AS identifier, NULL AS joins, NULL AS seen WHERE 0;

CREATE TRIGGER profile_member_joins INSTEAD OF INSERT ON profile_member_edits
WHEN NEW.joins BEGIN
  INSERT INTO profile_members (profile_id, identifiers, identified, last_seen)
  VALUES (NEW.profile_id, json_array(NEW.identifier),
    (NEW.identifier >= 'email:' AND NEW.identifier < 'email;')
    OR (NEW.identifier >= 'user_id:' AND NEW.identifier < 'user_id;'), NEW.seen)
  ON CONFLICT (profile_id) DO UPDATE SET
    identifiers = json_insert(profile_members.identifiers, '$[#]', NEW.identifier),
    identified = profile_members.identified OR excluded.identified,
    last_seen = max(profile_members.last_seen, excluded.last_seen);
END;

CREATE TRIGGER profile_member_leaves INSTEAD OF INSERT ON profile_member_edits
WHEN NOT NEW.joins BEGIN
  UPDATE profile_members SET
    identifiers = (SELECT json_group_array(value) FROM json_each(profile_members.identifiers)
      WHERE value <> NEW.identifier),
    identified = EXISTS (SELECT 1 FROM json_each(profile_members.identifiers)
      WHERE value <> NEW.identifier AND ((value >= 'email:' AND value < 'email;')
        OR (value >= 'user_id:' AND value < 'user_id;')))
  WHERE profile_id = NEW.profile_id;
  DELETE FROM profile_members WHERE profile_id = NEW.profile_id AND identifiers = '[]';
END;

CREATE TRIGGER identities_member_insert AFTER INSERT ON identities BEGIN
  INSERT INTO profile_member_edits
  VALUES (NEW.profile_id, NEW.identifier, 1, coalesce(NEW.last_seen, NEW.updated_at));
END;
CREATE TRIGGER identities_member_delete AFTER DELETE ON identities BEGIN
  INSERT INTO profile_member_edits VALUES (OLD.profile_id, OLD.identifier, 0, NULL);
END;
-- A moving identifier brings its old profile's activity (touched there, not on the identifier)
-- and the resolution's time: joining first, while the old row is still there.
CREATE TRIGGER identities_member_move AFTER UPDATE OF profile_id ON identities
WHEN OLD.profile_id <> NEW.profile_id BEGIN
  INSERT INTO profile_member_edits VALUES (NEW.profile_id, NEW.identifier, 1, max(NEW.updated_at,
    coalesce((SELECT last_seen FROM profile_members WHERE profile_id = OLD.profile_id), 0)));
  INSERT INTO profile_member_edits VALUES (OLD.profile_id, OLD.identifier, 0, NULL);
END;

-- The Worker from before 0029 touches identifiers, between migrate and deploy: their
-- profiles' rows see it.
CREATE TRIGGER identities_touched AFTER UPDATE OF last_seen ON identities
WHEN NEW.last_seen IS NOT NULL BEGIN
  UPDATE profile_members SET last_seen = max(last_seen, NEW.last_seen)
  WHERE profile_id = NEW.profile_id;
END;

DROP INDEX identities_by_profile;
