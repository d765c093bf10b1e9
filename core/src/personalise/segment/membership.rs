//! Memberships as stored on a profile, the transitions an evaluation causes, the internal
//! `Segment Entered` / `Segment Exited` events that record them, and their writes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{MAX_EXITED, SEGMENT_ENTERED, SEGMENT_EXITED};
use crate::collect::event::Event;
use crate::format::time::format_iso8601;
use crate::plan::{multi_row, Param, Statement};

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
    /// The segments entered (what starts journeys).
    pub fn entered(&self) -> impl Iterator<Item = &str> {
        self.transitions
            .iter()
            .filter(|t| t.entered)
            .map(|t| t.segment.as_str())
    }

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

/// Writes every membership `memberships` records as `profile_id`'s rows (entries and exits as
/// recorded), for states that did not come from transitions (a merge's union, a move between
/// shards). Written only while the profile's state row is at `version` (`None`: while it has
/// none), so placed in the batch just before the save it belongs to (or just after the copy it
/// follows), nothing else can land in between. `None` when there is nothing to write.
pub fn recorded_writes(
    profile_id: &str,
    memberships: &Memberships,
    version: Option<i64>,
) -> Option<Statement> {
    if memberships.is_empty() {
        return None;
    }
    let rows: Vec<(&str, i64, Option<i64>)> = memberships
        .iter()
        .map(|(name, m)| (name.as_str(), m.entered_at, m.exited_at))
        .collect();
    let mut params = vec![
        Param::Text(profile_id.to_owned()),
        Param::Text(serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())),
    ];
    let guard = version_guard(version, &mut params);
    Some(Statement {
        sql: format!(
            "INSERT INTO segment_memberships (profile_id, segment, entered_at, exited_at) \
             SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
             json_extract(value, '$[2]') FROM json_each(?2) WHERE {guard} \
             ON CONFLICT (profile_id, segment) DO UPDATE SET \
             entered_at = excluded.entered_at, exited_at = excluded.exited_at"
        ),
        params,
    })
}

/// A `WHERE` condition, for a statement whose `?1` is the profile ID and `?2` its rows, that
/// holds while the profile's state row is at `version` (`None`: while it has none). Binds `?3`
/// only when it names a version: D1 refuses a parameter the SQL does not use.
pub(crate) fn version_guard(version: Option<i64>, params: &mut Vec<Param>) -> &'static str {
    match version {
        Some(v) => {
            params.push(Param::Int(v));
            "(SELECT version FROM profile_personalisation WHERE profile_id = ?1) = ?3"
        }
        None => "NOT EXISTS (SELECT 1 FROM profile_personalisation WHERE profile_id = ?1)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalise::computed::test_support::{shipped_config, track, T0};
    use crate::personalise::computed::{apply, ComputedState};
    use serde_json::json;

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
