//! Unified profiles: traits, groups and the read model the API and the decision path serve.
//!
//! Traits are stored per *identifier* (the best identifier of the event that set them), never per
//! profile. A profile's traits are a fold over the rows of all its identifiers, so a merge moves no
//! data and the result does not depend on the order in which events or merges happened:
//!
//! - a plain trait (`identify` `traits`) is last-write-wins by event `timestamp`, ties broken by
//!   `messageId`;
//! - a `$set_once` trait (`traits.$set_once: {...}`, PostHog's convention) keeps the earliest
//!   value, and only counts when no plain value exists for that key;
//! - a `group` event stores the group's traits under `$group:<groupId>`, last-write-wins, and
//!   surfaces as the profile's `groups`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::collect::event::{Event, EventType};
use crate::identity::Identifier;
use crate::identity::Proof;

/// Key prefix for group memberships in trait rows.
pub const GROUP_PREFIX: &str = "$group:";

/// One stored trait value.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitRow {
    /// Text form of the identifier the value belongs to.
    pub identifier: String,
    /// Trait name (or `$group:<id>`).
    pub key: String,
    /// The value.
    pub value: Value,
    /// Event time.
    pub timestamp_ms: i64,
    /// Tie-break: the event's source-qualified message key.
    pub message_key: String,
    /// `$set_once` semantics (earliest wins).
    pub once: bool,
}

/// The trait under which an anonymous profile keeps the user ID its browser claimed without an
/// identity token.
pub const CLAIMED_USER_ID: &str = "claimedUserId";

/// The trait rows an event contributes, under its best identifier.
pub fn trait_rows(event: &Event, best: &Identifier, message_key: &str) -> Vec<TraitRow> {
    let row = |key: String, value: Value, once: bool| TraitRow {
        identifier: best.to_string(),
        key,
        value,
        timestamp_ms: event.timestamp_ms,
        message_key: message_key.to_owned(),
        once,
    };
    let traits = event.body.get("traits").and_then(Value::as_object);
    match event.kind {
        EventType::Identify => {
            let mut rows = Vec::new();
            for (key, value) in traits.into_iter().flatten() {
                if key == "$set_once" {
                    for (k, v) in value.as_object().into_iter().flatten() {
                        rows.push(row(k.clone(), v.clone(), true));
                    }
                } else if !key.starts_with('$') {
                    rows.push(row(key.clone(), value.clone(), false));
                }
            }
            // A browser's unverified user ID joins nothing but is kept as what it is: a claim.
            if let (Proof::Claimed, Some(user_id)) = (Proof::of(event), &event.user_id) {
                rows.push(row(
                    CLAIMED_USER_ID.into(),
                    Value::from(user_id.as_str()),
                    false,
                ));
            }
            rows
        }
        EventType::Group => {
            let group_id = match event.body.get("groupId") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Vec::new(),
            };
            let value = traits
                .cloned()
                .map_or(Value::Object(Map::new()), Value::Object);
            vec![row(format!("{GROUP_PREFIX}{group_id}"), value, false)]
        }
        _ => Vec::new(),
    }
}

/// Folds trait rows into `(traits, groups)`.
pub fn fold_traits(rows: &[TraitRow]) -> (Map<String, Value>, Map<String, Value>) {
    // Per key: the winning plain row, and the winning once row.
    let mut plain: BTreeMap<&str, &TraitRow> = BTreeMap::new();
    let mut once: BTreeMap<&str, &TraitRow> = BTreeMap::new();
    let order = |r: &TraitRow| (r.timestamp_ms, r.message_key.clone(), r.value.to_string());
    for r in rows {
        let slot = if r.once { &mut once } else { &mut plain };
        let replace = match slot.get(r.key.as_str()) {
            None => true,
            Some(cur) if r.once => order(r) < order(cur),
            Some(cur) => order(r) > order(cur),
        };
        if replace {
            slot.insert(r.key.as_str(), r);
        }
    }
    let mut traits = Map::new();
    let mut groups = Map::new();
    once.retain(|k, _| !plain.contains_key(k));
    for (key, r) in once.into_iter().chain(plain) {
        match key.strip_prefix(GROUP_PREFIX) {
            Some(group) => groups.insert(group.to_owned(), r.value.clone()),
            None => traits.insert(key.to_owned(), r.value.clone()),
        };
    }
    (traits, groups)
}

