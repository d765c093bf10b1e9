-- Personalisation (issue 6): computed-trait state and segment memberships per profile, the
-- product catalogue, and item-to-item co-occurrence. Written by plans from seam-core
-- (core/src/personalise.rs, segment.rs, recommend.rs); docs/personalisation.md has the contract.

-- One row per profile: the computed-trait state blob (seam_core::computed::ComputedState as JSON)
-- and the memberships blob (seam_core::segment::Memberships). `version` guards concurrent
-- writers: a save only lands on the version it read; the loser reloads and re-applies (apply is
-- idempotent, so re-applying is safe).
CREATE TABLE profile_personalisation (
  profile_id  TEXT    NOT NULL PRIMARY KEY,
  state       TEXT    NOT NULL,              -- JSON: {"computed": {...}, "segments": {...}}
  version     INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Segment memberships, queryable by segment (audiences for activation). Current members have
-- exited_at NULL; re-entry resets entered_at.
CREATE TABLE segment_memberships (
  profile_id  TEXT    NOT NULL,
  segment     TEXT    NOT NULL,
  entered_at  INTEGER NOT NULL,
  exited_at   INTEGER,
  PRIMARY KEY (profile_id, segment)
) WITHOUT ROWID;
CREATE INDEX segment_memberships_current ON segment_memberships (segment, exited_at);

-- The product catalogue, from Product Viewed properties and the admin upload. `body` is a
-- seam_core::recommend::CatalogItem as JSON; last write by event time wins.
CREATE TABLE catalog_items (
  product_id  TEXT    NOT NULL PRIMARY KEY,
  category    TEXT,
  body        TEXT    NOT NULL,
  updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX catalog_items_category ON catalog_items (category, updated_at);

-- Evidence, insert-or-ignore: one row per (profile, product, kind) and per (kind, pair, profile).
-- Retries and repeats change nothing; the triggers below count each new row once, so counts are
-- "distinct profiles".
CREATE TABLE item_interactions (
  profile_id  TEXT    NOT NULL,
  product_id  TEXT    NOT NULL,
  kind        TEXT    NOT NULL CHECK (kind IN ('view', 'purchase')),
  first_at    INTEGER NOT NULL,
  PRIMARY KEY (profile_id, product_id, kind)
) WITHOUT ROWID;

CREATE TABLE item_pair_evidence (
  kind        TEXT    NOT NULL CHECK (kind IN ('view', 'purchase')),
  item_a      TEXT    NOT NULL,              -- item_a < item_b
  item_b      TEXT    NOT NULL,
  profile_id  TEXT    NOT NULL,
  first_at    INTEGER NOT NULL,
  PRIMARY KEY (kind, item_a, item_b, profile_id)
) WITHOUT ROWID;

-- Aggregates the decision path reads.
CREATE TABLE item_stats (
  product_id  TEXT    NOT NULL PRIMARY KEY,
  views       INTEGER NOT NULL DEFAULT 0,
  purchases   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX item_stats_popularity ON item_stats ((purchases * 3 + views) DESC);

-- Both directions, so one indexed lookup by item_a finds every partner.
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

CREATE TRIGGER item_pair_evidence_count AFTER INSERT ON item_pair_evidence BEGIN
  INSERT INTO item_pairs (item_a, item_b, co_views, co_purchases)
  VALUES (NEW.item_a, NEW.item_b, NEW.kind = 'view', NEW.kind = 'purchase'),
         (NEW.item_b, NEW.item_a, NEW.kind = 'view', NEW.kind = 'purchase')
  ON CONFLICT (item_a, item_b) DO UPDATE SET
    co_views = co_views + (NEW.kind = 'view'),
    co_purchases = co_purchases + (NEW.kind = 'purchase');
END;
