//! Journey definitions (`config/journeys.json`): parsed, then validated; every error names the
//! journey, the step and the field.

use serde_json::{Map, Value};

use crate::personalise::computed::ComputedConfig;
use crate::personalise::segment::{event_condition, profile_condition, Rule, SegmentConfigError};

const MINUTE_MS: i64 = 60_000;
/// Most steps one journey has.
pub const MAX_STEPS: usize = 50;
/// Longest wait: 90 days.
pub const MAX_WAIT_MS: i64 = 90 * 1440 * MINUTE_MS;
/// Longest re-entry delay or frequency-cap window: 10 years.
pub const MAX_WINDOW_MS: i64 = 3650 * 1440 * MINUTE_MS;

/// Why a journey definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journey {journey}: {}{field} {problem}", step.as_ref().map(|s| format!("step {s}: ")).unwrap_or_default())]
pub struct JourneyConfigError {
    /// The journey (empty for the document itself).
    pub journey: String,
    /// The step, when the error is inside one.
    pub step: Option<String>,
    /// The field (`trigger.segment`, `wait`, `branch.if.gte[0]`, ...).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl JourneyConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "invalid_journey_config"
    }
}

/// What starts a journey for a person.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Entering this segment (`{"segment": "cart_abandoners"}`).
    SegmentEntered(String),
    /// An event with this name, when the condition holds for it (`{"event": "Signed Up",
    /// "where": {...}}`).
    Event {
        /// Event name.
        name: String,
        /// A condition over the event (`{"field": "properties.plan"}` operands).
        condition: Option<Rule>,
    },
}

/// Where a branch goes when its condition fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// To the step at this index.
    Step(usize),
    /// Out of the journey.
    Exit,
}

/// One step's action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Wait this long (`{"wait": {"hours": 1}}`).
    Wait(i64),
    /// Wait until the next time the local clock shows `minute` (minutes after midnight) at
    /// `utc_offset_minutes` (`{"wait": {"until": "09:00", "utcOffsetMinutes": 60}}`); no wait
    /// when it shows it now.
    WaitUntil {
        /// Minutes after local midnight.
        minute: i64,
        /// The local clock's offset from UTC.
        utc_offset_minutes: i64,
    },
    /// Go on when the condition holds over the profile and the events since the journey began
    /// and the person is in every listed segment; otherwise go to `otherwise`.
    Branch {
        /// The segment rule language; `count` operands count events since entry.
        condition: Option<Rule>,
        /// Segments the person must be in.
        in_segments: Vec<String>,
        /// Where to go otherwise.
        otherwise: Target,
    },
    /// Send a message through a destination with a template.
    Send {
        /// Destination name.
        destination: String,
        /// Template name.
        template: String,
    },
    /// Leave the journey.
    Exit,
}

/// A named step.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub action: Action,
}

/// Whether someone who was in the journey may enter it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    /// Once per person.
    Never,
    /// Whenever triggered while not in it.
    Always,
    /// Once this long has passed since the last entry.
    After(i64),
}

impl Reentry {
    /// At `now_ms`, an earlier entry later than the returned time blocks a new one (`None`:
    /// none does; only an active run does).
    pub fn blocked_after(self, now_ms: i64) -> Option<i64> {
        match self {
            Reentry::Never => Some(i64::MIN),
            Reentry::Always => None,
            Reentry::After(ms) => Some(now_ms.saturating_sub(ms)),
        }
    }
}

/// At most `sends` messages per person in any `per_ms` window, across journeys.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub sends: u32,
    pub per_ms: i64,
}

/// Local hours in which nothing is sent (a send due then waits until they end).
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Minutes after local midnight.
    pub from_minute: i64,
    pub to_minute: i64,
    /// The site's offset from UTC.
    pub utc_offset_minutes: i64,
}

