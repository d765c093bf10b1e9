//! Retention's reads and purges: statements come from `seam_core::privacy::retention`; this counts what
//! they removed and gathers expired anonymous profiles into one erasure subject.

use seam_core::plan::Statement;
use seam_core::privacy::retention::{inactive_anonymous_profiles, Retention};
use seam_core::privacy::Subject;
use serde::Deserialize;
use worker::D1Database;

use crate::error::ApiError;
use crate::store::{d1, profiles::ProfileIdRow};

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

/// One chunk of expired anonymous profiles with all their identifiers, as one subject.
pub async fn expired_profiles(
    db: &D1Database,
    policy: &Retention,
    now_ms: i64,
) -> Result<Subject, ApiError> {
    let ids: Vec<String> =
        d1::rows::<ProfileIdRow>(db, &inactive_anonymous_profiles(policy, now_ms))
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
