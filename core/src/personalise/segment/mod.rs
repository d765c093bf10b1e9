//! Segments (audiences): a small declarative JSON rule language over traits, computed traits and
//! event counts in time windows, validated once when loaded, evaluated per event (or at decision
//! time) with `now` passed in, and diffed against stored memberships into entered/exited
//! transitions and the internal `Segment Entered` / `Segment Exited` events.
//!
//! ```json
//! {"segments": [
//!   {"name": "high_value", "rule": {"gt": [{"computed": "lifetime_value"}, 500]}},
//!   {"name": "interested_in", "forEach": {"computed": "category_views"},
//!    "rule": {"gte": [{"each": "value"}, 3]}}
//! ]}
//! ```
//!
//! Rules: `and`/`or` (lists), `not`, `eq` `ne` `gt` `gte` `lt` `lte` (`[a, b]`), `in`
//! (`[a, list]`), `exists` (present and not null/empty), `within_days` / `within_hours` /
//! `within_minutes` (`[time, n]`: the time is at most n units before `now`). Operands:
//! `{"trait": "address.city"}`, `{"computed": "orders_count"}`,
//! `{"count": {"event": "Order Completed", "within_hours": 1}}`, `{"each": "key"|"value"}`
//! (in `forEach` segments), `{"value": <any>}`, or a plain JSON literal.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::collect::event::Event;
use crate::format::time::{format_iso8601, parse_iso8601};
use crate::personalise::computed::{scalar_text, valid_name, ComputedConfig, ComputedState};
use crate::plan::{multi_row, Param, Statement};

/// Deepest rule nesting accepted.
pub const MAX_DEPTH: usize = 8;
/// Most nodes (rules and operands) in one segment's rule.
pub const MAX_NODES: usize = 100;
/// Most segments one configuration may declare.
pub const MAX_SEGMENTS: usize = 200;
/// Most memberships one `forEach` segment yields per profile.
pub const MAX_EACH: usize = 20;
/// Exited membership records kept per profile (oldest exits dropped first).
pub const MAX_EXITED: usize = 100;
/// Name of the internal event emitted on entering a segment.
pub const SEGMENT_ENTERED: &str = "Segment Entered";
/// Name of the internal event emitted on leaving a segment.
pub const SEGMENT_EXITED: &str = "Segment Exited";

const MINUTE_MS: f64 = 60_000.0;

/// A mistake in the segments configuration: names the segment (when known) and the field, as a
/// path inside the declaration (`rule.and[1].gt[0]`). Stable [`SegmentConfigError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentConfigError {
    /// The document is not `{"segments": [...]}`.
    #[error("segments: {0}")]
    Malformed(String),
    /// A field or operator that does not exist.
    #[error("segments: {}unknown {field}", segment_prefix(.segment))]
    Unknown {
        /// The segment.
        segment: Option<String>,
        /// Path of the field.
        field: String,
    },
    /// A field has the wrong shape or value.
    #[error("segments: {}{field} {problem}", segment_prefix(.segment))]
    Invalid {
        /// The segment.
        segment: Option<String>,
        /// Path of the field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The rule nests deeper than [`MAX_DEPTH`] or has more than [`MAX_NODES`] nodes.
    #[error("segments: segment {segment}: {field} makes the rule too large (depth {MAX_DEPTH}, {MAX_NODES} nodes at most)")]
    TooComplex {
        /// The segment.
        segment: String,
        /// Path where the limit was hit.
        field: String,
    },
    /// Two segments share a name.
    #[error("segments: segment {segment} is declared more than once")]
    DuplicateName {
        /// The repeated name.
        segment: String,
    },
}

fn segment_prefix(segment: &Option<String>) -> String {
    crate::personalise::computed::named_prefix("segment", segment)
}

impl SegmentConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "invalid_segments_config",
            Self::Unknown { .. } => "unknown_segment_field",
            Self::Invalid { .. } => "invalid_segment_rule",
            Self::TooComplex { .. } => "segment_rule_too_complex",
            Self::DuplicateName { .. } => "duplicate_segment",
        }
    }

    /// The segment the error is about, when known.
    pub fn segment(&self) -> Option<&str> {
        match self {
            Self::Malformed(_) => None,
            Self::Unknown { segment, .. } | Self::Invalid { segment, .. } => segment.as_deref(),
            Self::TooComplex { segment, .. } | Self::DuplicateName { segment } => Some(segment),
        }
    }

    /// Path of the offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Unknown { field, .. }
            | Self::Invalid { field, .. }
            | Self::TooComplex { field, .. } => Some(field),
            Self::Malformed(_) | Self::DuplicateName { .. } => None,
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// All hold (true when empty).
    And(Vec<Rule>),
    /// Any holds (false when empty).
    Or(Vec<Rule>),
    /// Negation.
    Not(Box<Rule>),
    /// Ordered or equality comparison; values of different kinds never compare.
    Compare(Cmp, Operand, Operand),
    /// Left is an element of the right-hand list.
    In(Operand, Operand),
    /// Present, not null, not an empty string/list/object.
    Exists(Operand),
    /// A time (ISO-8601 or epoch ms) at most this many ms before `now`.
    Within(Operand, i64),
}

