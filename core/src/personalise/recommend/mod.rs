//! Recommendations, the pure parts: the product catalogue built from `Product Viewed` properties
//! (or an admin upload), item-to-item co-occurrence maintained incrementally in D1 as a plan of
//! writes, the scoring that blends a profile's recent views and categories with co-occurrence,
//! and the deterministic holdout.
//!
//! Co-occurrence is *set-based*: each write is an `INSERT OR IGNORE` of a piece of evidence
//! ("profile P viewed A and B within the window", "P bought A and B in one order"), and triggers
//! (`edge/migrations/0005_personalisation.sql`) add 1 to the pair's count only when the evidence
//! is new. A retried event, or the same pair seen again by the same profile, changes nothing, and
//! a pair's weight is the number of distinct profiles behind it (one enthusiast cannot inflate it).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::collect::event::{Event, EventType};
use crate::personalise::computed::{number, scalar_text};
use crate::plan::{multi_row, Param, Statement};

/// Products of one order paired for co-purchase (n·(n-1)/2 pairs).
pub const MAX_ORDER_ITEMS: usize = 10;
/// Recent views paired with a new view.
pub const MAX_CO_VIEWED: usize = 10;
/// Longest text kept per catalogue field.
const MAX_FIELD_CHARS: usize = 500;
/// Most items one catalogue upload may hold.
pub const MAX_UPLOAD_ITEMS: usize = 5000;

const PRODUCT_VIEWED: &str = "Product Viewed";
const ORDER_COMPLETED: &str = "Order Completed";

// ------------------------------------------------------------------------------------------------
// Catalogue
// ------------------------------------------------------------------------------------------------

/// A product as the decision path renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// `product_id` (or `sku` when there is none).
    pub product_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Currency of the price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Product page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

impl CatalogItem {
    /// An item from Segment product properties; `None` without a `product_id`/`sku`.
    pub fn from_properties(props: &Map<String, Value>) -> Option<Self> {
        let text = |key: &str| {
            props
                .get(key)
                .and_then(scalar_text)
                .map(|s| s.trim().chars().take(MAX_FIELD_CHARS).collect::<String>())
                .filter(|s| !s.is_empty())
        };
        Some(Self {
            product_id: text("product_id").or_else(|| text("sku"))?,
            name: text("name"),
            category: text("category"),
            brand: text("brand"),
            price: props.get("price").and_then(number),
            currency: text("currency"),
            url: text("url"),
            image_url: text("image_url"),
        })
    }

    /// The item a `Product Viewed` event describes.
    pub fn from_event(event: &Event) -> Option<Self> {
        if event.kind != EventType::Track || event.name.as_deref() != Some(PRODUCT_VIEWED) {
            return None;
        }
        Self::from_properties(event.body.get("properties")?.as_object()?)
    }

    /// Parses a stored `catalog_items.body`.
    pub fn from_json_str(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }
}

/// A mistake in a catalogue upload: names the item (index) and the field. Stable `code()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Not `{"items": [...]}` or a list.
    #[error("catalogue upload must be a list of items or {{\"items\": [...]}} (at most {MAX_UPLOAD_ITEMS})")]
    Malformed,
    /// An item is not usable.
    #[error("catalogue item {index}: {field} {problem}")]
    InvalidItem {
        /// Position in the upload.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

impl CatalogError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "invalid_catalog",
            Self::InvalidItem { .. } => "invalid_catalog_item",
        }
    }
}

/// Validates an admin catalogue upload (Segment product properties per item). One bad item
/// rejects the upload, naming it, so a half-applied catalogue never happens.
pub fn catalog_from_json(upload: &Value) -> Result<Vec<CatalogItem>, CatalogError> {
    let list = match upload {
        Value::Array(items) => items,
        Value::Object(o) => o
            .get("items")
            .and_then(Value::as_array)
            .ok_or(CatalogError::Malformed)?,
        _ => return Err(CatalogError::Malformed),
    };
    if list.len() > MAX_UPLOAD_ITEMS {
        return Err(CatalogError::Malformed);
    }
    list.iter()
        .enumerate()
        .map(|(index, item)| {
            let invalid = |field, problem| CatalogError::InvalidItem {
                index,
                field,
                problem,
            };
            let props = item
                .as_object()
                .ok_or(invalid("item", "must be an object"))?;
            if props
                .get("price")
                .is_some_and(|p| !p.is_null() && number(p).is_none())
            {
                return Err(invalid("price", "must be a number"));
            }
            CatalogItem::from_properties(props).ok_or(invalid("product_id", "is required"))
        })
        .collect()
}

