//! Reads and scoring: what the stores return for a decision ([`Candidates`]) and what the
//! profile says ([`Signals`]), blended into a ranked, deterministic list.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::catalog::CatalogItem;
use super::settings::RecommendSettings;

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
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct ItemStat {
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
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub product_id: String,
    /// Blended score (higher first).
    pub score: f64,
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
    // Only catalogued items with a name: a bare ID renders as nothing a shopper can read, and
    // an item whose name nobody (upload or event) gave is not one to show.
    let allowed = |id: &str| {
        !signals.exclude.contains(id)
            && candidates
                .catalog
                .get(id)
                .and_then(|item| item.name.as_deref())
                .is_some_and(|name| !name.trim().is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;
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
        let named: BTreeMap<String, CatalogItem> = ["a", "b", "c"]
            .into_iter()
            .map(|id| (id.to_owned(), item(id, "Tie")))
            .collect();
        let pairs = [
            pair("x", "b", 1, 0),
            pair("x", "a", 1, 0),
            pair("x", "c", 1, 0),
        ];
        let candidates = Candidates {
            pairs: &pairs,
            popular: &[],
            catalog: &named,
        };
        assert_eq!(ids(&rank(&["x"], &[], &[], candidates, 3)), ["a", "b", "c"]);
    }

    #[test]
    fn never_recommends_items_without_a_name() {
        let mut catalog = catalog();
        let mut nameless = item("nameless", "Running Shoes");
        nameless.name = None;
        catalog.insert("nameless".into(), nameless);
        let mut blank = item("blank", "Running Shoes");
        blank.name = Some("  ".into());
        catalog.insert("blank".into(), blank);
        let pairs = [
            pair("run-1", "nameless", 9, 9),
            pair("run-1", "blank", 9, 9),
            pair("run-1", "uncatalogued", 9, 9),
            pair("run-1", "run-2", 1, 0),
        ];
        let candidates = Candidates {
            pairs: &pairs,
            popular: &[],
            catalog: &catalog,
        };
        let ranked = rank(&["run-1"], &[], &[], candidates, 10);
        let got = ids(&ranked);
        assert!(got.contains(&"run-2"), "{got:?}");
        for hidden in ["nameless", "blank", "uncatalogued"] {
            assert!(!got.contains(&hidden), "{hidden} in {got:?}");
        }
    }
}
