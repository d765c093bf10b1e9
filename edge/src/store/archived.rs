//! A person's events that only the archive holds (compacted out of D1, `core::archive::compact`),
//! read from R2 through the index of objects by person.

use std::collections::{BTreeSet, HashSet};

use seam_core::archive::compact::{self, Indexed, Named};
use seam_core::archive::rebuild;
use seam_core::format::time::parse_iso8601;
use serde_json::{json, Value};
use worker::{Bucket, D1Database, Env};

use crate::store::d1;

/// The archive's bucket binding (also the archive job's).
pub const BUCKET: &str = "ARCHIVE";
/// Objects one read opens at most, newest first.
const OBJECTS: u32 = 20;

/// The archive's bucket, when one is bound.
pub fn bucket(env: &Env) -> Option<Bucket> {
    env.bucket(BUCKET).ok()
}

/// Up to `limit` of the person's events that only the archive holds, newest first, each as
/// `{sourceId, messageId, type, name, timestamp, receivedAt, body}` (times in epoch ms, as D1's
/// rows have them). Reads the newest [`OBJECTS`] objects the index names.
pub async fn person_events(
    db: &D1Database,
    bucket: Option<&Bucket>,
    anonymous: &BTreeSet<String>,
    users: &BTreeSet<String>,
    limit: usize,
) -> worker::Result<Vec<Value>> {
    let Some(bucket) = bucket else {
        return Ok(Vec::new());
    };
    let people: HashSet<i64> = anonymous
        .iter()
        .map(|a| compact::person_key(Named::Anonymous, a))
        .chain(users.iter().map(|u| compact::person_key(Named::User, u)))
        .collect();
    if people.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let keys: Vec<i64> = people.iter().copied().collect();
    let objects: Vec<Indexed> = d1::rows(db, &compact::objects_of(&keys, OBJECTS)).await?;
    let mut out = Vec::new();
    for object in objects {
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
    Ok(newest(Vec::new(), out, limit))
}

/// `hot` (D1's rows) and `archived` as one list, newest first by `timestamp`, each event once
/// (an object may also hold lines D1 still has), at most `limit`.
pub fn newest(hot: Vec<Value>, archived: Vec<Value>, limit: usize) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut all: Vec<Value> = hot
        .into_iter()
        .chain(archived)
        .filter(|e| seen.insert((e["sourceId"].to_string(), e["messageId"].to_string())))
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e["timestamp"].as_i64().unwrap_or(0)));
    all.truncate(limit);
    all
}