/// Upserts catalogue items seen at `at_ms`; a newer stored row is kept (last write by event time
/// wins, so a late event cannot roll a product back).
pub fn upsert_catalog(items: &[CatalogItem], at_ms: i64) -> Vec<Statement> {
    catalog_writes(items.iter().map(|item| (item, at_ms)))
}

/// [`upsert_catalog`] with a time per item (a later row of the same product wins).
fn catalog_writes<'a>(items: impl Iterator<Item = (&'a CatalogItem, i64)>) -> Vec<Statement> {
    multi_row(
        "INSERT INTO catalog_items (product_id, category, body, updated_at) VALUES ",
        " ON CONFLICT (product_id) DO UPDATE SET category = excluded.category, \
          body = excluded.body, updated_at = excluded.updated_at \
          WHERE excluded.updated_at >= catalog_items.updated_at \
          AND (catalog_items.body IS NOT excluded.body \
          OR catalog_items.category IS NOT excluded.category)",
        items
            .map(|(item, at_ms)| {
                vec![
                    Param::Text(item.product_id.clone()),
                    Param::from(item.category.as_ref()),
                    Param::Text(serde_json::to_string(item).unwrap_or_else(|_| "{}".into())),
                    Param::Int(at_ms),
                ]
            })
            .collect(),
        &[],
    )
}

// ------------------------------------------------------------------------------------------------
// Co-occurrence writes
// ------------------------------------------------------------------------------------------------

/// Settings of the recommender (`recommendations` in the personalisation config).
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendSettings {
    /// Views of the same profile this close in time are co-viewed.
    pub co_view_window_ms: i64,
    /// Weight of one co-purchasing profile.
    pub purchase_weight: f64,
    /// Weight of one co-viewing profile.
    pub view_weight: f64,
    /// Weight of the item's category interest (0..1 share of the profile's category views).
    pub category_weight: f64,
    /// Weight of having viewed the item recently (so fresh items rank above seen ones).
    pub recent_weight: f64,
    /// Weight of popularity (scaled 0..1): tie-breaker and cold start.
    pub popularity_weight: f64,
    /// Percentage of profiles (0..100) held out from personalisation.
    pub holdout_percent: f64,
    /// Salt of the holdout hash (change it to draw a new control group).
    pub holdout_salt: String,
    /// How long an isolate reuses shared inputs (co-occurrence, category listings, catalogue,
    /// popularity) between decisions: the freshness traded for speed (0 reads D1 every time).
    pub cache_ms: i64,
}

impl Default for RecommendSettings {
    fn default() -> Self {
        Self {
            co_view_window_ms: 30 * 60_000,
            purchase_weight: 3.0,
            view_weight: 1.0,
            category_weight: 2.0,
            recent_weight: 0.5,
            popularity_weight: 0.25,
            holdout_percent: 0.0,
            holdout_salt: "seam".into(),
            cache_ms: 10_000,
        }
    }
}

/// A mistake in the recommender settings, naming the field. Stable `code()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recommendations: {field} {problem}")]
pub struct RecommendConfigError {
    /// The field.
    pub field: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl RecommendConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "invalid_recommendations_config"
    }
}

