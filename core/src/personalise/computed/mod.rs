//! Computed traits: counters, aggregates and recent lists over a profile's events, declared in
//! configuration (`config/computed-traits.json`, format in `docs/personalisation.md`).
//!
//! # State
//!
//! A profile's [`ComputedState`] is a compact JSON blob the edge stores per profile. It keeps the
//! most recent `horizon` behavioural events as *facts* (time, dedup key, event name and only the
//! properties some trait reads), sorted by `(time, key)`, plus a per-trait *archive* that older
//! facts are folded into when the horizon overflows. Trait values are computed from
//! `archive + facts` on read ([`values`]), with `now` passed in.
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

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::collect::event::{Event, EventType};
use crate::format::time::{format_iso8601, DAY_MS};

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
const CART_PROPERTIES: [&str; 6] = ["product_id", "sku", "quantity", "price", "name", "category"];

// ------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------

/// A mistake in the computed-traits configuration. Each variant has a stable
/// [`ComputedConfigError::code`] and names the trait (when there is one) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputedConfigError {
    /// The document is not a JSON object with a `traits` array.
    #[error("computed traits: {0}")]
    Malformed(String),
    /// A field that does not exist.
    #[error("computed traits: {}unknown field {field}", trait_prefix(.name))]
    UnknownField {
        /// The trait, when the field is inside a declaration.
        name: Option<String>,
        /// The field.
        field: String,
    },
    /// A field has the wrong type or value.
    #[error("computed traits: {}{field} {problem}", trait_prefix(.name))]
    Invalid {
        /// The trait, when the field is inside a declaration.
        name: Option<String>,
        /// The field, e.g. `windowDays` or `traits[3].name`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// Two declarations share a name.
    #[error("computed traits: trait {name} is declared more than once")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
}

fn trait_prefix(name: &Option<String>) -> String {
    named_prefix("trait", name)
}

/// `"<what> <name>: "` for error messages about a named declaration, or nothing.
pub(crate) fn named_prefix(what: &str, name: &Option<String>) -> String {
    name.as_ref()
        .map_or_else(String::new, |n| format!("{what} {n}: "))
}

impl ComputedConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "invalid_computed_config",
            Self::UnknownField { .. } => "unknown_computed_field",
            Self::Invalid { .. } => "invalid_computed_field",
            Self::DuplicateName { .. } => "duplicate_computed_trait",
        }
    }

    /// The trait the error is about, when there is one.
    pub fn trait_name(&self) -> Option<&str> {
        match self {
            Self::Malformed(_) => None,
            Self::UnknownField { name, .. } | Self::Invalid { name, .. } => name.as_deref(),
            Self::DuplicateName { name } => Some(name),
        }
    }

    /// The offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownField { field, .. } | Self::Invalid { field, .. } => Some(field),
            Self::Malformed(_) | Self::DuplicateName { .. } => None,
        }
    }
}

/// The document as written: every field optional and untyped, unknown fields kept to be named
/// in errors.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    horizon: Option<Value>,
    #[serde(default)]
    dedup_by: Option<Value>,
    #[serde(default)]
    traits: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// One trait declaration as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrait {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<Value>,
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    property: Option<Value>,
    #[serde(default)]
    window_days: Option<Value>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    when: Option<Value>,
    #[serde(default)]
    gap_minutes: Option<Value>,
    #[serde(default)]
    subtract: Option<Value>,
    #[serde(default)]
    description: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// What an aggregate computes over its matching events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateOp {
    /// How many events.
    Count,
    /// Sum of the first numeric property found.
    Sum,
    /// Mean of that property (`null` when no event has it).
    Average,
    /// Fraction of events where any `when` property is truthy (`null` with no events).
    Share,
    /// Count per value of a property (an object `value -> count`, the `limit` largest).
    Tally {
        /// Most values reported.
        limit: usize,
    },
}

/// A counter/aggregate trait.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// What it computes.
    pub op: AggregateOp,
    /// Fact names it reads (track event names, [`PAGE_FACT`], [`SCREEN_FACT`]).
    pub events: Vec<String>,
    /// Property paths; for sums and averages the first numeric one found counts.
    pub properties: Vec<String>,
    /// For shares: properties of which any truthy one marks the event.
    pub when: Vec<String>,
    /// For sums: fact names whose amount (the same properties) counts negatively, e.g.
    /// `Order Refunded` for a lifetime value net of refunds.
    pub subtract: Vec<String>,
    /// Only events in the last this many ms count.
    pub window_ms: Option<i64>,
}

/// What a trait computes.
#[derive(Debug, Clone, PartialEq)]
pub enum TraitKind {
    /// `count`, `sum`, `average`, `share`, `tally`.
    Aggregate(Aggregate),
    /// `last`: the property's value on the latest matching event.
    Last {
        /// Fact names read.
        events: Vec<String>,
        /// Property path.
        property: String,
    },
    /// `recent`: distinct property values, most recent first.
    Recent {
        /// Fact names read.
        events: Vec<String>,
        /// Property path (`products[].product_id` reads every product of an order).
        property: String,
        /// Most values kept.
        limit: usize,
    },
    /// `cart`: lines from `Product Added` / `Product Removed`, emptied by `Order Completed`.
    Cart {
        /// Most lines kept.
        limit: usize,
    },
    /// `last_at` (an ISO-8601 time) or `days_since` (whole days before `now`) of the latest
    /// matching event.
    LastAt {
        /// Fact names read; empty = any behavioural event.
        events: Vec<String>,
        /// Report whole days since instead of the time.
        as_days: bool,
    },
    /// `sessions`: runs of events with gaps of at most `gap_ms`.
    Sessions {
        /// Longest gap inside one session.
        gap_ms: i64,
    },
}

/// One declared trait.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitDef {
    /// Output name.
    pub name: String,
    /// What it computes.
    pub kind: TraitKind,
}

impl TraitDef {
    fn reads(&self, fact: &str) -> bool {
        let listed = |events: &[String]| events.is_empty() || events.iter().any(|e| e == fact);
        match &self.kind {
            TraitKind::Aggregate(a) => listed(&a.events) || a.subtract.iter().any(|e| e == fact),
            TraitKind::Last { events, .. }
            | TraitKind::Recent { events, .. }
            | TraitKind::LastAt { events, .. } => listed(events),
            TraitKind::Cart { .. } => {
                [PRODUCT_ADDED, PRODUCT_REMOVED, ORDER_COMPLETED].contains(&fact)
            }
            TraitKind::Sessions { .. } => true,
        }
    }
}

/// Validated computed-traits configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedConfig {
    /// Facts kept per profile before older ones are folded into the archive.
    pub horizon: usize,
    /// Fact name -> property whose value identifies the business object (e.g. `order_id`):
    /// events with the same value are one fact.
    pub dedup_by: BTreeMap<String, String>,
    /// Declared traits, in file order.
    pub traits: Vec<TraitDef>,
    /// Fact name -> property paths some trait reads ("*" = any fact).
    needs: BTreeMap<String, BTreeSet<String>>,
}

impl Default for ComputedConfig {
    fn default() -> Self {
        Self::new(DEFAULT_HORIZON, default_dedup_by(), Vec::new())
    }
}

fn default_dedup_by() -> BTreeMap<String, String> {
    [
        (ORDER_COMPLETED, "order_id"),
        ("Order Refunded", "order_id"),
        ("Order Cancelled", "order_id"),
    ]
    .into_iter()
    .map(|(e, p)| (e.to_owned(), p.to_owned()))
    .collect()
}

impl ComputedConfig {
    /// A configuration from validated parts.
    pub fn new(horizon: usize, dedup_by: BTreeMap<String, String>, traits: Vec<TraitDef>) -> Self {
        let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut need = |events: &[String], paths: &[String]| {
            let names: Vec<&str> = if events.is_empty() {
                vec!["*"]
            } else {
                events.iter().map(String::as_str).collect()
            };
            for name in names {
                needs
                    .entry(name.to_owned())
                    .or_default()
                    .extend(paths.iter().cloned());
            }
        };
        for t in &traits {
            match &t.kind {
                TraitKind::Aggregate(a) => {
                    need(&a.events, &a.properties);
                    need(&a.events, &a.when);
                    if !a.subtract.is_empty() {
                        need(&a.subtract, &a.properties);
                    }
                }
                TraitKind::Last {
                    events, property, ..
                }
                | TraitKind::Recent {
                    events, property, ..
                } => need(events, std::slice::from_ref(property)),
                TraitKind::Cart { .. } => {
                    let props: Vec<String> =
                        CART_PROPERTIES.iter().map(|p| (*p).to_owned()).collect();
                    need(&[PRODUCT_ADDED.to_owned()], &props);
                    need(&[PRODUCT_REMOVED.to_owned()], &props[..3]);
                }
                TraitKind::LastAt { .. } | TraitKind::Sessions { .. } => {}
            }
        }
        Self {
            horizon: horizon.clamp(1, MAX_HORIZON),
            dedup_by,
            traits,
            needs,
        }
    }

