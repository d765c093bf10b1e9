//! Journeys: multi-step flows per person (the abandoned-checkout reminder, a welcome series, a
//! win-back), as pure functions.
//!
//! A person's progress is not a stored cursor but a **walk**: from when they entered, the facts
//! since (events with their times, in any order), their profile now and the sends of every
//! journey (for the frequency cap), [`walk`] replays the steps and says which sends are due by
//! `now` and when to look again. So the same facts give the same sends whatever order they
//! arrived in, and a restart repeats nothing: each send has a stable key ([`send_key`]) that the
//! delivery layer deduplicates on.
//!
//! - [`config`]: definitions (`config/journeys.json`), validated with errors that name the
//!   journey, step and field.
//! - [`may_enter`]: triggers and the re-entry policy; [`in_control`]: the holdout, drawn from a
//!   hash so it is the same on every walk.
//! - [`inbound`]: SendGrid's Event Webhook and Twilio's status callbacks as events on the
//!   person's profile (opens, clicks, reads, opt-outs).
//! - [`template`]: message templates (profile fields, cart items, a per-person coupon code),
//!   escaped for their channel.
//!
//! Not wired to the Worker yet (issue #16): the edge will keep one row per (journey, person)
//! with its entry time and next due time, and run due walks from the cron sweep.

pub mod config;
pub mod inbound;
pub mod message;
pub mod run;
pub mod template;

use serde_json::{Map, Value};

pub use config::{
    Action, Cap, Journey, JourneyConfigError, QuietHours, Reentry, Step, Target, Trigger,
};

use crate::identity::sha256_hex;
use crate::personalise::computed::{ComputedState, Fact};
use crate::personalise::segment::{holds_for, holds_for_event, Subject};

const DAY_MS: i64 = 1440 * 60_000;

/// The committed journeys (`config/journeys.json`).
pub const DEFAULT_JOURNEYS: &str = include_str!("../../../config/journeys.json");
/// The committed message templates (`config/templates.json`).
pub const DEFAULT_TEMPLATES: &str = include_str!("../../../config/templates.json");

/// Why a journeys upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JourneysError {
    /// A journey is wrong.
    #[error(transparent)]
    Journey(#[from] JourneyConfigError),
    /// A template is wrong.
    #[error(transparent)]
    Template(#[from] message::TemplateConfigError),
}

impl JourneysError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            JourneysError::Journey(e) => e.code(),
            JourneysError::Template(e) => e.code(),
        }
    }
}

/// Journeys and the templates they send, validated together.
#[derive(Debug, Clone, Default)]
pub struct Journeys {
    /// The journeys.
    pub journeys: Vec<Journey>,
    /// Templates by name.
    pub templates: message::Templates,
}

impl Journeys {
    /// Parses both documents; every send must name a template of the second.
    pub fn parse(
        journeys: &Value,
        templates: &Value,
        computed: Option<&crate::personalise::computed::ComputedConfig>,
    ) -> Result<Self, JourneysError> {
        let templates = message::parse_templates(templates)?;
        let journeys = Journey::parse_all(journeys, computed)?;
        for journey in &journeys {
            for step in &journey.steps {
                if let Action::Send { template, .. } = &step.action {
                    if !templates.contains_key(template) {
                        return Err(JourneyConfigError {
                            journey: journey.name.clone(),
                            step: Some(step.id.clone()),
                            field: "send.template".into(),
                            problem: format!("names no template ({template})"),
                        }
                        .into());
                    }
                }
            }
        }
        Ok(Self {
            journeys,
            templates,
        })
    }

    /// Every journey [`Journey::scaled`] by `factor`.
    pub fn scaled(mut self, factor: i64) -> Self {
        self.journeys = self
            .journeys
            .into_iter()
            .map(|j| j.scaled(factor))
            .collect();
        self
    }

    /// The committed documents.
    pub fn committed() -> Result<Self, JourneysError> {
        let parse = |t: &str| serde_json::from_str(t).unwrap_or(Value::Null);
        Self::parse(&parse(DEFAULT_JOURNEYS), &parse(DEFAULT_TEMPLATES), None)
    }

    /// The journey named `name`.
    pub fn get(&self, name: &str) -> Option<&Journey> {
        self.journeys.iter().find(|j| j.name == name)
    }

    /// The journeys `cause` at `now_ms` triggers (before the re-entry policy).
    pub fn triggered_by<'a>(&'a self, cause: Cause<'_>, now_ms: i64) -> Vec<&'a Journey> {
        self.journeys
            .iter()
            .filter(|j| triggered(j, cause, now_ms))
            .collect()
    }
}

