//! The raw event archive (docs/archive.md): every event stored is also written to R2 as gzipped
//! NDJSON, partitioned Hive-style by the UTC day it was received and its source
//! (`events/dt=2026-12-05/source=web/<hash>.ndjson.gz`), so that DuckDB, BigQuery, Snowflake or
//! ClickHouse load the files as they are.
//!
//! The path: ingest queues each stored event's line after its D1 batch commits; the queue
//! consumer writes one object per partition per batch, then marks the events archived in D1.
//! A stored event not yet marked is queued again by the sweep, so a lost message loses nothing.
//! Before writing, the consumer keeps only events D1 still holds unmarked: a repeated message
//! adds nothing, and an event erased meanwhile is not archived.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::collect::event::Event;
use crate::format::time::format_iso8601;
use crate::plan::{Param, Statement};

/// Where the archive's objects live in the bucket.
pub const PREFIX: &str = "events/";
/// A queue message holds at most this many bytes of lines (Queues take 128 KB a message).
pub const MAX_MESSAGE_BYTES: usize = 96 * 1024;

/// One event on its way to the archive: its key and its NDJSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Source ID.
    #[serde(rename = "s")]
    pub source_id: String,
    /// Message ID.
    #[serde(rename = "m")]
    pub message_id: String,
    /// The UTC day it was received, `YYYY-MM-DD`: its partition.
    #[serde(rename = "d")]
    pub day: String,
    /// The line, without its newline.
    #[serde(rename = "l")]
    pub line: String,
}

/// A stored event's columns, as D1 holds them.
#[allow(missing_docs)] // the columns of `events`
pub struct Stored<'a> {
    pub source_id: &'a str,
    pub message_id: &'a str,
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub timestamp_ms: i64,
    pub received_at_ms: i64,
    pub body: &'a Map<String, Value>,
}

impl Stored<'_> {
    /// The event's archive entry: typed columns first (what a warehouse table needs), then the
    /// whole event as stored, unknown fields included.
    pub fn entry(&self) -> Entry {
        let received = format_iso8601(self.received_at_ms);
        let line = json!({
            "source_id": self.source_id,
            "message_id": self.message_id,
            "type": self.kind,
            "event": self.name,
            "anonymous_id": self.anonymous_id,
            "user_id": self.user_id,
            "timestamp": format_iso8601(self.timestamp_ms),
            "received_at": received,
            "body": self.body,
        })
        .to_string();
        Entry {
            source_id: self.source_id.to_owned(),
            message_id: self.message_id.to_owned(),
            day: received.get(..10).unwrap_or_default().to_owned(),
            line,
        }
    }
}

/// The entries of the events from `source_id` a batch stored (`inserted`: their message IDs;
/// the others were duplicates, archived when first stored).
pub fn stored_entries(
    source_id: &str,
    events: &[&Event],
    inserted: &HashSet<String>,
) -> Vec<Entry> {
    events
        .iter()
        .filter(|e| inserted.contains(&e.message_id))
        .map(|e| {
            Stored {
                source_id,
                message_id: &e.message_id,
                kind: e.kind.as_str(),
                name: e.name.as_deref(),
                anonymous_id: e.anonymous_id.as_deref(),
                user_id: e.user_id.as_deref(),
                timestamp_ms: e.timestamp_ms,
                received_at_ms: e.received_at_ms,
                body: &e.body,
            }
            .entry()
        })
        .collect()
}

/// Entries in queue messages of at most [`MAX_MESSAGE_BYTES`] of lines each (an entry larger
/// than that travels alone).
pub fn messages(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut out: Vec<Vec<Entry>> = Vec::new();
    let mut size = 0;
    for entry in entries {
        let len = entry.line.len() + entry.source_id.len() + entry.message_id.len() + 32;
        match out.last_mut() {
            Some(last) if size + len <= MAX_MESSAGE_BYTES => last.push(entry),
            _ => {
                out.push(vec![entry]);
                size = 0;
            }
        }
        size += len;
    }
    out
}

/// One object to write: its key and its gzipped lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The object's key in the bucket.
    pub key: String,
    /// Gzipped NDJSON.
    pub body: Vec<u8>,
    /// How many events it holds.
    pub events: usize,
}

/// The objects for `entries` (each event once, whatever the repeats): one per day and source.
/// A key is a hash of the events it holds, so writing the same events again replaces the
/// object instead of adding a second copy.
pub fn objects(entries: &[Entry]) -> Vec<Object> {
    let mut partitions: BTreeMap<(&str, &str), BTreeMap<&str, &str>> = BTreeMap::new();
    for e in entries {
        partitions
            .entry((e.day.as_str(), e.source_id.as_str()))
            .or_default()
            .insert(e.message_id.as_str(), e.line.as_str());
    }
    partitions
        .into_iter()
        .map(|((day, source), lines)| {
            let mut hash = Sha256::new();
            let mut text = String::new();
            for (message_id, line) in &lines {
                hash.update(message_id.as_bytes());
                hash.update([0]);
                text.push_str(line);
                text.push('\n');
            }
            let digest = hash.finalize();
            let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
            Object {
                key: format!("{}{hex}.ndjson.gz", partition_prefix(day, Some(source))),
                body: gzip(text.as_bytes()),
                events: lines.len(),
            }
        })
        .collect()
}

/// The key prefix of a day's partition, or of one source's part of it.
pub fn partition_prefix(day: &str, source_id: Option<&str>) -> String {
    match source_id {
        Some(source) => format!("{PREFIX}dt={day}/source={}/", escape(source)),
        None => format!("{PREFIX}dt={day}/"),
    }
}

