//! The profile read model: D1 is the truth; KV holds snapshots for the decision path.

use seam_core::graph_plan::identifiers_param;
use seam_core::identity::{IdType, Identifier};
use seam_core::profile::{ProfileView, TraitRow};
use seam_core::time::format_iso8601;
use serde::Deserialize;
use serde_json::{json, Value};
use worker::{D1Database, Env};

use crate::store::personalisation;

#[derive(Deserialize)]
struct TraitRowDb {
    identifier: String,
    key: String,
    once: i64,
    value: String,
    timestamp: i64,
    message_key: String,
}

#[derive(Deserialize)]
struct IdentifierRow {
    identifier: String,
}

/// A row naming a profile.
#[derive(Deserialize)]
pub struct ProfileIdRow {
    /// The profile ID.
    pub profile_id: String,
}

/// Text forms of every identifier a profile holds now.
pub async fn identifier_texts(db: &D1Database, profile_id: &str) -> worker::Result<Vec<String>> {
    Ok(db
        .prepare("SELECT identifier FROM identities WHERE profile_id = ?")
        .bind(&[profile_id.into()])?
        .all()
        .await?
        .results::<IdentifierRow>()?
        .into_iter()
        .map(|r| r.identifier)
        .collect())
}

/// The profile holding an identifier, if any.
pub async fn profile_for(
    db: &D1Database,
    identifier: &Identifier,
) -> worker::Result<Option<String>> {
    Ok(db
        .prepare("SELECT profile_id FROM identities WHERE identifier = ?")
        .bind(&[identifier.to_string().into()])?
        .first::<ProfileIdRow>(None)
        .await?
        .map(|r| r.profile_id))
}