/// Where a rule reads a value from.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A literal.
    Value(Value),
    /// A profile trait, by dotted path.
    Trait(Vec<String>),
    /// A computed trait, then a dotted path inside its value.
    Computed(String, Vec<String>),
    /// Events held in the computed state named `event` (any behavioural event when `None`;
    /// page views are `$page`) within the window (the whole horizon when `None`).
    Count {
        /// Fact name (`$page` for page views).
        event: Option<String>,
        /// Window length.
        window_ms: Option<i64>,
    },
    /// The current `forEach` key.
    EachKey,
    /// The current `forEach` value.
    EachValue,
}

/// One declared segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDef {
    /// Name; `forEach` segments yield `name:<key>` memberships.
    pub name: String,
    /// For parameterised segments: a list (each element) or object (each key) to expand.
    pub for_each: Option<Operand>,
    /// The rule.
    pub rule: Rule,
}

/// A validated segments configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentSet {
    /// Segments in file order.
    pub segments: Vec<SegmentDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSegments {
    #[serde(default)]
    segments: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSegment {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    description: Option<Value>,
    #[serde(default)]
    for_each: Option<Value>,
    #[serde(default)]
    rule: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// Validation context for one segment.
struct Parser<'a> {
    segment: &'a str,
    computed: Option<&'a ComputedConfig>,
    each_allowed: bool,
    nodes: usize,
}

impl Parser<'_> {
    fn invalid(&self, field: &str, problem: impl Into<String>) -> SegmentConfigError {
        SegmentConfigError::Invalid {
            segment: Some(self.segment.to_owned()),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    fn count_node(&mut self, field: &str, depth: usize) -> Result<(), SegmentConfigError> {
        self.nodes += 1;
        if depth > MAX_DEPTH || self.nodes > MAX_NODES {
            return Err(SegmentConfigError::TooComplex {
                segment: self.segment.to_owned(),
                field: field.to_owned(),
            });
        }
        Ok(())
    }

    fn rule(&mut self, raw: &Value, field: &str, depth: usize) -> Result<Rule, SegmentConfigError> {
        self.count_node(field, depth)?;
        let Some((op, arg)) = raw
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return Err(self.invalid(field, "must be an object with exactly one operator"));
        };
        let here = format!("{field}.{op}");
        let pair = |p: &mut Self| -> Result<(Operand, Operand), SegmentConfigError> {
            match arg.as_array().map(Vec::as_slice) {
                Some([a, b]) => Ok((
                    p.operand(a, &format!("{here}[0]"), depth + 1)?,
                    p.operand(b, &format!("{here}[1]"), depth + 1)?,
                )),
                _ => Err(p.invalid(&here, "must be a list of two operands")),
            }
        };
        let cmp = match op.as_str() {
            "eq" => Some(Cmp::Eq),
            "ne" => Some(Cmp::Ne),
            "gt" => Some(Cmp::Gt),
            "gte" => Some(Cmp::Gte),
            "lt" => Some(Cmp::Lt),
            "lte" => Some(Cmp::Lte),
            _ => None,
        };
        if let Some(cmp) = cmp {
            let (a, b) = pair(self)?;
            return Ok(Rule::Compare(cmp, a, b));
        }
        Ok(match op.as_str() {
            "and" | "or" => {
                let items = arg
                    .as_array()
                    .ok_or_else(|| self.invalid(&here, "must be a list of rules"))?;
                let rules = items
                    .iter()
                    .enumerate()
                    .map(|(i, r)| self.rule(r, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                if op == "and" {
                    Rule::And(rules)
                } else {
                    Rule::Or(rules)
                }
            }
            "not" => Rule::Not(Box::new(self.rule(arg, &here, depth + 1)?)),
            "in" => {
                let (a, b) = pair(self)?;
                if let Operand::Value(v) = &b {
                    if !v.is_array() {
                        return Err(self.invalid(&format!("{here}[1]"), "must be a list"));
                    }
                }
                Rule::In(a, b)
            }
            "exists" => Rule::Exists(self.operand(arg, &here, depth + 1)?),
            "within_days" | "within_hours" | "within_minutes" => {
                let unit = match op.as_str() {
                    "within_days" => 1440.0 * MINUTE_MS,
                    "within_hours" => 60.0 * MINUTE_MS,
                    _ => MINUTE_MS,
                };
                match arg.as_array().map(Vec::as_slice) {
                    Some([time, n]) => {
                        let operand = self.operand(time, &format!("{here}[0]"), depth + 1)?;
                        let ms = window(n, unit).ok_or_else(|| {
                            self.invalid(&format!("{here}[1]"), "must be a positive number")
                        })?;
                        Rule::Within(operand, ms)
                    }
                    _ => return Err(self.invalid(&here, "must be [time operand, amount]")),
                }
            }
            _ => {
                return Err(SegmentConfigError::Unknown {
                    segment: Some(self.segment.to_owned()),
                    field: format!("operator {here}"),
                })
            }
        })
    }

    fn operand(
        &mut self,
        raw: &Value,
        field: &str,
        depth: usize,
    ) -> Result<Operand, SegmentConfigError> {
        self.count_node(field, depth)?;
        let Value::Object(object) = raw else {
            return Ok(Operand::Value(raw.clone()));
        };
        let Some((kind, arg)) = object.iter().next().filter(|_| object.len() == 1) else {
            return Err(self.invalid(field, "must be a literal or an object with one operand key"));
        };
        let here = format!("{field}.{kind}");
        let path = |p: &Self| -> Result<Vec<String>, SegmentConfigError> {
            arg.as_str()
                .map(|s| s.split('.').map(str::to_owned).collect::<Vec<_>>())
                .filter(|segs| segs.iter().all(|s| !s.is_empty()))
                .ok_or_else(|| p.invalid(&here, "must be a dotted name"))
        };
        Ok(match kind.as_str() {
            "value" => Operand::Value(arg.clone()),
            "trait" => Operand::Trait(path(self)?),
            "computed" => {
                let mut segs = path(self)?;
                let name = segs.remove(0);
                if let Some(config) = self.computed {
                    if config.get(&name).is_none() {
                        return Err(self
                            .invalid(&here, format!("{name:?} is not a declared computed trait")));
                    }
                }
                Operand::Computed(name, segs)
            }
            "count" => self.count(arg, &here)?,
            "each" if !self.each_allowed => {
                return Err(self.invalid(&here, "is only available in forEach segments"))
            }
            "each" => match arg.as_str() {
                Some("key") => Operand::EachKey,
                Some("value") => Operand::EachValue,
                _ => return Err(self.invalid(&here, "must be \"key\" or \"value\"")),
            },
            _ => {
                return Err(SegmentConfigError::Unknown {
                    segment: Some(self.segment.to_owned()),
                    field: format!("operand {here}"),
                })
            }
        })
    }

    fn count(&self, arg: &Value, here: &str) -> Result<Operand, SegmentConfigError> {
        let object = arg
            .as_object()
            .ok_or_else(|| self.invalid(here, "must be {\"event\": ..., \"within_days\": ...}"))?;
        let mut event = None;
        let mut window_ms = None;
        for (key, value) in object {
            let field = format!("{here}.{key}");
            match key.as_str() {
                "event" => {
                    event = Some(
                        value
                            .as_str()
                            .filter(|s| !s.trim().is_empty())
                            .ok_or_else(|| self.invalid(&field, "must be an event name"))?
                            .to_owned(),
                    );
                }
                "within_days" | "within_hours" | "within_minutes" => {
                    if window_ms.is_some() {
                        return Err(self.invalid(&field, "only one window may be given"));
                    }
                    let unit = match key.as_str() {
                        "within_days" => 1440.0 * MINUTE_MS,
                        "within_hours" => 60.0 * MINUTE_MS,
                        _ => MINUTE_MS,
                    };
                    window_ms = Some(
                        window(value, unit)
                            .ok_or_else(|| self.invalid(&field, "must be a positive number"))?,
                    );
                }
                _ => {
                    return Err(SegmentConfigError::Unknown {
                        segment: Some(self.segment.to_owned()),
                        field,
                    })
                }
            }
        }
        Ok(Operand::Count { event, window_ms })
    }
}

fn window(n: &Value, unit_ms: f64) -> Option<i64> {
    n.as_f64()
        .filter(|x| *x > 0.0 && *x <= 3650.0 * 1440.0)
        .map(|x| (x * unit_ms).round() as i64)
}

impl SegmentSet {
    /// Parses and validates `{"segments": [...]}`. With `computed`, every `computed` operand
    /// must name a declared trait.
    pub fn from_json(
        config: &Value,
        computed: Option<&ComputedConfig>,
    ) -> Result<Self, SegmentConfigError> {
        let raw = RawSegments::deserialize(config).map_err(|_| {
            SegmentConfigError::Malformed("the configuration must be a JSON object".into())
        })?;
        if let Some(field) = raw.unknown.keys().next() {
            return Err(SegmentConfigError::Unknown {
                segment: None,
                field: field.clone(),
            });
        }
        let Some(Value::Array(list)) = &raw.segments else {
            return Err(SegmentConfigError::Malformed(
                "segments must be a list".into(),
            ));
        };
        if list.len() > MAX_SEGMENTS {
            return Err(SegmentConfigError::Malformed(format!(
                "at most {MAX_SEGMENTS} segments"
            )));
        }
        let mut segments: Vec<SegmentDef> = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let def = parse_segment(i, item, computed)?;
            if segments.iter().any(|s| s.name == def.name) {
                return Err(SegmentConfigError::DuplicateName { segment: def.name });
            }
            segments.push(def);
        }
        Ok(Self { segments })
    }
}

fn parse_segment(
    index: usize,
    item: &Value,
    computed: Option<&ComputedConfig>,
) -> Result<SegmentDef, SegmentConfigError> {
    let raw = RawSegment::deserialize(item).map_err(|_| SegmentConfigError::Invalid {
        segment: None,
        field: format!("segments[{index}]"),
        problem: "must be an object".into(),
    })?;
    let name = raw
        .name
        .as_ref()
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .ok_or_else(|| SegmentConfigError::Invalid {
            segment: None,
            field: format!("segments[{index}].name"),
            problem: "must be a name of letters, digits, '_' or '-' (at most 64)".into(),
        })?
        .to_owned();
    let mut parser = Parser {
        segment: &name,
        computed,
        each_allowed: false,
        nodes: 0,
    };
    if let Some(field) = raw.unknown.keys().next() {
        return Err(SegmentConfigError::Unknown {
            segment: Some(name.clone()),
            field: field.clone(),
        });
    }
    if raw.description.as_ref().is_some_and(|d| !d.is_string()) {
        return Err(parser.invalid("description", "must be a string"));
    }
    let for_each = match &raw.for_each {
        None | Some(Value::Null) => None,
        Some(v) => {
            let operand = parser.operand(v, "forEach", 1)?;
            if matches!(operand, Operand::Value(_) | Operand::Count { .. }) {
                return Err(parser.invalid("forEach", "must be a trait or computed trait"));
            }
            parser.each_allowed = true;
            Some(operand)
        }
    };
    let rule = match &raw.rule {
        Some(r) if !r.is_null() => parser.rule(r, "rule", 1)?,
        _ => return Err(parser.invalid("rule", "is required")),
    };
    Ok(SegmentDef {
        name,
        for_each,
        rule,
    })
}

// ------------------------------------------------------------------------------------------------
// Evaluation
// ------------------------------------------------------------------------------------------------

/// What a rule can read about one profile.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Folded profile traits.
    pub traits: &'a Map<String, Value>,
    /// Computed trait values ([`crate::personalise::computed::values`] at the same `now`).
    pub computed: &'a Map<String, Value>,
    /// The computed state, for event counts.
    pub state: &'a ComputedState,
}

type Each<'a> = Option<(&'a str, &'a Value)>;

/// The memberships `subject` qualifies for at `now_ms` (`forEach` segments as `name:<key>`).
pub fn evaluate(set: &SegmentSet, subject: &Subject<'_>, now_ms: i64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for def in &set.segments {
        match &def.for_each {
            None => {
                if holds(&def.rule, subject, now_ms, None) {
                    out.insert(def.name.clone());
                }
            }
            Some(source) => {
                let items = resolve(source, subject, now_ms, None);
                let pairs: Vec<(String, Value)> = match items.as_ref() {
                    Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    Value::Array(list) => list
                        .iter()
                        .filter_map(|v| scalar_text(v).map(|k| (k, v.clone())))
                        .collect(),
                    _ => Vec::new(),
                };
                for (key, value) in pairs.iter().take(MAX_EACH) {
                    if holds(&def.rule, subject, now_ms, Some((key, value))) {
                        out.insert(format!("{}:{key}", def.name));
                    }
                }
            }
        }
    }
    out
}