    /// Parses and validates a configuration document (see the module docs for the format).
    pub fn from_json(config: &Value) -> Result<Self, ComputedConfigError> {
        let raw = RawConfig::deserialize(config).map_err(|_| {
            ComputedConfigError::Malformed("the configuration must be a JSON object".into())
        })?;
        if let Some(field) = raw.unknown.keys().next() {
            return Err(ComputedConfigError::UnknownField {
                name: None,
                field: field.clone(),
            });
        }
        let top = |field: &str, problem: &str| ComputedConfigError::Invalid {
            name: None,
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        let horizon = match &raw.horizon {
            None | Some(Value::Null) => DEFAULT_HORIZON,
            Some(v) => positive_int(v)
                .filter(|n| *n <= MAX_HORIZON)
                .ok_or_else(|| {
                    top(
                        "horizon",
                        &format!("must be an integer from 1 to {MAX_HORIZON}"),
                    )
                })?,
        };
        let dedup_by = match &raw.dedup_by {
            None | Some(Value::Null) => default_dedup_by(),
            Some(Value::Object(map)) => {
                let mut out = BTreeMap::new();
                for (event, prop) in map {
                    let prop = prop
                        .as_str()
                        .filter(|p| !p.trim().is_empty())
                        .ok_or_else(|| {
                            top(&format!("dedupBy.{event}"), "must be a property name")
                        })?;
                    out.insert(event.clone(), prop.to_owned());
                }
                out
            }
            Some(_) => return Err(top("dedupBy", "must be an object of event -> property")),
        };
        let Some(Value::Array(list)) = &raw.traits else {
            return Err(top("traits", "must be an array of trait declarations"));
        };
        if list.len() > MAX_TRAITS {
            return Err(top(
                "traits",
                &format!("may declare at most {MAX_TRAITS} traits"),
            ));
        }
        let mut traits: Vec<TraitDef> = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let def = parse_trait(i, item)?;
            if traits.iter().any(|t| t.name == def.name) {
                return Err(ComputedConfigError::DuplicateName { name: def.name });
            }
            traits.push(def);
        }
        Ok(Self::new(horizon, dedup_by, traits))
    }

    /// What time alone changes in the traits named `names`: the windows of their aggregates,
    /// and whether any counts whole days since an event (its value moves every day).
    pub fn clock_of(&self, names: &BTreeSet<String>) -> (BTreeSet<i64>, bool) {
        let mut windows = BTreeSet::new();
        let mut daily = false;
        for def in self.traits.iter().filter(|d| names.contains(&d.name)) {
            match &def.kind {
                TraitKind::Aggregate(Aggregate {
                    window_ms: Some(w), ..
                }) => {
                    windows.insert(*w);
                }
                TraitKind::LastAt { as_days: true, .. } => daily = true,
                _ => {}
            }
        }
        (windows, daily)
    }

    /// The declaration named `name`.
    pub fn get(&self, name: &str) -> Option<&TraitDef> {
        self.traits.iter().find(|t| t.name == name)
    }

    fn paths_for(&self, fact: &str) -> impl Iterator<Item = &String> {
        self.needs
            .get(fact)
            .into_iter()
            .chain(self.needs.get("*"))
            .flatten()
    }
}

fn positive_int(v: &Value) -> Option<usize> {
    v.as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| usize::try_from(n).ok())
}

fn parse_trait(index: usize, item: &Value) -> Result<TraitDef, ComputedConfigError> {
    let raw = RawTrait::deserialize(item).map_err(|_| ComputedConfigError::Invalid {
        name: None,
        field: format!("traits[{index}]"),
        problem: "must be an object".into(),
    })?;
    let name = raw
        .name
        .as_ref()
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| valid_name(n))
        .ok_or_else(|| ComputedConfigError::Invalid {
            name: None,
            field: format!("traits[{index}].name"),
            problem: "must be a name of letters, digits, '_' or '-' (at most 64)".into(),
        })?
        .to_owned();
    let err = |field: &str, problem: &str| ComputedConfigError::Invalid {
        name: Some(name.clone()),
        field: field.to_owned(),
        problem: problem.to_owned(),
    };
    if let Some(field) = raw.unknown.keys().next() {
        return Err(ComputedConfigError::UnknownField {
            name: Some(name),
            field: field.clone(),
        });
    }
    if raw.description.as_ref().is_some_and(|d| !d.is_string()) {
        return Err(err("description", "must be a string"));
    }
    let kind = raw
        .kind
        .as_ref()
        .and_then(Value::as_str)
        .ok_or_else(|| err("type", "is required"))?;
    let events = string_list(raw.event.as_ref())
        .ok_or_else(|| err("event", "must be an event name or a list of names"))?;
    let properties = string_list(raw.property.as_ref())
        .ok_or_else(|| err("property", "must be a property path or a list of paths"))?;
    if let Some(bad) = properties.iter().find(|p| !valid_path(p)) {
        return Err(err("property", &format!("{bad:?} is not a property path")));
    }
    let when = string_list(raw.when.as_ref())
        .ok_or_else(|| err("when", "must be a property name or a list of names"))?;
    let subtract = string_list(raw.subtract.as_ref())
        .ok_or_else(|| err("subtract", "must be an event name or a list of names"))?;
    if let Some(both) = subtract.iter().find(|e| events.contains(e)) {
        return Err(err(
            "subtract",
            &format!("{both:?} is also in event: it cannot count both ways"),
        ));
    }
    let window_ms = match &raw.window_days {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|d| *d > 0.0 && *d <= 3650.0)
                .map(|d| (d * DAY_MS as f64).round() as i64)
                .ok_or_else(|| err("windowDays", "must be a number of days from 0 to 3650"))?,
        ),
    };
    let limit = |default: usize| -> Result<usize, ComputedConfigError> {
        match &raw.limit {
            None | Some(Value::Null) => Ok(default),
            Some(v) => positive_int(v)
                .filter(|n| *n <= MAX_LIST_LIMIT)
                .ok_or_else(|| {
                    err(
                        "limit",
                        &format!("must be an integer from 1 to {MAX_LIST_LIMIT}"),
                    )
                }),
        }
    };
    // Which optional fields each type accepts; anything else set is a mistake worth naming.
    let allowed: &[&str] = match kind {
        "count" => &["event", "windowDays"],
        "sum" => &["event", "property", "windowDays", "subtract"],
        "average" => &["event", "property", "windowDays"],
        "share" => &["event", "when", "windowDays"],
        "tally" => &["event", "property", "windowDays", "limit"],
        "last" => &["event", "property"],
        "recent" => &["event", "property", "limit"],
        "cart" => &["limit"],
        "last_at" | "days_since" => &["event"],
        "sessions" => &["gapMinutes"],
        other => return Err(err("type", &format!("{other:?} is not a trait type"))),
    };
    let set = [
        ("event", raw.event.is_some()),
        ("property", raw.property.is_some()),
        ("windowDays", raw.window_days.is_some()),
        ("limit", raw.limit.is_some()),
        ("when", raw.when.is_some()),
        ("gapMinutes", raw.gap_minutes.is_some()),
        ("subtract", raw.subtract.is_some()),
    ];
    if let Some((field, _)) = set.iter().find(|(f, on)| *on && !allowed.contains(f)) {
        return Err(err(field, &format!("does not apply to a {kind} trait")));
    }
    let needs_event = || {
        if events.is_empty() {
            Err(err("event", "is required"))
        } else {
            Ok(events.clone())
        }
    };
    let one_property = || match properties.as_slice() {
        [p] => Ok(p.clone()),
        _ => Err(err("property", "must be one property path")),
    };
    let aggregate = |op: AggregateOp| -> Result<TraitKind, ComputedConfigError> {
        Ok(TraitKind::Aggregate(Aggregate {
            op,
            events: needs_event()?,
            properties: properties.clone(),
            when: when.clone(),
            subtract: subtract.clone(),
            window_ms,
        }))
    };
    let kind = match kind {
        "count" => aggregate(AggregateOp::Count)?,
        "sum" | "average" => {
            if properties.is_empty() {
                return Err(err("property", "is required"));
            }
            aggregate(if kind == "sum" {
                AggregateOp::Sum
            } else {
                AggregateOp::Average
            })?
        }
        "share" => {
            if when.is_empty() {
                return Err(err("when", "is required"));
            }
            aggregate(AggregateOp::Share)?
        }
        "tally" => {
            one_property()?;
            aggregate(AggregateOp::Tally { limit: limit(10)? })?
        }
        "last" => TraitKind::Last {
            events: needs_event()?,
            property: one_property()?,
        },
        "recent" => TraitKind::Recent {
            events: needs_event()?,
            property: one_property()?,
            limit: limit(20)?,
        },
        "cart" => TraitKind::Cart { limit: limit(50)? },
        "last_at" | "days_since" => TraitKind::LastAt {
            events,
            as_days: kind == "days_since",
        },
        _ => {
            let minutes = match &raw.gap_minutes {
                None | Some(Value::Null) => 30.0,
                Some(v) => v
                    .as_f64()
                    .filter(|m| *m > 0.0 && *m <= 1440.0)
                    .ok_or_else(|| {
                        err("gapMinutes", "must be a number of minutes from 0 to 1440")
                    })?,
            };
            TraitKind::Sessions {
                gap_ms: (minutes * MINUTE_MS as f64).round() as i64,
            }
        }
    };
    Ok(TraitDef { name, kind })
}

