-- Erasure of co-occurrence evidence (privacy deletes, retention) takes the person's contribution
-- back out of the aggregates: the exact mirror of the insert triggers in 0005, so counts stay
-- "distinct profiles that did this".
CREATE TRIGGER item_interactions_uncount AFTER DELETE ON item_interactions BEGIN
  UPDATE item_stats SET
    views = max(views - (OLD.kind = 'view'), 0),
    purchases = max(purchases - (OLD.kind = 'purchase'), 0)
  WHERE product_id = OLD.product_id;
END;

CREATE TRIGGER item_pair_evidence_uncount AFTER DELETE ON item_pair_evidence BEGIN
  UPDATE item_pairs SET
    co_views = max(co_views - (OLD.kind = 'view'), 0),
    co_purchases = max(co_purchases - (OLD.kind = 'purchase'), 0)
  WHERE (item_a = OLD.item_a AND item_b = OLD.item_b) OR (item_a = OLD.item_b AND item_b = OLD.item_a);
  DELETE FROM item_pairs WHERE co_views = 0 AND co_purchases = 0
    AND ((item_a = OLD.item_a AND item_b = OLD.item_b) OR (item_a = OLD.item_b AND item_b = OLD.item_a));
END;
