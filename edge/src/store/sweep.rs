//! The segment sweep's reads and writes: profiles whose `check_at` has come, taking one out of
//! the sweep or putting it off, and the source a profile was last seen through.

use seam_core::archive::compact;
use seam_core::personalise::DUE_SQL;
use seam_core::plan::{Param, Statement};
use seam_core::privacy::WITH_PERSON_EVENTS;
use serde::Deserialize;
use serde_json::json;
use worker::D1Database;

use crate::error::ApiError;
use crate::store::shards::Shards;
use crate::store::{archive_index, d1};

#[derive(Deserialize)]
struct DueRow {
    profile_id: String,
}

#[derive(Deserialize)]
struct SourceRow {
    source_id: String,
}

/// Up to `limit` profiles due at `now_ms`.
pub async fn due(db: &D1Database, now_ms: i64, limit: i64) -> Result<Vec<String>, ApiError> {
    let due = Statement {
        sql: DUE_SQL.into(),
        params: vec![Param::Int(now_ms), Param::Int(limit)],
    };
    Ok(d1::rows::<DueRow>(db, &due)
        .await?
        .into_iter()
        .map(|r| r.profile_id)
        .collect())
}

/// Takes a profile out of the sweep.
pub async fn clear(db: &D1Database, profile_id: &str) -> Result<(), ApiError> {
    let statement = Statement {
        sql: "UPDATE profile_personalisation SET check_at = NULL WHERE profile_id = ?1".into(),
        params: vec![Param::Text(profile_id.to_owned())],
    };
    d1::execute(db, &[statement]).await?;
    Ok(())
}

/// Makes a profile due again at `at_ms`.
pub async fn postpone(db: &D1Database, profile_id: &str, at_ms: i64) -> Result<(), ApiError> {
    let statement = Statement {
        sql: "UPDATE profile_personalisation SET check_at = ?2 WHERE profile_id = ?1".into(),
        params: vec![Param::Text(profile_id.to_owned()), Param::Int(at_ms)],
    };
    d1::execute(db, &[statement]).await?;
    Ok(())
}

/// The source of the newest event with either ID.
pub async fn last_source(
    db: &Shards,
    anonymous_id: Option<String>,
    user_id: Option<String>,
) -> Result<Option<String>, ApiError> {
    // Events are indexed by source first: the person's events are found source by source.
    let ids = |id: &Option<String>| Param::Text(json!(id.iter().collect::<Vec<_>>()).to_string());
    let last = Statement {
        sql: format!(
            "{WITH_PERSON_EVENTS}SELECT source_id FROM mine ORDER BY timestamp DESC LIMIT 1"
        ),
        params: vec![Param::Text("[]".into()), ids(&anonymous_id), ids(&user_id)],
    };
    if let Some(row) = d1::rows::<SourceRow>(db, &last).await?.into_iter().next() {
        return Ok(Some(row.source_id));
    }
    // Past the hot window the events are in the archive: its newest object of theirs says.
    let people = compact::subject_people(
        &anonymous_id,
        &user_id,
        std::iter::empty(),
        std::iter::empty(),
    );
    if people.is_empty() {
        return Ok(None);
    }
    Ok(archive_index::objects_of(db, &people, 1)
        .await?
        .into_iter()
        .next()
        .map(|o| o.source_id))
}