fn holds(rule: &Rule, s: &Subject<'_>, now: i64, each: Each<'_>) -> bool {
    match rule {
        Rule::And(rules) => rules.iter().all(|r| holds(r, s, now, each)),
        Rule::Or(rules) => rules.iter().any(|r| holds(r, s, now, each)),
        Rule::Not(r) => !holds(r, s, now, each),
        Rule::Compare(cmp, a, b) => {
            let (a, b) = (resolve(a, s, now, each), resolve(b, s, now, each));
            compare(*cmp, &a, &b)
        }
        Rule::In(a, b) => {
            let (a, b) = (resolve(a, s, now, each), resolve(b, s, now, each));
            !a.is_null()
                && b.as_array()
                    .is_some_and(|list| list.iter().any(|x| equal(&a, x)))
        }
        Rule::Exists(a) => crate::personalise::computed::is_present(&resolve(a, s, now, each)),
        Rule::Within(a, window) => {
            let value = resolve(a, s, now, each);
            time_of(value.as_ref()).is_some_and(|t| t >= now.saturating_sub(*window))
        }
    }
}

fn resolve<'a>(op: &'a Operand, s: &Subject<'a>, now: i64, each: Each<'a>) -> Cow<'a, Value> {
    let walk = |root: Option<&'a Value>, path: &[String]| -> Cow<'a, Value> {
        let found = root.and_then(|r| path.iter().try_fold(r, |v, seg| v.get(seg)));
        Cow::Borrowed(found.unwrap_or(&Value::Null))
    };
    match op {
        Operand::Value(v) => Cow::Borrowed(v),
        Operand::Trait(path) => match path.split_first() {
            Some((first, rest)) => walk(s.traits.get(first), rest),
            None => Cow::Owned(Value::Null),
        },
        Operand::Computed(name, rest) => walk(s.computed.get(name), rest),
        Operand::Count { event, window_ms } => {
            let since = window_ms.map_or(i64::MIN, |w| now.saturating_sub(w));
            Cow::Owned(Value::from(s.state.count_since(event.as_deref(), since)))
        }
        Operand::EachKey => {
            each.map_or(Cow::Owned(Value::Null), |(k, _)| Cow::Owned(Value::from(k)))
        }
        Operand::EachValue => each.map_or(Cow::Owned(Value::Null), |(_, v)| Cow::Borrowed(v)),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn compare(cmp: Cmp, a: &Value, b: &Value) -> bool {
    let ordering = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match cmp {
        Cmp::Eq => equal(a, b),
        Cmp::Ne => !equal(a, b),
        Cmp::Gt => ordering == Some(Ordering::Greater),
        Cmp::Gte => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        Cmp::Lt => ordering == Some(Ordering::Less),
        Cmp::Lte => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
    }
}

/// What can change a segment set's verdicts while no event arrives: the time windows its rules
/// measure (`within_*`, windowed counts), the computed traits they read (whose own windows and
/// day counts move with time) and the profile-trait times they measure. See
/// [`crate::personalise::next_check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clock {
    /// Window lengths (ms) of `within_*` rules and windowed counts.
    pub windows_ms: BTreeSet<i64>,
    /// Computed traits some rule reads.
    pub computed: BTreeSet<String>,
    /// `within_*` rules over profile traits: the trait path and the window.
    pub trait_windows: Vec<(Vec<String>, i64)>,
}

