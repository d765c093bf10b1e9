//! Retention's reads and purges: statements come from `seam_core::privacy::retention`; this counts what
//! they removed and gathers expired anonymous profiles into one erasure subject.

use seam_core::plan::Statement;
use seam_core::privacy::retention::{
    inactive_anonymous_profiles, save_walk_cursor, walk_cursor, walk_resumes_after, Retention,
};
use seam_core::privacy::Subject;
use serde::Deserialize;
use worker::D1Database;

use crate::error::ApiError;
use crate::store::d1;

/// Runs one statement; the rows it changed.
pub async fn changes(db: &D1Database, statement: &Statement) -> Result<usize, ApiError> {
    let results = d1::execute(db, std::slice::from_ref(statement)).await?;
    Ok(match results.first() {
        Some(r) => r.meta()?.and_then(|m| m.changes).unwrap_or(0),
        None => 0,
    })
}

#[derive(Deserialize)]
struct WalkRow {
    profile_id: Option<String>,
    identifiers: Option<String>,
    walked_to: Option<String>,
    walked: Option<u32>,
}

#[derive(Deserialize)]
struct CursorRow {
    after: String,
}

/// One step of the walk for inactive anonymous profiles.
pub struct WalkStep {
    /// The expired profiles found (at most one chunk) with all their identifiers.
    pub expired: Subject,
    /// Where the next step starts.
    pub after: String,
    /// The step read past the last profile: the walk starts over next time.
    pub went_round: bool,
    /// Profiles read.
    pub walked: u32,
}

/// Where the walk stopped last (the start when it never ran).
pub async fn walk_start(db: &D1Database, name: &str) -> Result<String, ApiError> {
    Ok(d1::rows::<CursorRow>(db, &walk_cursor(name))
        .await?
        .into_iter()
        .next()
        .map(|r| r.after)
        .unwrap_or_default())
}

/// Saves where the walk goes on next run.
pub async fn save_walk(db: &D1Database, name: &str, after: &str) -> Result<(), ApiError> {
    d1::execute(db, &[save_walk_cursor(name, after)]).await?;
    Ok(())
}

/// Reads up to `rows` profiles after `after` and gathers the expired anonymous ones among
/// them, with all their identifiers, as one subject.
pub async fn expired_profiles(
    db: &D1Database,
    policy: &Retention,
    now_ms: i64,
    after: &str,
    rows: u32,
) -> Result<WalkStep, ApiError> {
    let walked = d1::rows::<WalkRow>(
        db,
        &inactive_anonymous_profiles(policy, now_ms, after, rows),
    )
    .await?;
    let found: Vec<&WalkRow> = walked.iter().filter(|r| r.profile_id.is_some()).collect();
    let walked_to = walked.iter().find_map(|r| r.walked_to.as_deref());
    let read = walked.iter().find_map(|r| r.walked).unwrap_or(0);
    let last_found = found.last().and_then(|r| r.profile_id.as_deref());
    let (after, went_round) =
        walk_resumes_after(policy, found.len(), last_found, (read, rows), walked_to);
    let mut subject = Subject::default();
    for row in found {
        let identifiers: Vec<String> = row
            .identifiers
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        subject.identifiers.extend(identifiers);
        subject.profile_ids.extend(row.profile_id.clone());
    }
    Ok(WalkStep {
        expired: subject,
        after,
        went_round,
        walked: read,
    })
}
