//! Delivery, as plans: the D1 `deliveries` table is both the outbox and the delivery log.
//!
//! 1. Ingest [`route`]s each event to the enabled destinations whose filter takes it and whose
//!    purpose its consent covers, and in the same D1 batch as the event inserts adds one
//!    `pending` row per (destination, event) ([`enqueue`]). A row exists only for an event that
//!    batch stored, so a duplicate event (a retried batch, two concurrent requests with one
//!    `messageId`) never makes a second delivery, and a failed batch makes none.
//! 2. After the response the new rows become queue messages ([`Parcel`]s of [`Job`]s). The sweep re-sends rows
//!    that are overdue ([`overdue`]): a message lost with a crashed isolate is delivered late,
//!    never lost.
//! 3. The consumer [`claim`]s a row (one sender at a time, under a lease), reads its event,
//!    [`prepare`]s the request, and after the call [`settle`]s it: delivered, retried later,
//!    dead, or skipped. [`record`] writes that with the hourly counts ([`count`]).
//! 4. Dead rows stay listable ([`list`]) and are sent again by [`replay`].
//!
//! A crash after a call and before its row is written makes one redelivery with the same
//! delivery ID ([`super::policy::delivery_id`]), which the receiver deduplicates on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::destination::Destination;
use super::policy::{self, after, check_url, permitted, permitted_body, Attempt, Backoff, Next};
use super::{FollowUp, HttpRequest, Mapped, Outgoing};
use crate::collect::event::Event;
use crate::format::time::format_iso8601;
use crate::identity::IdClass;
use crate::journey::message::MESSAGE_SOURCE;
use crate::plan::{distinct_values, Param, Statement, MAX_BOUND_PARAMS};
use crate::privacy::Subject;

/// How long a claimed delivery is held before another consumer may take it over: the longest a
/// queue consumer invocation may run (15 minutes of wall time), so a live sender is never
/// overtaken; a crashed one's rows are sent again by the sweep after it.
pub const LEASE_MS: i64 = 15 * 60_000;
/// How long a forwarded erasure waits by default, so no call that read the person's data before
/// the erasure (a profile import already under way) lands after the deletion.
pub const ERASURE_DELAY_MS: i64 = LEASE_MS;
/// How long past its due time a pending row waits before the sweep sends it again (its own
/// message normally arrives well within this).
pub const OVERDUE_AFTER_MS: i64 = 60_000;
/// Most rows one sweep re-sends, one replay re-queues, one listing returns.
pub const MAX_ROWS: u32 = 500;

/// One delivery: which destination, which stored event (queue messages carry them packed as
/// [`Parcel`]s).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Job {
    /// Destination name.
    pub destination: String,
    /// The event's source.
    pub source_id: String,
    /// The event's `messageId`.
    pub message_id: String,
}

impl Job {
    /// [`policy::delivery_id`] of this job.
    pub fn delivery_id(&self) -> String {
        policy::delivery_id(&self.destination, &self.message_id)
    }

    /// The job in a row returned as `{destination, source_id, message_id}`.
    pub fn from_row(row: &Value) -> Option<Self> {
        let field = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            destination: field("destination")?,
            source_id: field("source_id")?,
            message_id: field("message_id")?,
        })
    }

    fn key_params(&self) -> [Param; 3] {
        [
            Param::Text(self.destination.clone()),
            Param::Text(self.source_id.clone()),
            Param::Text(self.message_id.clone()),
        ]
    }
}

/// Most deliveries one queue message carries.
pub const PARCEL_SIZE: usize = 50;

/// One queue message: deliveries of one source's events to one destination. A batch of 20
/// events for 3 destinations is 3 messages, not 60 (Queues moves ~5,000 messages/s per queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parcel {
    /// Destination name.
    #[serde(rename = "d")]
    pub destination: String,
    /// The events' source.
    #[serde(rename = "s")]
    pub source_id: String,
    /// The events' `messageId`s.
    #[serde(rename = "m")]
    pub message_ids: Vec<String>,
}