/// Trait and segment names: short, printable, safe in JSON paths and logs.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// `a`, `a.b`, `products[].product_id`: dotted names, `[]` on a segment reads every element.
fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('.').all(|seg| {
            let name = seg.strip_suffix("[]").unwrap_or(seg);
            !name.is_empty() && !name.contains(['[', ']'])
        })
}

/// `"x"` or `["x", "y"]` (absent = empty).
fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_owned)
            })
            .collect(),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------------

/// One behavioural event as the state keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// Event time (ms).
    #[serde(rename = "t")]
    pub ts: i64,
    /// Dedup key: 16 hex digits of SHA-256 of the `messageId` or the `dedupBy` value.
    #[serde(rename = "k")]
    pub key: String,
    /// Track event name, [`PAGE_FACT`] or [`SCREEN_FACT`].
    #[serde(rename = "e")]
    pub event: String,
    /// The properties some trait reads, by path.
    #[serde(rename = "p", default, skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
}

impl Fact {
    fn order(&self) -> (i64, &str) {
        (self.ts, self.key.as_str())
    }

    /// Deterministic choice between two facts with the same key: the earlier one, then the
    /// smaller content.
    fn precedes(&self, other: &Fact) -> bool {
        (
            self.ts,
            Value::Object(self.props.clone()).to_string(),
            &self.event,
        ) < (
            other.ts,
            Value::Object(other.props.clone()).to_string(),
            &other.event,
        )
    }
}

/// One day (or, for traits without a window, all time) of an aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Matching events.
    #[serde(default)]
    pub n: u64,
    /// Sum of the numeric property.
    #[serde(default)]
    pub sum: f64,
    /// Events that had the numeric property.
    #[serde(default)]
    pub summed: u64,
    /// Events where a `when` property was truthy.
    #[serde(default)]
    pub hits: u64,
    /// Count per value (tally).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tally: BTreeMap<String, u64>,
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.n += other.n;
        self.sum += other.sum;
        self.summed += other.summed;
        self.hits += other.hits;
        for (k, v) in &other.tally {
            *self.tally.entry(k.clone()).or_default() += v;
        }
        cap_tally(&mut self.tally, MAX_TALLY_VALUES);
    }
}

/// One cart line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartLine {
    /// Quantity (at least 1).
    #[serde(rename = "q")]
    pub quantity: i64,
    /// When the line was first added (lines are listed and evicted in this order).
    #[serde(rename = "t")]
    pub ts: i64,
    /// Price, name, category as last added.
    #[serde(rename = "p", default, skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
}

/// What facts older than the horizon left behind, per trait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Archive {
    /// Aggregates by day (`0` for traits without a window).
    Agg {
        /// Day index (epoch days) -> bucket.
        days: BTreeMap<i64, Bucket>,
    },
    /// Latest value.
    Last {
        /// Its time.
        t: i64,
        /// The value.
        v: Value,
    },
    /// Recent values with their times.
    Recent {
        /// `(time, value)`, newest first.
        items: Vec<(i64, Value)>,
    },
    /// Cart lines by product.
    Cart {
        /// Product ID -> line.
        lines: BTreeMap<String, CartLine>,
    },
    /// Latest event time.
    At {
        /// The time.
        t: i64,
    },
    /// Sessions before the horizon.
    Sessions {
        /// Sessions that ended before `last`'s.
        closed: u64,
        /// Time of the latest archived event (its session may continue into the facts).
        last: i64,
    },
}

/// A profile's computed-trait state: what the edge stores (as JSON) per profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputedState {
    /// The most recent facts, sorted by `(ts, key)`, at most the configured horizon.
    #[serde(default)]
    pub facts: Vec<Fact>,
    /// Per-trait remains of older facts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub archive: BTreeMap<String, Archive>,
}

/// What [`apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored as a new fact.
    Added,
    /// Its key was already held (a retry, or a second event for the same order).
    Duplicate,
    /// Older than every fact of a full horizon: refused so a retry cannot count twice.
    Late,
    /// Not behaviour (identify, group, alias, internal events, anonymized events).
    Ignored,
}

