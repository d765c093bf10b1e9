//! The statements that keep journeys in D1 (`journey_runs`, `journey_decisions`, migration
//! 0012): entering, claiming due runs, recording decisions with their messages, and settling a
//! run after its walk. The edge runs them (`edge/src/jobs/journeys.rs`).
//!
//! Exactly once: a run's entry is one statement that applies the re-entry policy and a unique
//! index on active runs; a walker claims a run under a lease; a send's decision is keyed by its
//! send key and its message row (`deliveries`, source [`MESSAGE_SOURCE`], the key as message
//! ID) is only added while that decision says `sent`, so a re-walk, a retried cron or a second
//! walker adds nothing.

use serde::Deserialize;
use serde_json::{json, Value};

use super::message::MESSAGE_SOURCE;
use super::{in_control, Journey, Next};
use crate::format::time::format_iso8601;
use crate::identity::sha256_hex;
use crate::plan::{Param, Statement};

/// How long a claimed run is a walker's before another may take it.
pub const LEASE_MS: i64 = 5 * 60_000;
/// Most runs one cron pass claims.
pub const MAX_CLAIM: u32 = 100;

/// The statement that enters `profile_id` into `journey` at `now_ms` because of `cause`
/// (`segment:<name>` or `event:<name>`, with the event as stored for an event trigger: the
/// templates' `{{event.…}}` fields read this copy, which goes with the run), unless they are in
/// it now or the re-entry policy forbids it. It returns `entered_at, control` when it entered
/// them. The run is due at once: the walk sets its next time.
pub fn enter(
    journey: &Journey,
    profile_id: &str,
    cause: &str,
    trigger_event: Option<&Value>,
    now_ms: i64,
) -> Statement {
    let control = in_control(journey, profile_id);
    // Past any time: no earlier entry is after it, so only an active run blocks. (Bounds
    // within 2^53: D1 binds numbers as doubles.)
    const FAR: i64 = 1 << 53;
    let blocked_after = journey
        .reentry
        .blocked_after(now_ms)
        .unwrap_or(FAR)
        .clamp(-FAR, FAR);
    Statement {
        sql: "INSERT INTO journey_runs (journey, profile_id, key_profile, entered_at, status, \
              next_at, control, cause, trigger_event, updated_at) \
              SELECT ?1, ?2, ?2, ?3, 'active', ?3, ?4, ?5, ?7, ?3 \
              WHERE NOT EXISTS (SELECT 1 FROM journey_runs WHERE journey = ?1 AND profile_id = ?2 \
              AND (status = 'active' OR entered_at > ?6)) \
              ON CONFLICT DO NOTHING RETURNING entered_at, control"
            .into(),
        params: vec![
            Param::Text(journey.name.clone()),
            Param::Text(profile_id.into()),
            Param::Int(now_ms),
            Param::Int(i64::from(control)),
            Param::Text(cause.into()),
            Param::Int(blocked_after),
            trigger_event.map_or(Param::Null, |e| Param::Text(e.to_string())),
        ],
    }
}

/// The `Journey Entered` exposure event of one entry, on the person (`profile_id`, and a user
/// ID or anonymous ID of theirs): lift is measured by comparing the groups' outcomes.
pub fn entered_event(
    journey: &str,
    cause: &str,
    (profile_id, user_id, anonymous_id): (&str, Option<&str>, Option<&str>),
    at_ms: i64,
    control: bool,
) -> Value {
    let mut hex =
        sha256_hex(format!("journey entered\n{journey}\n{profile_id}\n{at_ms}").as_bytes());
    hex.truncate(32);
    let mut event = json!({
        "type": "track",
        "event": "Journey Entered",
        "messageId": format!("seam-jrn-{hex}"),
        "timestamp": format_iso8601(at_ms),
        "properties": {
            "journey": journey,
            "group": if control { "control" } else { "treatment" },
            "cause": cause,
            "profile_id": profile_id,
        },
    });
    if let Some(u) = user_id {
        event["userId"] = Value::from(u);
    }
    if let Some(a) = anonymous_id {
        event["anonymousId"] = Value::from(a);
    }
    event
}

