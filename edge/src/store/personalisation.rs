//! Personalisation state on D1: loads a profile's state row, runs `seam_core::personalise` and
//! executes its plan with the version guard (docs/personalisation.md, "Edge integration
//! contract").

use seam_core::collect::event::Event;
use seam_core::identity::profile::ProfileView;
use seam_core::personalise::computed::Applied;
use seam_core::personalise::recommend::Changed;
use seam_core::personalise::stored::StoredState;
use seam_core::personalise::{
    self, shard, PersonalisationConfig, ProfileState, Update, LOAD_STATE_SQL,
};
use seam_core::plan::{Param, Statement};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use worker::{D1Database, D1Result};

use crate::error::ApiError;
use crate::platform;
use crate::store::d1::{self, Patient};
use crate::store::shards::Shards;

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

/// A profile's stored state and its version (`None`: no row yet), from its shard (or, while
/// the shard count changes, from its previous shard when the home has none yet).
pub async fn load(
    shards: &Shards,
    profile_id: &str,
) -> worker::Result<(ProfileState, Option<i64>)> {
    Ok(state_of(state_row(shards, profile_id).await?))
}

/// A profile's stored state row, found as [`load`] finds it.
pub async fn state_row(shards: &Shards, profile_id: &str) -> worker::Result<Option<StateRow>> {
    let home = shards.of_profile(profile_id);
    let Some(previous) = shards.previous(profile_id) else {
        return row_in(home, profile_id).await;
    };
    // The previous shard first: a move copies home before it deletes there, so the home read
    // after it cannot miss a row moved in between.
    let old = row_in(shards.at(previous), profile_id).await?;
    Ok(row_in(home, profile_id).await?.or(old))
}

/// While the shard count changes: moves what `profile_id`'s previous shard still holds into its
/// home shard (`core::personalise::shard::arrive`), then deletes it there. Safe to repeat and to
/// race with saves, merges and erasures: the copy lands only while the home still holds what
/// was read, and rows of a profile that no longer exists do not stay. Returns whether the move
/// is done (`false`: something changed meanwhile, or its evidence is more than one move
/// carries, and the rows wait for a later try).
pub async fn settle(shards: &Shards, profile_id: &str) -> worker::Result<bool> {
    match shards.previous(profile_id) {
        Some(previous) => settle_from(shards, profile_id, previous).await,
        None => Ok(true),
    }
}

/// [`settle`] from shard `previous` (not the profile's home): also what takes evidence `DB`
/// held before it moved to the shards home (`jobs::reshard::EVIDENCE_HOME`).
pub async fn settle_from(
    shards: &Shards,
    profile_id: &str,
    previous: usize,
) -> worker::Result<bool> {
    let (home, old) = (shards.of_profile(profile_id), shards.at(previous));
    let by_id = |sql: &str| Statement {
        sql: sql.into(),
        params: vec![Param::Text(profile_id.to_owned())],
    };
    let state_sql = by_id(shard::STATE_ROW_SQL);
    // The previous shard first (see `state_row`), its four reads in one batch.
    let reads = [
        state_sql.clone(),
        by_id(shard::MEMBERSHIP_ROWS_SQL),
        by_id(shard::INTERACTION_ROWS_SQL),
        by_id(shard::PAIR_ROWS_SQL),
    ];
    let read = d1::execute(old, &reads).await?;
    let at = |i: usize| {
        read.get(i)
            .ok_or_else(|| worker::Error::RustError("a read's result is missing".into()))
    };
    let old_state = at(0)?.results::<shard::StateRow>()?.into_iter().next();
    let old_rows = at(1)?.results::<shard::MembershipRow>()?;
    let evidence = shard::Evidence {
        interactions: at(2)?.results()?,
        pairs: at(3)?.results()?,
    };
    let home_state = d1::rows::<shard::StateRow>(home, &state_sql)
        .await?
        .into_iter()
        .next();
    let (copy, current) = match &home_state {
        Some(row) => (None, Some(row)),
        None => (old_state.as_ref(), old_state.as_ref()),
    };
    let version = current.map(|row| row.version);
    let segments = current
        .map(|row| ProfileState::from_stored(Some(&row.state)).segments)
        .unwrap_or_default();
    let found = shard::Found {
        copy,
        version,
        segments: &segments,
        previous_rows: &old_rows,
        evidence: &evidence,
    };
    #[derive(Deserialize)]
    struct Version {
        version: i64,
    }
    let arrived = d1::execute(home, &shard::arrive(profile_id, &found)).await?;
    let holds = arrived
        .last()
        .and_then(|r| r.results::<Version>().ok())
        .map(|rows| rows.first().map(|r| r.version))
        == Some(version);
    if !holds {
        return Ok(false);
    }
    let mut leave = shard::leave(profile_id);
    leave.extend(shard::leave_evidence(profile_id, &evidence));
    d1::execute(old, &leave).await?;
    #[derive(Deserialize)]
    struct Exists {
        found: i64,
    }
    let exists = d1::rows::<Exists>(shards, &shard::exists(profile_id)).await?;
    if exists.first().is_none_or(|e| e.found == 0) {
        // Erased while this ran: what it carried home goes too.
        d1::execute(home, &shard::forget(profile_id)).await?;
    }
    // Evidence past what one move carries waits for the next (the walk comes round again).
    Ok(!evidence.partial())
}

