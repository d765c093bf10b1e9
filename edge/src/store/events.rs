//! Server-made events (segment transitions, decision exposures), validated by the same decoder
//! as client events and stored under a source, deduplicated by their derived `messageId`. Like
//! client events, none is kept for a suppressed identifier.

use std::collections::{BTreeMap, HashMap};

use seam_core::activate::deliver::{self, Job};
use seam_core::archive;
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::event::Event;
use seam_core::collect::ingest::decode;
use seam_core::collect::live;
use seam_core::collect::source::Source;
use seam_core::format::id;
use seam_core::identity::{IdType, Identifier, Rules};
use seam_core::plan::insert_events;
use seam_core::plan::MAX_BOUND_PARAMS;
use seam_core::privacy::{apply_suppressions, latest_consent};
use serde::Deserialize;
use serde_json::Value;
use worker::D1Database;

use crate::error::ApiError;
use crate::store::{d1, deliveries, privacy};
use crate::{isolate, platform};

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
        decoded = decoded.bind_cookie(facts, source).enrich(facts, source);
    }
    let suppressed = privacy::suppressed_keys(db, &decoded, rules, received_at).await?;
    if !suppressed.is_empty() {
        decoded = apply_suppressions(decoded, rules, |k| suppressed.contains(k)).0;
    }
    Ok(decoded.valid().cloned().collect())
}

#[derive(Deserialize)]
struct ConsentRow {
    identifier: String,
    state: String,
    timestamp: i64,
}

/// Gives each server-made event without a consent object the person's newest recorded consent
/// (over its user and anonymous IDs), so destinations judge it by the person's own choice.
async fn stamp_consent(
    db: &D1Database,
    rules: &Rules,
    events: &mut [Event],
) -> Result<(), ApiError> {
    let ids_of = |e: &Event| -> Vec<String> {
        [
            (IdType::UserId, e.user_id.as_deref()),
            (IdType::AnonymousId, e.anonymous_id.as_deref()),
            (IdType::CookieId, e.anonymous_id.as_deref()),
        ]
        .into_iter()
        .filter_map(|(kind, value)| Identifier::normalized(kind, value?, rules))
        .map(|i| i.to_string())
        .collect()
    };
    let unstamped = |e: &Event| {
        e.body
            .get("context")
            .and_then(|c| c.get("consent"))
            .is_none()
    };
    let mut wanted: Vec<String> = events
        .iter()
        .filter(|e| unstamped(e))
        .flat_map(ids_of)
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut newest: HashMap<String, (i64, Value)> = HashMap::new();
    for chunk in wanted.chunks(MAX_BOUND_PARAMS) {
        for row in d1::rows::<ConsentRow>(db, &latest_consent(chunk)).await? {
            if let Ok(state) = serde_json::from_str::<Value>(&row.state) {
                newest.insert(row.identifier, (row.timestamp, state));
            }
        }
    }
    for event in events.iter_mut().filter(|e| unstamped(e)) {
        let state = ids_of(event)
            .iter()
            .filter_map(|id| newest.get(id))
            .max_by_key(|(at, _)| *at)
            .map(|(_, state)| state.clone());
        let Some(state) = state else { continue };
        let context = event
            .body
            .entry("context")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(context) = context {
            context.insert("consent".into(), state);
        }
    }
    Ok(())
}

/// What storing events leaves to send: their deliveries and their archive entries
/// (`jobs::send_stored`).
#[derive(Default)]
pub struct Inserted {
    /// Deliveries to queue.
    pub deliveries: Vec<Job>,
    /// The keys of the events stored now (not the duplicates), for the archive.
    pub archive: Vec<(String, String)>,
}

/// Stores prepared events of `source` with their deliveries to the destinations in force.
pub async fn insert(
    db: &D1Database,
    source: &Source,
    events: &[Event],
    now_ms: i64,
) -> Result<Inserted, ApiError> {
    if events.is_empty() {
        return Ok(Inserted::default());
    }
    if !isolate::destinations_loaded() {
        return Err(ApiError::Storage("destinations not loaded".into()));
    }
    let valid: Vec<_> = events.iter().collect();
    let mut plan = insert_events(&source.id, &valid, now_ms, source.dedup_window_days);
    let first_delivery = plan.len();
    let destinations = isolate::destinations();
    // The outbox selects each event by its receipt time (gathered exposures have several).
    let mut by_receipt: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
    for event in &valid {
        by_receipt
            .entry(event.received_at_ms)
            .or_default()
            .push(event);
    }
    let mut counts = Vec::new();
    for (received_at, events) in by_receipt {
        let routes = deliver::route(&destinations, &events);
        plan.extend(deliver::enqueue(&source.id, &routes, received_at));
        counts.extend(live::count_stored(&source.id, received_at, &events));
    }
    // After the outbox rows: the results past `first_delivery` are read as jobs, and counting
    // statements return none.
    plan.extend(counts);
    let results = d1::execute(db, &plan).await?;
    let inserted = d1::inserted_ids(results.get(..first_delivery).unwrap_or_default())?;
    Ok(Inserted {
        deliveries: deliveries::jobs_of(results.get(first_delivery..).unwrap_or_default()),
        archive: archive::stored_keys(&source.id, &valid, &inserted),
    })
}

/// [`prepare`] then [`insert`], without request facts, for the collector's own events (segment
/// transitions): each carries the person's newest recorded consent.
pub async fn store(
    db: &D1Database,
    rules: &Rules,
    source: &Source,
    events: &[Value],
    received_at: i64,
) -> Result<Inserted, ApiError> {
    let mut valid = prepare(db, rules, source, None, events, received_at).await?;
    stamp_consent(db, rules, &mut valid).await?;
    insert(db, source, &valid, received_at).await
}

/// Writes the console's records of refused events (`live::log_rejections`, `count_rejections`).
/// A failure to write them refuses nothing, so it is only logged.
pub async fn log_refusals(db: &D1Database, statements: &[seam_core::plan::Statement]) {
    if statements.is_empty() {
        return;
    }
    if let Err(e) = d1::execute(db, statements).await {
        worker::console_error!("rejection log failed: {e}");
    }
}