/// A run as claimed.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claimed {
    pub journey: String,
    /// The person now.
    pub profile_id: String,
    /// The profile at entry: send keys and the holdout derive from it, so a merge changes
    /// neither.
    pub key_profile: String,
    pub entered_at: i64,
    /// An event trigger's event as stored at entry (JSON text).
    #[serde(default)]
    pub trigger_event: Option<String>,
}

/// Claims up to `limit` active runs due at `now_ms` for one walker (under [`LEASE_MS`]).
///
/// In these statements `+status` keeps a status test from choosing the `(status, next_at)`
/// index, which would walk every active run: the row is found by its key or its profile.
pub fn claim_due(now_ms: i64, limit: u32) -> Statement {
    Statement {
        sql: "UPDATE journey_runs SET next_at = ?1 + ?2, updated_at = ?1 \
              WHERE +status = 'active' AND (journey, profile_id, entered_at) IN \
              (SELECT journey, profile_id, entered_at FROM journey_runs \
               WHERE status = 'active' AND next_at <= ?1 ORDER BY next_at LIMIT ?3) \
              RETURNING journey, profile_id, key_profile, entered_at, trigger_event"
            .into(),
        params: vec![
            Param::Int(now_ms),
            Param::Int(LEASE_MS),
            Param::Int(i64::from(limit)),
        ],
    }
}

/// The decisions already made for a person: `key, outcome, at` (the frequency cap counts the
/// `sent` ones of every journey; branches judged are `branch_held` / `branch_not_held`).
pub fn decisions_of(profile_id: &str) -> Statement {
    Statement {
        sql: "SELECT key, outcome, at FROM journey_decisions WHERE profile_id = ?1 \
              ORDER BY at DESC LIMIT 1000"
            .into(),
        params: vec![Param::Text(profile_id.into())],
    }
}

/// One decision about one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The send key.
    pub key: &'a str,
    /// The run.
    pub run: &'a Claimed,
    /// The step.
    pub step: &'a str,
    /// The destination, for sends.
    pub destination: Option<&'a str>,
    /// `sent`, or why not.
    pub outcome: &'a str,
    /// When the send was due.
    pub at_ms: i64,
}

/// Records `decision` (once per key, and only while its run is active: a walk that raced an
/// erasure writes nothing back); for a `sent` one, also the message row carrying `payload`,
/// due at `now_ms`. The message statement returns `destination, source_id, message_id` when
/// it added the row: that is the delivery job to send.
pub fn decide(decision: &Decision<'_>, payload: Option<&str>, now_ms: i64) -> Vec<Statement> {
    let mut plan = vec![Statement {
        sql: "INSERT INTO journey_decisions (key, journey, profile_id, entered_at, step, \
              destination, outcome, at) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
              WHERE EXISTS (SELECT 1 FROM journey_runs WHERE journey = ?2 AND profile_id = ?3 \
              AND entered_at = ?4 AND status = 'active') \
              ON CONFLICT (key) DO NOTHING"
            .into(),
        params: vec![
            Param::Text(decision.key.into()),
            Param::Text(decision.run.journey.clone()),
            Param::Text(decision.run.profile_id.clone()),
            Param::Int(decision.run.entered_at),
            Param::Text(decision.step.into()),
            decision
                .destination
                .map_or(Param::Null, |d| Param::Text(d.into())),
            Param::Text(decision.outcome.into()),
            Param::Int(decision.at_ms),
        ],
    }];
    if let (Some(destination), Some(payload)) = (decision.destination, payload) {
        plan.push(Statement {
            sql: "INSERT INTO deliveries (destination, source_id, message_id, status, attempts, \
                  created_at, next_at, updated_at, payload) \
                  SELECT ?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4, ?5 \
                  WHERE EXISTS (SELECT 1 FROM journey_decisions WHERE key = ?3 \
                  AND outcome = 'sent' AND destination = ?1) \
                  ON CONFLICT DO NOTHING RETURNING destination, source_id, message_id"
                .into(),
            params: vec![
                Param::Text(destination.into()),
                Param::Text(MESSAGE_SOURCE.into()),
                Param::Text(decision.key.into()),
                Param::Int(now_ms),
                Param::Text(payload.into()),
            ],
        });
    }
    plan
}