impl ComputedState {
    /// Parses a stored blob; a missing or unreadable one starts empty (computed traits are
    /// derived data: losing them must not block ingestion).
    pub fn from_json_str(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The blob to store.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The instants time windows are measured from: fact times, archived times and cart lines,
    /// and the last millisecond of each archived day (an archived day leaves a window whole).
    pub fn times(&self) -> Vec<i64> {
        let mut times: Vec<i64> = self.facts.iter().map(|f| f.ts).collect();
        for archive in self.archive.values() {
            match archive {
                Archive::Agg { days } => times.extend(
                    days.keys()
                        .filter(|d| **d != 0)
                        .map(|d| (d + 1).saturating_mul(DAY_MS) - 1),
                ),
                Archive::Last { t, .. } | Archive::At { t } => times.push(*t),
                Archive::Recent { items } => times.extend(items.iter().map(|(t, _)| *t)),
                Archive::Cart { lines } => times.extend(lines.values().map(|l| l.ts)),
                Archive::Sessions { last, .. } => times.push(*last),
            }
        }
        times.retain(|t| *t != i64::MIN);
        times
    }

    /// Events named `event` (any behavioural event when `None`) held at or after `since_ms`.
    /// Counts only the horizon: a lower bound for windows longer than it covers.
    pub fn count_since(&self, event: Option<&str>, since_ms: i64) -> u64 {
        self.facts
            .iter()
            .filter(|f| f.ts >= since_ms && event.is_none_or(|e| f.event == e))
            .count() as u64
    }

    /// `(time, value)` of property `path` on facts named `event` at or after `since_ms`,
    /// newest first (for co-occurrence windows). Only paths some trait reads are held.
    pub fn recent_values(&self, event: &str, path: &str, since_ms: i64) -> Vec<(i64, Value)> {
        let mut out = Vec::new();
        for f in self.facts.iter().rev().filter(|f| f.event == event) {
            if f.ts < since_ms {
                break;
            }
            for v in values_at(&f.props, path) {
                out.push((f.ts, v.clone()));
            }
        }
        out
    }
}

/// The fact name of an event, `None` when it is not behaviour.
pub fn fact_name(event: &Event) -> Option<&str> {
    if event.anonymized {
        return None;
    }
    match event.kind {
        EventType::Track => event
            .name
            .as_deref()
            .filter(|n| !INTERNAL_EVENTS.contains(n)),
        EventType::Page => Some(PAGE_FACT),
        EventType::Screen => Some(SCREEN_FACT),
        EventType::Identify | EventType::Group | EventType::Alias => None,
    }
}

/// The fact an event contributes under `config`, `None` when it is not behaviour.
pub fn fact_of(event: &Event, config: &ComputedConfig) -> Option<Fact> {
    let name = fact_name(event)?;
    let empty = Map::new();
    let properties = event
        .body
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let business_key = config
        .dedup_by
        .get(name)
        .and_then(|prop| properties.get(prop))
        .and_then(scalar_text);
    let key_source = match business_key {
        Some(k) => format!("d\u{0}{name}\u{0}{k}"),
        None => format!("m\u{0}{}", event.message_id),
    };
    let mut props = Map::new();
    for path in config.paths_for(name) {
        let found = extract(properties, path);
        if !found.is_null() {
            props.insert(path.clone(), found);
        }
    }
    Some(Fact {
        ts: event.timestamp_ms,
        key: short_hash(&key_source),
        event: name.to_owned(),
        props,
    })
}

/// Adds `event` to `state`. Idempotent: applying an event again returns `Duplicate` (or `Late`)
/// and leaves the state as it was.
pub fn apply(state: &mut ComputedState, event: &Event, config: &ComputedConfig) -> Applied {
    match fact_of(event, config) {
        Some(fact) => insert_fact(state, fact, config),
        None => Applied::Ignored,
    }
}

fn insert_fact(state: &mut ComputedState, fact: Fact, config: &ComputedConfig) -> Applied {
    if let Some(i) = state.facts.iter().position(|f| f.key == fact.key) {
        if fact.precedes(&state.facts[i]) {
            state.facts.remove(i);
            let at = state.facts.partition_point(|f| f.order() < fact.order());
            state.facts.insert(at, fact);
        }
        return Applied::Duplicate;
    }
    let full = state.facts.len() >= config.horizon;
    if full
        && state
            .facts
            .first()
            .is_some_and(|oldest| fact.order() < oldest.order())
    {
        return Applied::Late;
    }
    let at = state.facts.partition_point(|f| f.order() < fact.order());
    state.facts.insert(at, fact);
    compact(state, config);
    Applied::Added
}

/// Folds facts beyond the horizon into the archive and drops archives of undeclared traits.
fn compact(state: &mut ComputedState, config: &ComputedConfig) {
    let overflow = state.facts.len().saturating_sub(config.horizon);
    if overflow == 0 {
        return;
    }
    let old: Vec<Fact> = state.facts.drain(..overflow).collect();
    state.archive.retain(|name, _| config.get(name).is_some());
    for def in &config.traits {
        let slot = state.archive.remove(&def.name);
        let mut archive = slot
            .filter(|a| archive_fits(a, &def.kind))
            .unwrap_or_else(|| empty_archive(&def.kind));
        for fact in old.iter().filter(|f| def.reads(&f.event)) {
            absorb(&mut archive, def, fact);
        }
        prune(&mut archive, def, state.facts.first().map_or(0, |f| f.ts));
        if !archive_is_empty(&archive) {
            state.archive.insert(def.name.clone(), archive);
        }
    }
}

/// Combines the states of two profiles that merged. Facts are united (a fact both hold counts
/// once); archives add up. Commutative: `merge(a, b) == merge(b, a)`.
pub fn merge(a: &ComputedState, b: &ComputedState, config: &ComputedConfig) -> ComputedState {
    let mut by_key: BTreeMap<&str, &Fact> = BTreeMap::new();
    for f in a.facts.iter().chain(&b.facts) {
        let keep = by_key.get(f.key.as_str()).is_none_or(|cur| f.precedes(cur));
        if keep {
            by_key.insert(&f.key, f);
        }
    }
    let mut facts: Vec<Fact> = by_key.into_values().cloned().collect();
    facts.sort_by(|x, y| x.order().cmp(&y.order()));
    let mut archive = BTreeMap::new();
    for def in &config.traits {
        let pick = |s: &ComputedState| {
            s.archive
                .get(&def.name)
                .filter(|x| archive_fits(x, &def.kind))
                .cloned()
        };
        let combined = match (pick(a), pick(b)) {
            (Some(x), Some(y)) => Some(combine(x, y, def)),
            (x, y) => x.or(y),
        };
        if let Some(c) = combined {
            archive.insert(def.name.clone(), c);
        }
    }
    let mut state = ComputedState { facts, archive };
    compact(&mut state, config);
    state
}

// ------------------------------------------------------------------------------------------------
// Archive folding
// ------------------------------------------------------------------------------------------------

fn empty_archive(kind: &TraitKind) -> Archive {
    match kind {
        TraitKind::Aggregate(_) => Archive::Agg {
            days: BTreeMap::new(),
        },
        TraitKind::Last { .. } => Archive::Last {
            t: i64::MIN,
            v: Value::Null,
        },
        TraitKind::Recent { .. } => Archive::Recent { items: Vec::new() },
        TraitKind::Cart { .. } => Archive::Cart {
            lines: BTreeMap::new(),
        },
        TraitKind::LastAt { .. } => Archive::At { t: i64::MIN },
        TraitKind::Sessions { .. } => Archive::Sessions {
            closed: 0,
            last: i64::MIN,
        },
    }
}

fn archive_is_empty(archive: &Archive) -> bool {
    match archive {
        Archive::Agg { days } => days.is_empty(),
        Archive::Last { v, .. } => v.is_null(),
        Archive::Recent { items } => items.is_empty(),
        // An emptied cart still matters: it hides lines of even older facts (none remain).
        Archive::Cart { lines } => lines.is_empty(),
        Archive::At { t } | Archive::Sessions { last: t, .. } => *t == i64::MIN,
    }
}

/// Whether a stored archive still matches the trait's declaration (a changed type starts over).
fn archive_fits(archive: &Archive, kind: &TraitKind) -> bool {
    matches!(
        (archive, kind),
        (Archive::Agg { .. }, TraitKind::Aggregate(_))
            | (Archive::Last { .. }, TraitKind::Last { .. })
            | (Archive::Recent { .. }, TraitKind::Recent { .. })
            | (Archive::Cart { .. }, TraitKind::Cart { .. })
            | (Archive::At { .. }, TraitKind::LastAt { .. })
            | (Archive::Sessions { .. }, TraitKind::Sessions { .. })
    )
}

fn absorb(archive: &mut Archive, def: &TraitDef, fact: &Fact) {
    match (archive, &def.kind) {
        (Archive::Agg { days }, TraitKind::Aggregate(agg)) => {
            let day = agg.window_ms.map_or(0, |_| fact.ts.div_euclid(DAY_MS));
            let mut one = Bucket::default();
            contribute(&mut one, agg, fact);
            days.entry(day).or_default().add(&one);
        }
        (Archive::Last { t, v }, TraitKind::Last { property, .. }) => {
            if let Some(value) = fact.props.get(property).filter(|x| !x.is_null()) {
                if (fact.ts, value.to_string()) >= (*t, v.to_string()) {
                    *t = fact.ts;
                    *v = value.clone();
                }
            }
        }
        (
            Archive::Recent { items },
            TraitKind::Recent {
                property, limit, ..
            },
        ) => {
            items.extend(values_at(&fact.props, property).map(|v| (fact.ts, v.clone())));
            *items = newest_distinct_owned(items, *limit);
        }
        (Archive::Cart { lines }, TraitKind::Cart { limit }) => cart_step(lines, fact, *limit),
        (Archive::At { t }, TraitKind::LastAt { .. }) => *t = (*t).max(fact.ts),
        (Archive::Sessions { closed, last }, TraitKind::Sessions { gap_ms }) => {
            if *last != i64::MIN && fact.ts - *last > *gap_ms {
                *closed += 1;
            }
            *last = (*last).max(fact.ts);
        }
        _ => {}
    }
}

/// Drops day buckets no window can reach any more (relative to the oldest held fact, which is
/// never after `now`).
fn prune(archive: &mut Archive, def: &TraitDef, oldest_fact_ms: i64) {
    if let (Archive::Agg { days }, TraitKind::Aggregate(agg)) = (archive, &def.kind) {
        if let Some(window) = agg.window_ms {
            let first_day = (oldest_fact_ms - window).div_euclid(DAY_MS) - 1;
            days.retain(|day, _| *day >= first_day);
        }
    }
}

fn combine(x: Archive, y: Archive, def: &TraitDef) -> Archive {
    match (x, y) {
        (Archive::Agg { mut days }, Archive::Agg { days: other }) => {
            for (day, bucket) in other {
                days.entry(day).or_default().add(&bucket);
            }
            Archive::Agg { days }
        }
        (Archive::Last { t, v }, Archive::Last { t: t2, v: v2 }) => {
            if (t2, v2.to_string()) > (t, v.to_string()) {
                Archive::Last { t: t2, v: v2 }
            } else {
                Archive::Last { t, v }
            }
        }
        (Archive::Recent { mut items }, Archive::Recent { items: other }) => {
            let limit = match def.kind {
                TraitKind::Recent { limit, .. } => limit,
                _ => MAX_LIST_LIMIT,
            };
            items.extend(other);
            Archive::Recent {
                items: newest_distinct_owned(&items, limit),
            }
        }
        (Archive::Cart { mut lines }, Archive::Cart { lines: other }) => {
            for (id, line) in other {
                let keep = lines
                    .get(&id)
                    .is_none_or(|cur| (line.ts, line.quantity) > (cur.ts, cur.quantity));
                if keep {
                    lines.insert(id, line);
                }
            }
            Archive::Cart { lines }
        }
        (Archive::At { t }, Archive::At { t: t2 }) => Archive::At { t: t.max(t2) },
        (
            Archive::Sessions { closed, last },
            Archive::Sessions {
                closed: c2,
                last: l2,
            },
        ) => Archive::Sessions {
            // Each side's open session ends somewhere: count one of them as closed.
            closed: closed + c2 + 1,
            last: last.max(l2),
        },
        (x, _) => x,
    }
}

// ------------------------------------------------------------------------------------------------
// Values
// ------------------------------------------------------------------------------------------------

/// The computed traits of a state at `now_ms`, by name, in declaration order of the config.
/// A trait with nothing to report is `null` (averages and shares without events, `last_at`
/// without a matching event); counts and sums start at 0, lists at `[]`.
pub fn values(state: &ComputedState, config: &ComputedConfig, now_ms: i64) -> Map<String, Value> {
    let mut out = Map::new();
    for def in &config.traits {
        let archive = state
            .archive
            .get(&def.name)
            .filter(|a| archive_fits(a, &def.kind));
        let facts = state.facts.iter().filter(|f| def.reads(&f.event));
        out.insert(def.name.clone(), value_of(def, archive, facts, now_ms));
    }
    out
}

fn value_of<'a>(
    def: &TraitDef,
    archive: Option<&'a Archive>,
    facts: impl Iterator<Item = &'a Fact>,
    now_ms: i64,
) -> Value {
    let empty = empty_archive(&def.kind);
    match (archive.unwrap_or(&empty), &def.kind) {
        (Archive::Agg { days }, TraitKind::Aggregate(agg)) => {
            let since = agg.window_ms.map(|w| now_ms - w);
            let first_day = since.map_or(i64::MIN, |s| s.div_euclid(DAY_MS));
            let mut total = Bucket::default();
            for bucket in days.range(first_day..).map(|(_, b)| b) {
                total.add(bucket);
            }
            for fact in facts.filter(|f| since.is_none_or(|s| f.ts >= s)) {
                contribute(&mut total, agg, fact);
            }
            aggregate_value(agg.op, &total)
        }
        (Archive::Last { t, v }, TraitKind::Last { property, .. }) => {
            let mut latest: (i64, &Value) = (*t, v);
            for fact in facts {
                if let Some(value) = fact.props.get(property).filter(|x| !x.is_null()) {
                    if fact.ts >= latest.0 {
                        latest = (fact.ts, value);
                    }
                }
            }
            latest.1.clone()
        }
        (
            Archive::Recent { items },
            TraitKind::Recent {
                property, limit, ..
            },
        ) => {
            let mut all: Vec<(i64, &Value)> = items.iter().map(|(t, v)| (*t, v)).collect();
            for fact in facts {
                all.extend(values_at(&fact.props, property).map(|v| (fact.ts, v)));
            }
            Value::Array(
                newest_distinct(all, *limit)
                    .into_iter()
                    .map(|(_, v)| v.clone())
                    .collect(),
            )
        }
        (Archive::Cart { lines }, TraitKind::Cart { limit }) => {
            let mut lines = lines.clone();
            for fact in facts {
                cart_step(&mut lines, fact, *limit);
            }
            cart_value(lines)
        }
        (Archive::At { t }, TraitKind::LastAt { as_days, .. }) => {
            let latest = facts.map(|f| f.ts).fold(*t, i64::max);
            match (latest, as_days) {
                (i64::MIN, _) => Value::Null,
                (t, true) => Value::from((now_ms - t).max(0).div_euclid(DAY_MS)),
                (t, false) => Value::from(format_iso8601(t)),
            }
        }
        (Archive::Sessions { closed, last }, TraitKind::Sessions { gap_ms }) => {
            let mut count = closed + u64::from(*last != i64::MIN);
            let mut prev = *last;
            for fact in facts {
                if prev == i64::MIN || fact.ts - prev > *gap_ms {
                    count += 1;
                }
                prev = prev.max(fact.ts);
            }
            Value::from(count)
        }
        _ => Value::Null,
    }
}

