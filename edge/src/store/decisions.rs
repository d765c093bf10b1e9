//! What a decision reads, shared by `/v1/decide` and edge-rendered pages: the visitor's
//! profile snapshot (KV, D1 on a miss), then one D1 batch for whatever the isolate's shared
//! recommendation inputs lack and, for banners, the profile's state. With profile shards, each
//! other shard's co-occurrence counts are read at the same time and added in. The decision itself is
//! `seam_core::personalise::decide`.

use std::future::Future;

use futures_util::future::join_all;
use seam_core::identity::Rules;
use seam_core::personalise::candidates::{CandidatePlan, CandidateRow};
use seam_core::personalise::decide::{self, DecisionRows, Decisions, Slot};
use seam_core::plan::Statement;
use worker::Env;

use crate::error::ApiError;
use crate::isolate;
use crate::store::personalisation::{self, StateRow};
use crate::store::shards::Shards;
use crate::store::{d1, snapshots};

/// Who a decision is for.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Copy, Default)]
pub struct Visitor<'a> {
    /// Anonymous ID (for a page, the sealed ID cookie's).
    pub anonymous_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
}

/// The decisions for `visitor` at `now_ms`.
pub async fn decide(
    env: &Env,
    db: &Shards,
    rules: &Rules,
    visitor: Visitor<'_>,
    slots: &[Slot],
    consent_denied: bool,
    now_ms: i64,
) -> Result<Decisions, ApiError> {
    let profile = snapshots::visitor_profile(
        env,
        db,
        rules,
        visitor.anonymous_id,
        visitor.user_id,
        now_ms,
    );
    decide_with(db, profile, slots, consent_denied, now_ms).await
}

/// The decisions for a stored profile at `now_ms`, from the snapshot its pages read, for
/// someone looking at it (the console, a preview): nothing is written.
pub async fn for_profile(
    env: &Env,
    db: &Shards,
    profile_id: &str,
    slots: &[Slot],
    consent_denied: bool,
    now_ms: i64,
) -> Result<Decisions, ApiError> {
    let profile = snapshots::profile_snapshot(env, db, profile_id, now_ms);
    decide_with(db, profile, slots, consent_denied, now_ms).await
}

async fn decide_with(
    db: &Shards,
    profile: impl Future<Output = Result<Option<serde_json::Value>, ApiError>>,
    slots: &[Slot],
    consent_denied: bool,
    now_ms: i64,
) -> Result<Decisions, ApiError> {
    // Denied consent decides without a profile: the snapshot is not even read (`profile` is
    // never polled).
    let profile = if consent_denied { None } else { profile.await? };
    let config = isolate::config();
    let plan = isolate::with_candidates(|cache| {
        decide::plan(
            profile.as_ref(),
            slots,
            consent_denied,
            config.as_deref(),
            cache,
            now_ms,
        )
    });
    let mut reads = plan.reads();
    let candidate_reads = plan.candidate_reads();
    // The state row lives in the profile's shard: in the one batch when that is `DB`.
    let elsewhere = plan
        .state_of()
        .filter(|id| db.index_of(id) > 0 || db.previous(id).is_some());
    if elsewhere.is_some() {
        reads.truncate(candidate_reads);
    }
    // With profile shards, each other shard counts its own profiles' co-occurrence evidence.
    let shard_reads: Vec<Statement> = match plan.candidates() {
        Some(candidates) if db.all().len() > 1 => candidates
            .shard_statements()
            .into_iter()
            .map(|(_, read)| read)
            .collect(),
        _ => Vec::new(),
    };
    let others = &db.all()[1..];
    let (results, elsewhere, counted) = futures_util::join!(
        d1::execute(db, &reads),
        async {
            match elsewhere {
                Some(id) => personalisation::state_row(db, id).await,
                None => Ok(None),
            }
        },
        join_all(
            others
                .iter()
                .filter(|_| !shard_reads.is_empty())
                .map(|shard| d1::execute(shard, &shard_reads))
        )
    );
    let (results, elsewhere) = (results?, elsewhere?);
    let mut candidates: Vec<Vec<CandidateRow>> = results
        .iter()
        .take(candidate_reads)
        .map(|r| r.results::<CandidateRow>().unwrap_or_default())
        .collect();
    if let Some(plan) = plan.candidates().filter(|_| !shard_reads.is_empty()) {
        let mut shards = Vec::with_capacity(counted.len());
        for answers in counted {
            // A shard that does not answer leaves its counts out of this decision, which
            // still comes from every other database's.
            let answers = match answers {
                Ok(answers) => answers
                    .iter()
                    .map(|r| r.results::<CandidateRow>().unwrap_or_default())
                    .collect(),
                Err(e) => {
                    worker::console_error!("a profile shard's co-occurrence read failed: {e}");
                    Vec::new()
                }
            };
            shards.push(answers);
        }
        if let Some(read) = plan.add_shards(&mut candidates, &shards) {
            let bodies = d1::rows::<CandidateRow>(db, &read).await?;
            CandidatePlan::add_bodies(&mut candidates, &bodies);
        }
    }
    let rows = DecisionRows {
        candidates,
        state: elsewhere
            .or_else(|| {
                results
                    .get(candidate_reads)
                    .and_then(|r| r.results::<StateRow>().ok())
                    .and_then(|rows| rows.into_iter().next())
            })
            .map(|row| row.state),
    };
    Ok(isolate::with_candidates(|cache| {
        plan.decide(rows, config.as_deref(), cache, now_ms)
    }))
}