/// Settles a walked run: due again at `Next::At` (waiting at `step`), or ended. Only while it
/// is still active (an erasure may have removed it meanwhile).
pub fn settle(run: &Claimed, next: &Next, step: Option<&str>, now_ms: i64) -> Statement {
    let (status, next_at, reason, ended_at) = match next {
        Next::At(at) => ("active", Param::Int(*at), Param::Null, Param::Null),
        Next::Done(end) => (
            "ended",
            Param::Null,
            Param::Text(end.code().into()),
            Param::Int(now_ms),
        ),
    };
    let step = match next {
        Next::Done(super::End::ExitEvent(event, _)) => Some(event.as_str()),
        _ => step,
    };
    Statement {
        sql: "UPDATE journey_runs SET status = ?4, next_at = ?5, step = ?6, end_reason = ?7, \
              ended_at = ?8, updated_at = ?9 \
              WHERE journey = ?1 AND profile_id = ?2 AND entered_at = ?3 AND status = 'active'"
            .into(),
        params: vec![
            Param::Text(run.journey.clone()),
            Param::Text(run.profile_id.clone()),
            Param::Int(run.entered_at),
            Param::Text(status.into()),
            next_at,
            step.map_or(Param::Null, |s| Param::Text(s.into())),
            reason,
            ended_at,
            Param::Int(now_ms),
        ],
    }
}

/// Ends a run without a walk (its journey was removed, or the person was merged away or
/// erased): `reason` is stored as the end reason.
pub fn end(run: &Claimed, reason: &str, now_ms: i64) -> Statement {
    Statement {
        sql: "UPDATE journey_runs SET status = 'ended', next_at = NULL, end_reason = ?4, \
              ended_at = ?5, updated_at = ?5 \
              WHERE journey = ?1 AND profile_id = ?2 AND entered_at = ?3 AND status = 'active'"
            .into(),
        params: vec![
            Param::Text(run.journey.clone()),
            Param::Text(run.profile_id.clone()),
            Param::Int(run.entered_at),
            Param::Text(reason.into()),
            Param::Int(now_ms),
        ],
    }
}

/// Moves a merged-away profile's active runs, and its decisions (the frequency cap and the
/// "decided once" rule follow the person), to the profile that absorbed it; a run of a journey
/// the survivor is already in ends as `merged`. Moved runs are due at once.
pub fn follow_merge(from_profile: &str, into_profile: &str, now_ms: i64) -> [Statement; 3] {
    let params = vec![
        Param::Text(from_profile.into()),
        Param::Text(into_profile.into()),
        Param::Int(now_ms),
    ];
    [
        Statement {
            sql: "UPDATE journey_runs SET status = 'ended', next_at = NULL, \
                  end_reason = 'merged', ended_at = ?3, updated_at = ?3 \
                  WHERE profile_id = ?1 AND +status = 'active' AND journey IN \
                  (SELECT journey FROM journey_runs WHERE profile_id = ?2 AND +status = 'active')"
                .into(),
            params: params.clone(),
        },
        Statement {
            sql:
                "UPDATE OR IGNORE journey_runs SET profile_id = ?2, next_at = ?3, updated_at = ?3 \
                  WHERE profile_id = ?1 AND +status = 'active'"
                    .into(),
            params: params.clone(),
        },
        Statement {
            sql: "UPDATE journey_decisions SET profile_id = ?2 WHERE profile_id = ?1".into(),
            params: params.into_iter().take(2).collect(),
        },
    ]
}

