//! Which profiles an ingest request leaves with stale derived state, and what bringing each up
//! to date involves: its computed traits and segments (when its events feed them), its KV
//! snapshot, pointers from anonymous IDs that changed profile, and forwarding records for
//! profiles it absorbed.
//!
//! The edge runs a [`Refresh`] after the response; a busy profile's refreshes fold into one
//! ([`Absorb`], spaced by [`crate::personalise::coalesce`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::collect::event::Event;
use crate::collect::source::Source;
use crate::identity::profile::ProfileView;
use crate::identity::resolution::Resolved;
use crate::identity::{IdType, Link};
use crate::personalise::coalesce::Absorb;
use crate::personalise::computed::fact_name;
use crate::personalise::{PersonalisationConfig, ProfileState};

/// A profile's read model with its personalisation state and version (`None`: no state row).
pub type Loaded = (ProfileView, (ProfileState, Option<i64>));

/// What a profile's KV snapshot refresh must also write: pointers from anonymous IDs and
/// forwarding records for absorbed profiles.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SnapshotWrites {
    pub anonymous: Vec<String>,
    pub absorbed: Vec<String>,
}

/// Derived state of one profile to bring up to date after a request.
#[allow(missing_docs)] // the fields say what they hold
pub struct Refresh {
    /// The source the profile's internal events (segment transitions) are stored under.
    pub source: Source,
    pub profile_id: String,
    pub snapshot: SnapshotWrites,
    /// Profiles merged into this one by the request: their states fold into its state first.
    pub absorbed: Vec<String>,
    /// The request's events attributed to the profile.
    pub events: Vec<Event>,
    pub received_at: i64,
    /// The profile's read model and state, when the request's batch already read them.
    pub loaded: Option<Loaded>,
    /// The personalisation configuration, when this profile's events feed it.
    pub config: Option<Arc<PersonalisationConfig>>,
}

impl Absorb for Refresh {
    /// Later requests' refresh folded in: their events (the core skips ones it has), pointer and
    /// forwarding writes, and the newest time and source. What the first request read is stale.
    fn absorb(&mut self, later: Refresh) {
        self.events.extend(later.events);
        for (mine, theirs) in [
            (&mut self.snapshot.anonymous, later.snapshot.anonymous),
            (&mut self.snapshot.absorbed, later.snapshot.absorbed),
            (&mut self.absorbed, later.absorbed),
        ] {
            mine.extend(theirs);
            mine.sort();
            mine.dedup();
        }
        self.received_at = self.received_at.max(later.received_at);
        self.source = later.source;
        self.config = later.config.or(self.config.take());
        self.loaded = None;
    }
}

/// Whether any of `events` feeds computed traits (identify/group/alias and internal events do
/// not): the cheap check before reading a profile's state.
pub fn feeds_computed<'a>(events: impl IntoIterator<Item = &'a Event>) -> bool {
    events.into_iter().any(|e| fact_name(e).is_some())
}

/// The KV snapshot writes a resolution caused, per profile: pointers from anonymous IDs that
/// changed profile, and forwarding records for absorbed profiles. One pass over the links (a
/// batch may carry thousands of users).
pub fn snapshot_changes(resolved: &Resolved, links: &[Link]) -> HashMap<String, SnapshotWrites> {
    let before: HashMap<&str, &str> = resolved
        .before
        .iter()
        .map(|a| (a.identifier.as_str(), a.profile_id.as_str()))
        .collect();
    let mut out: HashMap<String, SnapshotWrites> = HashMap::new();
    for i in links
        .iter()
        .flat_map(|l| &l.identifiers)
        .filter(|i| i.kind == IdType::AnonymousId)
    {
        let now = resolved.profile_of(i);
        if before.get(i.to_string().as_str()) != Some(&now.as_str()) {
            out.entry(now).or_default().anonymous.push(i.value.clone());
        }
    }
    for (from, into) in &resolved.merges {
        out.entry(into.clone())
            .or_default()
            .absorbed
            .push(from.clone());
    }
    for snapshot in out.values_mut() {
        snapshot.anonymous.sort();
        snapshot.anonymous.dedup();
    }
    out
}

