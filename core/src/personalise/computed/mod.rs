//! Computed traits: counters, aggregates and recent lists over a profile's events, declared in
//! configuration (`config/computed-traits.json`, format in `docs/personalisation.md`).
//!
//! # State
//!
//! A profile's [`ComputedState`] is a compact JSON blob the edge stores per profile. It keeps the
//! most recent `horizon` behavioural events as *facts* (time, dedup key, event name and only the
//! properties some trait reads), sorted by `(time, key)`, plus a per-trait *archive* that older
//! facts are folded into when the horizon overflows. Trait values are computed from
//! `archive + facts` on read ([`values()`]), with `now` passed in.
//!
//! That shape gives the guarantees the edge needs without an unbounded log:
//!
//! - **Idempotent**: a fact's key is a hash of its `messageId` (or, for events named in
//!   `dedupBy`, of the business key such as `order_id`, so a confirmation page reloaded twice is
//!   one order). A key already held is a duplicate; once the horizon is full, a fact older than
//!   the oldest one held is refused as late, so a retry of an event that was folded away can
//!   never count twice. Applying the same event any number of times gives the same state.
//! - **Order-independent within the horizon**: values are a fold over facts sorted by event time,
//!   so arrival order does not matter for the events the horizon holds.
//! - **Mergeable**: two profiles' states combine with [`merge`] (union of facts, archives added).
//!
//! The parts: the document ([`ComputedConfig`], `config.rs`), the state and the operations on it
//! (`state.rs`), folding facts into archives (`archive.rs`), trait values (`values.rs`), and
//! property access shared with segments and recommendations (`property.rs`).

mod archive;
mod config;
mod property;
mod state;
#[cfg(test)]
pub(crate) mod test_support;
mod values;

pub(crate) use config::{named_prefix, valid_name};
pub use config::{
    Aggregate, AggregateOp, ComputedConfig, ComputedConfigError, TraitDef, TraitKind,
};
pub use property::{extract, is_present, number, scalar_text, truthy};
pub use state::{
    apply, fact_name, fact_of, merge, Applied, Archive, Bucket, CartLine, ComputedState, Fact,
};
pub use values::{values, values_of};

/// Facts a state keeps unless the configuration says otherwise.
pub const DEFAULT_HORIZON: usize = 128;
/// Largest configurable horizon (bounds the stored blob).
pub const MAX_HORIZON: usize = 1000;
/// Most traits one configuration may declare.
pub const MAX_TRAITS: usize = 64;
/// Largest `limit` of a list trait.
pub const MAX_LIST_LIMIT: usize = 200;
/// Most values one fact keeps for a `[]` property path (e.g. the products of one order).
pub const MAX_PATH_VALUES: usize = 50;
/// Most distinct values a tally bucket keeps.
pub const MAX_TALLY_VALUES: usize = 50;
/// Events the platform emits itself; they are not behaviour and never become facts.
pub const INTERNAL_EVENTS: [&str; 3] = ["Segment Entered", "Segment Exited", "Decision Exposed"];
/// Fact name of `page` events.
pub const PAGE_FACT: &str = "$page";
/// Fact name of `screen` events.
pub const SCREEN_FACT: &str = "$screen";

const MINUTE_MS: i64 = 60_000;
/// Quantity cap per cart line, so a hostile `quantity` cannot overflow anything.
const MAX_CART_QUANTITY: i64 = 9_999;
/// The Segment e-commerce events the `cart` trait folds.
const PRODUCT_ADDED: &str = "Product Added";
const PRODUCT_REMOVED: &str = "Product Removed";
const ORDER_COMPLETED: &str = "Order Completed";
/// Properties a cart line keeps from `Product Added`.
const CART_PROPERTIES: [&str; 8] = [
    "product_id",
    "sku",
    "quantity",
    "price",
    "name",
    "category",
    "url",
    "image_url",
];