/// A profile as the API and the KV snapshot present it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    /// Canonical profile ID.
    pub profile_id: String,
    /// Identifiers (text forms), best first.
    pub identifiers: Vec<String>,
    /// Folded traits.
    pub traits: Map<String, Value>,
    /// Group memberships with their traits.
    pub groups: Map<String, Value>,
    /// Computed traits (filled by the computed-traits feature).
    pub computed_traits: Map<String, Value>,
    /// Segment memberships (filled by the segments feature).
    pub segments: Vec<String>,
    /// Earliest event time (ISO-8601), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Latest event time (ISO-8601), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

impl ProfileView {
    /// Builds the view from the profile's identifiers and their trait rows.
    pub fn new(profile_id: &str, identifiers: Vec<String>, rows: &[TraitRow]) -> Self {
        let (traits, groups) = fold_traits(rows);
        Self {
            profile_id: profile_id.to_owned(),
            identifiers,
            traits,
            groups,
            computed_traits: Map::new(),
            segments: Vec::new(),
            first_seen: None,
            last_seen: None,
        }
    }

    /// A user ID and an anonymous ID the profile holds (the first of each kind), which the
    /// collector's own events about the person (segment transitions, journey entries) carry.
    pub fn first_ids(&self) -> (Option<String>, Option<String>) {
        let first = |kind: crate::identity::IdType| {
            self.identifiers
                .iter()
                .filter_map(|t| Identifier::parse(t))
                .find(|i| i.kind == kind)
                .map(|i| i.value)
        };
        (
            first(crate::identity::IdType::UserId),
            first(crate::identity::IdType::AnonymousId),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope};
    use crate::identity::{IdType, Identifier};
    use proptest::prelude::*;
    use serde_json::json;

    fn row(key: &str, value: Value, ts: i64, mk: &str, once: bool) -> TraitRow {
        TraitRow {
            identifier: "user_id:u".into(),
            key: key.into(),
            value,
            timestamp_ms: ts,
            message_key: mk.into(),
            once,
        }
    }

    #[test]
    fn plain_traits_are_last_write_wins_by_event_time() {
        let rows = [
            row("plan", json!("pro"), 20, "b", false),
            row("plan", json!("free"), 10, "a", false),
        ];
        assert_eq!(fold_traits(&rows).0["plan"], json!("pro"));
    }

    #[test]
    fn set_once_keeps_the_first_value_unless_a_plain_value_exists() {
        let rows = [
            row("first_source", json!("ads"), 30, "c", true),
            row("first_source", json!("email"), 10, "a", true),
            row("name", json!("Old"), 5, "z", true),
            row("name", json!("New"), 50, "d", false),
        ];
        let (traits, _) = fold_traits(&rows);
        assert_eq!(traits["first_source"], json!("email"));
        assert_eq!(traits["name"], json!("New"));
    }

    #[test]
    fn identify_and_group_events_produce_rows() {
        let ev = |raw: Value| validate(raw, 10, &Envelope::default(), String::new).unwrap();
        let best = Identifier::new(IdType::UserId, "u1");
        let identify = ev(
            json!({"type": "identify", "userId": "u1", "messageId": "m1",
            "traits": {"email": "a@b.example", "$set_once": {"signup_source": "ads"}, "$ignored": 1}}),
        );
        let rows = trait_rows(&identify, &best, "src/m1");
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().any(|r| r.key == "signup_source" && r.once));
        let group = ev(
            json!({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": "enterprise"}}),
        );
        let rows = trait_rows(&group, &best, "src/m2");
        let (_, groups) = fold_traits(&rows);
        assert_eq!(groups["acme"], json!({"plan": "enterprise"}));
        let track = ev(json!({"type": "track", "event": "x", "userId": "u1", "traits": {"a": 1}}));
        assert!(trait_rows(&track, &best, "k").is_empty());
    }

    proptest! {
        #[test]
        fn folding_does_not_depend_on_row_order(
            rows in proptest::collection::vec((0usize..3, 0i64..5, 0u8..3, any::<bool>(), 0i32..4), 0..20),
            seed in any::<u64>(),
        ) {
            let rows: Vec<TraitRow> = rows.into_iter().map(|(k, ts, mk, once, v)| {
                row(["a", "b", "$group:g"][k], json!(v), ts, &mk.to_string(), once)
            }).collect();
            let mut shuffled = rows.clone();
            // Deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(fold_traits(&rows), fold_traits(&shuffled));
        }
    }
}