/// Follows merge records from an absorbed profile ID to the one that holds its identifiers now.
pub async fn current_id(db: &D1Database, profile_id: &str) -> worker::Result<Option<String>> {
    let mut id = profile_id.to_owned();
    // Merge chains are short; the bound only guards against a cycle in corrupt data.
    for _ in 0..8 {
        let held = db
            .prepare("SELECT 1 AS one FROM identities WHERE profile_id = ? LIMIT 1")
            .bind(&[id.as_str().into()])?
            .first::<Value>(None)
            .await?;
        if held.is_some() {
            return Ok(Some(id));
        }
        match db
            .prepare("SELECT into_profile AS profile_id FROM merges WHERE from_profile = ? ORDER BY merged_at DESC LIMIT 1")
            .bind(&[id.as_str().into()])?
            .first::<ProfileIdRow>(None)
            .await?
        {
            Some(next) => id = next.profile_id,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// A profile with its computed traits and segments as of now.
pub async fn view(db: &D1Database, profile_id: &str) -> worker::Result<ProfileView> {
    let mut view = identity_view(db, profile_id).await?;
    fill_personalisation(db, &mut view, worker::Date::now().as_millis() as i64).await?;
    Ok(view)
}

/// Fills computed traits and segments from the stored personalisation state, evaluated at
/// `now_ms` (time-driven segments may have changed since the last event).
pub async fn fill_personalisation(
    db: &D1Database,
    view: &mut ProfileView,
    now_ms: i64,
) -> worker::Result<()> {
    if let Some(config) = personalisation::config() {
        let (state, _) = personalisation::load(db, &view.profile_id).await?;
        (view.computed_traits, view.segments) =
            personalisation::values(&state, &view.traits, config, now_ms);
    }
    Ok(())
}

/// The identifiers and folded traits of a profile (no personalisation).
pub async fn identity_view(db: &D1Database, profile_id: &str) -> worker::Result<ProfileView> {
    let mut identifiers: Vec<Identifier> = identifier_texts(db, profile_id)
        .await?
        .iter()
        .filter_map(|t| Identifier::parse(t))
        .collect();
    identifiers.sort_by_key(|i| i.class() as usize);
    let rows: Vec<TraitRow> = db
        .prepare(
            "SELECT identifier, key, once, value, timestamp, message_key FROM trait_values \
             WHERE identifier IN (SELECT value FROM json_each(?))",
        )
        .bind(&[identifiers_param(&identifiers).into()])?
        .all()
        .await?
        .results::<TraitRowDb>()?
        .into_iter()
        .map(|r| TraitRow {
            identifier: r.identifier,
            key: r.key,
            value: serde_json::from_str(&r.value).unwrap_or(Value::Null),
            timestamp_ms: r.timestamp,
            message_key: r.message_key,
            once: r.once != 0,
        })
        .collect();
    let texts = identifiers.iter().map(ToString::to_string).collect();
    Ok(ProfileView::new(profile_id, texts, &rows))
}

fn values_of<'a>(identifiers: &'a [String], kind: &'a IdType) -> Vec<String> {
    identifiers
        .iter()
        .filter_map(|t| Identifier::parse(t))
        .filter(|i| &i.kind == kind)
        .map(|i| i.value)
        .collect()
}

#[derive(Deserialize)]
struct Stats {
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    events: i64,
}

/// A row with the JSON text stored in `column` parsed back into JSON.
pub fn parse_json_column(mut row: Value, column: &str) -> Value {
    if let Some(text) = row.get(column).and_then(Value::as_str) {
        row[column] = serde_json::from_str(text).unwrap_or(Value::Null);
    }
    row
}

/// An event row with its stored `body` parsed.
pub fn parse_body(row: Value) -> Value {
    parse_json_column(row, "body")
}

/// Everything the profile API returns: the view, recent events (including anonymous ones from
/// before a merge), merge history and refused merges.
pub async fn full(db: &D1Database, profile_id: &str) -> worker::Result<Value> {
    let mut view = view(db, profile_id).await?;
    let anonymous = serde_json::to_string(&values_of(&view.identifiers, &IdType::AnonymousId))?;
    let users = serde_json::to_string(&values_of(&view.identifiers, &IdType::UserId))?;
    let matches = "(anonymous_id IN (SELECT value FROM json_each(?1)) OR user_id IN (SELECT value FROM json_each(?2)))";
    let stats = db
        .prepare(format!(
            "SELECT min(timestamp) AS first_seen, max(timestamp) AS last_seen, count(*) AS events FROM events WHERE {matches}"
        ))
        .bind(&[anonymous.as_str().into(), users.as_str().into()])?
        .first::<Stats>(None)
        .await?;
    let events: Vec<Value> = db
        .prepare(format!(
            "SELECT source_id AS sourceId, message_id AS messageId, type, name, body FROM events \
             WHERE {matches} ORDER BY timestamp DESC LIMIT 50"
        ))
        .bind(&[anonymous.as_str().into(), users.as_str().into()])?
        .all()
        .await?
        .results::<Value>()?
        .into_iter()
        .map(parse_body)
        .collect();
    let merges: Vec<Value> = db
        .prepare(
            "SELECT from_profile AS \"from\", into_profile AS \"into\", message_key AS cause, merged_at AS mergedAt \
             FROM merges WHERE into_profile = ?1 OR from_profile = ?1 ORDER BY merged_at",
        )
        .bind(&[profile_id.into()])?
        .all()
        .await?
        .results::<Value>()?;
    let conflicts: Vec<Value> = db
        .prepare(
            "SELECT message_key AS cause, refused, reason, refused_profile AS refusedProfile \
             FROM identity_conflicts WHERE profile_id = ? ORDER BY recorded_at LIMIT 50",
        )
        .bind(&[profile_id.into()])?
        .all()
        .await?
        .results::<Value>()?;
    let count = stats.as_ref().map_or(0, |s| s.events);
    if let Some(s) = stats {
        view.first_seen = s.first_seen.map(format_iso8601);
        view.last_seen = s.last_seen.map(format_iso8601);
    }
    let mut out = serde_json::to_value(view)?;
    out["eventCount"] = json!(count);
    out["recentEvents"] = Value::Array(events);
    out["merges"] = Value::Array(merges);
    out["refusedMerges"] = Value::Array(conflicts);
    Ok(out)
}

/// Writes KV snapshots for the decision path: the profile by ID, pointers from its anonymous IDs,
/// and forwarding records for profiles it absorbed. KV is a cache: failures are logged, never
/// fatal, and D1 stays the truth.
pub async fn publish(env: &Env, view: &ProfileView, anonymous_ids: &[String], absorbed: &[String]) {
    let Ok(kv) = env.kv("CACHE") else {
        return;
    };
    let mut puts = vec![(
        format!("profile:{}", view.profile_id),
        serde_json::to_string(view).unwrap_or_default(),
    )];
    let pointer = json!({ "profileId": view.profile_id }).to_string();
    for anon in anonymous_ids {
        puts.push((format!("anon:{anon}"), pointer.clone()));
    }
    for old in absorbed {
        puts.push((
            format!("profile:{old}"),
            json!({ "mergedInto": view.profile_id }).to_string(),
        ));
    }
    // Copies expire with the anonymous-profile retention; active profiles are re-published.
    let ttl = crate::settings::retention(env)
        .map(|r| u64::from(r.anonymous_profile_days) * 86_400)
        .unwrap_or(180 * 86_400);
    for (key, value) in puts {
        let result = match kv.put(&key, value) {
            Ok(put) => put.expiration_ttl(ttl).execute().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            worker::console_error!("kv put {key} failed: {e}");
        }
    }
}
