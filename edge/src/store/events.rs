//! Server-made events (segment transitions, decision exposures), validated by the same decoder
//! as client events and stored under a source, deduplicated by their derived `messageId`. Like
//! client events, none is kept for a suppressed identifier.

use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::event::Event;
use seam_core::collect::ingest::decode;
use seam_core::collect::source::Source;
use seam_core::format::id;
use seam_core::format::time::DAY_MS;
use seam_core::identity::Rules;
use seam_core::plan::insert_events;
use seam_core::privacy::apply_suppressions;
use serde_json::Value;
use worker::D1Database;

use crate::error::ApiError;
use crate::platform;
use crate::store::{d1, privacy};

/// Validates and enriches server-made events like client events; invalid ones and those of
/// suppressed identifiers are dropped.
pub async fn prepare(
    db: &D1Database,
    rules: &Rules,
    source: &Source,
    facts: Option<&RequestFacts>,
    events: &[Value],
    received_at: i64,
) -> Result<Vec<Event>, ApiError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let body = serde_json::json!({ "batch": events }).to_string();
    let mut decoded = decode(body.as_bytes(), None, received_at, || {
        id::message_id("seam-edge", received_at, platform::random_bytes())
    })?;
    if let Some(facts) = facts {
        decoded = decoded.enrich(facts, source);
    }
    let suppressed = privacy::suppressed_keys(db, &decoded, rules, received_at).await?;
    if !suppressed.is_empty() {
        decoded = apply_suppressions(decoded, rules, |k| suppressed.contains(k)).0;
    }
    Ok(decoded.valid().cloned().collect())
}

/// Stores prepared events of `source`; returns their IDs.
pub async fn insert(
    db: &D1Database,
    source: &Source,
    events: &[Event],
    now_ms: i64,
) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let valid: Vec<_> = events.iter().collect();
    let cutoff = now_ms - i64::from(source.dedup_window_days) * DAY_MS;
    d1::execute(db, &insert_events(&source.id, &valid, cutoff)).await?;
    Ok(valid.iter().map(|e| e.message_id.clone()).collect())
}

/// [`prepare`] then [`insert`], without request facts.
pub async fn store(
    db: &D1Database,
    rules: &Rules,
    source: &Source,
    events: &[Value],
    received_at: i64,
) -> Result<Vec<String>, ApiError> {
    let valid = prepare(db, rules, source, None, events, received_at).await?;
    insert(db, source, &valid, received_at).await
}
