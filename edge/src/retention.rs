//! The scheduled retention run (cron in wrangler.toml): purges raw events past their retention
//! and erases profiles made only of anonymous identifiers that have been inactive too long, in
//! bounded chunks so one run never exceeds the Worker's CPU or D1's query limits.
//!
//! KV copies need no purge here: snapshots are written with a TTL equal to the anonymous-profile
//! retention, so an inactive profile's copies expire on their own.

use std::collections::BTreeMap;

use seam_core::format::id;
use seam_core::plan::Statement;
use seam_core::privacy::retention::{inactive_anonymous_profiles, purge_events, Retention};
use seam_core::privacy::{audit, erase, AuditEntry, Subject};
use serde::Deserialize;
use serde_json::json;
use worker::{D1Database, Env};

use crate::error::ApiError;
use crate::{random_bytes, settings, store};

#[derive(Deserialize)]
struct MemberRow {
    identifier: String,
    profile_id: String,
}

/// What one run removed.
#[derive(Debug, Default)]
pub struct Report {
    /// Raw events deleted.
    pub events: usize,
    /// Anonymous profiles erased.
    pub profiles: usize,
    /// Rows deleted per table for those profiles.
    pub profile_rows: BTreeMap<&'static str, usize>,
    /// Chunks used (at most the configured maximum).
    pub chunks: u32,
}

/// Runs retention as of `now_ms` and records the run in the audit log.
pub async fn run(env: &Env, now_ms: i64) -> Result<Report, ApiError> {
    let policy = settings::retention(env)?;
    let db = env.d1("DB")?;
    let mut report = Report::default();
    while report.chunks < policy.max_chunks {
        let deleted = changes(&db, &purge_events(&policy, now_ms)).await?;
        report.events += deleted;
        report.chunks += 1;
        if deleted < policy.chunk as usize {
            break;
        }
    }
    let sources = store::sources::all_ids(env, &store::sources::configured(env)?).await?;
    while report.chunks < policy.max_chunks {
        let expired = expired_profiles(&db, &policy, now_ms).await?;
        if expired.profile_ids.is_empty() {
            break;
        }
        report.chunks += 1;
        report.profiles += expired.profile_ids.len();
        let plan: Vec<(&'static str, Statement)> = erase(&expired, &sources);
        for (what, n) in store::privacy::run_counted(&db, &plan).await? {
            *report.profile_rows.entry(what).or_default() += n;
        }
        if expired.profile_ids.len() < policy.chunk as usize {
            break;
        }
    }
    let entry = AuditEntry {
        request_id: id::message_id("retention", now_ms, random_bytes()),
        action: "retention",
        actor: "scheduler".into(),
        subject: None,
        detail: json!({
            "events": report.events,
            "profiles": report.profiles,
            "profileRows": report.profile_rows,
            "chunks": report.chunks,
            "eventDays": policy.event_days,
            "anonymousProfileDays": policy.anonymous_profile_days,
        }),
        at_ms: now_ms,
    };
    store::d1::execute(&db, &[audit(&entry)]).await?;
    Ok(report)
}

async fn changes(db: &D1Database, statement: &Statement) -> Result<usize, ApiError> {
    let results = store::d1::execute(db, std::slice::from_ref(statement)).await?;
    Ok(match results.first() {
        Some(r) => r.meta()?.and_then(|m| m.changes).unwrap_or(0),
        None => 0,
    })
}

/// One chunk of expired anonymous profiles with all their identifiers, as one subject.
async fn expired_profiles(
    db: &D1Database,
    policy: &Retention,
    now_ms: i64,
) -> Result<Subject, ApiError> {
    let ids: Vec<String> = store::d1::rows::<store::profiles::ProfileIdRow>(
        db,
        &inactive_anonymous_profiles(policy, now_ms),
    )
    .await?
    .into_iter()
    .map(|r| r.profile_id)
    .collect();
    let mut subject = Subject::default();
    if ids.is_empty() {
        return Ok(subject);
    }
    let members = db
        .prepare(
            "SELECT identifier, profile_id FROM identities WHERE profile_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&[serde_json::to_string(&ids).unwrap_or_default().into()])?
        .all()
        .await?
        .results::<MemberRow>()?;
    for m in members {
        subject.identifiers.insert(m.identifier);
        subject.profile_ids.insert(m.profile_id);
    }
    Ok(subject)
}