impl SegmentSet {
    /// What time alone can change in these segments' verdicts.
    pub fn clock(&self) -> Clock {
        let mut clock = Clock::default();
        for def in &self.segments {
            if let Some(source) = &def.for_each {
                clock.read(source);
            }
            clock.walk(&def.rule);
        }
        clock
    }
}

impl Clock {
    fn walk(&mut self, rule: &Rule) {
        match rule {
            Rule::And(rules) | Rule::Or(rules) => rules.iter().for_each(|r| self.walk(r)),
            Rule::Not(r) => self.walk(r),
            Rule::Compare(_, a, b) | Rule::In(a, b) => {
                self.read(a);
                self.read(b);
            }
            Rule::Exists(a) => self.read(a),
            Rule::Within(a, window) => {
                self.windows_ms.insert(*window);
                if let Operand::Trait(path) = a {
                    self.trait_windows.push((path.clone(), *window));
                }
                self.read(a);
            }
        }
    }

    fn read(&mut self, operand: &Operand) {
        match operand {
            Operand::Computed(name, _) => {
                self.computed.insert(name.clone());
            }
            Operand::Count {
                window_ms: Some(window),
                ..
            } => {
                self.windows_ms.insert(*window);
            }
            _ => {}
        }
    }
}

/// The time (epoch ms) a trait value holds: ISO-8601 text or epoch milliseconds.
pub fn time_of(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => parse_iso8601(text),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------------
// Memberships
// ------------------------------------------------------------------------------------------------

/// One stored membership: current while `exited_at` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// When the profile (last) entered.
    pub entered_at: i64,
    /// When it left, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<i64>,
}

