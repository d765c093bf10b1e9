//! Co-occurrence as evidence writes: each stored event becomes insert-or-ignore rows that D1
//! triggers count (see the parent module), gathered into one statement per table, each naming
//! what it changes so caches drop only that.

use std::collections::BTreeSet;

use serde_json::Value;

use super::catalog::{catalog_writes, CatalogItem};
use super::settings::RecommendSettings;
use super::{MAX_CO_VIEWED, MAX_ORDER_ITEMS, ORDER_COMPLETED, PRODUCT_VIEWED};
use crate::collect::event::{Event, EventType};
use crate::personalise::computed::scalar_text;
use crate::plan::{Param, Statement};

/// The D1 writes one stored event contributes to the catalogue and co-occurrence tables:
///
/// - `Product Viewed`: the catalogue row, a `view` interaction, and `view` pair evidence with
///   every product in `recent_views` (the profile's views as `(time, product_id)`, e.g.
///   [`crate::personalise::computed::ComputedState::recent_values`]) within the co-view window of this one;
/// - `Order Completed`: a `purchase` interaction per product and `purchase` pair evidence for
///   every two products of the order.
///
/// Everything is insert-or-ignore evidence; triggers keep the counts (see the module docs).
pub fn interaction_writes(
    profile_id: &str,
    event: &Event,
    recent_views: &[(i64, Value)],
    settings: &RecommendSettings,
) -> Vec<Statement> {
    let mut evidence = Evidence::default();
    evidence.add(profile_id, event, recent_views, settings);
    evidence.writes()
}

/// The [`interaction_writes`] of a run of events, gathered so they go to D1 as one statement
/// per table however many rows (a 20-event batch is 3 statements, not 60): interaction and
/// evidence rows travel as one JSON array parameter, so D1's 100-parameter limit does not
/// split them.
#[derive(Debug, Default)]
pub struct Evidence {
    catalog: Vec<(CatalogItem, i64)>,
    interactions: Vec<Value>,
    pairs: Vec<Value>,
    /// What the catalogue, interaction and pair writes change, each when it changes any row.
    catalog_changed: Changed,
    interactions_changed: Changed,
    pairs_changed: Changed,
}

/// What a run of evidence writes changes in the shared recommendation inputs: the products
/// whose counts, partners or catalogue entry change, and the categories whose listing changes.
/// Caches of those inputs ([`crate::personalise::candidates::CandidateCache`]) drop exactly these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// Products with new interactions, pair evidence or catalogue bodies.
    pub products: BTreeSet<String>,
    /// Categories of upserted catalogue items.
    pub categories: BTreeSet<String>,
}

impl Changed {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty() && self.categories.is_empty()
    }

    /// Adds `other`'s products and categories.
    pub fn extend(&mut self, other: &Changed) {
        self.products.extend(other.products.iter().cloned());
        self.categories.extend(other.categories.iter().cloned());
    }
}

