//! Journeys at the edge: entering people where their triggers happen (a profile refresh for
//! events and segment entries, the segment sweep for time-driven entries), and the one-minute
//! cron that walks every run whose time has come (`seam_core::journey::walk`), records each
//! send's decision once and hands the messages to the delivery queue.
//!
//! Why the cron and not Durable Object alarms or delayed queue messages: a run's next time can
//! move (quiet hours, an exit event, a profile merge) and the walk is a function of the
//! person's facts, so re-reading D1 every minute is the simplest thing that survives restarts;
//! one-minute precision is what the journeys need, and delayed queue messages stop at 12 hours.

use std::collections::HashSet;

use seam_core::activate::deliver::Job;
use seam_core::collect::source::Source;
use seam_core::identity::{IdType, Identifier};
use seam_core::journey::message::{self, Origin, Recipient};
use seam_core::journey::run::{self, Claimed, Decision};
use seam_core::journey::{self as journey, Cause, Journeys, Person};
use serde_json::Value;
use worker::{D1Database, Env};

use crate::error::ApiError;
use crate::store::shards::Shards;
use crate::store::{self, d1};
use crate::{isolate, platform, settings};

/// Claims per cron run; what is left waits a minute.
const MAX_CHUNKS: u32 = 10;
/// Decision outcomes of a branch judged.
const BRANCH_HELD: &str = "branch_held";
const BRANCH_NOT_HELD: &str = "branch_not_held";

/// The person a trigger happened to.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// Their profile.
    pub profile_id: &'a str,
    /// The source their events came through (the exposure event is stored under it; none
    /// known: no exposure event).
    pub source: Option<&'a Source>,
    /// A user ID of theirs, for the exposure event.
    pub user_id: Option<&'a str>,
    /// An anonymous ID of theirs, for the exposure event.
    pub anonymous_id: Option<&'a str>,
}

/// Enters `who` into every journey one of `causes` triggers at `now_ms` (the re-entry policy
/// and "not twice at once" are the entry statement's), and stores a `Journey Entered`
/// exposure event for each entry, naming the group (treatment or holdout control).
pub async fn enter(
    env: &Env,
    db: &D1Database,
    who: Who<'_>,
    causes: &[Cause<'_>],
    now_ms: i64,
) -> Result<usize, ApiError> {
    store::journeys::refresh(env, now_ms).await;
    let journeys = isolate::journeys();
    let mut entries: Vec<(&str, String)> = Vec::new();
    let mut plan = Vec::new();
    for cause in causes {
        for j in journeys.triggered_by(*cause, now_ms) {
            if entries.iter().any(|(name, _)| *name == j.name) {
                continue;
            }
            let (because, trigger) = match cause {
                Cause::SegmentEntered(segment) => (format!("segment:{segment}"), None),
                Cause::Event(body) => (
                    format!("event:{}", seam_core::activate::name_of(body)),
                    Some(Value::Object((*body).clone())),
                ),
            };
            plan.push(run::enter(
                j,
                who.profile_id,
                &because,
                trigger.as_ref(),
                now_ms,
            ));
            entries.push((j.name.as_str(), because));
        }
    }
    if plan.is_empty() {
        return Ok(0);
    }
    let results = d1::execute(db, &plan).await?;
    let mut exposures = Vec::new();
    for ((name, because), result) in entries.iter().zip(&results) {
        #[derive(serde::Deserialize)]
        struct Entered {
            entered_at: i64,
            control: i64,
        }
        for row in result.results::<Entered>()? {
            exposures.push(run::entered_event(
                name,
                because,
                (who.profile_id, who.user_id, who.anonymous_id),
                row.entered_at,
                row.control != 0,
            ));
        }
    }
    let entered = exposures.len();
    let known = who.user_id.is_some() || who.anonymous_id.is_some();
    if let (true, true, Some(source)) = (entered > 0, known, who.source) {
        let rules = settings::identity_rules(env)?;
        let stored = store::events::store(db, &rules, source, &exposures, now_ms).await?;
        super::send_stored(env, stored).await;
    }
    Ok(entered)
}

/// What one cron run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Runs walked.
    pub walked: usize,
    /// Messages handed to the queue.
    pub sent: usize,
}

/// Walks every run due at `now_ms` (the cron's scheduled time).
pub async fn run(env: &Env, now_ms: i64) -> Result<Report, ApiError> {
    store::config::refresh(env, now_ms).await;
    store::journeys::refresh(env, now_ms).await;
    // Every decision is final: none is made from a configuration this isolate could not read
    // (a journey would look removed, a destination missing, a segment empty).
    if isolate::journeys_stamp().is_empty() || !isolate::destinations_loaded() {
        return Err(ApiError::Storage(
            "journeys or destinations not loaded".into(),
        ));
    }
    if isolate::config().is_none() {
        return Err(ApiError::Storage("no personalisation configuration".into()));
    }
    let journeys = isolate::journeys();
    let db = Shards::of(env)?;
    let mut report = Report::default();
    let mut jobs = Vec::new();
    for _ in 0..MAX_CHUNKS {
        let claimed = store::journeys::claim_due(&db, now_ms).await?;
        for due in &claimed {
            match walk_one(env, &db, &journeys, due, now_ms).await {
                Ok(sent) => {
                    report.walked += 1;
                    report.sent += sent.len();
                    jobs.extend(sent);
                }
                // The run stays claimed until its lease ends, then the next run retries it.
                Err(e) => worker::console_error!("journey walk failed: {}", e.code()),
            }
        }
        if claimed.len() < run::MAX_CLAIM as usize {
            break;
        }
    }
    super::deliver::send(env, jobs).await;
    Ok(report)
}