/// [`settle`] after a save: a failure leaves the rows to the move job (`jobs::reshard`).
pub async fn settle_after_save(shards: &Shards, profile_id: &str) {
    if shards.previous(profile_id).is_some() {
        if let Err(e) = settle(shards, profile_id).await {
            worker::console_error!("moving a profile's state to its shard failed: {e}");
        }
    }
}

async fn row_in(db: &D1Database, profile_id: &str) -> worker::Result<Option<StateRow>> {
    let statement = Statement {
        sql: LOAD_STATE_SQL.into(),
        params: vec![Param::Text(profile_id.to_owned())],
    };
    Ok(d1::rows::<StateRow>(db, &statement)
        .await?
        .into_iter()
        .next())
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
/// states of `absorbed` profiles (identity merges into this one). The shared writes (the
/// catalogue) go first, then the profile's own in its shard (its evidence, its memberships,
/// the version-guarded save), one batch when that shard is `DB`; a lost race reloads and
/// redoes it (every write is idempotent). Events already held are duplicates to the core, so
/// passing a retried batch's events again is safe and heals a request that failed after its
/// events were stored.
#[allow(clippy::too_many_arguments)] // one profile's whole refresh, as the callers hold it
pub async fn update(
    patient: Patient<'_>,
    shards: &Shards,
    config: &PersonalisationConfig,
    profile: &ProfileView,
    absorbed: &[String],
    events: &[&Event],
    now_ms: i64,
    loaded: (ProfileState, Option<i64>),
) -> Result<Update, ApiError> {
    let (profile_id, traits) = (profile.profile_id.as_str(), &profile.traits);
    // A merge changes this profile's state: what the caller read before it is stale.
    let mut loaded = absorbed.is_empty().then_some(loaded);
    for from in absorbed {
        merge(patient, shards, config, from, profile_id, now_ms).await?;
    }
    for attempt in 0..SAVE_ATTEMPTS {
        if attempt > 0 {
            back_off(attempt).await;
        }
        // After the response nothing else would bring these events into the state: a read or
        // write that fails is tried again.
        let (state, version) = match loaded.take() {
            Some(loaded) => loaded,
            None => patient.retry(|| load(shards, profile_id)).await?,
        };
        let update =
            personalise::update(state, version, profile_id, traits, events, config, now_ms);
        // A retried batch (every event already held) with no membership change writes nothing.
        let unchanged = !update.applied.contains(&Applied::Added) && update.diff.is_empty();
        if unchanged && version.is_some() {
            return Ok(update);
        }
        let state_db = shards.of_profile(profile_id);
        let own: Vec<Statement> = update
            .evidence_writes
            .iter()
            .chain(&update.state_writes)
            .cloned()
            .collect();
        let (shared, mut own) = if shards.index_of(profile_id) == 0 {
            let plan: Vec<Statement> = update.writes.iter().cloned().chain(own).collect();
            let mut results = patient.retry(|| d1::execute(state_db, &plan)).await?;
            let own = results.split_off(update.writes.len());
            (results, own)
        } else {
            // The catalogue first: its rows are what the evidence's products render with.
            let shared = match update.writes.is_empty() {
                true => Vec::new(),
                false => {
                    patient
                        .retry(|| d1::execute(shards, &update.writes))
                        .await?
                }
            };
            let own = patient.retry(|| d1::execute(state_db, &own)).await?;
            (shared, own)
        };
        let state = own.split_off(update.evidence_writes.len().min(own.len()));
        if saved(&state) {
            // Evidence the profile had given before (a product viewed again) and unchanged
            // catalogue bodies write no row: caches keep what those writes would have dropped.
            let changed = update
                .changed_by(|i| changed_rows(result_at((&shared, update.writes.len()), &own, i)));
            settle_after_save(shards, profile_id).await;
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

/// [`update`] for several profiles, their writes in one D1 batch per database per
/// [`PROFILES_PER_BATCH`] instead of one each: the shared writes (with the own writes of
/// profiles whose shard is `DB`) first, then each other shard's. A profile whose
/// version-guarded save lost (or whose batch failed) goes on alone through [`update`], which
/// reloads and retries.
pub async fn update_many(
    patient: Patient<'_>,
    shards: &Shards,
    config: &PersonalisationConfig,
    jobs: Vec<Job<'_>>,
) -> Vec<Result<Update, ApiError>> {
    let mut out: Vec<Result<Update, ApiError>> = Vec::with_capacity(jobs.len());
    for chunk in chunks(jobs, PROFILES_PER_BATCH) {
        let mut planned = Vec::with_capacity(chunk.len());
        // Shard index -> its batch; shard 0 (`DB`) also takes every shared write.
        let mut plans: BTreeMap<usize, Vec<Statement>> = BTreeMap::new();
        let mut append = |shard: usize, writes: &[Statement]| {
            let plan = plans.entry(shard).or_default();
            let start = plan.len();
            plan.extend(writes.iter().cloned());
            start..plan.len()
        };
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
            let ranges = if unchanged && version.is_some() {
                None
            } else {
                let shard = shards.index_of(&job.view.profile_id);
                let shared = append(0, &update.writes);
                let own = append(shard, &update.evidence_writes);
                Some((shared, shard, own, append(shard, &update.state_writes)))
            };
            planned.push((update, ranges));
        }
        // In shard order, `DB` first. A shard's states are saved only once the shared writes
        // landed (see `update`): after a failed shared batch its profiles go on alone.
        let mut results: BTreeMap<usize, Vec<D1Result>> = BTreeMap::new();
        let mut shared_failed = false;
        for (shard, plan) in &plans {
            if plan.is_empty() || shared_failed {
                continue;
            }
            match patient.retry(|| d1::execute(shards.at(*shard), plan)).await {
                Ok(done) => {
                    results.insert(*shard, done);
                }
                Err(_) => shared_failed = *shard == 0,
            }
        }
        let shared_landed = results.contains_key(&0);
        for (job, (update, ranges)) in chunk.into_iter().zip(planned) {
            let Some((shared, shard, own, state)) = ranges else {
                out.push(Ok(update));
                continue;
            };
            let landed = results
                .get(&shard)
                .and_then(|r| r.get(state))
                .filter(|mine| saved(mine))
                .map(|_| {
                    let shared = results
                        .get(&0)
                        .and_then(|r| r.get(shared))
                        .unwrap_or_default();
                    let own = results
                        .get(&shard)
                        .and_then(|r| r.get(own))
                        .unwrap_or_default();
                    update.changed_by(|i| {
                        changed_rows(result_at((shared, update.writes.len()), own, i))
                    })
                });
            match landed {
                Some(changed) => {
                    settle_after_save(shards, &job.view.profile_id).await;
                    out.push(Ok(Update { changed, ..update }));
                }
                // Someone saved first, or the batch failed: this one alone, read afresh.
                None => {
                    let fresh = match patient.retry(|| load(shards, &job.view.profile_id)).await {
                        Ok(loaded) => {
                            let events = &job.events;
                            self::update(
                                patient,
                                shards,
                                config,
                                job.view,
                                &[],
                                events,
                                job.now_ms,
                                loaded,
                            )
                            .await
                        }
                        Err(e) => Err(e.into()),
                    };
                    // When the shared batch landed, this retry's shared writes change nothing:
                    // the caches still drop what the first try's writes changed.
                    let earlier = shared_landed.then_some(&update.changed);
                    out.push(fresh.map(|mut fresh| {
                        fresh.changed.extend(earlier.unwrap_or(&Changed::default()));
                        fresh
                    }));
                }
            }
        }
    }
    out
}

/// Whether a profile's state writes ended in a save that landed (`RETURNING version` gave a
/// row).
fn saved(state_results: &[D1Result]) -> bool {
    state_results
        .last()
        .is_some_and(|r| r.results::<Value>().is_ok_and(|rows| !rows.is_empty()))
}

/// The result of the `i`th of an update's `writes` shared writes followed by its evidence
/// writes (`None`, counted as changed, when a batch's results are missing).
fn result_at<'a>(
    (shared, writes): (&'a [D1Result], usize),
    own: &'a [D1Result],
    i: usize,
) -> Option<&'a D1Result> {
    match i.checked_sub(writes) {
        None => shared.get(i),
        Some(j) => own.get(j),
    }
}

/// Whether a write changed any row (unknown counts as changed).
fn changed_rows(result: Option<&D1Result>) -> bool {
    result
        .and_then(|r| r.meta().ok().flatten())
        .and_then(|m| m.changes)
        .is_none_or(|n| n > 0)
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

/// Moves the state of profile `from` into `into` (an identity merge), which may live in
/// different shards: the merged state is saved onto `into` first, and only then is `from`'s
/// row deleted (tried again on failure, `d1::Patient`). A failure that outlasts the retries
/// leaves `from`'s row behind: no state is lost, but nothing merges it again, and until an
/// erasure or retention takes it, its memberships count in audiences.
async fn merge(
    patient: Patient<'_>,
    shards: &Shards,
    config: &PersonalisationConfig,
    from: &str,
    into: &str,
    now_ms: i64,
) -> Result<(), ApiError> {
    let (from_db, into_db) = (shards.of_profile(from), shards.of_profile(into));
    for attempt in 0..SAVE_ATTEMPTS {
        if attempt > 0 {
            back_off(attempt).await;
        }
        let (from_state, from_version) = patient.retry(|| load(shards, from)).await?;
        if from_version.is_none() {
            return Ok(());
        }
        let (into_state, into_version) = patient.retry(|| load(shards, into)).await?;
        let merged = personalise::merge(&from_state, &into_state, config);
        let writes = personalise::merge_writes(from, into, &merged, into_version, now_ms);
        // The delete of `from` must not run when the guarded save lost a race (in one batch
        // it would), so the survivor's rows and its save go first, in a batch of their own. It
        // is not retried: a save that landed but whose answer was lost would read as a lost
        // race, and `from` would be merged twice.
        if saved(&d1::execute(into_db, &writes.save).await?) {
            patient
                .retry(|| d1::execute(from_db, &writes.absorbed))
                .await?;
            if let Some(previous) = shards.previous(from) {
                let leave = shard::leave(from);
                patient
                    .retry(|| d1::execute(shards.at(previous), &leave))
                    .await?;
            }
            settle_after_save(shards, into).await;
            return Ok(());
        }
    }
    Err(ApiError::Storage(format!(
        "personalisation state of {into} kept changing underneath"
    )))
}