impl RecommendSettings {
    /// Reads `{"coViewWindowMinutes", "weights": {"purchase", "view", "category", "recent",
    /// "popularity"}, "holdoutPercent", "holdoutSalt"}`; every field optional.
    pub fn from_json(config: &Value) -> Result<Self, RecommendConfigError> {
        let err = |field: &str, problem| RecommendConfigError {
            field: field.to_owned(),
            problem,
        };
        let object = config
            .as_object()
            .ok_or_else(|| err("recommendations", "must be an object"))?;
        let mut s = Self::default();
        let non_negative = |v: &Value, field: &str| {
            v.as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| err(field, "must be a number >= 0"))
        };
        for (key, value) in object {
            match key.as_str() {
                "coViewWindowMinutes" => {
                    let minutes = non_negative(value, key)?;
                    if minutes <= 0.0 || minutes > 1440.0 {
                        return Err(err(key, "must be from 0 to 1440 minutes"));
                    }
                    s.co_view_window_ms = (minutes * 60_000.0).round() as i64;
                }
                "holdoutPercent" => {
                    s.holdout_percent = non_negative(value, key)?;
                    if s.holdout_percent > 100.0 {
                        return Err(err(key, "must be from 0 to 100"));
                    }
                }
                "cacheSeconds" => {
                    let seconds = non_negative(value, key)?;
                    if seconds > 300.0 {
                        return Err(err(key, "must be from 0 to 300 seconds"));
                    }
                    s.cache_ms = (seconds * 1000.0).round() as i64;
                }
                "holdoutSalt" => {
                    s.holdout_salt = value
                        .as_str()
                        .ok_or_else(|| err(key, "must be a string"))?
                        .to_owned();
                }
                "weights" => {
                    let weights = value
                        .as_object()
                        .ok_or_else(|| err(key, "must be an object"))?;
                    for (w, v) in weights {
                        let field = format!("weights.{w}");
                        let x = non_negative(v, &field)?;
                        match w.as_str() {
                            "purchase" => s.purchase_weight = x,
                            "view" => s.view_weight = x,
                            "category" => s.category_weight = x,
                            "recent" => s.recent_weight = x,
                            "popularity" => s.popularity_weight = x,
                            _ => return Err(err(&field, "is not a weight")),
                        }
                    }
                }
                _ => return Err(err(key, "is not a setting")),
            }
        }
        Ok(s)
    }
}

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
                        at,
                    );
                    self.catalog_changed
                        .products
                        .insert(item.product_id.clone());
                    self.catalog_changed
                        .categories
                        .extend(item.category.clone());
                    self.catalog.push((item, at));
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
        self.evidence(profile_id, kind, &products, &pairs, at);
    }

    fn evidence(
        &mut self,
        profile_id: &str,
        kind: &str,
        products: &[String],
        pairs: &[(String, String)],
        at: i64,
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
                .map(|p| serde_json::json!([profile_id, p, kind, at])),
        );
        self.pairs.extend(
            pairs
                .iter()
                .map(|(a, b)| serde_json::json!([kind, a, b, profile_id, at])),
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
        self.writes_and_changes()
            .into_iter()
            .map(|(write, _)| write)
            .collect()
    }

    /// [`Evidence::writes`], each with what it changes if it changes any row. Evidence a profile
    /// gave before (a product viewed again) and unchanged catalogue bodies change nothing, so a
    /// caller that sees a write change no row need not drop cached inputs for it.
    pub fn writes_and_changes(self) -> Vec<(Statement, Changed)> {
        let mut plan: Vec<(Statement, Changed)> =
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
        plan.extend(rows(
            "INSERT OR IGNORE INTO item_interactions (profile_id, product_id, kind, first_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1)",
            self.interactions,
            self.interactions_changed,
        ));
        plan.extend(rows(
            "INSERT OR IGNORE INTO item_pair_evidence (kind, item_a, item_b, profile_id, first_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
             FROM json_each(?1)",
            self.pairs,
            self.pairs_changed,
        ));
        plan
    }
}

fn ordered(a: String, b: String) -> (String, String) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

// ------------------------------------------------------------------------------------------------
// Reads and scoring
// ------------------------------------------------------------------------------------------------

/// One stored co-occurrence row.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRow {
    /// The profile's item.
    pub item_a: String,
    /// The co-occurring item.
    pub item_b: String,
    /// Distinct profiles that viewed both within the window.
    pub co_views: i64,
    /// Distinct profiles that bought both in one order.
    pub co_purchases: i64,
}

/// One item's popularity.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemStat {
    /// Product.
    pub product_id: String,
    /// Distinct profiles that viewed it.
    pub views: i64,
    /// Distinct profiles that bought it.
    pub purchases: i64,
}