/// What a walk knows about the person.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    /// Their profile ID (the holdout and send keys derive from it).
    pub profile_id: &'a str,
    /// Profile traits now.
    pub traits: &'a Map<String, Value>,
    /// Computed trait values now.
    pub computed: &'a Map<String, Value>,
    /// Segments they are in now.
    pub segments: &'a [String],
    /// Behavioural facts (at least those since entry), in any order.
    pub facts: &'a [Fact],
    /// Sends any journey made to them (key, time), for the frequency cap; this walk's own
    /// sends may be among them (a re-walk) and count once.
    pub other_sends: &'a [(String, i64)],
    /// Branches an earlier walk judged (key, whether it held): judged once, so a later walk
    /// with a changed profile cannot take the other path after the first one sent.
    pub branches: &'a [(String, bool)],
    /// Erased or suppressed: they leave every journey at once.
    pub suppressed: bool,
}

/// A message a walk says is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The step.
    pub step: String,
    /// When it is due (quiet hours already applied).
    pub at_ms: i64,
    /// [`send_key`]: the same on every walk, for deduplication downstream.
    pub key: String,
    /// Destination name.
    pub destination: String,
    /// Template name.
    pub template: String,
}

/// Why a journey ended for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every step ran (or an `exit` step).
    Completed,
    /// An exit event came (`Order Completed`) at this time.
    ExitEvent(String, i64),
    /// A branch sent them out.
    BranchedOut(String),
    /// Erased or suppressed.
    Suppressed,
}

impl End {
    /// Stable code, stored as the run's end reason.
    pub fn code(&self) -> &'static str {
        match self {
            End::Completed => "completed",
            End::ExitEvent(..) => "exit_event",
            End::BranchedOut(_) => "branched_out",
            End::Suppressed => "suppressed",
        }
    }
}

/// Where the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Walk again at this time (a wait or a quiet-hours delay ends).
    At(i64),
    /// The journey is over for them.
    Done(End),
}

/// A send the walk held back, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// The step.
    pub step: String,
    /// `holdout`, `no_consent` or `frequency_cap`.
    pub reason: &'static str,
}

/// A branch this walk judged for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The step.
    pub step: String,
    /// Its key ([`send_key`] of the step), under which the caller records it.
    pub key: String,
    /// Whether it held.
    pub held: bool,
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Sends due by `now`, in order, including those earlier walks already made. The caller
    /// records every decision by key, sent or withheld, and acts only on keys it has not
    /// decided before: a send withheld for want of consent at its time is not released when
    /// consent arrives hours later.
    pub sends: Vec<Send>,
    /// Sends held back (for exposure events: a holdout is measured by what it did not get).
    pub withheld: Vec<Withheld>,
    /// Branches judged for the first time: the caller records them ([`Person::branches`]).
    pub judged: Vec<Judged>,
    /// Where it stopped.
    pub next: Next,
    /// The step it waits at (with [`Next::At`]) or ended at.
    pub step: Option<String>,
}

/// The key of the send of `step` for the person who entered `journey` at `entered_ms`.
pub fn send_key(journey: &str, profile_id: &str, entered_ms: i64, step: &str) -> String {
    let mut hex = sha256_hex(format!("{journey}\n{profile_id}\n{entered_ms}\n{step}").as_bytes());
    hex.truncate(32);
    format!("jrn_{hex}")
}

/// Whether the person is in the journey's control group (a stable draw per person).
pub fn in_control(journey: &Journey, profile_id: &str) -> bool {
    if journey.holdout_percent == 0 {
        return false;
    }
    let hex = sha256_hex(format!("holdout\n{}\n{profile_id}", journey.name).as_bytes());
    let draw = u32::from_str_radix(&hex[..8], 16).unwrap_or(0) % 100;
    draw < u32::from(journey.holdout_percent)
}

