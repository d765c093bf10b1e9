//! The computed-traits document (format in `docs/personalisation.md`), validated once into a
//! [`ComputedConfig`]: a mistake names the trait and field instead of silently computing
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    CART_PROPERTIES, DEFAULT_HORIZON, MAX_HORIZON, MAX_LIST_LIMIT, MAX_TRAITS, MINUTE_MS,
    ORDER_COMPLETED, PRODUCT_ADDED, PRODUCT_REMOVED,
};
use crate::format::time::DAY_MS;

/// A mistake in the computed-traits configuration. Each variant has a stable
/// [`ComputedConfigError::code`] and names the trait (when there is one) and the field.
#[allow(missing_docs)] // the fields say what they hold
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
        field: String,
    },
    /// A field has the wrong type or value.
    #[error("computed traits: {}{field} {problem}", trait_prefix(.name))]
    Invalid {
        /// The trait, when the field is inside a declaration.
        name: Option<String>,
        /// The field, e.g. `windowDays` or `traits[3].name`.
        field: String,
        problem: String,
    },
    /// Two declarations share a name.
    #[error("computed traits: trait {name} is declared more than once")]
    DuplicateName { name: String },
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
    /// Fact names it reads (track event names, [`PAGE_FACT`](super::PAGE_FACT),
    /// [`SCREEN_FACT`](super::SCREEN_FACT)).
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
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct TraitDef {
    pub name: String,
    pub kind: TraitKind,
}

impl TraitDef {
    pub(super) fn reads(&self, fact: &str) -> bool {
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

    pub(super) fn paths_for(&self, fact: &str) -> impl Iterator<Item = &String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