/// Walks one run: its decisions, its messages and where it waits next, in one batch.
async fn walk_one(
    env: &Env,
    db: &Shards,
    journeys: &Journeys,
    due: &Claimed,
    now_ms: i64,
) -> Result<Vec<Job>, ApiError> {
    let Some(journey) = journeys.get(&due.journey) else {
        d1::execute(db, &[run::end(due, "journey_removed", now_ms)]).await?;
        return Ok(Vec::new());
    };
    let (mut view, (state, _)) = store::profiles::view_and_state(db, &due.profile_id).await?;
    if view.identifiers.is_empty() {
        // Merged into another profile (the run follows it), or erased (it ends).
        match store::profiles::current_id(db, &due.profile_id).await? {
            Some(into) if into != due.profile_id => {
                d1::execute(db, &run::follow_merge(&due.profile_id, &into, now_ms)).await?;
            }
            _ => {
                d1::execute(db, &[run::end(due, "erased", now_ms)]).await?;
            }
        }
        return Ok(Vec::new());
    }
    store::profiles::fill_personalisation(&mut view, &state, now_ms);
    let identifiers: Vec<Identifier> = view
        .identifiers
        .iter()
        .filter_map(|t| Identifier::parse(t))
        .collect();
    let suppressed = store::privacy::any_suppressed(db, &identifiers).await?;
    let decisions = store::journeys::decisions_of(db, &due.profile_id).await?;
    let sent: Vec<(String, i64)> = decisions
        .iter()
        .filter(|d| d.outcome == "sent")
        .map(|d| (d.key.clone(), d.at))
        .collect();
    let branches: Vec<(String, bool)> = decisions
        .iter()
        .filter_map(|d| match d.outcome.as_str() {
            BRANCH_HELD => Some((d.key.clone(), true)),
            BRANCH_NOT_HELD => Some((d.key.clone(), false)),
            _ => None,
        })
        .collect();
    let person = Person {
        // Keys and the holdout derive from the profile at entry: a merge changes neither.
        profile_id: &due.key_profile,
        traits: &view.traits,
        computed: &view.computed_traits,
        segments: &view.segments,
        facts: &state.computed.facts,
        other_sends: &sent,
        branches: &branches,
        suppressed,
    };
    let walk = journey::walk(journey, &person, due.entered_at, now_ms);
    let decided: HashSet<&str> = decisions.iter().map(|d| d.key.as_str()).collect();
    let due_sends: Vec<_> = walk
        .sends
        .iter()
        .filter(|s| !decided.contains(s.key.as_str()))
        .collect();
    let secret = settings::coupon_secret(env);
    let needs_secret = due_sends.iter().any(|s| {
        journeys
            .templates
            .get(&s.template)
            .is_some_and(|t| t.needs_secret())
    });
    if needs_secret && secret.is_none() {
        // Retried when the lease ends: a missing secret is the deployment's to fix.
        return Err(ApiError::Storage(
            "SECRETS_KEY is needed for coupon codes".into(),
        ));
    }
    let contact = |kind: IdType| {
        identifiers
            .iter()
            .find(|i| i.kind == kind)
            .map(|i| i.value.as_str())
    };
    let recipient = Recipient {
        profile_id: &due.key_profile,
        email: contact(IdType::Email),
        phone: contact(IdType::Phone),
        traits: &view.traits,
        computed: &view.computed_traits,
    };
    let trigger: Option<Value> = due
        .trigger_event
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok());
    let destinations = isolate::destinations();
    // Message rows are due by the wall clock: the queue consumer claims by it.
    let queued_at = platform::now_ms();
    let mut plan = Vec::new();
    for judged in &walk.judged {
        let decision = Decision {
            key: &judged.key,
            run: due,
            step: &judged.step,
            destination: None,
            outcome: if judged.held {
                BRANCH_HELD
            } else {
                BRANCH_NOT_HELD
            },
            at_ms: now_ms,
        };
        plan.extend(run::decide(&decision, None, queued_at));
    }
    for send in due_sends {
        let message = match journeys.templates.get(&send.template) {
            None => Err("no_template"),
            Some(_)
                if !destinations
                    .iter()
                    .any(|d| d.name == send.destination && d.enabled) =>
            {
                Err("no_destination")
            }
            Some(template) => {
                let origin = Origin {
                    journey: &journey.name,
                    step: &send.step,
                    key: &send.key,
                    event: trigger.as_ref(),
                };
                let secret = secret.as_ref().map_or(&[][..], |s| &s[..]);
                message::render(template, recipient, origin, secret).map_err(|u| u.code())
            }
        };
        let (outcome, payload) = match message {
            Ok(payload) => ("sent", Some(payload.to_string())),
            Err(reason) => (reason, None),
        };
        let decision = Decision {
            key: &send.key,
            run: due,
            step: &send.step,
            destination: Some(&send.destination),
            outcome,
            at_ms: send.at_ms,
        };
        plan.extend(run::decide(&decision, payload.as_deref(), queued_at));
    }
    for withheld in &walk.withheld {
        let key = journey::send_key(
            &journey.name,
            &due.key_profile,
            due.entered_at,
            &withheld.step,
        );
        if decided.contains(key.as_str()) {
            continue;
        }
        let decision = Decision {
            key: &key,
            run: due,
            step: &withheld.step,
            destination: None,
            outcome: withheld.reason,
            at_ms: now_ms,
        };
        plan.extend(run::decide(&decision, None, queued_at));
    }
    plan.push(run::settle(due, &walk.next, walk.step.as_deref(), now_ms));
    let results = d1::execute(db, &plan).await?;
    Ok(store::deliveries::jobs_of(&results))
}