/// Takes the people of `profile_ids` out of every journey at once (a suppression): their active
/// runs end with `reason`, and their messages not yet sent are skipped and cleared.
pub fn leave_all(profile_ids: &[String], reason: &str, now_ms: i64) -> [Statement; 2] {
    let ids = Param::Text(Value::from(profile_ids.to_vec()).to_string());
    [
        Statement {
            sql: "UPDATE journey_runs SET status = 'ended', next_at = NULL, end_reason = ?2, \
                  ended_at = ?3, updated_at = ?3 WHERE +status = 'active' \
                  AND profile_id IN (SELECT value FROM json_each(?1))"
                .into(),
            params: vec![ids.clone(), Param::Text(reason.into()), Param::Int(now_ms)],
        },
        Statement {
            sql: "UPDATE deliveries SET status = 'skipped', payload = NULL, last_error = ?2, \
                  updated_at = ?3 WHERE source_id = '$journey' \
                  AND status IN ('pending', 'sending', 'dead') \
                  AND message_id IN (SELECT key FROM journey_decisions \
                  WHERE profile_id IN (SELECT value FROM json_each(?1)))"
                .into(),
            params: vec![ids, Param::Text(reason.into()), Param::Int(now_ms)],
        },
    ]
}

/// Retention: up to `chunk` rows each of the decisions made before `before_ms` whose run is
/// over, and of the runs that ended before it. ("Never re-enter" therefore holds for as long
/// as events are kept.)
pub fn prune(before_ms: i64, chunk: u32) -> [Statement; 2] {
    let params = vec![Param::Int(before_ms), Param::Int(i64::from(chunk))];
    [
        Statement {
            // A decision whose message is still in the delivery log stays: an erasure finds the
            // message through it.
            sql:
                "DELETE FROM journey_decisions WHERE key IN (SELECT d.key FROM journey_decisions d \
                  WHERE d.at < ?1 AND NOT EXISTS (SELECT 1 FROM journey_runs r \
                  WHERE r.journey = d.journey AND r.profile_id = d.profile_id \
                  AND r.entered_at = d.entered_at AND r.status = 'active') \
                  AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.source_id = '$journey' \
                  AND x.message_id = d.key) LIMIT ?2)"
                    .into(),
            params: params.clone(),
        },
        Statement {
            sql:
                "DELETE FROM journey_runs WHERE (journey, profile_id, entered_at) IN \
                  (SELECT journey, profile_id, entered_at FROM journey_runs \
                   INDEXED BY journey_runs_ended WHERE status = 'ended' AND ended_at < ?1 LIMIT ?2)"
                    .into(),
            params,
        },
    ]
}

/// Runs of a journey, newest first (`status` filters; `profile_id` narrows to one person).
pub fn list(
    journey: &str,
    status: Option<&str>,
    profile_id: Option<&str>,
    limit: u32,
) -> Statement {
    Statement {
        sql: "SELECT journey, profile_id, key_profile, entered_at, status, next_at, step, \
              end_reason, ended_at, control, cause, trigger_event FROM journey_runs \
              WHERE journey = ?1 \
              AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR profile_id = ?3) \
              ORDER BY entered_at DESC LIMIT ?4"
            .into(),
        params: vec![
            Param::Text(journey.into()),
            status.map_or(Param::Null, |s| Param::Text(s.into())),
            profile_id.map_or(Param::Null, |p| Param::Text(p.into())),
            Param::Int(i64::from(limit)),
        ],
    }
}