fn contribute(bucket: &mut Bucket, agg: &Aggregate, fact: &Fact) {
    if agg.subtract.contains(&fact.event) {
        // A refund or cancellation takes its amount back; it is not one more event.
        if let Some(x) = agg
            .properties
            .iter()
            .find_map(|p| fact.props.get(p).and_then(number))
        {
            bucket.sum -= x;
        }
        return;
    }
    bucket.n += 1;
    match agg.op {
        AggregateOp::Sum | AggregateOp::Average => {
            if let Some(x) = agg
                .properties
                .iter()
                .find_map(|p| fact.props.get(p).and_then(number))
            {
                bucket.sum += x;
                bucket.summed += 1;
            }
        }
        AggregateOp::Share => {
            if agg
                .when
                .iter()
                .any(|p| fact.props.get(p).is_some_and(truthy))
            {
                bucket.hits += 1;
            }
        }
        AggregateOp::Tally { .. } => {
            for path in &agg.properties {
                for v in values_at(&fact.props, path).filter_map(scalar_text) {
                    *bucket.tally.entry(v).or_default() += 1;
                }
            }
            cap_tally(&mut bucket.tally, MAX_TALLY_VALUES);
        }
        AggregateOp::Count => {}
    }
}

fn aggregate_value(op: AggregateOp, total: &Bucket) -> Value {
    match op {
        AggregateOp::Count => Value::from(total.n),
        AggregateOp::Sum => rounded(total.sum, 2),
        AggregateOp::Average if total.summed > 0 => rounded(total.sum / total.summed as f64, 2),
        AggregateOp::Share if total.n > 0 => rounded(total.hits as f64 / total.n as f64, 4),
        AggregateOp::Average | AggregateOp::Share => Value::Null,
        AggregateOp::Tally { limit } => {
            let mut tally = total.tally.clone();
            cap_tally(&mut tally, limit);
            Value::Object(
                tally
                    .into_iter()
                    .map(|(k, v)| (k, Value::from(v)))
                    .collect(),
            )
        }
    }
}

/// Keeps the `limit` largest counts (ties: the smaller value wins).
fn cap_tally(tally: &mut BTreeMap<String, u64>, limit: usize) {
    if tally.len() <= limit {
        return;
    }
    let mut ranked: Vec<(String, u64)> = std::mem::take(tally).into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    tally.extend(ranked);
}

/// Rounds to `places` decimals so float summation order never shows in a value.
fn rounded(x: f64, places: i32) -> Value {
    let f = 10f64.powi(places);
    Number::from_f64((x * f).round() / f).map_or(Value::Null, Value::Number)
}

fn cart_step(lines: &mut BTreeMap<String, CartLine>, fact: &Fact, limit: usize) {
    let product = || {
        fact.props
            .get("product_id")
            .and_then(scalar_text)
            .or_else(|| fact.props.get("sku").and_then(scalar_text))
    };
    let quantity = fact
        .props
        .get("quantity")
        .and_then(number)
        .map(|q| (q.round() as i64).clamp(0, MAX_CART_QUANTITY));
    match fact.event.as_str() {
        PRODUCT_ADDED => {
            let Some(id) = product() else { return };
            let line = lines.entry(id).or_insert_with(|| CartLine {
                quantity: 0,
                ts: fact.ts,
                props: Map::new(),
            });
            line.quantity = (line.quantity + quantity.unwrap_or(1)).min(MAX_CART_QUANTITY);
            for key in ["price", "name", "category"] {
                if let Some(v) = fact.props.get(key) {
                    line.props.insert(key.to_owned(), v.clone());
                }
            }
            if line.quantity <= 0 {
                lines.retain(|_, l| l.quantity > 0);
            }
            while lines.len() > limit {
                // Drop the line added longest ago.
                let oldest = lines
                    .iter()
                    .min_by(|a, b| (a.1.ts, a.0).cmp(&(b.1.ts, b.0)))
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    lines.remove(&k);
                }
            }
        }
        PRODUCT_REMOVED => {
            let Some(id) = product() else { return };
            let remove = match (lines.get_mut(&id), quantity) {
                (Some(line), Some(q)) => {
                    line.quantity -= q;
                    line.quantity <= 0
                }
                (Some(_), None) => true,
                (None, _) => false,
            };
            if remove {
                lines.remove(&id);
            }
        }
        ORDER_COMPLETED => lines.clear(),
        _ => {}
    }
}

