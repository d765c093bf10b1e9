-- Erasure (privacy deletes and retention) finds a person's rows through keys instead of reading
-- whole tables: four statements of core::privacy::erase read every row of their table once per
-- erasure chunk (docs/scale.md, "Queries that read a whole table").

-- Pair evidence keyed by profile first, so a person's pairs are one key range. Nothing reads
-- evidence by pair (the triggers keep item_pairs' counts), so the new order costs no bytes. The
-- triggers leave with the old table and are created again after the copy: the copy counts
-- nothing a second time.
CREATE TABLE item_pair_evidence_by_profile (
  profile_id  TEXT    NOT NULL,
  kind        TEXT    NOT NULL CHECK (kind IN ('view', 'purchase')),
  item_a      TEXT    NOT NULL,              -- item_a < item_b
  item_b      TEXT    NOT NULL,
  PRIMARY KEY (profile_id, kind, item_a, item_b)
) WITHOUT ROWID;
INSERT INTO item_pair_evidence_by_profile (profile_id, kind, item_a, item_b)
  SELECT profile_id, kind, item_a, item_b FROM item_pair_evidence;
DROP TABLE item_pair_evidence;
ALTER TABLE item_pair_evidence_by_profile RENAME TO item_pair_evidence;

CREATE TRIGGER item_pair_evidence_count AFTER INSERT ON item_pair_evidence BEGIN
  INSERT INTO item_pairs (item_a, item_b, co_views, co_purchases)
  VALUES (NEW.item_a, NEW.item_b, NEW.kind = 'view', NEW.kind = 'purchase'),
         (NEW.item_b, NEW.item_a, NEW.kind = 'view', NEW.kind = 'purchase')
  ON CONFLICT (item_a, item_b) DO UPDATE SET
    co_views = co_views + (NEW.kind = 'view'),
    co_purchases = co_purchases + (NEW.kind = 'purchase');
END;

CREATE TRIGGER item_pair_evidence_uncount AFTER DELETE ON item_pair_evidence BEGIN
  UPDATE item_pairs SET
    co_views = max(co_views - (OLD.kind = 'view'), 0),
    co_purchases = max(co_purchases - (OLD.kind = 'purchase'), 0)
  WHERE (item_a = OLD.item_a AND item_b = OLD.item_b) OR (item_a = OLD.item_b AND item_b = OLD.item_a);
  DELETE FROM item_pairs WHERE co_views = 0 AND co_purchases = 0
    AND ((item_a = OLD.item_a AND item_b = OLD.item_b) OR (item_a = OLD.item_b AND item_b = OLD.item_a));
END;

-- Refused merges name the person as the refused profile or identifier too. They are rare (one row
-- per refused merge), so these indexes hold little.
CREATE INDEX identity_conflicts_refused_profile ON identity_conflicts (refused_profile);
CREATE INDEX identity_conflicts_refused ON identity_conflicts (refused);

-- Other browsers' claims of the person's email, phone or user ID, kept as their traits. Each
-- index holds only the traits of its keys, by the value normalised as erasure compares it (an
-- email if it holds an '@', else a phone; the user ID as text). The expressions must stay
-- exactly those core::privacy builds (a unit test checks).
CREATE INDEX trait_values_claimed_contacts ON trait_values (CASE WHEN instr(CAST(json_extract(value, '$') AS TEXT), '@') > 0 THEN lower(trim(CAST(json_extract(value, '$') AS TEXT))) ELSE lower(replace(replace(replace(replace(replace(trim(CAST(json_extract(value, '$') AS TEXT)), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '')) END)
  WHERE key IN ('email', 'phone');
CREATE INDEX trait_values_claimed_users ON trait_values (CAST(json_extract(value, '$') AS TEXT))
  WHERE key = 'claimedUserId';