/// A journey's numbers: runs by group and status, and decisions by step and outcome.
pub fn stats(journey: &str) -> [Statement; 2] {
    let params = vec![Param::Text(journey.into())];
    [
        Statement {
            sql: "SELECT control, status, end_reason, COUNT(*) AS runs FROM journey_runs \
                  WHERE journey = ?1 GROUP BY control, status, end_reason"
                .into(),
            params: params.clone(),
        },
        Statement {
            sql: "SELECT step, outcome, COUNT(*) AS decisions FROM journey_decisions \
                  WHERE journey = ?1 GROUP BY step, outcome"
                .into(),
            params,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::End;

    #[test]
    fn the_exposure_event_names_the_group_and_is_the_same_on_a_retry() {
        let e = entered_event("j", "segment:s", ("p", Some("u1"), None), 1000, true);
        assert_eq!(e["properties"]["group"], "control");
        assert_eq!(e["userId"], "u1");
        assert!(e.get("anonymousId").is_none());
        assert_eq!(
            e["messageId"],
            entered_event("j", "x", ("p", Some("u1"), None), 1000, false)["messageId"]
        );
    }

    fn journey(reentry: Value) -> Journey {
        Journey::parse(
            "welcome",
            &json!({"trigger": {"event": "Signed Up"}, "reentry": reentry,
                    "steps": [{"id": "hello", "send": {"destination": "mail", "template": "t"}}]}),
            None,
        )
        .unwrap()
    }

    #[test]
    fn entry_applies_the_reentry_policy_in_its_statement() {
        let at = |s: &Statement| s.params[5].clone();
        assert_eq!(
            at(&enter(&journey(json!("never")), "p", "x", None, 1000)),
            Param::Int(-(1 << 53))
        );
        assert_eq!(
            at(&enter(&journey(json!("always")), "p", "x", None, 1000)),
            Param::Int(1 << 53)
        );
        assert_eq!(
            at(&enter(
                &journey(json!({"days": 1})),
                "p",
                "x",
                None,
                100_000_000
            )),
            Param::Int(100_000_000 - 86_400_000)
        );
        let s = enter(&journey(json!("never")), "p", "segment:x", None, 1000);
        assert!(s.sql.contains("status = 'active' OR entered_at > ?6"));
        assert_eq!(s.params[4], Param::Text("segment:x".into()));
    }

    #[test]
    fn a_message_row_is_only_added_under_a_sent_decision() {
        let run = Claimed {
            journey: "welcome".into(),
            profile_id: "p".into(),
            key_profile: "p".into(),
            entered_at: 5,
            trigger_event: None,
        };
        let sent = Decision {
            key: "jrn_1",
            run: &run,
            step: "hello",
            destination: Some("mail"),
            outcome: "sent",
            at_ms: 9,
        };
        let plan = decide(&sent, Some("{}"), 10);
        assert_eq!(plan.len(), 2);
        assert!(
            plan[0].sql.contains("status = 'active'"),
            "not for a run erased meanwhile"
        );
        assert!(plan[1]
            .sql
            .contains("outcome = 'sent' AND destination = ?1"));
        assert_eq!(plan[1].params[1], Param::Text("$journey".into()));
        let withheld = Decision {
            outcome: "holdout",
            ..sent
        };
        assert_eq!(decide(&withheld, None, 10).len(), 1);
    }

    #[test]
    fn settling_records_where_the_run_stopped() {
        let run = Claimed {
            journey: "j".into(),
            profile_id: "p".into(),
            key_profile: "p".into(),
            entered_at: 5,
            trigger_event: None,
        };
        let s = settle(&run, &Next::At(99), Some("wait_1h"), 10);
        assert_eq!(s.params[3], Param::Text("active".into()));
        assert_eq!(s.params[4], Param::Int(99));
        assert_eq!(s.params[5], Param::Text("wait_1h".into()));
        let s = settle(
            &run,
            &Next::Done(End::ExitEvent("Order Completed".into(), 7)),
            Some("wait_10h"),
            10,
        );
        assert_eq!(s.params[3], Param::Text("ended".into()));
        assert_eq!(s.params[5], Param::Text("Order Completed".into()));
        assert_eq!(s.params[6], Param::Text("exit_event".into()));
    }
}