/// What can start a journey.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// The person entered this segment.
    SegmentEntered(&'a str),
    /// The person did this (a stored event body).
    Event(&'a Map<String, Value>),
}

/// Whether `cause` at `now_ms` is the journey's trigger.
pub fn triggered(journey: &Journey, cause: Cause<'_>, now_ms: i64) -> bool {
    match (&journey.trigger, cause) {
        (Trigger::SegmentEntered(want), Cause::SegmentEntered(got)) => want == got,
        (Trigger::Event { name, condition }, Cause::Event(body)) => {
            crate::activate::name_of(body) == *name
                && condition
                    .as_ref()
                    .is_none_or(|rule| holds_for_event(rule, body, now_ms))
        }
        _ => false,
    }
}

/// Whether `cause` at `now_ms` enters the person into `journey`, given their earlier entries
/// (`(entered_ms, still_active)`). [`run::enter`] applies the same policy in one statement.
pub fn may_enter(
    journey: &Journey,
    cause: Cause<'_>,
    earlier: &[(i64, bool)],
    now_ms: i64,
) -> bool {
    if !triggered(journey, cause, now_ms) || earlier.iter().any(|(_, active)| *active) {
        return false;
    }
    match journey.reentry.blocked_after(now_ms) {
        None => true,
        Some(cutoff) => earlier.iter().all(|(at, _)| *at <= cutoff),
    }
}

/// Replays `journey` for `person`, who entered at `entered_ms`, up to `now_ms`.
pub fn walk(journey: &Journey, person: &Person<'_>, entered_ms: i64, now_ms: i64) -> Walk {
    let mut out = Walk {
        sends: Vec::new(),
        withheld: Vec::new(),
        judged: Vec::new(),
        next: Next::Done(End::Completed),
        step: None,
    };
    if person.suppressed {
        out.next = Next::Done(End::Suppressed);
        return out;
    }
    // The first exit event after entry, whenever it arrived.
    let exit = person
        .facts
        .iter()
        .filter(|f| f.ts >= entered_ms && journey.exit_on.contains(&f.event))
        .min_by_key(|f| (f.ts, f.key.as_str()))
        .map(|f| (f.event.clone(), f.ts));
    let exited_by = |t: i64| exit.as_ref().filter(|(_, at)| *at <= t).cloned();
    let control = in_control(journey, person.profile_id);
    let mut t = entered_ms;
    let mut i = 0;
    while let Some(step) = journey.steps.get(i) {
        out.step = Some(step.id.clone());
        if let Some((event, at)) = exited_by(t) {
            out.next = Next::Done(End::ExitEvent(event, at));
            return out;
        }
        match &step.action {
            Action::Wait(_) | Action::WaitUntil { .. } => {
                let until = wait_end(&step.action, t);
                if until > now_ms {
                    out.next = match exited_by(now_ms) {
                        Some((event, at)) => Next::Done(End::ExitEvent(event, at)),
                        None => Next::At(until),
                    };
                    return out;
                }
                t = until;
                i += 1;
            }
            Action::Branch {
                condition,
                in_segments,
                otherwise,
            } => {
                // Counts start at the journey's last send (or entry): "opened but not clicked"
                // is about the message just sent, not an earlier one.
                let since = out.sends.last().map_or(entered_ms, |s| s.at_ms);
                let key = send_key(&journey.name, person.profile_id, entered_ms, &step.id);
                let earlier = person.branches.iter().find(|(k, _)| *k == key);
                let holds = match earlier {
                    Some((_, held)) => *held,
                    None => {
                        let held = in_segments.iter().all(|s| person.segments.contains(s))
                            && condition
                                .as_ref()
                                .is_none_or(|rule| branch_holds(rule, person, since, t));
                        out.judged.push(Judged {
                            step: step.id.clone(),
                            key,
                            held,
                        });
                        held
                    }
                };
                if holds {
                    i += 1;
                } else {
                    match otherwise {
                        Target::Step(at) => i = *at,
                        Target::Exit => {
                            out.next = Next::Done(End::BranchedOut(step.id.clone()));
                            return out;
                        }
                    }
                }
            }
            Action::Send {
                destination,
                template,
            } => {
                let at = journey.quiet_hours.map_or(t, |q| after_quiet_hours(&q, t));
                // An exit during the quiet hours stops the send they delayed.
                if let Some((event, exit_at)) = exited_by(at.min(now_ms)) {
                    out.next = Next::Done(End::ExitEvent(event, exit_at));
                    return out;
                }
                if at > now_ms {
                    out.next = Next::At(at);
                    return out;
                }
                t = at;
                let key = send_key(&journey.name, person.profile_id, entered_ms, &step.id);
                if let Some(reason) = held_back(journey, person, control, &out.sends, &key, at) {
                    out.withheld.push(Withheld {
                        step: step.id.clone(),
                        reason,
                    });
                } else {
                    out.sends.push(Send {
                        step: step.id.clone(),
                        at_ms: at,
                        key,
                        destination: destination.clone(),
                        template: template.clone(),
                    });
                }
                i += 1;
            }
            Action::Exit => break,
        }
    }
    out.next = Next::Done(End::Completed);
    out
}

/// Why the send `key` due at `at` is held back, if it is. Consent and the cap come before the
/// holdout, so the control group is held back only where the others would have been sent to.
fn held_back(
    journey: &Journey,
    person: &Person<'_>,
    control: bool,
    sent: &[Send],
    key: &str,
    at: i64,
) -> Option<&'static str> {
    if let Some(name) = &journey.consent_trait {
        let opted_in = match person.traits.get(name) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => matches!(s.as_str(), "true" | "yes" | "granted"),
            _ => false,
        };
        if !opted_in {
            return Some("no_consent");
        }
    }
    if let Some(cap) = journey.cap {
        let since = at.saturating_sub(cap.per_ms);
        let ours = |k: &str| k == key || sent.iter().any(|s| s.key == k);
        let recent = person
            .other_sends
            .iter()
            .filter(|(k, _)| !ours(k))
            .map(|(_, ts)| *ts)
            .chain(sent.iter().map(|s| s.at_ms))
            .filter(|ts| *ts > since && *ts <= at)
            .count();
        if recent >= cap.sends as usize {
            return Some("frequency_cap");
        }
    }
    if control {
        return Some("holdout");
    }
    None
}