/// What the profile tells the recommender (from its computed traits).
#[derive(Debug, Clone, Copy)]
pub struct Signals<'a> {
    /// Recently viewed product IDs, newest first (`viewed_products`).
    pub viewed: &'a [String],
    /// Category -> views (`category_views`).
    pub categories: &'a BTreeMap<String, u64>,
    /// Items never to recommend: purchased ones (`purchased_products`), the current page's.
    pub exclude: &'a BTreeSet<String>,
}

/// What the stores returned for a decision.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    /// Co-occurrence rows of the viewed items.
    pub pairs: &'a [PairRow],
    /// Popular items, most popular first.
    pub popular: &'a [ItemStat],
    /// Catalogue items known (for categories and for rendering).
    pub catalog: &'a BTreeMap<String, CatalogItem>,
}

/// Why an item is recommended: its largest score component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Bought together with the profile's items.
    CoPurchased,
    /// Viewed together with the profile's items.
    CoViewed,
    /// In a category the profile browses.
    Category,
    /// The profile viewed it recently.
    RecentlyViewed,
    /// Popular (cold start, non-personal defaults).
    Popular,
}

impl Reason {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CoPurchased => "co_purchased",
            Self::CoViewed => "co_viewed",
            Self::Category => "category",
            Self::RecentlyViewed => "recently_viewed",
            Self::Popular => "popular",
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Product.
    pub product_id: String,
    /// Blended score (higher first).
    pub score: f64,
    /// Main reason.
    pub reason: Reason,
}

#[derive(Default)]
struct Parts {
    co_purchased: f64,
    co_viewed: f64,
    category: f64,
    recent: f64,
    popular: f64,
}

impl Parts {
    fn total(&self) -> f64 {
        self.co_purchased + self.co_viewed + self.category + self.recent + self.popular
    }

    fn reason(&self) -> Reason {
        // Ties go to the more specific reason (listed first).
        [
            (self.co_purchased, Reason::CoPurchased),
            (self.co_viewed, Reason::CoViewed),
            (self.category, Reason::Category),
            (self.recent, Reason::RecentlyViewed),
            (self.popular, Reason::Popular),
        ]
        .into_iter()
        .fold((0.0, Reason::Popular), |best, (x, r)| {
            if x > best.0 {
                (x, r)
            } else {
                best
            }
        })
        .1
    }
}

/// The `limit` best items for a profile: co-occurrence with its recent views (newer views weigh
/// more), its category interest, and its recent views themselves, plus a little popularity;
/// excluded items never appear. With no personal signal the list is the popular items
/// (cold start); short lists are topped up with popular items. When a catalogue is given, only
/// catalogued items are returned (the rest cannot be rendered). Deterministic: ties break by
/// product ID.
pub fn recommend(
    signals: &Signals<'_>,
    candidates: &Candidates<'_>,
    settings: &RecommendSettings,
    limit: usize,
) -> Vec<Recommendation> {
    let mut parts: BTreeMap<&str, Parts> = BTreeMap::new();
    let recency: BTreeMap<&str, f64> = signals
        .viewed
        .iter()
        .enumerate()
        .rev()
        .map(|(i, id)| (id.as_str(), 1.0 / (1.0 + i as f64)))
        .collect();
    for pair in candidates.pairs {
        let Some(w) = recency.get(pair.item_a.as_str()) else {
            continue;
        };
        let p = parts.entry(pair.item_b.as_str()).or_default();
        p.co_purchased += w * settings.purchase_weight * pair.co_purchases.max(0) as f64;
        p.co_viewed += w * settings.view_weight * pair.co_views.max(0) as f64;
    }
    let category_total: u64 = signals.categories.values().sum();
    if category_total > 0 {
        for item in candidates.catalog.values() {
            let Some(views) = item
                .category
                .as_ref()
                .and_then(|c| signals.categories.get(c))
            else {
                continue;
            };
            let share = *views as f64 / category_total as f64;
            parts.entry(item.product_id.as_str()).or_default().category +=
                settings.category_weight * share;
        }
    }
    for (id, w) in &recency {
        parts.entry(id).or_default().recent += settings.recent_weight * w;
    }
    let top = candidates
        .popular
        .iter()
        .map(popularity)
        .fold(0.0_f64, f64::max);
    for stat in candidates.popular {
        if top > 0.0 {
            parts.entry(stat.product_id.as_str()).or_default().popular +=
                settings.popularity_weight * popularity(stat) / top;
        } else {
            parts.entry(stat.product_id.as_str()).or_default();
        }
    }
    let allowed = |id: &str| {
        !signals.exclude.contains(id)
            && (candidates.catalog.is_empty() || candidates.catalog.contains_key(id))
    };
    let mut ranked: Vec<Recommendation> = parts
        .into_iter()
        .filter(|(id, _)| allowed(id))
        .map(|(id, p)| Recommendation {
            product_id: id.to_owned(),
            score: p.total(),
            reason: p.reason(),
        })
        .collect();
    // Cold start with no popularity yet: the catalogue, in ID order.
    if ranked.is_empty() {
        ranked = candidates
            .catalog
            .keys()
            .filter(|id| allowed(id))
            .map(|id| Recommendation {
                product_id: id.clone(),
                score: 0.0,
                reason: Reason::Popular,
            })
            .collect();
    }
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.product_id.cmp(&b.product_id))
    });
    ranked.truncate(limit);
    ranked
}