fn cart_value(lines: BTreeMap<String, CartLine>) -> Value {
    let mut ordered: Vec<(String, CartLine)> = lines.into_iter().collect();
    ordered.sort_by(|a, b| (a.1.ts, &a.0).cmp(&(b.1.ts, &b.0)));
    Value::Array(
        ordered
            .into_iter()
            .map(|(id, line)| {
                let mut item = line.props;
                item.insert("product_id".into(), Value::from(id));
                item.insert("quantity".into(), Value::from(line.quantity));
                Value::Object(item)
            })
            .collect(),
    )
}

/// Distinct values, each at its newest time, newest first (ties by value), at most `limit`.
fn newest_distinct(mut items: Vec<(i64, &Value)>, limit: usize) -> Vec<(i64, &Value)> {
    // Values are only rendered to text to break ties between equal times.
    items.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.to_string().cmp(&b.1.to_string()))
    });
    let mut out: Vec<(i64, &Value)> = Vec::with_capacity(limit.min(items.len()));
    for (t, v) in items {
        if out.len() >= limit {
            break;
        }
        if !out.iter().any(|(_, seen)| *seen == v) {
            out.push((t, v));
        }
    }
    out
}

/// [`newest_distinct`] of owned items.
fn newest_distinct_owned(items: &[(i64, Value)], limit: usize) -> Vec<(i64, Value)> {
    newest_distinct(items.iter().map(|(t, v)| (*t, v)).collect(), limit)
        .into_iter()
        .map(|(t, v)| (t, v.clone()))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Property access
// ------------------------------------------------------------------------------------------------

/// The value at `path` in `properties`; a `[]` segment collects from every element (at most
/// [`MAX_PATH_VALUES`]) into an array. `Null` when absent.
pub fn extract(properties: &Map<String, Value>, path: &str) -> Value {
    fn walk<'a>(value: &'a Value, segments: &[&str], out: &mut Vec<&'a Value>) {
        let Some((first, rest)) = segments.split_first() else {
            if !value.is_null() && out.len() < MAX_PATH_VALUES {
                out.push(value);
            }
            return;
        };
        let (name, each) = match first.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*first, false),
        };
        let Some(next) = value.get(name) else { return };
        if each {
            for item in next.as_array().into_iter().flatten() {
                walk(item, rest, out);
            }
        } else {
            walk(next, rest, out);
        }
    }
    let segments: Vec<&str> = path.split('.').collect();
    let mut found = Vec::new();
    let root = Value::Object(properties.clone());
    walk(&root, &segments, &mut found);
    if path.contains("[]") {
        if found.is_empty() {
            Value::Null
        } else {
            Value::Array(found.into_iter().cloned().collect())
        }
    } else {
        found.first().map_or(Value::Null, |v| (*v).clone())
    }
}

/// The values a fact holds for `path`: the elements for `[]` paths, else the one value.
fn values_at<'a>(props: &'a Map<String, Value>, path: &str) -> impl Iterator<Item = &'a Value> {
    let held = props.get(path);
    let many = path.contains("[]");
    let list: Vec<&Value> = match held {
        Some(Value::Array(items)) if many => items.iter().collect(),
        Some(v) if !v.is_null() => vec![v],
        _ => Vec::new(),
    };
    list.into_iter()
}

