//! The five-minute sweep's part in the identity assignments of the profile shards: finishes
//! the follow-ups a `DB` transaction recorded and the request that made it did not get to
//! delete (`core::identity::spread::Followup`): an erasure's deletions in the shards, a
//! resolution's writes there (resolved again, `store::identity::resolve_again`).

use seam_core::identity::spread::{followup_later, followups_due, Followup};
use serde::Deserialize;
use worker::Env;

use crate::error::ApiError;
use crate::settings;
use crate::store::shards::Shards;
use crate::store::{d1, identity, privacy};

/// Follow-ups one run takes at most.
const PER_RUN: u32 = 50;

/// Finishes the follow-ups older than a minute; how many. One that fails is logged and left
/// for the next run, without holding up the others.
pub async fn run(env: &Env, now_ms: i64) -> Result<usize, ApiError> {
    #[derive(Deserialize)]
    struct Row {
        token: String,
        kind: String,
        identifiers: String,
    }
    let db = Shards::of(env)?;
    let due = d1::rows::<Row>(&db, &followups_due(now_ms, PER_RUN)).await?;
    let mut done = 0;
    for row in due {
        let finished = match Followup::parse(&row.kind) {
            Some(Followup::Erase) => privacy::finish_assignments(&db, &row.identifiers, &row.token)
                .await
                .map(|_| ())
                .map_err(ApiError::from),
            Some(Followup::Resolve) => {
                resolve_again(env, &db, row.identifiers, &row.token, now_ms).await
            }
            None => Err(ApiError::Storage(format!("unknown follow-up {}", row.kind))),
        };
        match finished {
            Ok(()) => done += 1,
            Err(e) => {
                worker::console_error!("follow-up ({}) left for a later run: {e}", row.kind);
                // Behind the others: one that keeps failing must not hold them up.
                let later = [followup_later(&row.token, now_ms)];
                if let Err(e) = d1::execute(&db, &later).await {
                    worker::console_error!("follow-up not put back: {e}");
                }
            }
        }
    }
    Ok(done)
}

/// Resolves again the identifiers of a resolution that may have failed part way; the new
/// resolution takes its follow-up over, and deletes its own once its shards are written.
async fn resolve_again(
    env: &Env,
    db: &Shards,
    identifiers: String,
    token: &str,
    now_ms: i64,
) -> Result<(), ApiError> {
    let rules = settings::identity_rules(env)?;
    let stored = identity::resolve_again(db, &rules, identifiers, token, now_ms).await?;
    d1::execute(db, &Vec::from_iter(stored.followup_done)).await?;
    Ok(())
}
