//! The five-minute sweep's part in the identity assignments of the profile shards: finishes
//! the follow-ups a `DB` transaction recorded and the request that made it did not get to
//! delete (`core::identity::spread::Followup`): an erasure's deletions in the shards, a
//! resolution's writes there (resolved again).

use std::collections::HashMap;

use seam_core::identity::spread::{followups_due, Followup};
use seam_core::identity::{Identifier, Link};
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
        kind: String,
        identifiers: String,
        at: i64,
    }
    let db = Shards::of(env)?;
    let due = d1::rows::<Row>(&db, &followups_due(now_ms, PER_RUN)).await?;
    let mut done = 0;
    for row in &due {
        let finished = match Followup::parse(&row.kind) {
            Some(Followup::Erase) => privacy::finish_assignments(&db, &row.identifiers, row.at)
                .await
                .map(|_| ())
                .map_err(ApiError::from),
            Some(Followup::Resolve) => {
                resolve_again(env, &db, &row.identifiers, row.at, now_ms).await
            }
            None => Err(ApiError::Storage(format!("unknown follow-up {}", row.kind))),
        };
        match finished {
            Ok(()) => done += 1,
            Err(e) => worker::console_error!("follow-up ({}) left for the next run: {e}", row.kind),
        }
    }
    Ok(done)
}

/// Resolves the identifiers of a resolution that may have failed part way (each its own
/// seed: a link joining them would be stored as one past a component's cut), then deletes its
/// follow-up and the one the new resolution records.
async fn resolve_again(
    env: &Env,
    db: &Shards,
    identifiers: &str,
    at: i64,
    now_ms: i64,
) -> Result<(), ApiError> {
    let rules = settings::identity_rules(env)?;
    let texts: Vec<String> = serde_json::from_str(identifiers).unwrap_or_default();
    let seeds: Vec<Link> = texts
        .iter()
        .filter_map(|t| Identifier::parse(t))
        .map(|i| Link::new(at, format!("followup/{at}"), vec![i]))
        .collect();
    let mut done = vec![Followup::Resolve.done(identifiers, at)];
    if let Some(stored) = identity::resolve(db, &rules, &seeds, &HashMap::new(), now_ms).await? {
        done.extend(stored.followup_done);
    }
    d1::execute(db, &done).await?;
    Ok(())
}