/// Non-personal defaults (consent denied, holdout): popular items, then catalogue order.
pub fn defaults(
    candidates: &Candidates<'_>,
    exclude: &BTreeSet<String>,
    settings: &RecommendSettings,
    limit: usize,
) -> Vec<Recommendation> {
    let no_categories = BTreeMap::new();
    let signals = Signals {
        viewed: &[],
        categories: &no_categories,
        exclude,
    };
    let candidates = Candidates {
        pairs: &[],
        ..*candidates
    };
    recommend(&signals, &candidates, settings, limit)
}

fn popularity(stat: &ItemStat) -> f64 {
    (stat.purchases.max(0) * 3 + stat.views.max(0)) as f64
}

// ------------------------------------------------------------------------------------------------
// Holdout
// ------------------------------------------------------------------------------------------------

/// Whether `profile_id` is in the control group: the first 8 bytes of
/// SHA-256(`salt` + "\n" + `profile_id`) modulo 10 000 fall below `percent` × 100. The same
/// profile and salt always give the same answer; about `percent`% of profiles are held out.
pub fn in_holdout(profile_id: &str, salt: &str, percent: f64) -> bool {
    if percent.is_nan() || percent <= 0.0 {
        return false;
    }
    let hex = crate::identity::sha256_hex(format!("{salt}\n{profile_id}").as_bytes());
    let bucket = hex
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
        % 10_000;
    let threshold = (percent.min(100.0) * 100.0).round() as u64;
    bucket < threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalise::computed::test_support::track;
    use serde_json::json;

    fn item(id: &str, category: &str) -> CatalogItem {
        CatalogItem::from_properties(
            json!({"product_id": id, "category": category, "name": id})
                .as_object()
                .unwrap(),
        )
        .unwrap()
    }

    fn catalog() -> BTreeMap<String, CatalogItem> {
        [
            item("run-1", "Running Shoes"),
            item("run-2", "Running Shoes"),
            item("run-3", "Running Shoes"),
            item("run-4", "Running Shoes"),
            item("sock-1", "Socks"),
            item("sock-2", "Socks"),
            item("bag-1", "Bags"),
        ]
        .into_iter()
        .map(|i| (i.product_id.clone(), i))
        .collect()
    }

    fn stat(id: &str, views: i64, purchases: i64) -> ItemStat {
        ItemStat {
            product_id: id.into(),
            views,
            purchases,
        }
    }

    fn pair(a: &str, b: &str, co_views: i64, co_purchases: i64) -> PairRow {
        PairRow {
            item_a: a.into(),
            item_b: b.into(),
            co_views,
            co_purchases,
        }
    }

    fn ids(recs: &[Recommendation]) -> Vec<&str> {
        recs.iter().map(|r| r.product_id.as_str()).collect()
    }

    /// `recommend` with default settings over borrowed test data.
    fn rank(
        viewed: &[&str],
        categories: &[(&str, u64)],
        exclude: &[&str],
        candidates: Candidates<'_>,
        limit: usize,
    ) -> Vec<Recommendation> {
        let viewed: Vec<String> = viewed.iter().map(|s| (*s).to_owned()).collect();
        let categories = categories
            .iter()
            .map(|(c, n)| ((*c).to_owned(), *n))
            .collect();
        let exclude = exclude.iter().map(|s| (*s).to_owned()).collect();
        let signals = Signals {
            viewed: &viewed,
            categories: &categories,
            exclude: &exclude,
        };
        recommend(&signals, &candidates, &RecommendSettings::default(), limit)
    }

    #[test]
    fn recent_running_shoe_views_rank_running_shoes_first() {
        let catalog = catalog();
        let popular = [stat("bag-1", 90, 20), stat("sock-1", 50, 5)];
        let candidates = Candidates {
            pairs: &[],
            popular: &popular,
            catalog: &catalog,
        };
        let viewed = ["run-1", "run-2", "run-3"];
        let recs = rank(&viewed, &[("Running Shoes", 3)], &[], candidates, 4);
        assert_eq!(ids(&recs), ["run-1", "run-2", "run-3", "run-4"]);
        assert!(recs.iter().all(|r| r.reason == Reason::Category));
    }

    #[test]
    fn co_purchases_outweigh_co_views_and_newer_views_weigh_more() {
        let catalog = catalog();
        let pairs = [
            pair("run-1", "sock-1", 0, 2),
            pair("run-1", "sock-2", 3, 0),
            pair("run-2", "bag-1", 0, 2),
        ];
        let candidates = Candidates {
            pairs: &pairs,
            popular: &[],
            catalog: &catalog,
        };
        let recs = rank(&["run-1", "run-2"], &[], &[], candidates, 3);
        assert_eq!(ids(&recs), ["sock-1", "bag-1", "sock-2"]);
        assert_eq!(recs[0].reason, Reason::CoPurchased);
        assert_eq!(recs[2].reason, Reason::CoViewed);
    }

    #[test]
    fn purchased_items_never_appear() {
        let catalog = catalog();
        let pairs = [pair("run-1", "run-2", 9, 9)];
        let popular = [stat("run-2", 100, 100)];
        let candidates = Candidates {
            pairs: &pairs,
            popular: &popular,
            catalog: &catalog,
        };
        let recs = rank(
            &["run-1"],
            &[("Running Shoes", 5)],
            &["run-1", "run-2"],
            candidates,
            10,
        );
        assert_eq!(ids(&recs), ["run-3", "run-4"]);
    }

    #[test]
    fn cold_start_falls_back_to_popular_then_catalogue_order() {
        let exclude = BTreeSet::new();
        let catalog = catalog();
        let popular = [
            stat("sock-2", 10, 0),
            stat("bag-1", 1, 4),
            stat("gone", 99, 99),
        ];
        let recs = defaults(
            &Candidates {
                pairs: &[],
                popular: &popular,
                catalog: &catalog,
            },
            &exclude,
            &RecommendSettings::default(),
            5,
        );
        assert_eq!(
            ids(&recs),
            ["bag-1", "sock-2"],
            "by purchases x3 + views, catalogued only"
        );
        assert!(recs.iter().all(|r| r.reason == Reason::Popular));
        let recs = defaults(
            &Candidates {
                pairs: &[],
                popular: &[],
                catalog: &catalog,
            },
            &exclude,
            &RecommendSettings::default(),
            2,
        );
        assert_eq!(ids(&recs), ["bag-1", "run-1"]);
    }

    #[test]
    fn ordering_is_deterministic_on_ties() {
        let empty = BTreeMap::new();
        let pairs = [
            pair("x", "b", 1, 0),
            pair("x", "a", 1, 0),
            pair("x", "c", 1, 0),
        ];
        let candidates = Candidates {
            pairs: &pairs,
            popular: &[],
            catalog: &empty,
        };
        assert_eq!(ids(&rank(&["x"], &[], &[], candidates, 3)), ["a", "b", "c"]);
    }

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
        assert_eq!(rows_of(&plan[1]), json!([["prof_1", "run-3", "view", t0]]));
        assert_eq!(
            rows_of(&plan[2]),
            json!([["view", "run-1", "run-3", "prof_1", t0]]),
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
        let plan = evidence.writes_and_changes();
        let names = |c: &Changed| {
            (
                c.products.iter().cloned().collect::<Vec<_>>(),
                c.categories.iter().cloned().collect::<Vec<_>>(),
            )
        };
        assert_eq!(plan.len(), 3);
        assert!(plan[0].0.sql.starts_with("INSERT INTO catalog_items"));
        assert!(
            plan[0]
                .0
                .sql
                .contains("catalog_items.body IS NOT excluded.body"),
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
        let t = order.timestamp_ms;
        let plan = interaction_writes("prof_1", &order, &[], &RecommendSettings::default());
        assert_eq!(plan.len(), 2);
        assert_eq!(
            rows_of(&plan[0]),
            json!([
                ["prof_1", "b", "purchase", t],
                ["prof_1", "a", "purchase", t],
                ["prof_1", "c", "purchase", t]
            ]),
            "three distinct products"
        );
        assert_eq!(
            rows_of(&plan[1]),
            json!([
                ["purchase", "a", "b", "prof_1", t],
                ["purchase", "b", "c", "prof_1", t],
                ["purchase", "a", "c", "prof_1", t]
            ]),
            "three pairs, each ordered"
        );
        let other = track("x", "Cart Viewed", 0, json!({}));
        assert!(interaction_writes("p", &other, &[], &RecommendSettings::default()).is_empty());
    }

    #[test]
    fn catalogue_upload_names_the_bad_item_and_field() {
        let ok =
            catalog_from_json(&json!({"items": [{"product_id": "a", "price": 3}, {"sku": 7}]}))
                .unwrap();
        assert_eq!(ok[1].product_id, "7");
        let e = catalog_from_json(&json!([{"product_id": "a"}, {"name": "no id"}])).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (
                "invalid_catalog_item",
                "catalogue item 1: product_id is required"
            )
        );
        let e = catalog_from_json(&json!([{"product_id": "a", "price": "cheap"}])).unwrap_err();
        assert_eq!(
            e,
            CatalogError::InvalidItem {
                index: 0,
                field: "price",
                problem: "must be a number"
            }
        );
        assert_eq!(
            catalog_from_json(&json!("x")).unwrap_err().code(),
            "invalid_catalog"
        );
    }

    #[test]
    fn settings_validate_fields() {
        let s = RecommendSettings::from_json(
            &json!({"holdoutPercent": 10, "weights": {"category": 4}}),
        )
        .unwrap();
        assert_eq!((s.holdout_percent, s.category_weight), (10.0, 4.0));
        let e = RecommendSettings::from_json(&json!({"weights": {"colour": 1}})).unwrap_err();
        assert_eq!(e.field, "weights.colour");
        let e = RecommendSettings::from_json(&json!({"holdoutPercent": 101})).unwrap_err();
        assert_eq!(
            (e.code(), e.field.as_str()),
            ("invalid_recommendations_config", "holdoutPercent")
        );
        assert_eq!(RecommendSettings::default().cache_ms, 10_000);
        let s = RecommendSettings::from_json(&json!({"cacheSeconds": 0.5})).unwrap();
        assert_eq!(s.cache_ms, 500);
        let e = RecommendSettings::from_json(&json!({"cacheSeconds": 301})).unwrap_err();
        assert_eq!(e.field, "cacheSeconds");
    }

    #[test]
    fn holdout_is_deterministic_and_close_to_the_rate() {
        let held = (0..20_000)
            .filter(|i| in_holdout(&format!("prof_{i}"), "salt", 10.0))
            .count();
        assert!((1_800..=2_200).contains(&held), "{held} of 20000 at 10%");
        for i in 0..100 {
            let id = format!("prof_{i}");
            assert_eq!(in_holdout(&id, "salt", 10.0), in_holdout(&id, "salt", 10.0));
            assert!(!in_holdout(&id, "salt", 0.0));
            assert!(in_holdout(&id, "salt", 100.0));
            // Raising the percentage only adds profiles to the control group.
            assert!(!in_holdout(&id, "salt", 5.0) || in_holdout(&id, "salt", 10.0));
        }
        let other_salt = (0..1000)
            .filter(|i| {
                in_holdout(&format!("prof_{i}"), "salt", 50.0)
                    != in_holdout(&format!("prof_{i}"), "pepper", 50.0)
            })
            .count();
        assert!(other_salt > 300, "a new salt draws a new group");
    }
}