impl Parcel {
    /// `jobs` packed by destination and source, at most [`PARCEL_SIZE`] to a parcel.
    pub fn pack(jobs: Vec<Job>) -> Vec<Parcel> {
        let mut grouped: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for job in jobs {
            grouped
                .entry((job.destination, job.source_id))
                .or_default()
                .push(job.message_id);
        }
        grouped
            .into_iter()
            .flat_map(|((destination, source_id), ids)| {
                ids.chunks(PARCEL_SIZE)
                    .map(|chunk| Parcel {
                        destination: destination.clone(),
                        source_id: source_id.clone(),
                        message_ids: chunk.to_vec(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The deliveries it carries.
    pub fn unpack(self) -> impl Iterator<Item = Job> {
        let Parcel {
            destination,
            source_id,
            message_ids,
        } = self;
        message_ids
            .into_iter()
            .take(PARCEL_SIZE)
            .map(move |message_id| Job {
                destination: destination.clone(),
                source_id: source_id.clone(),
                message_id,
            })
    }
}

/// The events of one batch that go to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination name.
    pub destination: String,
    /// The events' `messageId`s.
    pub message_ids: Vec<String>,
}

/// Which of `events` go where: to each enabled destination whose filter accepts the event and
/// whose purpose the event's consent permits.
pub fn route(destinations: &[Destination], events: &[&Event]) -> Vec<Route> {
    destinations
        .iter()
        .filter(|d| d.enabled && d.kind.takes_events())
        .filter_map(|d| {
            let message_ids: Vec<String> = events
                .iter()
                .filter(|e| {
                    d.filter.accepts_body(&e.body, e.received_at_ms)
                        && permitted_body(&e.body, d.kind.purpose()).is_ok()
                })
                .map(|e| e.message_id.clone())
                .collect();
            (!message_ids.is_empty()).then(|| Route {
                destination: d.name.clone(),
                message_ids,
            })
        })
        .collect()
}

/// The outbox rows for `routes` of events that source `source_id` stored at `received_at`:
/// one row per event the same batch stored (its `received_at` is this one), none for an event
/// that was a duplicate. Each statement returns the rows it added (`destination, source_id,
/// message_id`): those are the jobs to send.
pub fn enqueue(source_id: &str, routes: &[Route], received_at: i64) -> Vec<Statement> {
    let per_statement = MAX_BOUND_PARAMS - 3;
    routes
        .iter()
        .flat_map(|route| {
            route.message_ids.chunks(per_statement).map(|ids| {
                let mut params = vec![
                    Param::Text(route.destination.clone()),
                    Param::Int(received_at),
                    Param::Text(source_id.to_owned()),
                ];
                params.extend(ids.iter().map(|id| Param::Text(id.clone())));
                Statement {
                    sql: format!(
                        "INSERT INTO deliveries (destination, source_id, message_id, status, \
                         attempts, created_at, next_at, updated_at) \
                         SELECT ?1, source_id, message_id, 'pending', 0, ?2, ?2, ?2 FROM events \
                         WHERE source_id = ?3 AND received_at = ?2 AND message_id IN ({}) \
                         ON CONFLICT DO NOTHING RETURNING destination, source_id, message_id",
                        (4..4 + ids.len())
                            .map(|i| format!("?{i}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    params,
                }
            })
        })
        .collect()
}

/// The source of forwarded erasures' delivery rows (no event source has this ID: source IDs
/// are configured names).
pub const ERASURE_SOURCE: &str = "$erasure";

/// Forwards the erasure `request_id` of `subject` to every enabled destination that can delete
/// a person ([`super::destination::Kind::forwards_erasure`]: Klaviyo, and webhooks set to
/// `forwardErasures`), due after `delay_ms` ([`ERASURE_DELAY_MS`] unless configured). Returns the jobs and the rows to commit with the erasure. The payload names
/// the person's user IDs, emails and phones: it is kept only until delivered.
pub fn forward_erasure(
    destinations: &[Destination],
    request_id: &str,
    subject: &Subject,
    now_ms: i64,
    delay_ms: i64,
) -> (Vec<Job>, Vec<Statement>) {
    let payload = json!({
        "type": "delete",
        "messageId": request_id,
        "timestamp": format_iso8601(now_ms),
        "userIds": subject.values_of(&[IdClass::UserId]),
        "emails": subject.values_of(&[IdClass::Email]),
        "phones": subject.values_of(&[IdClass::Phone]),
    });
    let takes = |d: &&Destination| d.enabled && d.kind.forwards_erasure();
    destinations
        .iter()
        .filter(takes)
        .map(|d| {
            let job = Job {
                destination: d.name.clone(),
                source_id: ERASURE_SOURCE.into(),
                message_id: request_id.into(),
            };
            let mut params = job.key_params().to_vec();
            params.extend([
                Param::Int(now_ms),
                Param::Text(payload.to_string()),
                Param::Int(now_ms + delay_ms),
            ]);
            let statement = Statement {
                sql: "INSERT INTO deliveries (destination, source_id, message_id, status, \
                      attempts, created_at, next_at, updated_at, payload) \
                      VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?6, ?4, ?5) \
                      ON CONFLICT DO NOTHING RETURNING destination, source_id, message_id"
                    .into(),
                params,
            };
            (job, statement)
        })
        .unzip()
}

/// Claims `jobs` and reads their events, in as few statements as the parameter limit allows
/// (a queue batch is mostly one source's events for a few destinations):
/// - per destination and source, an update that takes each row that is due (or whose sender's
///   lease ran out), counting the attempt; it returns `destination, source_id, message_id,
///   attempts, first_attempt_at, payload` for each row taken (a job not returned is not this
///   consumer's to send);
/// - per source, a read of the events: `source_id, message_id, body, timestamp` (an event not
///   returned was erased or expired).
///
/// A row with a `payload` (a forwarded erasure) sends that instead of an event.
pub fn claim(jobs: &[Job], now_ms: i64) -> Vec<Statement> {
    let mut by_key: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    let mut by_source: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for job in jobs {
        by_key
            .entry((&job.destination, &job.source_id))
            .or_default()
            .push(&job.message_id);
        // Erasures and journey messages carry their payload: there is no event to read.
        if job.source_id == ERASURE_SOURCE || job.source_id == MESSAGE_SOURCE {
            continue;
        }
        let ids = by_source.entry(&job.source_id).or_default();
        if !ids.contains(&job.message_id.as_str()) {
            ids.push(&job.message_id);
        }
    }
    let mut plan = Vec::new();
    for ((destination, source_id), ids) in by_key {
        plan.extend(in_chunks(
            &ids,
            vec![
                Param::Int(now_ms),
                Param::Int(LEASE_MS),
                Param::Text(destination.into()),
                Param::Text(source_id.into()),
            ],
            |list| {
                format!(
                    "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, \
                     next_at = ?1 + ?2, first_attempt_at = COALESCE(first_attempt_at, ?1), \
                     updated_at = ?1 \
                     WHERE destination = ?3 AND source_id = ?4 AND message_id IN ({list}) \
                     AND ((status = 'pending' AND next_at <= ?1 + 1000) \
                          OR (status = 'sending' AND next_at < ?1)) \
                     RETURNING destination, source_id, message_id, attempts, first_attempt_at, \
                     payload"
                )
            },
        ));
    }
    for (source_id, ids) in by_source {
        plan.extend(in_chunks(
            &ids,
            vec![Param::Text(source_id.into())],
            |list| {
                format!(
                    "SELECT source_id, message_id, body, timestamp FROM events \
                 WHERE source_id = ?1 AND message_id IN ({list})"
                )
            },
        ));
    }
    plan
}

/// Statements of `sql(list of placeholders)` binding `fixed` then chunks of `ids`, as few as
/// the parameter limit allows.
fn in_chunks(ids: &[&str], fixed: Vec<Param>, sql: impl Fn(&str) -> String) -> Vec<Statement> {
    let first = fixed.len() + 1;
    ids.chunks(MAX_BOUND_PARAMS - fixed.len())
        .map(|chunk| {
            let list = (first..first + chunk.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut params = fixed.clone();
            params.extend(chunk.iter().map(|id| Param::Text((*id).to_owned())));
            Statement {
                sql: sql(&list),
                params,
            }
        })
        .collect()
}

/// How a delivery ended this time.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The destination accepted it (this HTTP status).
    Delivered(u16),
    /// Try again at this time; the attempt's error.
    Retry {
        /// Epoch ms.
        at_ms: i64,
        /// `http_503`, `network_error`, ...
        error: String,
    },
    /// Given up: in the dead-letter list, replayable.
    Dead(String),
    /// Not sent, by rule: erased, consent, the destination gone or lacking an identifier.
    Skipped(&'static str),
}

impl Outcome {
    /// The outcome's name in the hourly counts.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "delivered",
            Outcome::Retry { .. } => "retried",
            Outcome::Dead(_) => "dead",
            Outcome::Skipped(_) => "skipped",
        }
    }
}

/// What to do with a claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Make this call (and, after a 2xx, the follow-up's), then [`settle`].
    Send(HttpRequest, Option<FollowUp>),
    /// Nothing to call: record this.
    Done(Outcome),
}

/// A claimed delivery's event as stored: its body and time.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub body: &'a Value,
    pub timestamp_ms: i64,
}

/// The call for attempt `attempt` of `job`, or why there is none. `destination` is the one in
/// force now (`None`: deleted since); `event` the stored event (`None`: erased or expired). A
/// destination whose URL may not be called is dead rather than skipped, so fixing the URL and
/// replaying delivers it.
pub fn prepare(
    job: &Job,
    destination: Option<&Destination>,
    event: Option<Stored<'_>>,
    attempt: u32,
    allow_local: bool,
) -> Step {
    let Some(destination) = destination else {
        return Step::Done(Outcome::Skipped("destination_removed"));
    };
    if !destination.enabled {
        return Step::Done(Outcome::Skipped("destination_disabled"));
    }
    let Some(event) = event else {
        return Step::Done(Outcome::Skipped("event_erased"));
    };
    let erasure = job.source_id == ERASURE_SOURCE;
    let message = job.source_id == MESSAGE_SOURCE;
    // Consent is checked again: an erasure may have redacted the event since it was routed.
    // Forwarding an erasure needs none: it carries out the person's own request. A journey
    // message was judged by its journey (consent trait, opt-outs) when it was decided.
    if !erasure && !message {
        if let Err(withheld) = permitted(event.body, destination.kind.purpose()) {
            return Step::Done(Outcome::Skipped(withheld.code()));
        }
    }
    let delivery_id = job.delivery_id();
    let out = Outgoing {
        event: event.body,
        delivery_id: &delivery_id,
        attempt,
        timestamp_ms: event.timestamp_ms,
    };
    let mapped = if erasure {
        destination.kind.map_erasure(out)
    } else if message {
        destination.kind.map_message(out)
    } else {
        destination.map(out)
    };
    match mapped {
        Mapped::Skip(reason) => Step::Done(Outcome::Skipped(reason)),
        Mapped::Send(request) => match check_url(&request.url, allow_local) {
            Ok(()) => Step::Send(request, None),
            Err(e) => Step::Done(Outcome::Dead(e.code().into())),
        },
        Mapped::SendThen(request, then) => match check_url(&request.url, allow_local) {
            Ok(()) => Step::Send(request, Some(then)),
            Err(e) => Step::Done(Outcome::Dead(e.code().into())),
        },
    }
}

/// What follows an attempt (see [`after`]).
pub fn settle(attempt: Attempt<'_>, backoff: &Backoff, jitter: f64) -> Outcome {
    match after(attempt, backoff, jitter) {
        Next::Delivered => Outcome::Delivered(attempt.status.unwrap_or(200)),
        Next::RetryIn(ms) => Outcome::Retry {
            at_ms: attempt.now_ms.saturating_add(ms),
            error: attempt
                .status
                .map_or_else(|| "network_error".to_owned(), |s| format!("http_{s}")),
        },
        Next::DeadLetter(reason) => Outcome::Dead(reason),
    }
}

/// Writes the outcomes of claimed jobs (with the HTTP status each call got and the attempt
/// number it was claimed as), each only while its row is still this sender's (`sending`, same
/// attempt). Outcomes that write the same values share one
/// statement per destination and source: a batch that went well is a single update.
pub fn record(outcomes: &[(Job, Outcome, Option<u16>, u32)], now_ms: i64) -> Vec<Statement> {
    type Values = (String, i64, Option<String>, Option<u16>, u32);
    let mut groups: BTreeMap<(&str, &str, Values), Vec<&str>> = BTreeMap::new();
    for (job, outcome, http_status, attempt) in outcomes {
        let (status, next_at, error) = match outcome {
            Outcome::Delivered(_) => ("delivered", now_ms, None),
            Outcome::Retry { at_ms, error } => ("pending", *at_ms, Some(error.clone())),
            Outcome::Dead(error) => ("dead", now_ms, Some(error.clone())),
            Outcome::Skipped(reason) => ("skipped", now_ms, Some((*reason).to_owned())),
        };
        groups
            .entry((
                &job.destination,
                &job.source_id,
                (status.to_owned(), next_at, error, *http_status, *attempt),
            ))
            .or_default()
            .push(&job.message_id);
    }
    groups
        .into_iter()
        .flat_map(
            |((destination, source_id, (status, next_at, error, http, attempt)), ids)| {
                let fixed = vec![
                    Param::Text(status),
                    Param::Int(next_at),
                    error.map_or(Param::Null, Param::Text),
                    http.map_or(Param::Null, |s| Param::Int(i64::from(s))),
                    Param::Int(now_ms),
                    Param::Text(destination.into()),
                    Param::Text(source_id.into()),
                    Param::Int(i64::from(attempt)),
                ];
                in_chunks(&ids, fixed, |list| {
                    format!(
                        "UPDATE deliveries SET status = ?1, next_at = ?2, last_error = ?3, \
                         last_status = ?4, updated_at = ?5, \
                         payload = CASE WHEN ?1 IN ('delivered', 'skipped') THEN NULL \
                         ELSE payload END \
                         WHERE destination = ?6 AND source_id = ?7 AND message_id IN ({list}) \
                         AND status = 'sending' AND attempts = ?8"
                    )
                })
            },
        )
        .collect()
}

/// Adds `outcomes` (destination, outcome) to the hourly counts of the hour of `now_ms`.
pub fn count<'a>(
    outcomes: impl IntoIterator<Item = (&'a str, &'a Outcome)>,
    now_ms: i64,
) -> Vec<Statement> {
    let hour = now_ms - now_ms.rem_euclid(3_600_000);
    let mut totals: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (destination, outcome) in outcomes {
        *totals.entry((destination, outcome.name())).or_default() += 1;
    }
    totals
        .into_iter()
        .map(|((destination, outcome), n)| Statement {
            sql: "INSERT INTO delivery_counts (destination, hour, outcome, count) \
                  VALUES (?1, ?2, ?3, ?4) \
                  ON CONFLICT (destination, hour, outcome) DO UPDATE SET count = count + ?4"
                .into(),
            params: vec![
                Param::Text(destination.into()),
                Param::Int(hour),
                Param::Text(outcome.into()),
                Param::Int(n),
            ],
        })
        .collect()
}

/// Rows whose message should have arrived by `now_ms` and did not (pending past due, or
/// claimed by a sender whose lease ran out): `destination, source_id, message_id`.
pub fn overdue(now_ms: i64) -> Statement {
    Statement {
        sql: "SELECT destination, source_id, message_id FROM deliveries \
              WHERE (status = 'pending' AND next_at < ?1) OR (status = 'sending' AND next_at < ?2) \
              LIMIT ?3"
            .into(),
        params: vec![
            Param::Int(now_ms - OVERDUE_AFTER_MS),
            Param::Int(now_ms),
            Param::Int(i64::from(MAX_ROWS)),
        ],
    }
}

/// Makes dead deliveries of `destination` due again with a fresh retry window (all of them up
/// to [`MAX_ROWS`], or those of `message_ids`); returns the jobs to send.
pub fn replay(destination: &str, message_ids: Option<&[String]>, now_ms: i64) -> Statement {
    let mut params = vec![
        Param::Text(destination.into()),
        Param::Int(now_ms),
        Param::Int(i64::from(MAX_ROWS)),
    ];
    let only = match message_ids {
        Some(ids) => {
            let ids = &ids[..ids.len().min(MAX_BOUND_PARAMS - 3)];
            params.extend(ids.iter().map(|id| Param::Text(id.clone())));
            format!(
                " AND message_id IN ({})",
                (4..4 + ids.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        None => String::new(),
    };
    Statement {
        sql: format!(
            "UPDATE deliveries SET status = 'pending', next_at = ?2, first_attempt_at = NULL, \
             updated_at = ?2 \
             WHERE destination = ?1 AND (source_id, message_id) IN \
             (SELECT source_id, message_id FROM deliveries \
              WHERE destination = ?1 AND status = 'dead'{only} LIMIT ?3) \
             RETURNING destination, source_id, message_id"
        ),
        params,
    }
}

/// Delivery states as the log and the admin API name them.
pub const STATUSES: [&str; 5] = ["pending", "sending", "delivered", "skipped", "dead"];

/// The newest deliveries of `destination` (of `status` when given; `failed` is `dead`), at
/// most `limit`.
pub fn list(destination: &str, status: Option<&str>, limit: u32) -> Statement {
    let mut params = vec![
        Param::Text(destination.into()),
        Param::Int(i64::from(limit.clamp(1, MAX_ROWS))),
    ];
    const COLUMNS: &str = "source_id, message_id, status, attempts, last_status, last_error, \
                           created_at, updated_at, next_at";
    let newest = |status: &str| {
        format!(
            "SELECT {COLUMNS} FROM deliveries WHERE destination = ?1 \
             AND status = {status} ORDER BY updated_at DESC LIMIT ?2"
        )
    };
    let sql = match status {
        Some(status) => {
            params.push(Param::Text(status.into()));
            newest("?3")
        }
        // The newest of each status, then the newest of those: each part reads its end of the
        // (destination, status, updated_at) index, where one query over every status would
        // read and sort the destination's whole log.
        None => {
            let parts: Vec<String> = STATUSES
                .iter()
                .map(|status| format!("SELECT * FROM ({})", newest(&format!("'{status}'"))))
                .collect();
            format!(
                "SELECT * FROM ({}) ORDER BY updated_at DESC LIMIT ?2",
                parts.join(" UNION ALL ")
            )
        }
    };
    Statement { sql, params }
}

/// Per destination: rows by status (`destination, status, n`), and the hourly counts since
/// `since_ms` (`destination, outcome, n`).
pub fn summary(since_ms: i64) -> [Statement; 2] {
    [
        Statement {
            sql: "SELECT destination, status, COUNT(*) AS n FROM deliveries \
                  GROUP BY destination, status"
                .into(),
            params: vec![],
        },
        Statement {
            sql: "SELECT destination, outcome, SUM(count) AS n FROM delivery_counts \
                  WHERE hour >= ?1 GROUP BY destination, outcome"
                .into(),
            params: vec![Param::Int(since_ms)],
        },
    ]
}

/// Keeps the log bounded: finished rows (delivered, skipped) older than `done_before_ms`, dead
/// ones older than `dead_before_ms` and hourly counts older than `dead_before_ms`, at most
/// `chunk` rows of each per statement.
pub fn prune(done_before_ms: i64, dead_before_ms: i64, chunk: u32) -> [Statement; 3] {
    // Destination by destination (walked by index seeks), each a range of the
    // `(destination, status, updated_at)` index: the `(status, next_at)` index the planner picks
    // otherwise would read every delivered row of the retained log to find the old ones.
    let rows = |statuses: &str, before: i64| Statement {
        sql: format!(
            "DELETE FROM deliveries WHERE (destination, source_id, message_id) IN \
             (WITH RECURSIVE {} \
              SELECT d.destination, d.source_id, d.message_id FROM dests \
              CROSS JOIN deliveries d ON d.destination = dests.value \
              WHERE d.status IN ({statuses}) AND d.updated_at < ?1 LIMIT ?2)",
            distinct_values("dests", "deliveries", "destination")
        ),
        params: vec![Param::Int(before), Param::Int(i64::from(chunk))],
    };
    [
        rows("'delivered', 'skipped'", done_before_ms),
        rows("'dead'", dead_before_ms),
        Statement {
            sql: "DELETE FROM delivery_counts WHERE hour < ?1".into(),
            params: vec![Param::Int(dead_before_ms)],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope};
    use serde_json::json;

    fn event(raw: Value) -> Event {
        validate(raw, 10, &Envelope::default(), || "generated".into()).unwrap()
    }

    fn destinations() -> Vec<Destination> {
        Destination::parse_all(&json!({
            "orders": {"type": "webhook", "enabled": true,
                       "settings": {"url": "https://hooks.example/o", "secret": "0123456789abcdef"},
                       "filter": {"events": ["Order Completed"]}},
            "ads": {"type": "meta", "enabled": true,
                    "settings": {"pixelId": "123", "accessToken": "EAAB"}},
            "off": {"type": "webhook",
                    "settings": {"url": "https://hooks.example/x", "secret": "0123456789abcdef"}}
        }))
        .unwrap()
    }

    fn job(message_id: &str) -> Job {
        Job {
            destination: "orders".into(),
            source_id: "web".into(),
            message_id: message_id.into(),
        }
    }

    #[test]
    fn routes_by_filter_purpose_consent_and_enabled() {
        let order = event(
            json!({"type": "track", "event": "Order Completed", "anonymousId": "a",
            "messageId": "m1", "context": {"consent": {"gcm": {"analytics_storage": "granted", "ad_user_data": "denied"}}}}),
        );
        let view = event(
            json!({"type": "track", "event": "Product Viewed", "anonymousId": "a",
            "messageId": "m2", "context": {"consent": {"gcm": {"ad_user_data": "granted"}}}}),
        );
        let routes = route(&destinations(), &[&order, &view]);
        let of = |name: &str| {
            routes
                .iter()
                .find(|r| r.destination == name)
                .map(|r| r.message_ids.clone())
        };
        assert_eq!(of("orders"), Some(vec!["m1".to_owned()]));
        assert_eq!(
            of("ads"),
            Some(vec!["m2".to_owned()]),
            "ad consent denied on the order"
        );
        assert_eq!(of("off"), None, "disabled destinations get nothing");
    }

    #[test]
    fn enqueues_only_what_the_batch_stored() {
        let routes = [Route {
            destination: "orders".into(),
            message_ids: (0..120).map(|i| format!("m{i}")).collect(),
        }];
        let plan = enqueue("web", &routes, 42);
        assert_eq!(plan.len(), 2, "chunked under the parameter limit");
        for s in &plan {
            assert!(s.params.len() <= MAX_BOUND_PARAMS);
            assert!(s.sql.contains("received_at = ?2"));
            assert!(s.sql.contains("ON CONFLICT DO NOTHING"));
            let highest = s.params.len();
            assert!(s.sql.contains(&format!("?{highest})")));
        }
        assert_eq!(plan[0].params[1], Param::Int(42));
    }

    #[test]
    fn skips_what_may_not_or_cannot_be_sent() {
        let all = destinations();
        let orders = all.iter().find(|d| d.name == "orders");
        let body = json!({"type": "track", "event": "Order Completed", "anonymousId": "a", "messageId": "m1"});
        let stored = Stored {
            body: &body,
            timestamp_ms: 1,
        };
        assert_eq!(
            prepare(&job("m1"), None, Some(stored), 1, false),
            Step::Done(Outcome::Skipped("destination_removed"))
        );
        assert_eq!(
            prepare(&job("m1"), orders, None, 1, false),
            Step::Done(Outcome::Skipped("event_erased"))
        );
        let denied = json!({"type": "track", "event": "Order Completed", "anonymousId": "a",
            "context": {"consent": {"gcm": {"analytics_storage": "denied"}}}});
        assert_eq!(
            prepare(
                &job("m1"),
                orders,
                Some(Stored {
                    body: &denied,
                    timestamp_ms: 1
                }),
                1,
                false
            ),
            Step::Done(Outcome::Skipped("consent_denied"))
        );
        let off = all.iter().find(|d| d.name == "off");
        assert_eq!(
            prepare(&job("m1"), off, Some(stored), 1, false),
            Step::Done(Outcome::Skipped("destination_disabled"))
        );
        match prepare(&job("m1"), orders, Some(stored), 2, false) {
            Step::Send(request, None) => {
                assert_eq!(request.url, "https://hooks.example/o");
                assert_eq!(
                    request.header("x-seam-delivery"),
                    Some(job("m1").delivery_id().as_str())
                );
                assert_eq!(request.header("x-seam-attempt"), Some("2"));
            }
            other => panic!("expected a call, got {other:?}"),
        }
    }

    #[test]
    fn a_url_that_may_not_be_called_is_dead_not_skipped() {
        let local = Destination::parse(
            "orders",
            &json!({"type": "webhook", "enabled": true,
                    "settings": {"url": "http://127.0.0.1:9/x", "secret": "0123456789abcdef"}}),
        )
        .unwrap();
        let body = json!({"type": "track", "event": "X", "userId": "u"});
        let stored = Stored {
            body: &body,
            timestamp_ms: 1,
        };
        assert_eq!(
            prepare(&job("m"), Some(&local), Some(stored), 1, false),
            Step::Done(Outcome::Dead("destination_url_not_https".into()))
        );
        assert!(matches!(
            prepare(&job("m"), Some(&local), Some(stored), 1, true),
            Step::Send(_, None)
        ));
    }

    #[test]
    fn settles_attempts_into_outcomes() {
        let attempt = |status: Option<u16>, retry_after: Option<&'static str>| Attempt {
            status,
            retry_after,
            number: 1,
            first_at_ms: 1_000,
            now_ms: 1_000,
        };
        let backoff = Backoff::default();
        assert_eq!(
            settle(attempt(Some(202), None), &backoff, 0.0),
            Outcome::Delivered(202)
        );
        assert_eq!(
            settle(attempt(Some(429), Some("3")), &backoff, 0.0),
            Outcome::Retry {
                at_ms: 4_000,
                error: "http_429".into()
            }
        );
        assert_eq!(
            settle(attempt(None, None), &backoff, 0.0),
            Outcome::Retry {
                at_ms: 16_000,
                error: "network_error".into()
            }
        );
        assert_eq!(
            settle(attempt(Some(400), None), &backoff, 0.0),
            Outcome::Dead("http_400".into())
        );
    }

    #[test]
    fn records_only_while_the_row_is_claimed_and_groups_alike_outcomes() {
        let retry = Outcome::Retry {
            at_ms: 9,
            error: "http_500".into(),
        };
        let plan = record(
            &[
                (job("m1"), Outcome::Delivered(200), Some(200), 1),
                (job("m2"), Outcome::Delivered(200), Some(200), 1),
                (job("m3"), retry, Some(500), 2),
            ],
            5,
        );
        assert_eq!(plan.len(), 2, "the two deliveries share an update");
        assert!(plan
            .iter()
            .all(|s| s.sql.ends_with("AND status = 'sending' AND attempts = ?8")));
        let delivered = plan
            .iter()
            .find(|s| s.params[0] == Param::Text("delivered".into()))
            .unwrap();
        assert_eq!(
            delivered.params[7..],
            [
                Param::Int(1),
                Param::Text("m1".into()),
                Param::Text("m2".into())
            ]
        );
        let pending = plan
            .iter()
            .find(|s| s.params[0] == Param::Text("pending".into()))
            .unwrap();
        assert_eq!(pending.params[1], Param::Int(9));
        assert_eq!(pending.params[3], Param::Int(500));
    }

    #[test]
    fn claims_a_batch_in_one_update_per_destination_and_one_read_per_source() {
        let mut jobs: Vec<Job> = (0..40).map(|i| job(&format!("m{i}"))).collect();
        jobs.extend((0..40).map(|i| Job {
            destination: "ads".into(),
            ..job(&format!("m{i}"))
        }));
        let plan = claim(&jobs, 7);
        let updates = plan.iter().filter(|s| s.sql.starts_with("UPDATE")).count();
        let reads: Vec<_> = plan
            .iter()
            .filter(|s| s.sql.starts_with("SELECT"))
            .collect();
        assert_eq!(updates, 2);
        assert_eq!(reads.len(), 1, "one source; each event read once");
        assert_eq!(reads[0].params.len(), 41);
        for s in &plan {
            assert!(s.params.len() <= MAX_BOUND_PARAMS);
            assert!(s.sql.contains(&format!("?{})", s.params.len())));
        }
    }

    #[test]
    fn counts_outcomes_per_destination_and_hour() {
        let delivered = Outcome::Delivered(200);
        let dead = Outcome::Dead("http_400".into());
        let plan = count(
            [
                ("a", &delivered),
                ("a", &delivered),
                ("b", &dead),
                ("a", &dead),
            ],
            3_600_000 * 5 + 1_234,
        );
        assert_eq!(plan.len(), 3);
        let a_delivered = plan
            .iter()
            .find(|s| {
                s.params[0] == Param::Text("a".into())
                    && s.params[2] == Param::Text("delivered".into())
            })
            .unwrap();
        assert_eq!(a_delivered.params[1], Param::Int(3_600_000 * 5));
        assert_eq!(a_delivered.params[3], Param::Int(2));
    }

    #[test]
    fn replays_dead_rows_only_with_a_fresh_window() {
        let all = replay("orders", None, 7);
        assert!(all.sql.contains("status = 'dead'"));
        assert!(all.sql.contains("first_attempt_at = NULL"));
        let some = replay("orders", Some(&["m1".into(), "m2".into()]), 7);
        assert!(some.sql.contains("message_id IN (?4,?5)"));
        assert_eq!(some.params.len(), 5);
    }

    #[test]
    fn an_erasure_goes_to_destinations_that_can_delete() {
        let mut all = destinations();
        all.extend(
            Destination::parse_all(&json!({
                "kl": {"type": "klaviyo", "enabled": true, "settings": {"apiKey": "pk"},
                       "filter": {"events": ["Order Completed"]}},
                "all": {"type": "webhook", "enabled": true,
                        "settings": {"url": "https://hooks.example/all", "secret": "0123456789abcdef",
                                     "forwardErasures": true}}
            }))
            .unwrap(),
        );
        let mut subject = Subject::default();
        subject.identifiers.extend([
            "user_id:u1".to_owned(),
            "email:ann@shop.example".to_owned(),
            "anonymous_id:a1".to_owned(),
        ]);
        let (jobs, plan) = forward_erasure(&all, "req_1", &subject, 5, ERASURE_DELAY_MS);
        assert_eq!(plan[0].params[5], Param::Int(5 + ERASURE_DELAY_MS));
        let names: Vec<&str> = jobs.iter().map(|j| j.destination.as_str()).collect();
        assert_eq!(
            names,
            ["all", "kl"],
            "not Meta (no API), not a webhook that did not ask"
        );
        assert!(jobs.iter().all(|j| j.source_id == ERASURE_SOURCE));
        let Param::Text(payload) = &plan[0].params[4] else {
            panic!("payload")
        };
        let payload: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(payload["emails"], json!(["ann@shop.example"]));
        assert_eq!(payload["userIds"], json!(["u1"]));
        assert!(
            !payload.to_string().contains("a1"),
            "anonymous IDs stay home"
        );

        let kl = all.iter().find(|d| d.name == "kl");
        let stored = Stored {
            body: &payload,
            timestamp_ms: 5,
        };
        match prepare(&jobs[1], kl, Some(stored), 1, false) {
            Step::Send(r, None) => assert!(r.url.ends_with("/api/data-privacy-deletion-jobs")),
            other => panic!("expected a deletion job, got {other:?}"),
        }
    }

    #[test]
    fn jobs_travel_packed_by_destination_and_source() {
        let mut jobs: Vec<Job> = (0..60).map(|i| job(&format!("m{i}"))).collect();
        jobs.push(Job {
            destination: "ads".into(),
            ..job("m0")
        });
        let parcels = Parcel::pack(jobs.clone());
        assert_eq!(
            parcels
                .iter()
                .map(|p| p.message_ids.len())
                .collect::<Vec<_>>(),
            [1, 50, 10]
        );
        let text = serde_json::to_string(&parcels[0]).unwrap();
        assert_eq!(text, r#"{"d":"ads","s":"web","m":["m0"]}"#);
        let mut back: Vec<Job> = parcels
            .into_iter()
            .map(|p| serde_json::from_str::<Parcel>(&serde_json::to_string(&p).unwrap()).unwrap())
            .flat_map(Parcel::unpack)
            .collect();
        back.sort();
        jobs.sort();
        assert_eq!(back, jobs);
    }

    #[test]
    fn a_job_is_named_by_a_returned_row() {
        let row = json!({"destination": "orders", "source_id": "web", "message_id": "m1"});
        assert_eq!(Job::from_row(&row), Some(job("m1")));
    }
}