/// What one ingest request knows when it plans its refreshes.
#[allow(missing_docs)] // the fields say what they hold
pub struct Committed<'a> {
    pub source: &'a Source,
    /// The visitor's profile (the request's last link): refreshed first.
    pub profile_id: &'a str,
    /// `(source_id/messageId, profile)` of every event with identifiers.
    pub profile_of: &'a [(String, String)],
    /// The request's stored and duplicate events (the core dedups; a retry heals).
    pub events: &'a [&'a Event],
    /// Snapshot writes per profile from an identity resolution (empty: none ran).
    pub changed: HashMap<String, SnapshotWrites>,
    /// Whether the request set any trait (every touched profile's snapshot is then stale).
    pub traits_changed: bool,
    pub config: Option<Arc<PersonalisationConfig>>,
    /// The visitor's profile as the ingest batch read it.
    pub loaded: Option<Loaded>,
    pub received_at: i64,
}

/// Every profile the request touched (a server-side batch carries many users) that needs a
/// refresh, the visitor's first. One pass groups the events by profile.
pub fn plan(committed: Committed<'_>) -> Vec<Refresh> {
    let Committed {
        source,
        profile_id,
        profile_of,
        events,
        mut changed,
        traits_changed,
        config,
        mut loaded,
        received_at,
    } = committed;
    let profile_by_key: HashMap<&str, &str> = profile_of
        .iter()
        .map(|(k, p)| (k.as_str(), p.as_str()))
        .collect();
    let mut events_of: Vec<(String, Vec<Event>)> = vec![(profile_id.to_owned(), Vec::new())];
    let mut slot_of: HashMap<String, usize> = HashMap::from([(profile_id.to_owned(), 0)]);
    for e in events {
        let key = format!("{}/{}", source.id, e.message_id);
        let Some(profile) = profile_by_key.get(key.as_str()) else {
            continue;
        };
        let i = *slot_of.entry((*profile).to_owned()).or_insert_with(|| {
            events_of.push(((*profile).to_owned(), Vec::new()));
            events_of.len() - 1
        });
        events_of[i].1.push((*e).clone());
    }
    let mut refreshes = Vec::new();
    for (profile, mine) in events_of {
        let writes = changed.remove(&profile);
        let absorbed = writes
            .as_ref()
            .map(|s| s.absorbed.clone())
            .unwrap_or_default();
        let snapshot = writes.or_else(|| traits_changed.then(SnapshotWrites::default));
        let config = config
            .clone()
            .filter(|_| !absorbed.is_empty() || feeds_computed(&mine));
        if snapshot.is_some() || config.is_some() {
            refreshes.push(Refresh {
                source: source.clone(),
                loaded: if profile == profile_id {
                    loaded.take()
                } else {
                    None
                },
                profile_id: profile,
                snapshot: snapshot.unwrap_or_default(),
                absorbed,
                events: mine,
                received_at,
                config,
            });
        }
    }
    refreshes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ingest::decode;
    use crate::collect::source::parse_source;
    use serde_json::json;

    const T0: i64 = 1_800_000_000_000;

    fn events(batch: serde_json::Value) -> Vec<Event> {
        let body = json!({ "batch": batch }).to_string();
        decode(body.as_bytes(), None, T0, || "generated".into())
            .unwrap()
            .valid()
            .cloned()
            .collect()
    }

    fn config() -> Option<Arc<PersonalisationConfig>> {
        Some(Arc::new(PersonalisationConfig::committed().unwrap()))
    }

    fn refresh(profile: &str, events: Vec<Event>, at: i64) -> Refresh {
        Refresh {
            source: parse_source("k", &json!({"id": "web"})).unwrap(),
            profile_id: profile.into(),
            snapshot: SnapshotWrites::default(),
            absorbed: Vec::new(),
            events,
            received_at: at,
            loaded: None,
            config: None,
        }
    }

    #[test]
    fn groups_events_by_profile_with_the_visitor_first() {
        let source = parse_source("k", &json!({"id": "web"})).unwrap();
        let stored = events(json!([
            {"type": "track", "event": "Product Viewed", "userId": "u2", "messageId": "m1",
             "properties": {"product_id": "x"}},
            {"type": "track", "event": "Product Viewed", "userId": "u3", "messageId": "m2",
             "properties": {"product_id": "y"}},
            {"type": "identify", "userId": "u4", "messageId": "m3"},
            {"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": "m4",
             "properties": {"product_id": "z"}}
        ]));
        let refs: Vec<&Event> = stored.iter().collect();
        let profile_of: Vec<(String, String)> =
            [("m1", "p2"), ("m2", "p3"), ("m3", "p4"), ("m4", "p1")]
                .iter()
                .map(|(m, p)| (format!("web/{m}"), (*p).to_owned()))
                .collect();
        let plan = plan(Committed {
            source: &source,
            profile_id: "p1",
            profile_of: &profile_of,
            events: &refs,
            changed: HashMap::new(),
            traits_changed: false,
            config: config(),
            loaded: None,
            received_at: T0,
        });
        let got: Vec<(&str, usize)> = plan
            .iter()
            .map(|r| (r.profile_id.as_str(), r.events.len()))
            .collect();
        // p4 sent only an identify without traits: nothing of its derived state changed.
        assert_eq!(got, [("p1", 1), ("p2", 1), ("p3", 1)]);
        assert!(plan.iter().all(|r| r.config.is_some()));
    }

    #[test]
    fn trait_changes_and_merges_refresh_without_personalisation() {
        let source = parse_source("k", &json!({"id": "web"})).unwrap();
        let stored = events(
            json!([{"type": "identify", "userId": "u1", "messageId": "m1",
                                    "traits": {"plan": "gold"}}]),
        );
        let refs: Vec<&Event> = stored.iter().collect();
        let profile_of = vec![("web/m1".to_owned(), "p1".to_owned())];
        let committed = |changed, traits_changed| Committed {
            source: &source,
            profile_id: "p1",
            profile_of: &profile_of,
            events: &refs,
            changed,
            traits_changed,
            config: config(),
            loaded: None,
            received_at: T0,
        };
        assert!(plan(committed(HashMap::new(), false)).is_empty());
        let traits = plan(committed(HashMap::new(), true));
        assert_eq!(traits.len(), 1);
        assert!(
            traits[0].config.is_none(),
            "an identify feeds no computed trait"
        );
        let merge = HashMap::from([(
            "p1".to_owned(),
            SnapshotWrites {
                anonymous: vec!["a1".into()],
                absorbed: vec!["p0".into()],
            },
        )]);
        let merged = plan(committed(merge, false));
        assert_eq!(merged[0].absorbed, ["p0"]);
        assert_eq!(merged[0].snapshot.anonymous, ["a1"]);
        assert!(
            merged[0].config.is_some(),
            "a merge folds the absorbed state in"
        );
    }

    #[test]
    fn a_later_refresh_folds_into_the_waiting_one() {
        let mut first = refresh(
            "p1",
            events(json!([{"type": "track", "event": "A",
            "userId": "u1", "messageId": "m1"}])),
            T0,
        );
        first.snapshot.anonymous = vec!["b".into()];
        let mut later = refresh(
            "p1",
            events(json!([{"type": "track", "event": "B",
            "userId": "u1", "messageId": "m2"}])),
            T0 + 5,
        );
        later.snapshot.anonymous = vec!["a".into(), "b".into()];
        later.absorbed = vec!["p0".into()];
        later.config = config();
        first.absorb(later);
        assert_eq!(first.events.len(), 2);
        assert_eq!(first.snapshot.anonymous, ["a", "b"]);
        assert_eq!(first.absorbed, ["p0"]);
        assert_eq!(first.received_at, T0 + 5);
        assert!(first.config.is_some());
        assert!(first.loaded.is_none());
    }
}