impl Evidence {
    /// Adds one stored event's contribution (see [`interaction_writes`]).
    pub fn add(
        &mut self,
        profile_id: &str,
        event: &Event,
        recent_views: &[(i64, Value)],
        settings: &RecommendSettings,
    ) {
        let Some(props) = event.body.get("properties").and_then(Value::as_object) else {
            return;
        };
        let at = event.timestamp_ms;
        let (kind, products, pairs): (&str, Vec<String>, Vec<(String, String)>) =
            match (event.kind, event.name.as_deref()) {
                (EventType::Track, Some(PRODUCT_VIEWED)) => {
                    let Some(item) = CatalogItem::from_properties(props) else {
                        return;
                    };
                    let mut others: Vec<String> = Vec::new();
                    for (t, v) in recent_views {
                        let Some(id) = scalar_text(v) else { continue };
                        let near = (t - at).abs() <= settings.co_view_window_ms;
                        if near && id != item.product_id && !others.contains(&id) {
                            others.push(id);
                        }
                        if others.len() >= MAX_CO_VIEWED {
                            break;
                        }
                    }
                    let pairs: Vec<(String, String)> = others
                        .into_iter()
                        .map(|o| ordered(o, item.product_id.clone()))
                        .collect();
                    self.evidence(
                        profile_id,
                        "view",
                        std::slice::from_ref(&item.product_id),
                        &pairs,
                    );
                    self.catalog_changed
                        .products
                        .insert(item.product_id.clone());
                    self.catalog_changed
                        .categories
                        .extend(item.category.clone());
                    // The event's time is the client's claim: one dated in the future must not
                    // outrank every later view's row.
                    self.catalog.push((item, at.min(event.received_at_ms)));
                    return;
                }
                (EventType::Track, Some(ORDER_COMPLETED)) => {
                    let mut ids: Vec<String> = Vec::new();
                    for p in props
                        .get("products")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let id = p
                            .get("product_id")
                            .and_then(scalar_text)
                            .or_else(|| p.get("sku").and_then(scalar_text));
                        if let Some(id) = id.filter(|id| !ids.contains(id)) {
                            ids.push(id);
                        }
                        if ids.len() >= MAX_ORDER_ITEMS {
                            break;
                        }
                    }
                    let mut pairs = Vec::new();
                    for (i, a) in ids.iter().enumerate() {
                        for b in &ids[i + 1..] {
                            pairs.push(ordered(a.clone(), b.clone()));
                        }
                    }
                    ("purchase", ids, pairs)
                }
                _ => return,
            };
        self.evidence(profile_id, kind, &products, &pairs);
    }

    fn evidence(
        &mut self,
        profile_id: &str,
        kind: &str,
        products: &[String],
        pairs: &[(String, String)],
    ) {
        self.interactions_changed
            .products
            .extend(products.iter().cloned());
        for (a, b) in pairs {
            self.pairs_changed.products.insert(a.clone());
            self.pairs_changed.products.insert(b.clone());
        }
        self.interactions.extend(
            products
                .iter()
                .map(|p| serde_json::json!([profile_id, p, kind])),
        );
        self.pairs.extend(
            pairs
                .iter()
                .map(|(a, b)| serde_json::json!([kind, a, b, profile_id])),
        );
    }

    /// What [`Evidence::writes`] may change (all of it, if every write changes a row).
    pub fn changed(&self) -> Changed {
        let mut all = self.catalog_changed.clone();
        all.extend(&self.interactions_changed);
        all.extend(&self.pairs_changed);
        all
    }

    /// The writes: catalogue upserts, then interactions, then pair evidence.
    pub fn writes(self) -> Vec<Statement> {
        let (catalog, evidence) = self.writes_and_changes();
        catalog
            .into_iter()
            .chain(evidence)
            .map(|(write, _)| write)
            .collect()
    }

    /// [`Evidence::writes`] in two lists, each write with what it changes if it changes any
    /// row: the catalogue's upserts (shared by every profile, in `DB`), then the profile's own
    /// interaction and pair evidence (beside its state, in its shard: the triggers there keep
    /// that shard's counts). Evidence a profile gave before (a product viewed again) and
    /// unchanged catalogue bodies change nothing, so a caller that sees a write change no row
    /// need not drop cached inputs for it.
    pub fn writes_and_changes(self) -> (Vec<Planned>, Vec<Planned>) {
        let catalog: Vec<Planned> =
            catalog_writes(self.catalog.iter().map(|(item, at)| (item, *at)))
                .into_iter()
                .map(|write| (write, self.catalog_changed.clone()))
                .collect();
        let rows = |sql: &str, rows: Vec<Value>, changed: Changed| {
            (!rows.is_empty()).then(|| {
                let write = Statement {
                    sql: sql.into(),
                    params: vec![Param::Text(Value::Array(rows).to_string())],
                };
                (write, changed)
            })
        };
        let mut evidence = Vec::new();
        evidence.extend(rows(
            "INSERT OR IGNORE INTO item_interactions (profile_id, product_id, kind) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1)",
            self.interactions,
            self.interactions_changed,
        ));
        evidence.extend(rows(
            "INSERT OR IGNORE INTO item_pair_evidence (kind, item_a, item_b, profile_id) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1)",
            self.pairs,
            self.pairs_changed,
        ));
        (catalog, evidence)
    }
}

/// A write and what it changes if it changes any row.
pub type Planned = (Statement, Changed);

