//! Personalisation state on D1: loads a profile's state row, runs `seam_core::personalise` and
//! executes its plan with the version guard (docs/personalisation.md, "Edge integration
//! contract").

use seam_core::collect::event::Event;
use seam_core::identity::profile::ProfileView;
use seam_core::personalise::computed::Applied;
use seam_core::personalise::stored::StoredState;
use seam_core::personalise::{self, PersonalisationConfig, ProfileState, Update, LOAD_STATE_SQL};
use seam_core::plan::{Param, Statement};
use serde::Deserialize;
use serde_json::{Map, Value};
use worker::D1Database;

use crate::error::ApiError;
use crate::platform;
use crate::store::d1::{self, Patient};

/// Attempts at the version-guarded save before giving up (each loser reloads and re-applies
/// after a short random pause, so a burst of requests for one profile spreads out).
const SAVE_ATTEMPTS: usize = 16;

/// A random pause before retrying a lost save, its bound doubling per attempt up to 320 ms.
async fn back_off(attempt: usize) {
    let [r] = platform::random_bytes::<1>();
    let bound = 10u64 << attempt.min(5);
    platform::sleep(u64::from(r) * bound / 255 + 1).await;
}

/// A stored state row.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Deserialize)]
pub struct StateRow {
    pub state: StoredState,
    pub version: i64,
}

/// A profile's stored state and its version (`None`: no row yet).
pub async fn load(
    db: &D1Database,
    profile_id: &str,
) -> worker::Result<(ProfileState, Option<i64>)> {
    let statement = Statement {
        sql: LOAD_STATE_SQL.into(),
        params: vec![Param::Text(profile_id.to_owned())],
    };
    let row = d1::rows::<StateRow>(db, &statement)
        .await?
        .into_iter()
        .next();
    Ok(state_of(row))
}

/// The state and version a [`LOAD_STATE_SQL`] row holds (`None`: no row yet).
pub fn state_of(row: Option<StateRow>) -> (ProfileState, Option<i64>) {
    match row {
        Some(r) => (ProfileState::from_stored(Some(&r.state)), Some(r.version)),
        None => (ProfileState::default(), None),
    }
}

/// Computed traits and current segments of a stored state at `now_ms` (no writes).
pub fn values(
    state: &ProfileState,
    traits: &Map<String, Value>,
    config: &PersonalisationConfig,
    now_ms: i64,
) -> (Map<String, Value>, Vec<String>) {
    let (computed, segments) = personalise::view(state, traits, config, now_ms);
    (computed, segments.into_iter().collect())
}

/// Folds `events` (attributed to the profile) into the profile's state (`loaded`: as the caller
/// read it, with its version; rules over traits see `profile.traits`), first absorbing the
/// states of `absorbed` profiles (identity merges into this one). Writes go in one batch ending
/// with the version-guarded save; a lost race reloads and redoes it (every write is
/// idempotent). Events already held are duplicates to the core, so passing a retried batch's
/// events again is safe and heals a request that failed after its events were stored.
pub async fn update(
    patient: Patient<'_>,
    config: &PersonalisationConfig,
    profile: &ProfileView,
    absorbed: &[String],
    events: &[&Event],
    now_ms: i64,
    loaded: (ProfileState, Option<i64>),
) -> Result<Update, ApiError> {
    let (profile_id, traits) = (profile.profile_id.as_str(), &profile.traits);
    let db = patient.db;
    // A merge changes this profile's state: what the caller read before it is stale.
    let mut loaded = absorbed.is_empty().then_some(loaded);
    for from in absorbed {
        merge(db, config, from, profile_id, now_ms).await?;
    }
    for attempt in 0..SAVE_ATTEMPTS {
        if attempt > 0 {
            back_off(attempt).await;
        }
        // After the response nothing else would bring these events into the state: a read or
        // write that fails is tried again.
        let (state, version) = match loaded.take() {
            Some(loaded) => loaded,
            None => patient.retry(|| load(db, profile_id)).await?,
        };
        let update =
            personalise::update(state, version, profile_id, traits, events, config, now_ms);
        // A retried batch (every event already held) with no membership change writes nothing.
        let unchanged = !update.applied.contains(&Applied::Added) && update.diff.is_empty();
        if unchanged && version.is_some() {
            return Ok(update);
        }
        let results = patient.retry(|| d1::execute(db, &update.writes)).await?;
        let saved = results
            .last()
            .map(|r| r.results::<Value>().is_ok_and(|rows| !rows.is_empty()))
            .unwrap_or(false);
        if saved {
            // Evidence the profile had given before (a product viewed again) and unchanged
            // catalogue bodies write no row: caches keep what those writes would have dropped.
            let changed = update.changed_by(|i| {
                results
                    .get(i)
                    .and_then(|r| r.meta().ok().flatten())
                    .and_then(|m| m.changes)
                    .is_none_or(|n| n > 0)
            });
            return Ok(Update { changed, ..update });
        }
    }
    Err(ApiError::Storage(format!(
        "personalisation state of {profile_id} kept changing underneath"
    )))
}

