//! Evaluating segments for one profile at a given `now`, and what time alone can change in
//! the verdicts ([`Clock`]), so the edge knows when to look again without an event.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::config::{Cmp, Operand, Rule, SegmentSet};
use super::MAX_EACH;
use crate::format::time::parse_iso8601;
use crate::personalise::computed::{scalar_text, ComputedState};

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

/// Whether `rule` holds for `subject` at `now_ms` (a journey's branch).
pub fn holds_for(rule: &Rule, subject: &Subject<'_>, now_ms: i64) -> bool {
    holds(rule, subject, now_ms, None)
}

/// Whether an event condition ([`super::config::event_condition`]) holds for `event` (a stored
/// body) at `now_ms`.
pub fn holds_for_event(rule: &Rule, event: &Map<String, Value>, now_ms: i64) -> bool {
    let state = ComputedState::default();
    let subject = Subject {
        traits: event,
        computed: &Map::new(),
        state: &state,
    };
    holds(rule, &subject, now_ms, None)
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
}
