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
//!
//! The parts: the catalogue (`catalog.rs`), the recommender's settings (`settings.rs`), the
//! evidence writes (`evidence.rs`), reads and scoring (`score.rs`) and the holdout
//! (`holdout.rs`).

mod catalog;
mod evidence;
mod holdout;
mod score;
mod settings;

pub use catalog::{catalog_from_json, upsert_catalog, CatalogError, CatalogItem};
pub use evidence::{interaction_writes, Changed, Evidence};
pub use holdout::in_holdout;
pub use score::{
    defaults, recommend, Candidates, ItemStat, PairRow, Reason, Recommendation, Signals,
};
pub use settings::{RecommendConfigError, RecommendSettings};

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