/// Segment name -> membership record, as stored on the profile.
pub type Memberships = BTreeMap<String, Membership>;

/// The segments a profile currently belongs to.
pub fn current(memberships: &Memberships) -> Vec<String> {
    memberships
        .iter()
        .filter(|(_, m)| m.exited_at.is_none())
        .map(|(name, _)| name.clone())
        .collect()
}

/// One entry into or exit from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Segment (membership) name.
    pub segment: String,
    /// Entered (`true`) or exited.
    pub entered: bool,
    /// When (`now` of the evaluation).
    pub at_ms: i64,
}

/// The result of comparing an evaluation with the stored memberships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipDiff {
    /// The memberships to store.
    pub memberships: Memberships,
    /// What changed, exits first, each group by name.
    pub transitions: Vec<Transition>,
}

impl MembershipDiff {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty()
    }
}

/// Compares the memberships `evaluated` now with `stored`: new ones enter (re-entering resets
/// `enteredAt`), missing ones exit. Idempotent: diffing the result with the same evaluation
/// changes nothing.
pub fn diff(stored: &Memberships, evaluated: &BTreeSet<String>, now_ms: i64) -> MembershipDiff {
    let mut memberships = stored.clone();
    let mut transitions = Vec::new();
    for (name, m) in memberships.iter_mut() {
        if m.exited_at.is_none() && !evaluated.contains(name) {
            m.exited_at = Some(now_ms);
            transitions.push(Transition {
                segment: name.clone(),
                entered: false,
                at_ms: now_ms,
            });
        }
    }
    for name in evaluated {
        let is_member = memberships.get(name).is_some_and(|m| m.exited_at.is_none());
        if !is_member {
            memberships.insert(
                name.clone(),
                Membership {
                    entered_at: now_ms,
                    exited_at: None,
                },
            );
            transitions.push(Transition {
                segment: name.clone(),
                entered: true,
                at_ms: now_ms,
            });
        }
    }
    // Bound the history of exits (a forEach segment over changing keys must not grow forever).
    let mut exited: Vec<(i64, String)> = memberships
        .iter()
        .filter_map(|(n, m)| m.exited_at.map(|t| (t, n.clone())))
        .collect();
    if exited.len() > MAX_EXITED {
        exited.sort();
        for (_, name) in exited.iter().take(exited.len() - MAX_EXITED) {
            memberships.remove(name);
        }
    }
    MembershipDiff {
        memberships,
        transitions,
    }
}

/// The internal `Segment Entered` / `Segment Exited` track events for `diff`, as raw events the
/// edge validates and stores like any other (so activation can read them later). They carry the
/// causing event's identifiers, and a `messageId` derived from profile, segment, direction and
/// the cause, so a retried cause emits the same IDs and the event dedup absorbs them.
pub fn transition_events(diff: &MembershipDiff, profile_id: &str, cause: &Event) -> Vec<Value> {
    let who = (cause.user_id.as_deref(), cause.anonymous_id.as_deref());
    events_for(diff, profile_id, who, Some(&cause.message_id))
}

/// The internal events of transitions that time alone caused (a window passed; the sweep found
/// them), for the profile's `user_id`/`anonymous_id`. Their `messageId` derives from profile,
/// segment, direction and the transition time; `properties.cause` is `"time"`.
pub fn timed_transition_events(
    diff: &MembershipDiff,
    profile_id: &str,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
) -> Vec<Value> {
    events_for(diff, profile_id, (user_id, anonymous_id), None)
}