/// A validated journey.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub name: String,
    pub trigger: Trigger,
    pub steps: Vec<Step>,
    /// Events that end the journey at once (`Order Completed`).
    pub exit_on: Vec<String>,
    pub reentry: Reentry,
    pub cap: Option<Cap>,
    /// A trait that must be truthy for any send (`email_opt_in`): marketing needs a recorded
    /// opt-in.
    pub consent_trait: Option<String>,
    pub quiet_hours: Option<QuietHours>,
    /// Share of entrants (0-50 %) kept as a control group that gets nothing.
    pub holdout_percent: u8,
}

impl Journey {
    /// Parses `{"name": {...}, ...}`; `computed` checks `computed` operands in branches.
    pub fn parse_all(
        doc: &Value,
        computed: Option<&ComputedConfig>,
    ) -> Result<Vec<Journey>, JourneyConfigError> {
        let Some(entries) = doc.as_object() else {
            return Err(JourneyConfigError {
                journey: String::new(),
                step: None,
                field: "document".into(),
                problem: "must be an object keyed by journey name".into(),
            });
        };
        entries
            .iter()
            .filter(|(name, _)| !name.starts_with('_'))
            .map(|(name, raw)| Journey::parse(name, raw, computed))
            .collect()
    }

    /// The journey with its durations (waits, the re-entry period, the cap's window) divided
    /// by `factor`: `JOURNEY_TIME_SCALE` runs an hour's wait in a second for demos and tests.
    /// Quiet hours are clock times and stay as they are.
    pub fn scaled(mut self, factor: i64) -> Journey {
        if factor <= 1 {
            return self;
        }
        let scale = |ms: i64| (ms / factor).max(1);
        for step in &mut self.steps {
            if let Action::Wait(ms) = &mut step.action {
                *ms = scale(*ms);
            }
        }
        if let Reentry::After(ms) = &mut self.reentry {
            *ms = scale(*ms);
        }
        if let Some(cap) = &mut self.cap {
            cap.per_ms = scale(cap.per_ms);
        }
        self
    }

