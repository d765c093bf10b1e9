//! The segments document: the rule language as types ([`Rule`], [`Operand`]) and its
//! validation, bounded in depth and size so a hostile or mistaken document cannot make
//! evaluation expensive.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{MAX_DEPTH, MAX_NODES, MAX_SEGMENTS, MINUTE_MS};
use crate::personalise::computed::{valid_name, ComputedConfig};

/// A mistake in the segments configuration: names the segment (when known) and the field, as a
/// path inside the declaration (`rule.and[1].gt[0]`). Stable [`SegmentConfigError::code`].
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentConfigError {
    /// The document is not `{"segments": [...]}`.
    #[error("segments: {0}")]
    Malformed(String),
    /// A field or operator that does not exist.
    #[error("segments: {}unknown {field}", segment_prefix(.segment))]
    Unknown {
        segment: Option<String>,
        field: String,
    },
    /// A field has the wrong shape or value.
    #[error("segments: {}{field} {problem}", segment_prefix(.segment))]
    Invalid {
        segment: Option<String>,
        field: String,
        problem: String,
    },
    /// The rule nests deeper than [`MAX_DEPTH`] or has more than [`MAX_NODES`] nodes.
    #[error("segments: segment {segment}: {field} makes the rule too large (depth {MAX_DEPTH}, {MAX_NODES} nodes at most)")]
    TooComplex {
        segment: String,
        /// Path where the limit was hit.
        field: String,
    },
    /// Two segments share a name.
    #[error("segments: segment {segment} is declared more than once")]
    DuplicateName { segment: String },
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
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDef {
    /// Name; `forEach` segments yield `name:<key>` memberships.
    pub name: String,
    /// For parameterised segments: a list (each element) or object (each key) to expand.
    pub for_each: Option<Operand>,
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
    /// A destination's event condition: `field` reads the event; profile operands are not
    /// available.
    event_fields: bool,
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
            // An event condition is evaluated with the event as the subject's traits.
            "field" if self.event_fields => Operand::Trait(path(self)?),
            "field" => return Err(self.invalid(&here, "is only available in destination filters")),
            "trait" | "computed" | "count" if self.event_fields => {
                return Err(self.invalid(
                    &here,
                    "is not available in an event condition (use {\"field\": \"properties.…\"})",
                ))
            }
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
        event_fields: false,
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

/// Parses a condition over one event (a destination's `filter.where`): the segment rule
/// language with `{"field": "properties.revenue"}` operands reading the event. Errors name
/// `owner` where segment errors name the segment.
pub fn event_condition(raw: &Value, owner: &str) -> Result<Rule, SegmentConfigError> {
    let mut parser = Parser {
        segment: owner,
        computed: None,
        each_allowed: false,
        event_fields: true,
        nodes: 0,
    };
    parser.rule(raw, "filter.where", 1)
}

/// Parses a condition over one profile outside a segment document (a journey's branch): the
/// segment rule language as segments use it. Errors name `owner` and `field`.
pub fn profile_condition(
    raw: &Value,
    owner: &str,
    field: &str,
    computed: Option<&ComputedConfig>,
) -> Result<Rule, SegmentConfigError> {
    let mut parser = Parser {
        segment: owner,
        computed,
        each_allowed: false,
        event_fields: false,
        nodes: 0,
    };
    parser.rule(raw, field, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalise::computed::test_support::shipped_config;
    use serde_json::json;

    fn rule_error(rule: Value) -> SegmentConfigError {
        SegmentSet::from_json(
            &json!({"segments": [{"name": "s", "rule": rule}]}),
            Some(&shipped_config()),
        )
        .unwrap_err()
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
}
