//! A person's events that only the archive holds (compacted out of D1, `core::archive::compact`),
//! read from R2 through the index of objects by person.

use std::collections::{BTreeSet, HashSet};

use seam_core::archive::compact::{self, Indexed};
use seam_core::archive::rebuild;
use seam_core::format::time::parse_iso8601;
use serde::Deserialize;
use serde_json::{json, Value};
use worker::{Bucket, D1Database, Env};

use crate::store::shards::Shards;
use crate::store::{archive_index, d1};

/// The archive's bucket binding (also the archive job's).
pub const BUCKET: &str = "ARCHIVE";
/// Objects a timeline opens at most, newest first.
pub const TIMELINE_OBJECTS: u32 = 20;
/// Objects an access export opens at most (each is a subrequest).
pub const EXPORT_OBJECTS: u32 = 500;

/// The archive's bucket, when one is bound.
pub fn bucket(env: &Env) -> Option<Bucket> {
    env.bucket(BUCKET).ok()
}

/// Up to `limit` of the person's events that only the archive holds, newest first, each as
/// `{sourceId, messageId, type, name, timestamp, receivedAt, body}` (times in epoch ms, as D1's
/// rows have them), read from the newest `objects` objects the index names; and whether there
/// may be more (the index named more objects than that).
pub async fn person_events(
    db: &Shards,
    bucket: Option<&Bucket>,
    anonymous: &BTreeSet<String>,
    users: &BTreeSet<String>,
    limit: usize,
    objects: u32,
) -> worker::Result<(Vec<Value>, bool)> {
    let Some(bucket) = bucket else {
        return Ok((Vec::new(), false));
    };
    let keys = compact::subject_people(anonymous, users, std::iter::empty(), std::iter::empty());
    if keys.is_empty() || limit == 0 {
        return Ok((Vec::new(), false));
    }
    let people: HashSet<i64> = keys.iter().copied().collect();
    let mut named: Vec<Indexed> = archive_index::objects_of(db, &keys, objects + 1).await?;
    let more = named.len() > objects as usize;
    named.truncate(objects as usize);
    let mut out = Vec::new();
    for object in named {
        let Some(found) = bucket.get(object.key()).execute().await? else {
            continue;
        };
        let Some(body) = found.body() else { continue };
        let Some(text) = rebuild::gunzip(&body.bytes().await?) else {
            continue;
        };
        for line in rebuild::lines(&text) {
            if !line.names(&people) {
                continue;
            }
            let column = |name: &str| line.value.get(name).cloned().unwrap_or(Value::Null);
            let timestamp = line
                .value
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(parse_iso8601);
            out.push(json!({
                "sourceId": column("source_id"),
                "messageId": line.message_id,
                "type": column("type"),
                "name": column("event"),
                "timestamp": timestamp,
                "receivedAt": line.received_at,
                "body": column("body"),
            }));
        }
    }
    // Newest first, each once; then, a chunk at a time until `limit` are found, the lines whose
    // events D1 no longer holds (the others count and show from D1's rows).
    let lines = newest(Vec::new(), out, usize::MAX);
    let mut only_archived = Vec::new();
    for chunk in lines.chunks(HELD_CHUNK) {
        if only_archived.len() >= limit {
            break;
        }
        let held = still_held(db, chunk).await?;
        only_archived.extend(
            chunk
                .iter()
                .filter(|e| !held.contains(&text_key(e)))
                .cloned(),
        );
    }
    only_archived.truncate(limit);
    Ok((only_archived, more))
}

/// Which of `lines` D1 still holds as events.
async fn still_held(db: &D1Database, lines: &[Value]) -> worker::Result<HashSet<(String, String)>> {
    #[derive(Deserialize)]
    struct Key {
        source_id: String,
        message_id: String,
    }
    let keys: Vec<(String, String)> = lines.iter().map(text_key).collect();
    Ok(d1::rows::<Key>(db, &compact::still_held(&keys))
        .await?
        .into_iter()
        .map(|key| (key.source_id, key.message_id))
        .collect())
}

/// Keys one look-up of [`still_held`] binds (as one JSON parameter).
const HELD_CHUNK: usize = 500;

/// A line's `(sourceId, messageId)` as plain text.
fn text_key(event: &Value) -> (String, String) {
    let text = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
    (text("sourceId"), text("messageId"))
}

/// `hot` (D1's rows) and `archived` as one list, newest first by `timestamp`, each event once
/// (an object may also hold lines D1 still has), at most `limit`.
pub fn newest(hot: Vec<Value>, archived: Vec<Value>, limit: usize) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut all: Vec<Value> = hot
        .into_iter()
        .chain(archived)
        .filter(|e| seen.insert(event_key(e)))
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e["timestamp"].as_i64().unwrap_or(0)));
    all.truncate(limit);
    all
}

/// An event's `(sourceId, messageId)` as text: what makes it one event.
pub fn event_key(event: &Value) -> (String, String) {
    (
        event["sourceId"].to_string(),
        event["messageId"].to_string(),
    )
}
