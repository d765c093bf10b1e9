//! The delivery log (`deliveries`, `delivery_counts`): runs core's delivery plans
//! (`seam_core::activate::deliver`) and reads their rows back.

use std::collections::{BTreeMap, HashMap};

use seam_core::activate::deliver::{self, Job, Outcome};
use seam_core::plan::Statement;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::{D1Database, D1Result};

use crate::error::ApiError;
use crate::store::d1;

/// A delivery this consumer now holds, with its event as stored (`None`: erased or expired).
pub struct Claimed {
    /// The delivery.
    pub job: Job,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// When the first attempt of the current retry window was made.
    pub first_attempt_at: i64,
    /// The stored event's body and time.
    pub event: Option<(Value, i64)>,
}

#[derive(Deserialize)]
struct ClaimRow {
    destination: String,
    source_id: String,
    message_id: String,
    attempts: u32,
    first_attempt_at: i64,
    payload: Option<String>,
}

#[derive(Deserialize)]
struct EventRow {
    source_id: String,
    message_id: String,
    body: String,
    timestamp: i64,
}

/// Claims `jobs` in one batch; returns those this consumer holds (the rest are finished, not
/// due yet or held by another sender).
pub async fn claim(db: &D1Database, jobs: &[Job], now_ms: i64) -> worker::Result<Vec<Claimed>> {
    let plan = deliver::claim(jobs, now_ms);
    let results = d1::execute(db, &plan).await?;
    let mut taken = Vec::new();
    let mut events: HashMap<(String, String), (Value, i64)> = HashMap::new();
    for (statement, result) in plan.iter().zip(&results) {
        if statement.sql.starts_with("UPDATE") {
            taken.extend(result.results::<ClaimRow>()?);
        } else {
            for row in result.results::<EventRow>()? {
                if let Ok(body) = serde_json::from_str(&row.body) {
                    events.insert((row.source_id, row.message_id), (body, row.timestamp));
                }
            }
        }
    }
    Ok(taken
        .into_iter()
        .map(|row| {
            let event = match &row.payload {
                Some(payload) => serde_json::from_str(payload).ok().map(|p| (p, now_ms)),
                None => events
                    .get(&(row.source_id.clone(), row.message_id.clone()))
                    .cloned(),
            };
            Claimed {
                job: Job {
                    destination: row.destination,
                    source_id: row.source_id,
                    message_id: row.message_id,
                },
                attempt: row.attempts,
                first_attempt_at: row.first_attempt_at,
                event,
            }
        })
        .collect())
}

/// Writes the outcomes (with the HTTP status each call got) and the hourly counts, in one batch.
pub async fn record(
    db: &D1Database,
    outcomes: &[(Job, Outcome, Option<u16>, u32)],
    now_ms: i64,
) -> worker::Result<()> {
    let mut plan = deliver::record(outcomes, now_ms);
    plan.extend(deliver::count(
        outcomes
            .iter()
            .map(|(job, outcome, _, _)| (job.destination.as_str(), outcome)),
        now_ms,
    ));
    d1::execute(db, &plan).await.map(drop)
}

/// The jobs named by `RETURNING destination, source_id, message_id` rows.
pub fn jobs_of(results: &[D1Result]) -> Vec<Job> {
    results
        .iter()
        .filter_map(|r| r.results::<Value>().ok())
        .flatten()
        .filter_map(|row| Job::from_row(&row))
        .collect()
}

/// Deliveries overdue at `now_ms` (their messages were lost, or their sender's lease ran out).
pub async fn overdue(db: &D1Database, now_ms: i64) -> worker::Result<Vec<Job>> {
    let rows: Vec<Value> = d1::rows(db, &deliver::overdue(now_ms)).await?;
    Ok(rows.iter().filter_map(Job::from_row).collect())
}

/// Makes dead deliveries of `destination` due again (those of `message_ids`, or all), with
/// `audit` in the same batch; returns the jobs to send.
pub async fn replay(
    db: &D1Database,
    destination: &str,
    message_ids: Option<&[String]>,
    audit: Statement,
    now_ms: i64,
) -> Result<Vec<Job>, ApiError> {
    let results = d1::execute(
        db,
        &[deliver::replay(destination, message_ids, now_ms), audit],
    )
    .await?;
    Ok(jobs_of(&results[..1.min(results.len())]))
}

/// A delivery as the admin API lists it.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    #[serde(rename(deserialize = "source_id"))]
    pub source_id: String,
    #[serde(rename(deserialize = "message_id"))]
    pub message_id: String,
    pub status: String,
    pub attempts: i64,
    #[serde(rename(deserialize = "last_status"))]
    pub last_status: Option<i64>,
    #[serde(rename(deserialize = "last_error"))]
    pub last_error: Option<String>,
    #[serde(rename(deserialize = "created_at"))]
    pub created_at: i64,
    #[serde(rename(deserialize = "updated_at"))]
    pub updated_at: i64,
    /// A pending delivery's due time.
    #[serde(rename(deserialize = "next_at"))]
    pub next_at: i64,
}

/// The newest deliveries of `destination` (of `status`, when given).
pub async fn list(
    db: &D1Database,
    destination: &str,
    status: Option<&str>,
    limit: u32,
) -> worker::Result<Vec<Row>> {
    d1::rows(db, &deliver::list(destination, status, limit)).await
}

#[derive(Deserialize)]
struct CountRow {
    destination: String,
    #[serde(alias = "outcome")]
    status: String,
    n: i64,
}

/// Per destination: `{"byStatus": {...}, "last24h": {...}}` (rows now, and outcomes in the
/// hourly counts since `since_ms`).
pub async fn summary(db: &D1Database, since_ms: i64) -> worker::Result<BTreeMap<String, Value>> {
    let [by_status, recent] = deliver::summary(since_ms);
    let results = d1::execute(db, &[by_status, recent]).await?;
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (result, field) in results.iter().zip(["byStatus", "last24h"]) {
        for row in result.results::<CountRow>()? {
            let entry = out
                .entry(row.destination)
                .or_insert_with(|| serde_json::json!({"byStatus": {}, "last24h": {}}));
            entry[field][row.status] = Value::from(row.n);
        }
    }
    Ok(out)
}