fn events_for(
    diff: &MembershipDiff,
    profile_id: &str,
    (user_id, anonymous_id): (Option<&str>, Option<&str>),
    cause: Option<&str>,
) -> Vec<Value> {
    diff.transitions
        .iter()
        .map(|t| {
            let name = if t.entered {
                SEGMENT_ENTERED
            } else {
                SEGMENT_EXITED
            };
            let because = cause.map_or_else(|| format!("time {}", t.at_ms), str::to_owned);
            let id_source = format!("{profile_id}\n{}\n{name}\n{because}", t.segment);
            let mut hex = crate::identity::sha256_hex(id_source.as_bytes());
            hex.truncate(32);
            let mut event = Map::new();
            event.insert("type".into(), Value::from("track"));
            event.insert("event".into(), Value::from(name));
            event.insert("messageId".into(), Value::from(format!("seam-seg-{hex}")));
            if let Some(u) = user_id {
                event.insert("userId".into(), Value::from(u));
            }
            if let Some(a) = anonymous_id {
                event.insert("anonymousId".into(), Value::from(a));
            }
            event.insert("timestamp".into(), Value::from(format_iso8601(t.at_ms)));
            let mut properties = Map::new();
            properties.insert("segment".into(), Value::from(t.segment.clone()));
            properties.insert("profile_id".into(), Value::from(profile_id));
            match cause {
                Some(id) => properties.insert("cause_message_id".into(), Value::from(id)),
                None => properties.insert("cause".into(), Value::from("time")),
            };
            event.insert("properties".into(), Value::Object(properties));
            Value::Object(event)
        })
        .collect()
}