/// The day of an object key (`events/dt=YYYY-MM-DD/...`), if it is one of the archive's.
pub fn day_of(key: &str) -> Option<&str> {
    let day = key.strip_prefix(PREFIX)?.strip_prefix("dt=")?.get(..10)?;
    let b = day.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    (digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)).then_some(day)
}

/// Source IDs are configuration, but a key must not let one escape its partition.
fn escape(source_id: &str) -> String {
    source_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_string()
            } else {
                format!("%{:02X}", u32::from(c))
            }
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

fn keys_param(entries: &[Entry]) -> Param {
    let keys: Vec<[&str; 2]> = entries
        .iter()
        .map(|e| [e.source_id.as_str(), e.message_id.as_str()])
        .collect();
    Param::Text(serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into()))
}

/// Which of `entries` D1 still holds and has not marked archived: `source_id, message_id`.
pub fn pending(entries: &[Entry]) -> Statement {
    Statement {
        sql: "SELECT e.source_id, e.message_id FROM json_each(?1) k CROSS JOIN events e \
              ON e.source_id = json_extract(k.value, '$[0]') \
              AND e.message_id = json_extract(k.value, '$[1]') WHERE e.archived_at IS NULL"
            .into(),
        params: vec![keys_param(entries)],
    }
}

/// Marks `entries` archived at `now_ms`.
pub fn mark_archived(entries: &[Entry], now_ms: i64) -> Statement {
    Statement {
        sql: "UPDATE events SET archived_at = ?2 WHERE archived_at IS NULL \
              AND (source_id, message_id) IN (SELECT json_extract(value, '$[0]'), \
              json_extract(value, '$[1]') FROM json_each(?1))"
            .into(),
        params: vec![keys_param(entries), Param::Int(now_ms)],
    }
}

/// Up to `limit` stored events received before `before_ms` that are not archived yet (the
/// sweep queues them again), oldest first: every column of `events`.
pub fn unarchived(before_ms: i64, limit: u32) -> Statement {
    Statement {
        sql: "SELECT source_id, message_id, type, name, anonymous_id, user_id, timestamp, \
              received_at, body FROM events WHERE archived_at IS NULL AND received_at < ?1 \
              ORDER BY received_at LIMIT ?2"
            .into(),
        params: vec![Param::Int(before_ms), Param::Int(i64::from(limit))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entry(source: &str, id: &str, received_at_ms: i64) -> Entry {
        let body = json!({"type": "track", "event": "Order Completed", "messageId": id,
            "properties": {"revenue": 12.5}});
        Stored {
            source_id: source,
            message_id: id,
            kind: "track",
            name: Some("Order Completed"),
            anonymous_id: Some("a1"),
            user_id: None,
            timestamp_ms: received_at_ms - 1000,
            received_at_ms,
            body: body.as_object().unwrap_or(&Map::new()),
        }
        .entry()
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .unwrap_or_default();
        out
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_line_has_typed_columns_and_the_whole_event() {
        let e = entry("web", "m1", 20_000 * DAY + 5);
        assert_eq!(e.day, "2024-10-04");
        let line: Value = serde_json::from_str(&e.line).unwrap_or_default();
        assert_eq!(line["event"], "Order Completed");
        assert_eq!(line["received_at"], "2024-10-04T00:00:00.005Z");
        assert_eq!(line["body"]["properties"]["revenue"], 12.5);
        assert_eq!(line["user_id"], Value::Null);
    }

    #[test]
    fn objects_are_one_per_day_and_source_with_each_event_once() {
        let entries = vec![
            entry("web", "m2", DAY + 1),
            entry("web", "m1", DAY + 2),
            entry("web", "m1", DAY + 2),
            entry("pos/1", "m3", DAY + 3),
            entry("web", "m4", 2 * DAY + 1),
        ];
        let objects = objects(&entries);
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys.len(), 3);
        assert!(keys[0].starts_with("events/dt=1970-01-02/source=pos%2F1/"));
        assert!(keys[1].starts_with("events/dt=1970-01-02/source=web/"));
        assert!(keys[2].starts_with("events/dt=1970-01-03/source=web/"));
        assert!(keys.iter().all(|k| k.ends_with(".ndjson.gz")));
        assert_eq!(objects[1].events, 2);
        let lines: Vec<Value> = gunzip(&objects[1].body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message_id"], "m1");
    }

    #[test]
    fn the_same_events_make_the_same_key_in_any_order() {
        let a = objects(&[entry("web", "m1", 5), entry("web", "m2", 6)]);
        let b = objects(&[entry("web", "m2", 6), entry("web", "m1", 5)]);
        let c = objects(&[entry("web", "m1", 5)]);
        assert_eq!(a[0].key, b[0].key);
        assert_ne!(a[0].key, c[0].key);
    }

    #[test]
    fn messages_stay_under_the_queue_limit() {
        let big = "x".repeat(40 * 1024);
        let entries: Vec<Entry> = (0..5)
            .map(|i| Entry {
                source_id: "web".into(),
                message_id: format!("m{i}"),
                day: "2024-01-01".into(),
                line: big.clone(),
            })
            .collect();
        let messages = messages(entries);
        assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert!(super::messages(Vec::new()).is_empty());
    }

    #[test]
    fn reads_the_day_of_an_archive_key_only() {
        assert_eq!(
            day_of("events/dt=2026-12-05/source=web/ab.ndjson.gz"),
            Some("2026-12-05")
        );
        assert_eq!(day_of("events/dt=2026-1x-05/source=web/ab.ndjson.gz"), None);
        assert_eq!(day_of("other/dt=2026-12-05/x"), None);
        assert_eq!(day_of("events/dt=2026"), None);
    }
}
