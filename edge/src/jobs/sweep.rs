//! The segment sweep (cron, every five minutes): a profile whose memberships change with time
//! alone (a cart left past the abandon window, a category interest ageing out) is re-evaluated
//! when its `check_at` comes (`core::personalise::next_check`), so `Segment Entered`/`Exited`
//! events and membership rows appear on time rather than at the profile's next event, and its
//! KV snapshot follows. Bounded chunks keep one run within the Worker's limits.

use seam_core::journey::Cause;
use seam_core::personalise;
use serde_json::Value;
use std::collections::VecDeque;

use worker::Env;

use crate::error::ApiError;
use crate::store::shards::Shards;
use crate::store::{self, d1};
use crate::{isolate, settings};

/// Profiles per chunk.
const CHUNK: i64 = 50;
/// Chunks per run; what is left waits for the next run.
const MAX_CHUNKS: u32 = 20;

/// What one run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Profiles re-evaluated.
    pub profiles: usize,
    /// Segments entered or exited.
    pub transitions: usize,
}

/// Re-evaluates every profile due at `now_ms` (at most [`MAX_CHUNKS`] × [`CHUNK`]).
pub async fn run(env: &Env, now_ms: i64) -> Result<Report, ApiError> {
    store::config::refresh(env, now_ms).await;
    let mut report = Report::default();
    let Some(config) = isolate::config() else {
        return Ok(report);
    };
    let db = Shards::of(env)?;
    let configured = store::sources::configured(env)?;
    // The day's segment sizes and profile counts for the console (index counts), each on its
    // own: one failing does not lose the other.
    if let Err(e) = store::audiences::record_sizes(&db, now_ms).await {
        worker::console_error!("segment sizes not recorded: {e}");
    }
    if let Err(e) = d1::execute(&db, &[seam_core::identity::census::record(now_ms)]).await {
        worker::console_error!("profile counts not recorded: {e}");
    }
    // The shards take turns, a chunk each, while they have profiles due; each run starts at
    // the next shard, so with more shards than chunks every shard still gets its turn.
    let count = db.all().len();
    let first = now_ms.div_euclid(RUN_EVERY_MS).rem_euclid(count as i64) as usize;
    let mut open: VecDeque<usize> = (0..count).map(|i| (first + i) % count).collect();
    for _ in 0..MAX_CHUNKS {
        let Some(shard) = open.pop_front() else {
            break;
        };
        let rows = store::sweep::due(db.at(shard), now_ms, CHUNK).await?;
        for profile_id in &rows {
            if db.index_of(profile_id) != shard {
                // A row the shard count moved away: while the count changes it goes home (and
                // is due there); a row no layout puts here is an orphan and leaves the sweep.
                let handled = match db.previous(profile_id) {
                    Some(previous) if previous == shard => {
                        store::personalisation::settle(&db, profile_id)
                            .await
                            .map_err(ApiError::from)
                    }
                    _ => store::sweep::clear(db.at(shard), profile_id)
                        .await
                        .map(|()| true),
                };
                if !matches!(handled, Ok(true)) {
                    // Changed meanwhile, or failed: tried again at a later run.
                    store::sweep::postpone(db.at(shard), profile_id, now_ms + RETRY_AFTER_MS)
                        .await?;
                }
                continue;
            }
            report.profiles += 1;
            match advance(env, &db, &configured, &config, profile_id, now_ms).await {
                Ok(n) => report.transitions += n,
                Err(e) => {
                    // One profile's failure must not stop the others; it is retried at the
                    // next run instead of at once (it must not hold the chunk).
                    worker::console_error!("segment sweep of a profile failed: {}", e.code());
                    store::sweep::postpone(db.at(shard), profile_id, now_ms + RETRY_AFTER_MS)
                        .await?;
                }
            }
        }
        if (rows.len() as i64) == CHUNK {
            open.push_back(shard);
        }
    }
    Ok(report)
}

/// One due profile: transitions, their events and the snapshot. Returns how many transitions.
async fn advance(
    env: &Env,
    db: &Shards,
    configured: &seam_core::collect::source::Sources,
    config: &personalise::PersonalisationConfig,
    profile_id: &str,
    now_ms: i64,
) -> Result<usize, ApiError> {
    let (mut view, (state, version)) = store::profiles::view_and_state(db, profile_id).await?;
    let Some(version) = version.filter(|_| !view.identifiers.is_empty()) else {
        // Erased or merged away meanwhile: nothing to evaluate, ever.
        store::sweep::clear(db.of_profile(profile_id), profile_id).await?;
        return Ok(0);
    };
    let (user_id, anonymous_id) = view.first_ids();
    let update = personalise::advance(
        state,
        version,
        profile_id,
        &view.traits,
        (user_id.as_deref(), anonymous_id.as_deref()),
        config,
        now_ms,
    );
    // Time alone changes memberships and the state, never shared rows.
    let results = d1::execute(db.of_profile(profile_id), &update.state_writes).await?;
    let saved = results
        .last()
        .is_some_and(|r| r.results::<Value>().is_ok_and(|rows| !rows.is_empty()));
    if !saved {
        // An ingest saved first: it evaluated at its own time and set the next check.
        return Ok(0);
    }
    store::personalisation::settle_after_save(db, profile_id).await;
    let transitions = update.diff.transitions.len();
    if !update.internal_events.is_empty() {
        // The events go to the source the profile was last seen through.
        let source_id =
            store::sweep::last_source(db, anonymous_id.clone(), user_id.clone()).await?;
        let source = match source_id {
            Some(id) => store::sources::by_id(env, configured, &id).await?,
            None => None,
        };
        match &source {
            Some(source) => {
                let rules = settings::identity_rules(env)?;
                let stored =
                    store::events::store(db, &rules, source, &update.internal_events, now_ms)
                        .await?;
                super::send_stored(env, stored).await;
            }
            None => worker::console_error!("segment sweep: no source for a profile's events"),
        }
        let causes: Vec<Cause<'_>> = update.diff.entered().map(Cause::SegmentEntered).collect();
        let who = super::journeys::Who {
            profile_id,
            source: source.as_ref(),
            user_id: user_id.as_deref(),
            anonymous_id: anonymous_id.as_deref(),
        };
        // The transitions are saved: a failure here must not stop the snapshot below.
        if let Err(e) = super::journeys::enter(env, db, who, &causes, now_ms).await {
            worker::console_error!("segment sweep: journey entry failed: {}", e.code());
        }
    }
    view.computed_traits = update.computed;
    view.segments = update.segments;
    store::snapshots::publish(env, &view, Some(&update.state), &[], &[], now_ms).await;
    Ok(transitions)
}

/// How often the cron runs the sweep.
const RUN_EVERY_MS: i64 = 5 * 60_000;

/// How long a profile whose sweep failed waits.
const RETRY_AFTER_MS: i64 = 5 * 60_000;