/// A branch condition at time `t`: the profile as it is now, and `count` operands over the
/// facts between entry and `t`.
fn branch_holds(
    rule: &crate::personalise::segment::Rule,
    person: &Person<'_>,
    entered_ms: i64,
    t: i64,
) -> bool {
    let mut facts: Vec<Fact> = person
        .facts
        .iter()
        .filter(|f| f.ts >= entered_ms && f.ts <= t)
        .cloned()
        .collect();
    facts.sort_by(|a, b| (a.ts, &a.key).cmp(&(b.ts, &b.key)));
    let state = ComputedState {
        facts,
        ..ComputedState::default()
    };
    let subject = Subject {
        traits: person.traits,
        computed: person.computed,
        state: &state,
    };
    holds_for(rule, &subject, t)
}

/// When a wait step begun at `t` ends (`t` itself for any other step).
fn wait_end(action: &Action, t: i64) -> i64 {
    match action {
        Action::Wait(ms) => t.saturating_add(*ms),
        Action::WaitUntil {
            minute,
            utc_offset_minutes,
        } => next_clock_time(t, *minute, *utc_offset_minutes),
        _ => t,
    }
}

/// `t` when the local clock (at `offset_minutes`) shows `minute` then, else the next instant
/// it does.
fn next_clock_time(t: i64, minute: i64, offset_minutes: i64) -> i64 {
    let offset = offset_minutes * 60_000;
    let local = t + offset;
    let day_start = local - local.rem_euclid(DAY_MS);
    let at = day_start + minute * 60_000;
    if (0..60_000).contains(&(local - at)) {
        return t;
    }
    if at < local {
        at + DAY_MS - offset
    } else {
        at - offset
    }
}