/// Writes for `segment_memberships` (`edge/migrations/0005_personalisation.sql`): entries
/// upsert (re-entry resets `entered_at` and clears `exited_at`), exits set `exited_at` on the
/// current row only. Nothing for an empty diff.
pub fn membership_writes(profile_id: &str, diff: &MembershipDiff) -> Vec<Statement> {
    let entered: Vec<Vec<Param>> = diff
        .transitions
        .iter()
        .filter(|t| t.entered)
        .map(|t| {
            vec![
                Param::Text(profile_id.to_owned()),
                Param::Text(t.segment.clone()),
                Param::Int(t.at_ms),
            ]
        })
        .collect();
    let mut statements = multi_row(
        "INSERT INTO segment_memberships (profile_id, segment, entered_at) VALUES ",
        " ON CONFLICT (profile_id, segment) DO UPDATE SET entered_at = excluded.entered_at, \
          exited_at = NULL WHERE segment_memberships.exited_at IS NOT NULL",
        entered,
        &[],
    );
    let exited: BTreeMap<i64, Vec<&str>> =
        diff.transitions
            .iter()
            .filter(|t| !t.entered)
            .fold(BTreeMap::new(), |mut by_time, t| {
                by_time.entry(t.at_ms).or_default().push(t.segment.as_str());
                by_time
            });
    for (at, names) in exited {
        statements.push(Statement {
            sql: "UPDATE segment_memberships SET exited_at = ?2 WHERE profile_id = ?1 \
                  AND exited_at IS NULL AND segment IN (SELECT value FROM json_each(?3))"
                .into(),
            params: vec![
                Param::Text(profile_id.to_owned()),
                Param::Int(at),
                Param::Text(serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())),
            ],
        });
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalise::computed::test_support::{shipped_config, track, T0};
    use crate::personalise::computed::{apply, values};
    use serde_json::json;

    const HOUR: i64 = 3_600_000;

    fn shipped_segments() -> SegmentSet {
        let text = include_str!("../../../../config/segments.json");
        SegmentSet::from_json(
            &serde_json::from_str(text).unwrap(),
            Some(&shipped_config()),
        )
        .unwrap()
    }

    fn one(rule: Value) -> SegmentSet {
        SegmentSet::from_json(
            &json!({"segments": [{"name": "s", "rule": rule}]}),
            Some(&shipped_config()),
        )
        .unwrap()
    }

    fn rule_error(rule: Value) -> SegmentConfigError {
        SegmentSet::from_json(
            &json!({"segments": [{"name": "s", "rule": rule}]}),
            Some(&shipped_config()),
        )
        .unwrap_err()
    }

    fn is_in(set: &SegmentSet, traits: Value, computed: Value, now: i64) -> bool {
        let state = ComputedState::default();
        let subject = Subject {
            traits: traits.as_object().unwrap(),
            computed: computed.as_object().unwrap(),
            state: &state,
        };
        evaluate(set, &subject, now).contains("s")
    }

    #[test]
    fn evaluates_comparisons_in_exists_and_boolean_operators() {
        let traits = json!({"plan": "pro", "age": 41, "address": {"city": "Utrecht"}, "blank": ""});
        let computed = json!({"lifetime_value": 620.5, "cart": [], "orders_count": 3});
        let table = [
            (json!({"gt": [{"computed": "lifetime_value"}, 500]}), true),
            (json!({"lte": [{"computed": "lifetime_value"}, 500]}), false),
            (json!({"eq": [{"computed": "orders_count"}, 3.0]}), true),
            (json!({"ne": [{"trait": "plan"}, "free"]}), true),
            (json!({"gt": [{"trait": "plan"}, 3]}), false),
            (
                json!({"in": [{"trait": "address.city"}, ["Amsterdam", "Utrecht"]]}),
                true,
            ),
            (json!({"in": [{"trait": "missing"}, [null]]}), false),
            (json!({"exists": {"trait": "age"}}), true),
            (json!({"exists": {"trait": "blank"}}), false),
            (json!({"exists": {"computed": "cart"}}), false),
            (json!({"not": {"exists": {"trait": "nope"}}}), true),
            (
                json!({"and": [{"eq": [{"trait": "plan"}, "pro"]}, {"lt": [{"trait": "age"}, 40]}]}),
                false,
            ),
            (
                json!({"or": [{"eq": [{"trait": "plan"}, "pro"]}, {"lt": [{"trait": "age"}, 40]}]}),
                true,
            ),
            (json!({"and": []}), true),
            (json!({"or": []}), false),
            (
                json!({"eq": [{"value": {"a": 1}}, {"value": {"a": 1}}]}),
                true,
            ),
        ];
        for (rule, want) in table {
            assert_eq!(
                is_in(&one(rule.clone()), traits.clone(), computed.clone(), T0),
                want,
                "{rule}"
            );
        }
    }

    #[test]
    fn within_reads_iso_and_epoch_times_against_now() {
        let computed = json!({"last_seen_at": crate::format::time::format_iso8601(T0 - 2 * HOUR)});
        let traits = json!({"signed_up": T0 - 40 * 24 * HOUR});
        let table = [
            (
                json!({"within_hours": [{"computed": "last_seen_at"}, 3]}),
                true,
            ),
            (
                json!({"within_hours": [{"computed": "last_seen_at"}, 1]}),
                false,
            ),
            (
                json!({"within_minutes": [{"computed": "last_seen_at"}, 121]}),
                true,
            ),
            (json!({"within_days": [{"trait": "signed_up"}, 30]}), false),
            (json!({"within_days": [{"trait": "signed_up"}, 41]}), true),
            (json!({"within_days": [{"trait": "missing"}, 41]}), false),
        ];
        for (rule, want) in table {
            assert_eq!(
                is_in(&one(rule.clone()), traits.clone(), computed.clone(), T0),
                want,
                "{rule}"
            );
        }
    }

    fn profile(events: &[crate::collect::event::Event], now: i64) -> BTreeSet<String> {
        let config = shipped_config();
        let mut state = ComputedState::default();
        for e in events {
            apply(&mut state, e, &config);
        }
        let computed = values(&state, &config, now);
        let traits = Map::new();
        let subject = Subject {
            traits: &traits,
            computed: &computed,
            state: &state,
        };
        evaluate(&shipped_segments(), &subject, now)
    }

    #[test]
    fn cart_abandoner_after_an_hour_without_an_order() {
        let add = track("a", "Product Added", 0, json!({"product_id": "p1"}));
        assert!(!profile(std::slice::from_ref(&add), T0 + 30 * 60_000).contains("cart_abandoners"));
        assert!(profile(std::slice::from_ref(&add), T0 + 2 * HOUR).contains("cart_abandoners"));
        let bought = track("o", "Order Completed", 10, json!({"order_id": "o1"}));
        assert!(!profile(&[add, bought], T0 + 2 * HOUR).contains("cart_abandoners"));
    }

    #[test]
    fn interested_in_is_one_membership_per_viewed_category() {
        let views: Vec<_> = (0..7)
            .map(|i| {
                let category = if i < 4 { "Running Shoes" } else { "Socks" };
                track(
                    &format!("v{i}"),
                    "Product Viewed",
                    i * 1000,
                    json!({"product_id": format!("p{i}"), "category": category}),
                )
            })
            .collect();
        let m = profile(&views, T0 + HOUR);
        assert!(m.contains("interested_in:Running Shoes"));
        assert!(m.contains("interested_in:Socks"));
        assert!(!m.iter().any(|s| s == "interested_in"));
        let m = profile(&views[..5], T0 + HOUR);
        assert!(
            !m.contains("interested_in:Socks"),
            "one Socks view is not interest"
        );
    }

    #[test]
    fn counts_events_in_windows_from_the_state() {
        let set = one(json!({"gte": [{"count": {"event": "$page", "within_minutes": 10}}, 2]}));
        let config = shipped_config();
        let mut state = ComputedState::default();
        for (i, at) in [0, 5 * 60_000, 20 * 60_000].iter().enumerate() {
            let raw = json!({"type": "page", "anonymousId": "a", "messageId": format!("p{i}"),
                "timestamp": crate::format::time::format_iso8601(T0 + at)});
            let e = crate::collect::event::validate(
                raw,
                10,
                &crate::collect::event::Envelope::default(),
                String::new,
            )
            .unwrap();
            apply(&mut state, &e, &config);
        }
        let empty = Map::new();
        let subject = Subject {
            traits: &empty,
            computed: &empty,
            state: &state,
        };
        assert!(!evaluate(&set, &subject, T0 + 21 * 60_000).contains("s"));
        assert!(evaluate(&set, &subject, T0 + 9 * 60_000).contains("s"));
    }

    #[test]
    fn rejects_bad_rules_naming_segment_and_field() {
        let table = [
            (
                json!({"gt": [{"computed": "lifetime_valu"}, 5]}),
                "invalid_segment_rule",
                "rule.gt[0].computed",
            ),
            (json!({"gt": [1]}), "invalid_segment_rule", "rule.gt"),
            (
                json!({"and": [{"eq": [1, 1]}, {"bogus": []}]}),
                "unknown_segment_field",
                "operator rule.and[1].bogus",
            ),
            (
                json!({"in": [{"trait": "a"}, "not a list"]}),
                "invalid_segment_rule",
                "rule.in[1]",
            ),
            (
                json!({"within_days": [{"trait": "a"}, -3]}),
                "invalid_segment_rule",
                "rule.within_days[1]",
            ),
            (
                json!({"eq": [{"each": "key"}, "x"]}),
                "invalid_segment_rule",
                "rule.eq[0].each",
            ),
            (
                json!({"eq": [{"count": {"event": "x", "within_weeks": 1}}, 1]}),
                "unknown_segment_field",
                "rule.eq[0].count.within_weeks",
            ),
            (
                json!({"eq": [{"trait": "a", "computed": "b"}, 1]}),
                "invalid_segment_rule",
                "rule.eq[0]",
            ),
            (
                json!({"eq": [1, 1], "ne": [1, 2]}),
                "invalid_segment_rule",
                "rule",
            ),
        ];
        for (rule, code, field) in table {
            let e = rule_error(rule.clone());
            assert_eq!(
                (e.code(), e.segment(), e.field()),
                (code, Some("s"), Some(field)),
                "{rule}: {e}"
            );
        }
        let e = SegmentSet::from_json(
            &json!({"segments": [{"name": "x", "rule": {"eq": [1, 1]}, "forEch": {}}]}),
            None,
        )
        .unwrap_err();
        assert_eq!((e.segment(), e.field()), (Some("x"), Some("forEch")));
        let e = SegmentSet::from_json(&json!({"segments": [{"name": "x"}]}), None).unwrap_err();
        assert_eq!(e.to_string(), "segments: segment x: rule is required");
        let e = SegmentSet::from_json(
            &json!({"segments": [{"name": "a b", "rule": {"and": []}}]}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("segments[0].name"));
        let e = SegmentSet::from_json(&json!({"segments": [{"name": "x", "rule": {"and": []}}, {"name": "x", "rule": {"and": []}}]}), None).unwrap_err();
        assert_eq!(e.code(), "duplicate_segment");
    }

    #[test]
    fn limits_nesting_depth_and_size() {
        let mut deep = json!({"eq": [1, 1]});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        let e = rule_error(deep);
        assert_eq!(e.code(), "segment_rule_too_complex");
        assert!(e.field().unwrap().starts_with("rule.not.not"));
        let wide = json!({"or": (0..60).map(|i| json!({"eq": [i, 1]})).collect::<Vec<_>>()});
        assert_eq!(rule_error(wide).code(), "segment_rule_too_complex");
        // As deep as serde_json will parse: refused at the limit, not walked to the bottom.
        let mut absurd = "true".to_owned();
        for _ in 0..120 {
            absurd = format!("{{\"not\": {absurd}}}");
        }
        assert_eq!(
            rule_error(serde_json::from_str(&absurd).unwrap()).code(),
            "segment_rule_too_complex"
        );
    }

    #[test]
    fn diff_enters_exits_and_reenters_with_timestamps() {
        let now = T0;
        let first = diff(
            &Memberships::new(),
            &["a".to_owned(), "b".to_owned()].into(),
            now,
        );
        assert_eq!(first.transitions.len(), 2);
        assert!(first
            .transitions
            .iter()
            .all(|t| t.entered && t.at_ms == now));
        let same = diff(
            &first.memberships,
            &["a".to_owned(), "b".to_owned()].into(),
            now + 1,
        );
        assert!(same.is_empty());
        assert_eq!(same.memberships, first.memberships);
        let left = diff(&first.memberships, &["b".to_owned()].into(), now + 5);
        assert_eq!(
            left.transitions,
            vec![Transition {
                segment: "a".into(),
                entered: false,
                at_ms: now + 5
            }]
        );
        assert_eq!(
            left.memberships["a"],
            Membership {
                entered_at: now,
                exited_at: Some(now + 5)
            }
        );
        assert_eq!(current(&left.memberships), vec!["b".to_owned()]);
        let back = diff(
            &left.memberships,
            &["a".to_owned(), "b".to_owned()].into(),
            now + 9,
        );
        assert_eq!(
            back.memberships["a"],
            Membership {
                entered_at: now + 9,
                exited_at: None
            }
        );
    }

    #[test]
    fn transition_events_validate_and_have_stable_ids() {
        let cause = track("cause-1", "Order Completed", 0, json!({}));
        let d = diff(&Memberships::new(), &["high_value".to_owned()].into(), T0);
        let events = transition_events(&d, "prof_1", &cause);
        assert_eq!(events.len(), 1);
        assert_eq!(events, transition_events(&d, "prof_1", &cause));
        let e = crate::collect::event::validate(
            events[0].clone(),
            10,
            &crate::collect::event::Envelope::default(),
            String::new,
        )
        .unwrap();
        assert_eq!(e.name.as_deref(), Some(SEGMENT_ENTERED));
        assert_eq!(e.body["properties"]["segment"], json!("high_value"));
        assert_eq!(e.anonymous_id.as_deref(), Some("a1"));
        assert_eq!(e.timestamp_ms, T0);
        // Internal events never feed computed traits back.
        let mut state = ComputedState::default();
        assert_eq!(
            apply(&mut state, &e, &shipped_config()),
            crate::personalise::computed::Applied::Ignored
        );
    }

    #[test]
    fn membership_writes_upsert_entries_and_close_exits() {
        let stored = diff(&Memberships::new(), &["a".to_owned()].into(), 1).memberships;
        let d = diff(&stored, &["b".to_owned(), "c".to_owned()].into(), 2);
        let plan = membership_writes("prof_1", &d);
        assert_eq!(plan.len(), 2);
        assert!(plan[0].sql.starts_with("INSERT INTO segment_memberships"));
        assert_eq!(plan[0].params.len(), 6);
        assert_eq!(plan[1].params[2], Param::Text("[\"a\"]".into()));
        assert_eq!(plan[0].sql.matches('?').count(), plan[0].params.len());
        assert!(membership_writes(
            "p",
            &diff(&d.memberships, &["b".to_owned(), "c".to_owned()].into(), 3)
        )
        .is_empty());
    }
}