fn ordered(a: String, b: String) -> (String, String) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalise::computed::test_support::track;
    use serde_json::json;

    #[test]
    fn product_viewed_plans_catalogue_interaction_and_co_view_evidence() {
        let settings = RecommendSettings::default();
        let view = track(
            "v3",
            "Product Viewed",
            60_000,
            json!({"product_id": "run-3", "category": "Running Shoes", "name": "Tempo", "price": "99.5"}),
        );
        let t0 = view.timestamp_ms;
        let recent = [
            (t0, json!("run-3")),
            (t0 - 60_000, json!("run-1")),
            (t0 - 2 * 60 * 60_000, json!("old")),
            (t0 - 30_000, json!("run-1")),
        ];
        let plan = interaction_writes("prof_1", &view, &recent, &settings);
        assert_eq!(plan.len(), 3);
        assert!(plan[0].sql.starts_with("INSERT INTO catalog_items"));
        let body: CatalogItem = match &plan[0].params[2] {
            Param::Text(t) => CatalogItem::from_json_str(t).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (body.name.as_deref(), body.price),
            (Some("Tempo"), Some(99.5))
        );
        assert_eq!(rows_of(&plan[1]), json!([["prof_1", "run-3", "view"]]));
        assert_eq!(
            rows_of(&plan[2]),
            json!([["view", "run-1", "run-3", "prof_1"]]),
            "one pair, ordered, old view outside the window"
        );
        assert_eq!(plan[0].sql.matches('?').count(), plan[0].params.len());
    }

    /// The rows a JSON-array insert carries.
    fn rows_of(statement: &Statement) -> Value {
        assert!(statement.sql.contains("json_each(?1)"), "{}", statement.sql);
        match statement.params.as_slice() {
            [Param::Text(rows)] => serde_json::from_str(rows).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_of_events_writes_one_statement_per_table() {
        let settings = RecommendSettings::default();
        let mut evidence = Evidence::default();
        let mut recent = Vec::new();
        for i in 0..20_i64 {
            let id = format!("p{i}");
            let view = track(
                &format!("v{i}"),
                "Product Viewed",
                i * 1000,
                json!({"product_id": id, "category": "Running Shoes"}),
            );
            evidence.add("prof_1", &view, &recent, &settings);
            recent.push((view.timestamp_ms, json!(id)));
        }
        let plan = evidence.writes();
        assert_eq!(plan.len(), 3, "catalogue, interactions, pair evidence");
        assert_eq!(rows_of(&plan[1]).as_array().unwrap().len(), 20);
        let pairs = rows_of(&plan[2]);
        assert!(pairs.as_array().unwrap().len() > 20, "{pairs}");
    }

    #[test]
    fn evidence_names_the_products_and_categories_its_writes_change() {
        let settings = RecommendSettings::default();
        let mut evidence = Evidence::default();
        let view = track(
            "v1",
            "Product Viewed",
            0,
            json!({"product_id": "run-2", "category": "Running Shoes"}),
        );
        evidence.add(
            "prof_1",
            &view,
            &[(view.timestamp_ms - 1000, json!("run-1"))],
            &settings,
        );
        let order = track(
            "o1",
            "Order Completed",
            1000,
            json!({"order_id": "o1", "products": [{"product_id": "bag-1"}, {"product_id": "sock-1"}]}),
        );
        evidence.add("prof_1", &order, &[], &settings);
        evidence.add(
            "prof_1",
            &track("x", "Cart Viewed", 2000, json!({})),
            &[],
            &settings,
        );
        let changed = evidence.changed();
        let products: Vec<&str> = changed.products.iter().map(String::as_str).collect();
        assert_eq!(
            products,
            ["bag-1", "run-1", "run-2", "sock-1"],
            "both sides of each pair"
        );
        let categories: Vec<&str> = changed.categories.iter().map(String::as_str).collect();
        assert_eq!(categories, ["Running Shoes"]);
        assert!(Evidence::default().changed().is_empty());
    }

    #[test]
    fn each_evidence_write_names_only_what_it_changes() {
        let settings = RecommendSettings::default();
        let mut evidence = Evidence::default();
        let view = track(
            "v1",
            "Product Viewed",
            0,
            json!({"product_id": "run-2", "category": "Running Shoes"}),
        );
        evidence.add(
            "prof_1",
            &view,
            &[(view.timestamp_ms - 1000, json!("run-1"))],
            &settings,
        );
        let (catalog, own) = evidence.writes_and_changes();
        assert_eq!(catalog.len(), 1, "the catalogue: shared");
        assert!(own
            .iter()
            .all(|(w, _)| w.sql.contains("INSERT OR IGNORE INTO item_")));
        let plan: Vec<_> = catalog.into_iter().chain(own).collect();
        let names = |c: &Changed| {
            (
                c.products.iter().cloned().collect::<Vec<_>>(),
                c.categories.iter().cloned().collect::<Vec<_>>(),
            )
        };
        assert_eq!(plan.len(), 3);
        assert!(plan[0].0.sql.starts_with("INSERT INTO catalog_items"));
        assert!(
            plan[0].0.sql.contains(") IS NOT catalog_items.body"),
            "an unchanged body is not rewritten, so the write reports no change"
        );
        assert_eq!(
            names(&plan[0].1),
            (vec!["run-2".into()], vec!["Running Shoes".into()])
        );
        assert_eq!(names(&plan[1].1), (vec!["run-2".into()], vec![]));
        assert_eq!(
            names(&plan[2].1),
            (vec!["run-1".into(), "run-2".into()], vec![])
        );
    }

    #[test]
    fn order_completed_plans_purchases_and_every_pair() {
        let order = track(
            "o1",
            "Order Completed",
            0,
            json!({"order_id": "o1", "products": [{"product_id": "b"}, {"sku": "a"}, {"product_id": "c"}, {"product_id": "b"}]}),
        );
        let plan = interaction_writes("prof_1", &order, &[], &RecommendSettings::default());
        assert_eq!(plan.len(), 2);
        assert_eq!(
            rows_of(&plan[0]),
            json!([
                ["prof_1", "b", "purchase"],
                ["prof_1", "a", "purchase"],
                ["prof_1", "c", "purchase"]
            ]),
            "three distinct products"
        );
        assert_eq!(
            rows_of(&plan[1]),
            json!([
                ["purchase", "a", "b", "prof_1"],
                ["purchase", "b", "c", "prof_1"],
                ["purchase", "a", "c", "prof_1"]
            ]),
            "three pairs, each ordered"
        );
        let other = track("x", "Cart Viewed", 0, json!({}));
        assert!(interaction_writes("p", &other, &[], &RecommendSettings::default()).is_empty());
    }
}