/// `t`, or the end of the quiet hours it falls in (local time at the configured offset).
fn after_quiet_hours(q: &QuietHours, t: i64) -> i64 {
    let offset = q.utc_offset_minutes * 60_000;
    let local = t + offset;
    let day_start = local - local.rem_euclid(DAY_MS);
    let minute = (local - day_start) / 60_000;
    let quiet = if q.from_minute < q.to_minute {
        minute >= q.from_minute && minute < q.to_minute
    } else {
        minute >= q.from_minute || minute < q.to_minute
    };
    if !quiet {
        return t;
    }
    let mut end = day_start + q.to_minute * 60_000;
    if end <= local {
        end += DAY_MS;
    }
    end - offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_800_000_000_000;

    /// The site owner's flow: an hour after the cart is abandoned, an email; ten hours later,
    /// if it was opened but not clicked, a WhatsApp with 10 % off, only for shoppers who buy
    /// with discounts; an order ends it.
    fn abandoned_checkout() -> Journey {
        Journey::parse(
            "abandoned_checkout",
            &json!({
                "trigger": {"segment": "cart_abandoners"},
                "exitOn": ["Order Completed"],
                "reentry": {"days": 7},
                "frequencyCap": {"sends": 3, "per": {"days": 1}},
                "steps": [
                    {"id": "wait_1h", "wait": {"hours": 1}},
                    {"id": "reminder", "send": {"destination": "mail", "template": "cart_reminder"}},
                    {"id": "wait_10h", "wait": {"hours": 10}},
                    {"id": "opened_not_clicked", "branch": {"if": {"and": [
                        {"gte": [{"count": {"event": "Email Opened"}}, 1]},
                        {"eq": [{"count": {"event": "Email Link Clicked"}}, 0]}
                    ]}}},
                    {"id": "discount_buyer", "branch": {"inSegments": ["high_discount_affinity"]}},
                    {"id": "whatsapp", "send": {"destination": "whatsapp", "template": "discount_10"}}
                ]
            }),
            None,
        )
        .unwrap()
    }

    fn fact(event: &str, ts: i64) -> Fact {
        Fact {
            ts,
            key: format!("{event}-{ts}"),
            event: event.into(),
            props: Map::new(),
        }
    }

    fn person<'a>(
        facts: &'a [Fact],
        segments: &'a [String],
        traits: &'a Map<String, Value>,
    ) -> Person<'a> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        Person {
            profile_id: "prof_1",
            traits,
            computed: EMPTY.get_or_init(Map::new),
            segments,
            facts,
            other_sends: &[],
            branches: &[],
            suppressed: false,
        }
    }

    fn steps_sent(w: &Walk) -> Vec<&str> {
        w.sends.iter().map(|s| s.step.as_str()).collect()
    }

    #[test]
    fn a_wait_until_a_time_of_day_goes_on_at_that_local_time() {
        let j = Journey::parse(
            "morning",
            &json!({"trigger": {"event": "Signed Up"}, "steps": [
                {"id": "nine", "wait": {"until": "09:00", "utcOffsetMinutes": 60}},
                {"id": "hello", "send": {"destination": "mail", "template": "t"}}
            ]}),
            None,
        )
        .unwrap();
        let traits = Map::new();
        let p = person(&[], &[], &traits);
        let midnight = T0 - T0.rem_euclid(DAY_MS);
        // 07:30 UTC is 08:30 local: the send goes at 08:00 UTC the same day.
        let entered = midnight + 7 * HOUR + 30 * 60_000;
        assert_eq!(
            walk(&j, &p, entered, entered).next,
            Next::At(midnight + 8 * HOUR)
        );
        let w = walk(&j, &p, entered, midnight + 8 * HOUR);
        assert_eq!(steps_sent(&w), ["hello"]);
        assert_eq!(w.sends[0].at_ms, midnight + 8 * HOUR);
        // 09:30 local: tomorrow at nine.
        let late = midnight + 8 * HOUR + 30 * 60_000;
        assert_eq!(
            walk(&j, &p, late, late).next,
            Next::At(midnight + DAY_MS + 8 * HOUR)
        );
        // Nine o'clock (any second of that minute): no wait.
        assert_eq!(
            steps_sent(&walk(&j, &p, midnight + 8 * HOUR, midnight + 8 * HOUR)),
            ["hello"]
        );
        let nine_thirty_s = midnight + 8 * HOUR + 30_000;
        assert_eq!(
            steps_sent(&walk(&j, &p, nine_thirty_s, nine_thirty_s)),
            ["hello"]
        );
        let nine_oh_one = midnight + 8 * HOUR + 60_000;
        assert_eq!(
            walk(&j, &p, nine_oh_one, nine_oh_one).next,
            Next::At(midnight + DAY_MS + 8 * HOUR)
        );
        let bad = Journey::parse(
            "morning",
            &json!({"trigger": {"event": "x"}, "steps": [{"id": "w", "wait": {"until": "25:00"}}]}),
            None,
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .starts_with("journey morning: step w: wait must be"));
    }

    #[test]
    fn a_branch_is_judged_once_whatever_the_profile_does_later() {
        let j = abandoned_checkout();
        let traits = Map::new();
        let discount = vec!["high_discount_affinity".to_owned()];
        let opened = [fact("Email Opened", T0 + 2 * HOUR)];
        let p = person(&opened, &discount, &traits);
        let w = walk(&j, &p, T0, T0 + 11 * HOUR);
        assert_eq!(steps_sent(&w), ["reminder", "whatsapp"]);
        let judged: Vec<(String, bool)> =
            w.judged.iter().map(|b| (b.key.clone(), b.held)).collect();
        assert_eq!(
            w.judged
                .iter()
                .map(|b| (b.step.as_str(), b.held))
                .collect::<Vec<_>>(),
            [("opened_not_clicked", true), ("discount_buyer", true)]
        );
        // Later the shopper leaves the segment; the recorded judgement stands.
        let none: Vec<String> = vec![];
        let mut later = person(&opened, &none, &traits);
        later.branches = &judged;
        let again = walk(&j, &later, T0, T0 + 12 * HOUR);
        assert_eq!(steps_sent(&again), ["reminder", "whatsapp"]);
        assert!(again.judged.is_empty(), "nothing judged twice");
        later.branches = &[];
        assert_eq!(
            steps_sent(&walk(&j, &later, T0, T0 + 12 * HOUR)),
            ["reminder"]
        );
    }

    #[test]
    fn a_time_scale_shortens_waits_but_not_quiet_hours() {
        let mut j = abandoned_checkout();
        j.quiet_hours = Some(QuietHours {
            from_minute: 0,
            to_minute: 1,
            utc_offset_minutes: 0,
        });
        let j = j.scaled(3600);
        assert_eq!(
            j.steps[0].action,
            Action::Wait(1000),
            "an hour becomes a second"
        );
        assert_eq!(j.reentry, Reentry::After(7 * 24 * 1000));
        assert_eq!(j.cap.unwrap().per_ms, 24 * 1000);
        assert_eq!(j.quiet_hours.unwrap().to_minute, 1);
        let traits = Map::new();
        let p = person(&[], &[], &traits);
        let noon = T0 - T0.rem_euclid(DAY_MS) + DAY_MS / 2;
        assert_eq!(steps_sent(&walk(&j, &p, noon, noon + 1000)), ["reminder"]);
    }

    #[test]
    fn the_site_owners_flow_step_by_step() {
        let j = abandoned_checkout();
        let traits = Map::new();
        let discount = vec!["high_discount_affinity".to_owned()];
        let opened = [fact("Email Opened", T0 + 2 * HOUR)];
        let p = person(&opened, &discount, &traits);

        let w = walk(&j, &p, T0, T0 + 30 * 60_000);
        assert!(w.sends.is_empty());
        assert_eq!(w.next, Next::At(T0 + HOUR), "the email waits an hour");

        let w = walk(&j, &p, T0, T0 + HOUR);
        assert_eq!(steps_sent(&w), ["reminder"]);
        assert_eq!(w.sends[0].at_ms, T0 + HOUR);
        assert_eq!(w.next, Next::At(T0 + 11 * HOUR));

        let w = walk(&j, &p, T0, T0 + 11 * HOUR);
        assert_eq!(steps_sent(&w), ["reminder", "whatsapp"]);
        assert_eq!(w.sends[1].at_ms, T0 + 11 * HOUR);
        assert_eq!(w.sends[1].template, "discount_10");
        assert_eq!(w.next, Next::Done(End::Completed));
        assert_eq!(
            w.sends[0].key,
            walk(&j, &p, T0, T0 + 20 * HOUR).sends[0].key,
            "a later walk names the same send"
        );
    }

    #[test]
    fn every_way_out_of_the_flow() {
        let j = abandoned_checkout();
        let traits = Map::new();
        let discount = vec!["high_discount_affinity".to_owned()];
        let none: Vec<String> = vec![];
        let at_11h = T0 + 11 * HOUR;
        // (case, facts, segments, steps sent, where it stops)
        type Case<'a> = (&'a str, Vec<Fact>, &'a Vec<String>, Vec<&'a str>, Next);
        let table: Vec<Case> = vec![
            (
                "bought after the email: nothing more",
                vec![
                    fact("Email Opened", T0 + 2 * HOUR),
                    fact("Order Completed", T0 + 3 * HOUR),
                ],
                &discount,
                vec!["reminder"],
                Next::Done(End::ExitEvent("Order Completed".into(), T0 + 3 * HOUR)),
            ),
            (
                "bought before the email: nothing at all",
                vec![fact("Order Completed", T0 + 10 * 60_000)],
                &discount,
                vec![],
                Next::Done(End::ExitEvent("Order Completed".into(), T0 + 10 * 60_000)),
            ),
            (
                "opened and clicked: no WhatsApp",
                vec![
                    fact("Email Opened", T0 + 2 * HOUR),
                    fact("Email Link Clicked", T0 + 2 * HOUR + 5),
                ],
                &discount,
                vec!["reminder"],
                Next::Done(End::BranchedOut("opened_not_clicked".into())),
            ),
            (
                "never opened: no WhatsApp",
                vec![],
                &discount,
                vec!["reminder"],
                Next::Done(End::BranchedOut("opened_not_clicked".into())),
            ),
            (
                "opened, not a discount buyer: no WhatsApp",
                vec![fact("Email Opened", T0 + 2 * HOUR)],
                &none,
                vec!["reminder"],
                Next::Done(End::BranchedOut("discount_buyer".into())),
            ),
            (
                "opened only after the branch ran: no WhatsApp",
                vec![fact("Email Opened", at_11h + 1)],
                &discount,
                vec!["reminder"],
                Next::Done(End::BranchedOut("opened_not_clicked".into())),
            ),
        ];
        for (name, facts, segments, sent, next) in table {
            let w = walk(&j, &person(&facts, segments, &traits), T0, at_11h + HOUR);
            assert_eq!(steps_sent(&w), sent, "{name}");
            assert_eq!(w.next, next, "{name}");
        }
    }

    #[test]
    fn a_rewalk_counts_its_own_sends_once_and_branches_on_the_last_message() {
        let mut j = abandoned_checkout();
        j.cap = Some(Cap {
            sends: 2,
            per_ms: 24 * HOUR,
        });
        let traits = Map::new();
        let discount = vec!["high_discount_affinity".to_owned()];
        let opened = [fact("Email Opened", T0 + 2 * HOUR)];
        let mut p = person(&opened, &discount, &traits);
        let first = walk(&j, &p, T0, T0 + HOUR);
        // The caller recorded the reminder; the re-walk at 11 h must not count it twice.
        let recorded = [(first.sends[0].key.clone(), first.sends[0].at_ms)];
        p.other_sends = &recorded;
        assert_eq!(
            steps_sent(&walk(&j, &p, T0, T0 + 11 * HOUR)),
            ["reminder", "whatsapp"]
        );
        // An open from before the reminder was sent is not an open of the reminder.
        let early = [fact("Email Opened", T0 + 30 * 60_000)];
        let w = walk(&j, &person(&early, &discount, &traits), T0, T0 + 11 * HOUR);
        assert_eq!(steps_sent(&w), ["reminder"]);
    }

    #[test]
    fn erased_people_leave_at_once() {
        let j = abandoned_checkout();
        let traits = Map::new();
        let mut p = person(&[], &[], &traits);
        p.suppressed = true;
        let w = walk(&j, &p, T0, T0 + 20 * HOUR);
        assert!(w.sends.is_empty());
        assert_eq!(w.next, Next::Done(End::Suppressed));
    }

    #[test]
    fn consent_the_cap_and_the_holdout_hold_sends_back() {
        let mut j = abandoned_checkout();
        j.consent_trait = Some("email_opt_in".into());
        let no = Map::new();
        let w = walk(&j, &person(&[], &[], &no), T0, T0 + 2 * HOUR);
        assert!(w.sends.is_empty());
        assert_eq!(w.withheld[0].reason, "no_consent");
        let yes: Map<String, Value> = [("email_opt_in".to_owned(), json!(true))]
            .into_iter()
            .collect();
        assert_eq!(
            steps_sent(&walk(&j, &person(&[], &[], &yes), T0, T0 + 2 * HOUR)),
            ["reminder"]
        );

        let capped_sends = [
            ("a".to_owned(), T0 + 10),
            ("b".to_owned(), T0 + 20),
            ("c".to_owned(), T0 + 30),
        ];
        let mut capped = person(&[], &[], &yes);
        capped.other_sends = &capped_sends;
        let w = walk(&j, &capped, T0, T0 + 2 * HOUR);
        assert_eq!(w.withheld[0].reason, "frequency_cap");
        let old_sends = capped_sends.clone().map(|(k, ts)| (k, ts - 2 * 24 * HOUR));
        capped.other_sends = &old_sends;
        assert_eq!(
            steps_sent(&walk(&j, &capped, T0, T0 + 2 * HOUR)),
            ["reminder"],
            "outside the window"
        );

        j.holdout_percent = 50;
        let controls = (0..200)
            .filter(|i| in_control(&j, &format!("prof_{i}")))
            .count();
        assert!((70..130).contains(&controls), "about half: {controls}");
        let id = (0..200)
            .map(|i| format!("prof_{i}"))
            .find(|p| in_control(&j, p))
            .unwrap();
        let mut control = person(&[], &[], &yes);
        control.profile_id = &id;
        let w = walk(&j, &control, T0, T0 + 2 * HOUR);
        assert!(w.sends.is_empty());
        assert_eq!(w.withheld[0].reason, "holdout");
    }

    #[test]
    fn quiet_hours_move_a_send_to_the_morning() {
        let mut j = abandoned_checkout();
        // 21:00-08:00 in UTC+1.
        j.quiet_hours = Some(QuietHours {
            from_minute: 21 * 60,
            to_minute: 8 * 60,
            utc_offset_minutes: 60,
        });
        let midnight_utc = T0 - T0.rem_euclid(DAY_MS);
        let entered = midnight_utc + 21 * HOUR; // 22:00 local: the email falls due at 23:00
        let traits = Map::new();
        let p = person(&[], &[], &traits);
        let w = walk(&j, &p, entered, entered + 2 * HOUR);
        assert!(w.sends.is_empty());
        let morning = midnight_utc + DAY_MS + 7 * HOUR; // 08:00 local
        assert_eq!(w.next, Next::At(morning));
        let w = walk(&j, &p, entered, morning);
        assert_eq!(w.sends[0].at_ms, morning);
        // An order in the night stops the email the quiet hours held back.
        let ordered = [fact("Order Completed", midnight_utc + DAY_MS + 2 * HOUR)];
        let w = walk(&j, &person(&ordered, &[], &traits), entered, morning);
        assert!(w.sends.is_empty());
        assert!(matches!(w.next, Next::Done(End::ExitEvent(..))));
    }

    #[test]
    fn entry_follows_the_trigger_and_the_reentry_policy() {
        let j = abandoned_checkout();
        let cause = Cause::SegmentEntered("cart_abandoners");
        assert!(may_enter(&j, cause, &[], T0));
        assert!(!may_enter(&j, Cause::SegmentEntered("high_value"), &[], T0));
        assert!(
            !may_enter(&j, cause, &[(T0 - HOUR, true)], T0),
            "already in it"
        );
        assert!(
            !may_enter(&j, cause, &[(T0 - 24 * HOUR, false)], T0),
            "within 7 days"
        );
        assert!(may_enter(&j, cause, &[(T0 - 8 * 24 * HOUR, false)], T0));
        let mut once = j.clone();
        once.reentry = Reentry::Never;
        assert!(!may_enter(
            &once,
            cause,
            &[(T0 - 80 * 24 * HOUR, false)],
            T0
        ));

        let welcome = Journey::parse(
            "welcome",
            &json!({"trigger": {"event": "Signed Up", "where": {"eq": [{"field": "properties.plan"}, "pro"]}},
                    "steps": [{"send": {"destination": "mail", "template": "welcome"}}]}),
            None,
        )
        .unwrap();
        let signed_up = |plan: &str| {
            json!({"type": "track", "event": "Signed Up", "properties": {"plan": plan}})
                .as_object()
                .unwrap()
                .clone()
        };
        assert!(may_enter(
            &welcome,
            Cause::Event(&signed_up("pro")),
            &[],
            T0
        ));
        assert!(!may_enter(
            &welcome,
            Cause::Event(&signed_up("free")),
            &[],
            T0
        ));
    }

    #[test]
    fn definitions_are_validated_with_journey_step_and_field() {
        let bad = |raw: Value| Journey::parse("j", &raw, None).unwrap_err().to_string();
        assert_eq!(bad(json!({"steps": []})), "journey j: trigger is required");
        assert_eq!(
            bad(json!({"trigger": {"segment": "s"}, "steps": [{"id": "w", "wait": {"weeks": 1}}]})),
            "journey j: step w: wait must be {\"minutes\"|\"hours\"|\"days\": n}, up to 90 days, \
             or {\"until\": \"HH:MM\", \"utcOffsetMinutes\"?}"
        );
        assert_eq!(
            bad(
                json!({"trigger": {"segment": "s"}, "steps": [{"id": "b", "branch": {"inSegments": ["x"], "else": "nowhere"}}]})
            ),
            "journey j: step b: branch.else must be \"exit\" or the id of a later step"
        );
        assert!(bad(json!({"trigger": {"segment": "s"}, "steps": [{"id": "b", "branch": {"if": {"gte": [{"nope": 1}, 1]}}}]}))
            .starts_with("journey j: step b: operand branch.if.gte[0].nope is unknown"));
        assert_eq!(
            bad(
                json!({"trigger": {"segment": "s"}, "steps": [{"id": "s", "send": {"destination": "mail"}}]})
            ),
            "journey j: step s: send.template is required"
        );
        assert_eq!(
            bad(
                json!({"trigger": {"segment": "s"}, "holdoutPercent": 90, "steps": [{"exit": true}]})
            ),
            "journey j: holdoutPercent must be 0 to 50"
        );
        assert_eq!(
            bad(json!({"trigger": {"segment": "s"}, "steps": [{"id": "exit", "exit": true}]})),
            "journey j: step 1: id must be 1 to 64 letters, digits, '-' or '_' (and not \"exit\")"
        );
        assert_eq!(
            bad(json!({"trigger": {"segment": "s"}, "quietHours": {"from": "+8:00", "to": "07:00"},
                       "steps": [{"exit": true}]})),
            "journey j: quietHours must be {\"from\": \"HH:MM\", \"to\": \"HH:MM\", \"utcOffsetMinutes\"?}"
        );
        let committed: Value =
            serde_json::from_str(include_str!("../../../config/journeys.json")).unwrap();
        let all = Journey::parse_all(&committed, None).unwrap();
        assert!(all.iter().any(|j| j.name == "abandoned_checkout"));
    }

    proptest! {
        /// Facts arrive in any order (a late webhook, a retried batch): the sends are the same.
        #[test]
        fn any_arrival_order_gives_the_same_sends(
            times in proptest::collection::vec((0usize..4, 0i64..(14 * HOUR)), 0..12),
            seed in any::<u64>(),
        ) {
            let names = ["Email Opened", "Email Link Clicked", "Order Completed", "Product Viewed"];
            let facts: Vec<Fact> = times.iter().map(|(n, at)| fact(names[*n], T0 + at)).collect();
            let mut shuffled = facts.clone();
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let j = abandoned_checkout();
            let traits = Map::new();
            let segments = vec!["high_discount_affinity".to_owned()];
            for now in [T0 + HOUR, T0 + 11 * HOUR, T0 + 15 * HOUR] {
                let a = walk(&j, &person(&facts, &segments, &traits), T0, now);
                let b = walk(&j, &person(&shuffled, &segments, &traits), T0, now);
                prop_assert_eq!(a, b);
            }
        }
    }
}
