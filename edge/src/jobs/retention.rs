//! The scheduled retention run (cron in wrangler.toml): purges raw events past their retention
//! and erases profiles made only of anonymous identifiers that have been inactive too long, in
//! bounded chunks so one run never exceeds the Worker's CPU or D1's query limits.
//!
//! KV copies need no purge here: snapshots are written with a TTL equal to the anonymous-profile
//! retention, so an inactive profile's copies expire on their own.

use std::collections::BTreeMap;

use seam_core::activate::deliver;
use seam_core::format::id;
use seam_core::format::time::DAY_MS;
use seam_core::plan::Statement;
use seam_core::privacy::retention::{purge_events, save_profiles_walk, WALK_CURSOR, WALK_STEP};
use seam_core::privacy::{audit, expire, AuditEntry};
use serde_json::json;
use worker::Env;

use crate::error::ApiError;
use crate::store::privacy::Suppressed;
use crate::store::retention::{changes, expired_profiles, walk_start};
use crate::store::shards::Shards;
use crate::{platform, settings, store};

/// What one run removed.
#[derive(Debug, Default)]
pub struct Report {
    /// Raw events deleted.
    pub events: usize,
    /// Anonymous profiles erased.
    pub profiles: usize,
    /// Rows deleted per table for those profiles.
    pub profile_rows: BTreeMap<&'static str, usize>,
    /// Delivery log rows pruned (finished ones after a week, dead ones after 30 days).
    pub deliveries: usize,
    /// Journey decisions and ended runs pruned (after the event retention).
    pub journeys: usize,
    /// Rejection log rows pruned (after a week).
    pub rejections: usize,
    /// Archive objects deleted (whole days past the event retention).
    pub archive_objects: usize,
    /// Finished imports forgotten (after the event retention).
    pub imports: usize,
    /// Chunks used: the events purge's and the profile erasures', each at most the configured
    /// maximum.
    pub chunks: u32,
    /// Profiles read looking for inactive anonymous ones (at most the configured walk).
    pub walked: u32,
}

/// The walk's position in an erasure plan (not a table's rows).
const WALK_POSITION: &str = "walkPosition";

/// How long finished deliveries (delivered, skipped) stay in the log.
const DONE_DELIVERIES_MS: i64 = 7 * DAY_MS;
/// How long dead deliveries (replayable) and the hourly counts stay.
const DEAD_DELIVERIES_MS: i64 = 30 * DAY_MS;

/// Runs retention as of `now_ms` and records the run in the audit log.
pub async fn run(env: &Env, now_ms: i64) -> Result<Report, ApiError> {
    let policy = settings::retention(env)?;
    let db = Shards::of(env)?;
    let mut report = Report::default();
    while report.chunks < policy.max_chunks {
        let archived_only = super::archive::enabled(env);
        let deleted = changes(&db, &purge_events(&policy, now_ms, archived_only)).await?;
        report.events += deleted;
        report.chunks += 1;
        if deleted < policy.chunk as usize {
            break;
        }
    }
    let sources = store::sources::all_ids(env, &*store::sources::configured(env)?).await?;
    // Inactive anonymous profiles: a walk over the profiles' rows in key order, carried on from
    // where the previous run stopped, up to `walk` profiles and `max_chunks` erasures a run (a
    // budget of its own: a busy events purge does not stop it).
    let mut after = walk_start(&db, WALK_CURSOR).await?;
    let mut saved = after.clone();
    let mut budget = policy.walk;
    let mut erasures = 0;
    while erasures < policy.max_chunks && budget > 0 {
        let rows = WALK_STEP.min(budget);
        let step = expired_profiles(&db, &policy, now_ms, &after, rows).await?;
        budget -= rows;
        report.walked += step.walked;
        after = step.after;
        if !step.expired.profile_ids.is_empty() {
            erasures += 1;
            report.profiles += step.expired.profile_ids.len();
            let mut plan: Vec<(&'static str, Statement)> = expire(&step.expired, &sources, now_ms);
            // The position commits with the erasure: a run that fails later resumes here.
            plan.push((WALK_POSITION, save_profiles_walk(&after)));
            for (what, n) in
                store::privacy::run_erasure(&db, &step.expired, plan, Suppressed::No).await?
            {
                if what != WALK_POSITION {
                    *report.profile_rows.entry(what).or_default() += n;
                }
            }
            saved.clone_from(&after);
        }
        if step.went_round {
            break;
        }
    }
    report.chunks += erasures;
    if saved != after {
        store::d1::execute(&db, &[save_profiles_walk(&after)]).await?;
    }
    // The delivery log has its own budget: a busy events purge must not let it grow, nor keep
    // dead erasure requests past their 30 days.
    for statement in deliver::prune(
        now_ms - DONE_DELIVERIES_MS,
        now_ms - DEAD_DELIVERIES_MS,
        policy.chunk,
    ) {
        for _ in 0..policy.max_chunks {
            let deleted = changes(&db, &statement).await?;
            report.deliveries += deleted;
            if deleted < policy.chunk as usize {
                break;
            }
        }
    }
    report.rejections = changes(&db, &seam_core::collect::live::prune_rejections(now_ms)).await?;
    report.archive_objects = super::archive::expire(env, policy.event_cutoff(now_ms)).await?;
    // The index of the days just deleted, and tombstones older than anything left.
    let cutoff_day = policy
        .event_cutoff(now_ms)
        .div_euclid(seam_core::format::time::DAY_MS);
    store::archive_index::expire(&db, cutoff_day).await?;
    let plan = seam_core::archive::compact::expire_index(cutoff_day);
    let results = crate::store::d1::execute(&db, &plan).await?;
    // The objects `DB` deleted, whichever were made since the shards' part read them.
    #[derive(serde::Deserialize)]
    struct Deleted {
        id: i64,
    }
    let deleted: Vec<i64> = match results.get(1) {
        Some(r) => r.results::<Deleted>()?.into_iter().map(|d| d.id).collect(),
        None => Vec::new(),
    };
    store::archive_index::forget_objects(&db, &deleted).await?;
    // Finished imports, their refused rows (which quote the cells) and any file left behind.
    for id in store::imports::prune(&db, policy.event_cutoff(now_ms)).await? {
        if let Ok(bucket) = env.bucket(super::import::BUCKET) {
            bucket.delete(super::import::file_key(&id)).await?;
        }
        report.imports += 1;
    }
    // Journeys' history goes with the events it was made from; runs still going stay.
    let before = now_ms - i64::from(policy.event_days) * DAY_MS;
    for statement in seam_core::journey::run::prune(before, policy.chunk) {
        for _ in 0..policy.max_chunks {
            let deleted = changes(&db, &statement).await?;
            report.journeys += deleted;
            if deleted < policy.chunk as usize {
                break;
            }
        }
    }
    let entry = AuditEntry {
        request_id: id::message_id("retention", now_ms, platform::random_bytes()),
        action: "retention",
        actor: "scheduler".into(),
        subject: None,
        detail: json!({
            "events": report.events,
            "profiles": report.profiles,
            "profileRows": report.profile_rows,
            "deliveries": report.deliveries,
            "journeys": report.journeys,
            "rejections": report.rejections,
            "archiveObjects": report.archive_objects,
            "imports": report.imports,
            "chunks": report.chunks,
            "profilesWalked": report.walked,
            "eventDays": policy.event_days,
            "anonymousProfileDays": policy.anonymous_profile_days,
        }),
        at_ms: now_ms,
    };
    store::d1::execute(&db, &[audit(&entry)]).await?;
    Ok(report)
}