/// One profile's part of [`update_many`]: no profiles absorbed.
pub struct Job<'a> {
    /// The profile.
    pub view: &'a ProfileView,
    /// Its new events.
    pub events: Vec<&'a Event>,
    /// What the caller read: state and version.
    pub loaded: (ProfileState, Option<i64>),
    /// When the events were received.
    pub now_ms: i64,
}

/// Profiles one write batch holds at most: a batch is one transaction on the single writer.
const PROFILES_PER_BATCH: usize = 25;

/// [`update`] for several profiles, their writes in one D1 batch per
/// [`PROFILES_PER_BATCH`] instead of one each. A profile whose version-guarded save lost (or
/// whose batch failed) goes on alone through [`update`], which reloads and retries.
pub async fn update_many(
    patient: Patient<'_>,
    config: &PersonalisationConfig,
    jobs: Vec<Job<'_>>,
) -> Vec<Result<Update, ApiError>> {
    let db = patient.db;
    let mut out: Vec<Result<Update, ApiError>> = Vec::with_capacity(jobs.len());
    for chunk in chunks(jobs, PROFILES_PER_BATCH) {
        let mut planned = Vec::with_capacity(chunk.len());
        let mut plan = Vec::new();
        for job in &chunk {
            let (state, version) = job.loaded.clone();
            let update = personalise::update(
                state,
                version,
                &job.view.profile_id,
                &job.view.traits,
                &job.events,
                config,
                job.now_ms,
            );
            let unchanged = !update.applied.contains(&Applied::Added) && update.diff.is_empty();
            let range = if unchanged && version.is_some() {
                None
            } else {
                let start = plan.len();
                plan.extend(update.writes.iter().cloned());
                Some(start..plan.len())
            };
            planned.push((update, range));
        }
        let results = if plan.is_empty() {
            Ok(Vec::new())
        } else {
            patient.retry(|| d1::execute(db, &plan)).await
        };
        for (job, (update, range)) in chunk.into_iter().zip(planned) {
            let Some(range) = range else {
                out.push(Ok(update));
                continue;
            };
            let saved = results.as_ref().ok().and_then(|results| {
                let mine = results.get(range.clone())?;
                let saved = mine
                    .last()
                    .is_some_and(|r| r.results::<Value>().is_ok_and(|rows| !rows.is_empty()));
                saved.then(|| {
                    update.changed_by(|i| {
                        mine.get(i)
                            .and_then(|r| r.meta().ok().flatten())
                            .and_then(|m| m.changes)
                            .is_none_or(|n| n > 0)
                    })
                })
            });
            match saved {
                Some(changed) => out.push(Ok(Update { changed, ..update })),
                // Someone saved first, or the batch failed: this one alone, read afresh.
                None => {
                    let fresh = match patient.retry(|| load(db, &job.view.profile_id)).await {
                        Ok(loaded) => {
                            let events = &job.events;
                            self::update(patient, config, job.view, &[], events, job.now_ms, loaded)
                                .await
                        }
                        Err(e) => Err(e.into()),
                    };
                    out.push(fresh);
                }
            }
        }
    }
    out
}

fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    for item in items {
        match out.last_mut() {
            Some(last) if last.len() < size => last.push(item),
            _ => out.push(vec![item]),
        }
    }
    out
}

/// Moves the state of profile `from` into `into` (an identity merge).
async fn merge(
    db: &D1Database,
    config: &PersonalisationConfig,
    from: &str,
    into: &str,
    now_ms: i64,
) -> Result<(), ApiError> {
    for attempt in 0..SAVE_ATTEMPTS {
        if attempt > 0 {
            back_off(attempt).await;
        }
        let (from_state, from_version) = load(db, from).await?;
        if from_version.is_none() {
            return Ok(());
        }
        let (into_state, into_version) = load(db, into).await?;
        let merged = personalise::merge(&from_state, &into_state, config);
        let writes = personalise::merge_writes(from, into, &merged, into_version, now_ms);
        // The plan's delete of `from` must not run when the guarded save lost a race (in one
        // batch it would), so the save goes first, alone.
        let (save, rest) = writes.split_at(writes.len().min(1));
        let results = d1::execute(db, save).await?;
        if results
            .first()
            .is_some_and(|r| r.results::<Value>().is_ok_and(|rows| !rows.is_empty()))
        {
            d1::execute(db, rest).await?;
            return Ok(());
        }
    }
    Err(ApiError::Storage(format!(
        "personalisation state of {into} kept changing underneath"
    )))
}
