//! A profile's computed-trait state and what happens to it: an event applied (idempotently),
//! facts beyond the horizon folded away, two profiles' states merged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::archive::{absorb, archive_fits, archive_is_empty, combine, empty_archive, prune};
use super::config::ComputedConfig;
use super::property::{extract, scalar_text, values_at};
use super::values::cap_tally;
use super::{INTERNAL_EVENTS, MAX_TALLY_VALUES, PAGE_FACT, SCREEN_FACT};
use crate::collect::event::{Event, EventType};
use crate::format::time::DAY_MS;

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
    pub(super) fn add(&mut self, other: &Bucket) {
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

/// First 16 hex digits of SHA-256: short, stable fact keys (collisions need ~2^32 facts).
fn short_hash(text: &str) -> String {
    let mut hex = crate::identity::sha256_hex(text.as_bytes());
    hex.truncate(16);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope};
    use crate::personalise::computed::test_support::{
        history, order, shipped_config, state_of, track, IntoPair, HOUR, T0,
    };
    use crate::personalise::computed::values;
    use proptest::prelude::*;
    use serde_json::json;

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
