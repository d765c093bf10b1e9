-- Co-occurrence evidence beside the profiles' state (docs/scale.md, "Profile shards"): each
-- profile's interaction and pair evidence is written in its shard, in the batch of its state
-- save, and the shard's own aggregates count it. Recommendations add the aggregates of every
-- shard. Tables and triggers as `DB` holds them (edge/migrations 0005, 0006, 0023, 0025).

CREATE TABLE item_interactions (
  profile_id  TEXT    NOT NULL,
  product_id  TEXT    NOT NULL,
  kind        TEXT    NOT NULL CHECK (kind IN ('view', 'purchase')),
  PRIMARY KEY (profile_id, product_id, kind)
) WITHOUT ROWID;

CREATE TABLE item_pair_evidence (
  profile_id  TEXT    NOT NULL,
  kind        TEXT    NOT NULL CHECK (kind IN ('view', 'purchase')),
  item_a      TEXT    NOT NULL,              -- item_a < item_b
  item_b      TEXT    NOT NULL,
  PRIMARY KEY (profile_id, kind, item_a, item_b)
) WITHOUT ROWID;

CREATE TABLE item_stats (
  product_id  TEXT    NOT NULL PRIMARY KEY,
  views       INTEGER NOT NULL DEFAULT 0,
  purchases   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX item_stats_popularity ON item_stats ((purchases * 3 + views) DESC);

CREATE TABLE item_pairs (
  item_a        TEXT    NOT NULL,
  item_b        TEXT    NOT NULL,
  co_views      INTEGER NOT NULL DEFAULT 0,
  co_purchases  INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (item_a, item_b)
) WITHOUT ROWID;

CREATE TRIGGER item_interactions_count AFTER INSERT ON item_interactions BEGIN
  INSERT INTO item_stats (product_id, views, purchases)
  VALUES (NEW.product_id, NEW.kind = 'view', NEW.kind = 'purchase')
  ON CONFLICT (product_id) DO UPDATE SET
    views = views + (NEW.kind = 'view'),
    purchases = purchases + (NEW.kind = 'purchase');
END;

CREATE TRIGGER item_interactions_uncount AFTER DELETE ON item_interactions BEGIN
  UPDATE item_stats SET
    views = max(views - (OLD.kind = 'view'), 0),
    purchases = max(purchases - (OLD.kind = 'purchase'), 0)
  WHERE product_id = OLD.product_id;
END;

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