/// A number, or a string holding one (some shops send prices as strings).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// Strings and numbers as text (IDs arrive as either).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Present: not null, not an empty (or blank) string, list or object (`exists` in segment rules).
pub fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// `true`, a non-zero number, a non-empty string/array/object.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// First 16 hex digits of SHA-256: short, stable fact keys (collisions need ~2^32 facts).
fn short_hash(text: &str) -> String {
    let mut hex = crate::identity::sha256_hex(text.as_bytes());
    hex.truncate(16);
    hex
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope};
    use proptest::prelude::*;
    use serde_json::json;

    /// 2026-01-01T00:00:00Z.
    pub(crate) const T0: i64 = 1_767_225_600_000;
    const HOUR: i64 = 3_600_000;

    pub(crate) fn shipped_config() -> ComputedConfig {
        let text = include_str!("../../../../config/computed-traits.json");
        ComputedConfig::from_json(&serde_json::from_str(text).unwrap()).unwrap()
    }

    /// A track event `name` at `T0 + at_ms` with `properties`.
    pub(crate) fn track(id: &str, name: &str, at_ms: i64, properties: Value) -> Event {
        let raw = json!({"type": "track", "event": name, "anonymousId": "a1", "messageId": id,
            "timestamp": format_iso8601(T0 + at_ms), "properties": properties});
        validate(
            raw,
            10,
            &Envelope {
                received_at_ms: T0,
                ..Envelope::default()
            },
            String::new,
        )
        .unwrap()
    }

    fn page(id: &str, at_ms: i64) -> Event {
        let raw = json!({"type": "page", "anonymousId": "a1", "messageId": id,
            "timestamp": format_iso8601(T0 + at_ms)});
        validate(raw, 10, &Envelope::default(), String::new).unwrap()
    }

    fn state_of(events: &[Event], config: &ComputedConfig) -> ComputedState {
        let mut state = ComputedState::default();
        for e in events {
            apply(&mut state, e, config);
        }
        state
    }

    fn order(id: &str, order_id: &str, at_ms: i64, extra: Value) -> Event {
        let mut props = json!({"order_id": order_id});
        props
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        track(id, "Order Completed", at_ms, props)
    }

    #[test]
    fn counts_an_order_once_per_order_id() {
        let config = shipped_config();
        let events = [
            order("m1", "o1", 0, json!({"revenue": 50})),
            // The confirmation page reloaded: a new messageId for the same order.
            order("m2", "o1", 1000, json!({"revenue": 50})),
            order("m3", "o2", 2000, json!({"total": 30.5})),
        ];
        let v = values(&state_of(&events, &config), &config, T0 + HOUR);
        assert_eq!(v["orders_count"], json!(2));
        assert_eq!(v["lifetime_value"], json!(80.5));
        assert_eq!(v["average_order_value"], json!(40.25));
    }

    #[test]
    fn refunds_and_cancellations_take_their_amount_out_of_lifetime_value_once() {
        let config = shipped_config();
        let mut events = vec![
            order("m1", "o1", 0, json!({"revenue": 100})),
            order("m2", "o2", 1000, json!({"revenue": 50})),
            order("m3", "o3", 1500, json!({"total": 20})),
            track(
                "m4",
                "Order Refunded",
                2000,
                json!({"order_id": "o1", "total": 100}),
            ),
            // The refund reported twice (a webhook retried with a new messageId): once.
            track(
                "m5",
                "Order Refunded",
                2500,
                json!({"order_id": "o1", "total": 100}),
            ),
        ];
        let v = values(&state_of(&events, &config), &config, T0 + HOUR);
        assert_eq!(v["lifetime_value"], json!(70.0));
        assert_eq!(v["orders_count"], json!(3), "orders placed stay counted");
        assert_eq!(
            v["average_order_value"],
            json!(56.67),
            "the average is of orders placed"
        );
        events.push(track(
            "m6",
            "Order Cancelled",
            3000,
            json!({"order_id": "o2", "revenue": 50}),
        ));
        // No amount: nothing to take back.
        events.push(track(
            "m7",
            "Order Refunded",
            3500,
            json!({"order_id": "o3"}),
        ));
        let v = values(&state_of(&events, &config), &config, T0 + HOUR);
        assert_eq!(v["lifetime_value"], json!(20.0));
    }

    #[test]
    fn subtracted_amounts_survive_folding_into_the_archive_and_merges() {
        let doc = json!({"horizon": 2, "traits": [{"name": "net", "type": "sum",
            "event": "Order Completed", "property": "total", "subtract": "Order Refunded"}]});
        let config = ComputedConfig::from_json(&doc).unwrap();
        let events = [
            order("m1", "o1", 0, json!({"total": 40})),
            track(
                "m2",
                "Order Refunded",
                1000,
                json!({"order_id": "o1", "total": 15}),
            ),
            order("m3", "o2", 2000, json!({"total": 10})),
            order("m4", "o3", 3000, json!({"total": 5})),
        ];
        let one = state_of(&events, &config);
        assert!(
            !one.archive.is_empty(),
            "the horizon of 2 folded the first facts"
        );
        assert_eq!(values(&one, &config, T0)["net"], json!(40.0));
        let (a, b) = (
            state_of(&events[..2], &config),
            state_of(&events[2..], &config),
        );
        assert_eq!(
            values(&merge(&a, &b, &config), &config, T0)["net"],
            json!(40.0)
        );
    }

    #[test]
    fn same_event_twice_gives_the_same_state() {
        let config = shipped_config();
        let e = track(
            "m1",
            "Product Added",
            0,
            json!({"product_id": "p1", "price": 10}),
        );
        let mut state = ComputedState::default();
        assert_eq!(apply(&mut state, &e, &config), Applied::Added);
        let once = state.clone();
        assert_eq!(apply(&mut state, &e, &config), Applied::Duplicate);
        assert_eq!(state, once);
    }

    #[test]
    fn average_and_share_are_null_without_orders_and_counts_start_at_zero() {
        let config = shipped_config();
        let v = values(&ComputedState::default(), &config, T0);
        assert_eq!(v["orders_count"], json!(0));
        assert_eq!(v["lifetime_value"], json!(0.0));
        assert_eq!(v["average_order_value"], Value::Null);
        assert_eq!(v["discount_affinity"], Value::Null);
        assert_eq!(v["days_since_last_order"], Value::Null);
        assert_eq!(v["cart"], json!([]));
        assert_eq!(v["sessions_count"], json!(0));
    }

    #[test]
    fn discount_affinity_is_the_share_of_orders_with_a_coupon_or_discount() {
        let config = shipped_config();
        let events = [
            order("m1", "o1", 0, json!({"coupon": "SAVE10"})),
            order("m2", "o2", 1, json!({"discount": 5})),
            order("m3", "o3", 2, json!({"discount": 0, "coupon": ""})),
            order("m4", "o4", 3, json!({})),
        ];
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(v["discount_affinity"], json!(0.5));
    }

    #[test]
    fn windowed_counts_ignore_events_outside_the_window() {
        let config = shipped_config();
        let events = [
            order("m1", "o1", 0, json!({})),
            order("m2", "o2", 40 * 24 * HOUR, json!({})),
        ];
        let state = state_of(&events, &config);
        let v = values(&state, &config, T0 + 45 * 24 * HOUR);
        assert_eq!(v["orders_count"], json!(2));
        assert_eq!(v["orders_last_30_days"], json!(1));
        assert_eq!(v["days_since_last_order"], json!(5));
        assert_eq!(
            v["last_order_at"],
            json!(format_iso8601(T0 + 40 * 24 * HOUR))
        );
    }

    #[test]
    fn cart_follows_added_and_removed_and_empties_on_order() {
        let config = shipped_config();
        let mut events = vec![
            track(
                "a1",
                "Product Added",
                0,
                json!({"product_id": "p1", "price": 10, "name": "Trail Runner"}),
            ),
            track(
                "a2",
                "Product Added",
                1,
                json!({"product_id": "p1", "quantity": 2}),
            ),
            track(
                "a3",
                "Product Added",
                2,
                json!({"sku": "S-2", "quantity": "1"}),
            ),
            track(
                "r1",
                "Product Removed",
                3,
                json!({"product_id": "p1", "quantity": 1}),
            ),
        ];
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(
            v["cart"],
            json!([
                {"product_id": "p1", "quantity": 2, "price": 10, "name": "Trail Runner"},
                {"product_id": "S-2", "quantity": 1}
            ])
        );
        events.push(track("r2", "Product Removed", 4, json!({"sku": "S-2"})));
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(v["cart"][0]["product_id"], json!("p1"));
        assert_eq!(v["cart"].as_array().unwrap().len(), 1);
        events.push(order("o", "o1", 5, json!({})));
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(v["cart"], json!([]));
    }

    #[test]
    fn cart_uses_event_time_not_arrival_order() {
        let config = shipped_config();
        let add = track("a1", "Product Added", 10, json!({"product_id": "p1"}));
        let done = order("o", "o1", 20, json!({}));
        let late_add = track("a2", "Product Added", 30, json!({"product_id": "p2"}));
        let forward = state_of(&[add.clone(), done.clone(), late_add.clone()], &config);
        let backward = state_of(&[late_add, done, add], &config);
        assert_eq!(forward, backward);
        assert_eq!(
            values(&forward, &config, T0)["cart"][0]["product_id"],
            json!("p2")
        );
    }

    #[test]
    fn viewed_products_are_distinct_newest_first_and_bounded() {
        let config = shipped_config();
        let mut events: Vec<Event> = (0..25)
            .map(|i| {
                track(&format!("v{i}"), "Product Viewed", i * 1000,
                    json!({"product_id": format!("p{i}"), "category": if i % 2 == 0 { "Shoes" } else { "Socks" }}))
            })
            .collect();
        events.push(track(
            "again",
            "Product Viewed",
            99_000,
            json!({"product_id": "p3", "category": "Shoes"}),
        ));
        let v = values(&state_of(&events, &config), &config, T0 + 100_000);
        let viewed = v["viewed_products"].as_array().unwrap();
        assert_eq!(viewed.len(), 20);
        assert_eq!(viewed[0], json!("p3"));
        assert_eq!(viewed[1], json!("p24"));
        assert_eq!(v["last_viewed_category"], json!("Shoes"));
        assert_eq!(v["category_views"], json!({"Shoes": 14, "Socks": 12}));
    }

    #[test]
    fn sessions_split_on_gaps_longer_than_configured() {
        let config = shipped_config();
        let events = [
            page("p1", 0),
            page("p2", 29 * 60_000),
            page("p3", 70 * 60_000),
            page("p4", 5 * HOUR),
        ];
        let v = values(&state_of(&events, &config), &config, T0 + 6 * HOUR);
        assert_eq!(v["sessions_count"], json!(3));
        assert_eq!(v["last_seen_at"], json!(format_iso8601(T0 + 5 * HOUR)));
    }

    #[test]
    fn ignores_identify_and_internal_events() {
        let config = shipped_config();
        let identify = validate(
            json!({"type": "identify", "userId": "u", "traits": {"plan": "pro"}}),
            10,
            &Envelope::default(),
            String::new,
        )
        .unwrap();
        let internal = track("s1", "Segment Entered", 0, json!({"segment": "x"}));
        let mut state = ComputedState::default();
        assert_eq!(apply(&mut state, &identify, &config), Applied::Ignored);
        assert_eq!(apply(&mut state, &internal, &config), Applied::Ignored);
        assert!(state.facts.is_empty());
    }

    /// A realistic mixed history, in time order.
    fn history(n: i64) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let at = i * 7 * 60_000 + (i / 10) * 3 * HOUR;
                let pid = format!("p{}", i % 7);
                match i % 5 {
                    0 => track(&format!("m{i}"), "Product Viewed", at, json!({"product_id": pid, "category": format!("c{}", i % 3)})),
                    1 => track(&format!("m{i}"), "Product Added", at, json!({"product_id": pid, "price": i})),
                    2 => track(&format!("m{i}"), "Product Removed", at, json!({"product_id": format!("p{}", (i + 3) % 7)})),
                    3 => order(&format!("m{i}"), &format!("o{}", i / 2), at, json!({"revenue": i as f64 * 1.5, "coupon": if i % 2 == 0 { "X" } else { "" }, "products": [{"product_id": pid}]})),
                    _ => page(&format!("m{i}"), at),
                }
            })
            .collect()
    }

    #[test]
    fn archive_keeps_values_exact_when_the_horizon_overflows() {
        let big = shipped_config();
        let small = ComputedConfig::new(4, big.dedup_by.clone(), big.traits.clone());
        let events = history(60);
        let full = state_of(&events, &big);
        let folded = state_of(&events, &small);
        assert_eq!(folded.facts.len(), 4);
        assert!(!folded.archive.is_empty());
        let now = T0 + 40 * 24 * HOUR;
        assert_eq!(values(&folded, &small, now), values(&full, &big, now));
    }

    #[test]
    fn refuses_an_event_older_than_a_full_horizon_so_retries_never_double_count() {
        let base = shipped_config();
        let config = ComputedConfig::new(3, base.dedup_by.clone(), base.traits.clone());
        let events = history(10);
        let state = state_of(&events, &config);
        let mut again = state.clone();
        for e in &events {
            assert_ne!(apply(&mut again, e, &config), Applied::Added);
        }
        assert_eq!(again, state);
        let mut late = state.clone();
        let old = order("old", "o-old", -HOUR, json!({"revenue": 1000}));
        assert_eq!(apply(&mut late, &old, &config), Applied::Late);
        assert_eq!(late, state);
    }

    #[test]
    fn merge_equals_applying_both_histories_to_one_state() {
        let config = shipped_config();
        let events = history(40);
        let (left, right): (Vec<Event>, Vec<Event>) = events
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 3 == 0)
            .into_iter_pair();
        let a = state_of(&left, &config);
        let b = state_of(&right, &config);
        let merged = merge(&a, &b, &config);
        assert_eq!(merged, state_of(&events, &config));
        assert_eq!(merged, merge(&b, &a, &config));
    }

    #[test]
    fn merge_of_folded_states_adds_up_archived_aggregates() {
        let base = shipped_config();
        let config = ComputedConfig::new(5, base.dedup_by.clone(), base.traits.clone());
        let events = history(60);
        let (left, right): (Vec<Event>, Vec<Event>) = events
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| *i < 30)
            .into_iter_pair();
        let merged = merge(
            &state_of(&left, &config),
            &state_of(&right, &config),
            &config,
        );
        let now = T0 + 40 * 24 * HOUR;
        let want = values(&state_of(&events, &base), &base, now);
        let got = values(&merged, &config, now);
        for name in [
            "orders_count",
            "lifetime_value",
            "discount_affinity",
            "last_seen_at",
            "purchased_products",
            "viewed_products",
            "category_views",
        ] {
            assert_eq!(got[name], want[name], "{name}");
        }
        assert_eq!(merged.facts.len(), 5);
    }

    trait IntoPair {
        fn into_iter_pair(self) -> (Vec<Event>, Vec<Event>);
    }
    impl IntoPair for (Vec<(usize, Event)>, Vec<(usize, Event)>) {
        fn into_iter_pair(self) -> (Vec<Event>, Vec<Event>) {
            (
                self.0.into_iter().map(|p| p.1).collect(),
                self.1.into_iter().map(|p| p.1).collect(),
            )
        }
    }

    #[test]
    fn stored_blob_round_trips_and_bad_blobs_start_empty() {
        let config = shipped_config();
        let state = state_of(&history(20), &config);
        let text = state.to_json_string();
        assert_eq!(ComputedState::from_json_str(Some(&text)), state);
        assert_eq!(
            ComputedState::from_json_str(Some("{not json")),
            ComputedState::default()
        );
        assert_eq!(ComputedState::from_json_str(None), ComputedState::default());
    }

    #[test]
    fn rejects_bad_declarations_naming_the_trait_and_field() {
        let check =
            |traits: Value| ComputedConfig::from_json(&json!({"traits": traits})).unwrap_err();
        let e = check(json!([{"name": "ltv", "type": "sum", "event": "Order Completed"}]));
        assert_eq!(
            (e.code(), e.trait_name(), e.field()),
            ("invalid_computed_field", Some("ltv"), Some("property"))
        );
        let e = check(json!([{"name": "x", "type": "median", "event": "E"}]));
        assert_eq!((e.trait_name(), e.field()), (Some("x"), Some("type")));
        let e = check(json!([{"name": "x", "type": "count", "event": "E", "windowDays": -1}]));
        assert_eq!(e.field(), Some("windowDays"));
        let e = check(json!([{"name": "x", "type": "count", "event": "E", "limit": 3}]));
        assert_eq!(e.field(), Some("limit"));
        assert!(
            e.to_string()
                .contains("trait x: limit does not apply to a count trait"),
            "{e}"
        );
        let e = check(
            json!([{"name": "aov", "type": "average", "event": "E", "property": "total", "subtract": "R"}]),
        );
        assert_eq!((e.trait_name(), e.field()), (Some("aov"), Some("subtract")));
        let e = check(
            json!([{"name": "net", "type": "sum", "event": ["E", "R"], "property": "total", "subtract": "R"}]),
        );
        assert!(
            e.to_string()
                .starts_with("computed traits: trait net: subtract \"R\" is also in event"),
            "{e}"
        );
        let e = check(json!([{"name": "x", "type": "count", "evnt": "E"}]));
        assert_eq!(
            (e.code(), e.field()),
            ("unknown_computed_field", Some("evnt"))
        );
        let e = check(json!([{"name": "has space", "type": "count", "event": "E"}]));
        assert_eq!((e.trait_name(), e.field()), (None, Some("traits[0].name")));
        let e = check(json!([{"name": "x", "type": "recent", "event": "E", "property": "a[0]"}]));
        assert_eq!(e.field(), Some("property"));
        let e = check(
            json!([{"name": "x", "type": "count", "event": "E"}, {"name": "x", "type": "count", "event": "F"}]),
        );
        assert_eq!(e.code(), "duplicate_computed_trait");
        let e = ComputedConfig::from_json(&json!({"traits": [], "horizon": 0})).unwrap_err();
        assert_eq!(e.field(), Some("horizon"));
        let e = ComputedConfig::from_json(&json!([1])).unwrap_err();
        assert_eq!(e.code(), "invalid_computed_config");
    }

    #[test]
    fn extracts_nested_and_every_element_paths() {
        let props = json!({"products": [{"product_id": "a"}, {"sku": "b"}, {"product_id": 7}], "a": {"b": 1}});
        let props = props.as_object().unwrap();
        assert_eq!(extract(props, "products[].product_id"), json!(["a", 7]));
        assert_eq!(extract(props, "a.b"), json!(1));
        assert_eq!(extract(props, "missing[].x"), Value::Null);
    }

    proptest! {
        #[test]
        fn any_arrival_order_with_retries_gives_the_same_state(
            picks in proptest::collection::vec(0usize..30, 0..60),
            seed in any::<u64>(),
        ) {
            let config = shipped_config();
            let events = history(30);
            let chosen: Vec<&Event> = picks.iter().map(|i| &events[*i]).collect();
            let mut distinct: Vec<&Event> = chosen.clone();
            distinct.sort_by_key(|e| e.message_id.clone());
            distinct.dedup_by_key(|e| e.message_id.clone());
            let mut shuffled = chosen.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut a = ComputedState::default();
            for e in &shuffled { apply(&mut a, e, &config); }
            let mut b = ComputedState::default();
            for e in &distinct { apply(&mut b, e, &config); }
            prop_assert_eq!(a, b);
        }

        #[test]
        fn merging_any_split_equals_one_profile_and_commutes(sides in proptest::collection::vec(any::<bool>(), 30)) {
            let config = shipped_config();
            let events = history(30);
            let (mut a, mut b) = (ComputedState::default(), ComputedState::default());
            for (e, left) in events.iter().zip(&sides) {
                apply(if *left { &mut a } else { &mut b }, e, &config);
            }
            let merged = merge(&a, &b, &config);
            prop_assert_eq!(&merged, &merge(&b, &a, &config));
            prop_assert_eq!(merged, state_of(&events, &config));
        }

        #[test]
        fn reapplying_any_events_after_overflow_changes_nothing(
            n in 1i64..40, horizon in 1usize..8, replays in proptest::collection::vec(0usize..40, 0..20),
        ) {
            let base = shipped_config();
            let config = ComputedConfig::new(horizon, base.dedup_by.clone(), base.traits.clone());
            let events = history(n);
            let mut state = ComputedState::default();
            for e in &events { apply(&mut state, e, &config); }
            let before = state.clone();
            for r in replays {
                let e = &events[r % events.len()];
                prop_assert_ne!(apply(&mut state, e, &config), Applied::Added);
            }
            prop_assert_eq!(state, before);
        }
    }
}