    /// Parses and validates one journey.
    pub fn parse(
        name: &str,
        raw: &Value,
        computed: Option<&ComputedConfig>,
    ) -> Result<Journey, JourneyConfigError> {
        let err = |step: Option<&str>, field: &str, problem: &str| JourneyConfigError {
            journey: name.to_owned(),
            step: step.map(str::to_owned),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        let from_rule = |step: Option<&str>, e: SegmentConfigError| {
            let (field, problem) = match e {
                SegmentConfigError::Invalid { field, problem, .. } => (field, problem),
                SegmentConfigError::Unknown { field, .. } => (field, "is unknown".into()),
                SegmentConfigError::TooComplex { field, .. } => (field, "is too large".into()),
                other => ("rule".into(), other.to_string()),
            };
            err(step, &field, &problem)
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                None,
                "name",
                "must be 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        let raw = raw
            .as_object()
            .ok_or_else(|| err(None, "entry", "must be an object"))?;
        let trigger = match raw.get("trigger").and_then(Value::as_object) {
            Some(t) => match (t.get("segment"), t.get("event")) {
                (Some(Value::String(s)), None) if !s.is_empty() => {
                    Trigger::SegmentEntered(s.clone())
                }
                (None, Some(Value::String(e))) if !e.is_empty() => Trigger::Event {
                    name: e.clone(),
                    condition: match t.get("where") {
                        None | Some(Value::Null) => None,
                        Some(rule) => {
                            Some(event_condition(rule, name).map_err(|e| from_rule(None, e))?)
                        }
                    },
                },
                _ => {
                    return Err(err(
                        None,
                        "trigger",
                        "must be {\"segment\": name} or {\"event\": name, \"where\"?: rule}",
                    ))
                }
            },
            None => return Err(err(None, "trigger", "is required")),
        };
        let raw_steps = raw
            .get("steps")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty() && s.len() <= MAX_STEPS)
            .ok_or_else(|| err(None, "steps", "must be a list of 1 to 50 steps"))?;
        let ids: Vec<String> = raw_steps
            .iter()
            .enumerate()
            .map(|(i, s)| match s.get("id") {
                None | Some(Value::Null) => Ok(format!("{}", i + 1)),
                Some(Value::String(id))
                    if !id.is_empty()
                        && id.len() <= 64
                        && id != "exit"
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    Ok(id.clone())
                }
                Some(_) => Err(err(
                    Some(&format!("{}", i + 1)),
                    "id",
                    "must be 1 to 64 letters, digits, '-' or '_' (and not \"exit\")",
                )),
            })
            .collect::<Result<_, _>>()?;
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(err(Some(id), "id", "is used by an earlier step"));
            }
        }
        let mut steps = Vec::new();
        for (i, step) in raw_steps.iter().enumerate() {
            let id = ids[i].as_str();
            let step = step
                .as_object()
                .ok_or_else(|| err(Some(id), "step", "must be an object"))?;
            let kinds: Vec<&str> = ["wait", "branch", "send", "exit"]
                .into_iter()
                .filter(|k| step.contains_key(*k))
                .collect();
            let action = match kinds.as_slice() {
                ["wait"] => wait(&step["wait"]).ok_or_else(|| {
                    err(
                        Some(id),
                        "wait",
                        "must be {\"minutes\"|\"hours\"|\"days\": n}, up to 90 days, or {\"until\": \"HH:MM\", \"utcOffsetMinutes\"?}",
                    )
                })?,
                ["branch"] => {
                    let branch = step["branch"]
                        .as_object()
                        .ok_or_else(|| err(Some(id), "branch", "must be an object"))?;
                    let condition = match branch.get("if") {
                        None | Some(Value::Null) => None,
                        Some(rule) => Some(
                            profile_condition(rule, name, "branch.if", computed)
                                .map_err(|e| from_rule(Some(id), e))?,
                        ),
                    };
                    let in_segments = match branch.get("inSegments") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(names)) => names
                            .iter()
                            .map(|n| n.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| {
                                err(Some(id), "branch.inSegments", "must be segment names")
                            })?,
                        Some(_) => {
                            return Err(err(Some(id), "branch.inSegments", "must be a list"))
                        }
                    };
                    if condition.is_none() && in_segments.is_empty() {
                        return Err(err(Some(id), "branch", "needs \"if\" or \"inSegments\""));
                    }
                    let otherwise = match branch.get("else").and_then(Value::as_str) {
                        None | Some("exit") => Target::Exit,
                        Some(target) => match ids.iter().position(|s| s == target) {
                            Some(at) if at > i => Target::Step(at),
                            _ => {
                                return Err(err(
                                    Some(id),
                                    "branch.else",
                                    "must be \"exit\" or the id of a later step",
                                ))
                            }
                        },
                    };
                    Action::Branch {
                        condition,
                        in_segments,
                        otherwise,
                    }
                }
                ["send"] => {
                    let send = step["send"]
                        .as_object()
                        .ok_or_else(|| err(Some(id), "send", "must be an object"))?;
                    let text = |k: &str| {
                        send.get(k)
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                    };
                    Action::Send {
                        destination: text("destination")
                            .ok_or_else(|| err(Some(id), "send.destination", "is required"))?,
                        template: text("template")
                            .ok_or_else(|| err(Some(id), "send.template", "is required"))?,
                    }
                }
                ["exit"] => Action::Exit,
                _ => {
                    return Err(err(
                        Some(id),
                        "step",
                        "must have exactly one of wait, branch, send or exit",
                    ))
                }
            };
            steps.push(Step {
                id: id.to_owned(),
                action,
            });
        }
        let exit_on = match raw.get("exitOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|n| n.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| err(None, "exitOn", "must be event names"))?,
            Some(_) => return Err(err(None, "exitOn", "must be a list of event names")),
        };
        let reentry = match raw.get("reentry") {
            None | Some(Value::Null) => Reentry::Never,
            Some(Value::String(s)) if s == "never" => Reentry::Never,
            Some(Value::String(s)) if s == "always" => Reentry::Always,
            Some(Value::Object(o)) => {
                Reentry::After(duration_of(o, MAX_WINDOW_MS).ok_or_else(|| {
                    err(
                        None,
                        "reentry",
                        "must be \"never\", \"always\" or a duration",
                    )
                })?)
            }
            Some(_) => {
                return Err(err(
                    None,
                    "reentry",
                    "must be \"never\", \"always\" or a duration",
                ))
            }
        };
        let cap = match raw.get("frequencyCap") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => {
                let sends = o
                    .get("sends")
                    .and_then(Value::as_u64)
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| err(None, "frequencyCap.sends", "must be 1 to 100"))?;
                let per = o
                    .get("per")
                    .and_then(Value::as_object)
                    .and_then(|o| duration_of(o, MAX_WINDOW_MS))
                    .ok_or_else(|| err(None, "frequencyCap.per", "must be a duration"))?;
                Some(Cap {
                    sends: sends as u32,
                    per_ms: per,
                })
            }
            Some(_) => return Err(err(None, "frequencyCap", "must be an object")),
        };
        let consent_trait = match raw.get("consentTrait") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(err(None, "consentTrait", "must be a trait name")),
        };
        let quiet_hours = match raw.get("quietHours") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => {
                let minute = |k: &str| o.get(k).and_then(Value::as_str).and_then(clock_minute);
                let offset = match o.get("utcOffsetMinutes") {
                    None => Some(0),
                    Some(v) => v.as_i64().filter(|m| m.abs() <= 14 * 60),
                };
                match (minute("from"), minute("to"), offset) {
                    (Some(from_minute), Some(to_minute), Some(utc_offset_minutes))
                        if from_minute != to_minute =>
                    {
                        Some(QuietHours {
                            from_minute,
                            to_minute,
                            utc_offset_minutes,
                        })
                    }
                    _ => return Err(err(
                        None,
                        "quietHours",
                        "must be {\"from\": \"HH:MM\", \"to\": \"HH:MM\", \"utcOffsetMinutes\"?}",
                    )),
                }
            }
            Some(_) => return Err(err(None, "quietHours", "must be an object")),
        };
        let holdout_percent = match raw.get("holdoutPercent") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .filter(|p| *p <= 50)
                .ok_or_else(|| err(None, "holdoutPercent", "must be 0 to 50"))?
                as u8,
        };
        Ok(Journey {
            name: name.to_owned(),
            trigger,
            steps,
            exit_on,
            reentry,
            cap,
            consent_trait,
            quiet_hours,
            holdout_percent,
        })
    }
}

fn wait(v: &Value) -> Option<Action> {
    let o = v.as_object()?;
    if let Some(until) = o.get("until") {
        let minute = clock_minute(until.as_str()?)?;
        let utc_offset_minutes = match o.get("utcOffsetMinutes") {
            None => 0,
            Some(m) => m.as_i64().filter(|m| m.abs() <= 14 * 60)?,
        };
        let known = |k: &String| k == "until" || k == "utcOffsetMinutes";
        return o.keys().all(known).then_some(Action::WaitUntil {
            minute,
            utc_offset_minutes,
        });
    }
    duration_of(o, MAX_WAIT_MS).map(Action::Wait)
}

fn duration_of(o: &Map<String, Value>, max_ms: i64) -> Option<i64> {
    let (unit, n) = o.iter().next().filter(|_| o.len() == 1)?;
    let unit_ms = match unit.as_str() {
        "minutes" => MINUTE_MS,
        "hours" => 60 * MINUTE_MS,
        "days" => 1440 * MINUTE_MS,
        _ => return None,
    };
    let ms = (n.as_f64()? * unit_ms as f64).round() as i64;
    (ms > 0 && ms <= max_ms).then_some(ms)
}

fn clock_minute(text: &str) -> Option<i64> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}
