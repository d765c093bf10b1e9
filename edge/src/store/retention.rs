//! Retention's reads and purges: statements come from `seam_core::privacy::retention`; this counts what
//! they removed and gathers expired anonymous profiles into one erasure subject.

use std::collections::BTreeSet;

use seam_core::plan::Statement;
use seam_core::privacy::retention::{
    inactive_anonymous_profiles, save_walk_cursor, walk_cursor, walk_resumes_after, Retention,
};
use seam_core::privacy::Subject;
use serde::Deserialize;
use worker::D1Database;

use crate::error::ApiError;
use crate::store::d1;

#[derive(Deserialize)]
struct MemberRow {
    identifier: String,
    profile_id: String,
}

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
    identifier: Option<String>,
    profile_id: Option<String>,
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
    /// The step read past the last identifier: the walk starts over next time.
    pub went_round: bool,
    /// Identifiers read.
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

/// Reads up to `rows` identifiers after `after` and gathers the expired anonymous profiles
/// among them, with all their identifiers, as one subject.
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
    let found: Vec<&WalkRow> = walked.iter().filter(|r| r.identifier.is_some()).collect();
    let walked_to = walked.iter().find_map(|r| r.walked_to.as_deref());
    let read = walked.iter().find_map(|r| r.walked).unwrap_or(0);
    let last_found = found.last().and_then(|r| r.identifier.as_deref());
    let (after, went_round) =
        walk_resumes_after(policy, found.len(), last_found, (read, rows), walked_to);
    let ids: BTreeSet<&str> = found
        .iter()
        .filter_map(|r| r.profile_id.as_deref())
        .collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut subject = Subject::default();
    if ids.is_empty() {
        return Ok(WalkStep {
            expired: subject,
            after,
            went_round,
            walked: read,
        });
    }
    let members = db
        .prepare(
            "SELECT m.value AS identifier, p.profile_id FROM profile_members p \
             CROSS JOIN json_each(p.identifiers) m WHERE p.profile_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&[serde_json::to_string(&ids).unwrap_or_default().into()])?
        .all()
        .await?
        .results::<MemberRow>()?;
    for m in members {
        subject.identifiers.insert(m.identifier);
        subject.profile_ids.insert(m.profile_id);
    }
    Ok(WalkStep {
        expired: subject,
        after,
        went_round,
        walked: read,
    })
}
