//! The raw event archive (docs/archive.md): every event stored is also written to R2 as gzipped
//! NDJSON, partitioned Hive-style by the UTC day it was received and its source
//! (`events/dt=2026-12-05/source=web/<claim>.ndjson.gz`), so that DuckDB, BigQuery, Snowflake
//! or ClickHouse load the files as they are.
//!
//! D1 is the truth about what is archived where. Ingest queues the keys of the events it stored
//! (after its batch commits). The consumer *claims* the keys still unclaimed, naming a new
//! claim, and builds that claim's objects from the rows as D1 holds them now (so nothing erased
//! or redacted meanwhile is written), one per day and source, keyed by the claim. Then it marks
//! the rows archived. An event is in exactly one claim, and a claim's objects are rebuilt, never
//! added to: writing a claim again replaces its objects. The sweep queues again keys nobody
//! claimed and claims nobody finished; an erasure notes the claims it touched, and the sweep
//! rebuilds their objects from what D1 still holds.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::collect::event::Event;
use crate::format::time::{format_iso8601, DAY_MS};
use crate::plan::{Param, Statement};

pub mod compact;
pub mod rebuild;
pub mod spread;

/// Where the archive's objects live in the bucket.
pub const PREFIX: &str = "events/";
/// Keys one queue message carries at most: also the most one claim holds (so an object holds at
/// most this many events, which bounds an export page and an erasure's rebuild).
pub const KEYS_PER_MESSAGE: usize = 500;
/// Bytes of keys (as JSON) one queue message carries at most (Queues take 128 KB a message and
/// 256 KB a send).
pub const MESSAGE_BYTES: usize = 48 * 1024;
/// Keys one claim statement binds (as one JSON parameter).
const KEYS_PER_STATEMENT: usize = 1000;
/// How long a claim may take before the sweep finishes it, and before an erasure's rewrite of
/// a claim's objects may run (a queue consumer runs at most 15 minutes).
pub const SETTLE_MS: i64 = 20 * 60 * 1000;

/// A queue message: events to claim and write, or a claim to write (again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Message {
    /// `[source_id, message_id]` of stored events.
    Events {
        /// The events' keys.
        events: Vec<(String, String)>,
    },
    /// A claim whose objects are to be written.
    Claim {
        /// The claim.
        claim: String,
    },
}

/// A consumer batch's event keys as claims of up to [`KEYS_PER_MESSAGE`] keys each, in the
/// order they came and each key once. Messages are merged, not one claim each: an isolate sends
/// a message per quarter-second it answered requests, so at a small shop's rate most messages
/// hold one request's events, and a claim per message made an object per request (and an index
/// row per person and object once compacted). The batch gathers up to 5 s of them.
pub fn claims(
    messages: impl IntoIterator<Item = Vec<(String, String)>>,
) -> Vec<Vec<(String, String)>> {
    let mut seen = HashSet::new();
    let mut keys: Vec<(String, String)> = messages
        .into_iter()
        .flatten()
        .filter(|key| seen.insert(key.clone()))
        .collect();
    let mut out = Vec::new();
    while !keys.is_empty() {
        let rest = keys.split_off(keys.len().min(KEYS_PER_MESSAGE));
        out.push(std::mem::replace(&mut keys, rest));
    }
    out
}

/// The messages for the keys of stored events: at most [`KEYS_PER_MESSAGE`] keys and
/// [`MESSAGE_BYTES`] of them as JSON each (message IDs are the client's: up to 99 characters,
/// each escaped up to six bytes).
pub fn messages(keys: Vec<(String, String)>) -> Vec<Message> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut size = 0;
    for key in keys {
        let len = serde_json::to_string(&key).map_or(MESSAGE_BYTES, |t| t.len() + 1);
        match out.last_mut() {
            Some(last) if last.len() < KEYS_PER_MESSAGE && size + len <= MESSAGE_BYTES => {
                last.push(key)
            }
            _ => {
                out.push(vec![key]);
                size = 0;
            }
        }
        size += len;
    }
    out.into_iter()
        .map(|events| Message::Events { events })
        .collect()
}

/// The keys of the events from `source_id` a batch stored (`inserted`: their message IDs; the
/// others were duplicates, archived when first stored).
pub fn stored_keys(
    source_id: &str,
    events: &[&Event],
    inserted: &HashSet<String>,
) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| inserted.contains(&e.message_id))
        .map(|e| (source_id.to_owned(), e.message_id.clone()))
        .collect()
}

/// A new claim's name at `now_ms`: the time first, so a partition's objects list in the order
/// they were written (an export that pages through a day sees later objects after earlier
/// ones), then random bytes.
pub fn claim_id(now_ms: i64, random: [u8; 4]) -> String {
    let time = now_ms.max(0);
    let tail: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{time:012x}{tail}")
}

/// A stored event's columns, as D1 holds them (`SELECT` [`COLUMNS`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[allow(missing_docs)] // the columns of `events`
pub struct Row {
    pub source_id: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub timestamp: i64,
    pub received_at: i64,
    pub body: String,
}

/// The columns a [`Row`] reads.
const COLUMNS: &str =
    "source_id, message_id, type, name, anonymous_id, user_id, timestamp, received_at, body";

impl Row {
    /// The event's line: typed columns first (what a warehouse table needs), then the whole
    /// event as stored, unknown fields included. The stored body is copied as it is, checked
    /// but not parsed into a tree: rebuilding it was most of the consumer's CPU per event
    /// (`bench/parquet.mjs`). A body that is not a JSON object (never written so) becomes `{}`.
    pub fn line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            source_id: &'a str,
            message_id: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            event: Option<&'a str>,
            anonymous_id: Option<&'a str>,
            user_id: Option<&'a str>,
            timestamp: String,
            received_at: String,
            body: Body<'a>,
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Body<'a> {
            Stored(&'a RawValue),
            Rewritten(Map<String, Value>),
        }
        let body = match serde_json::from_str::<&RawValue>(self.body.trim()) {
            Ok(raw) if raw.get().starts_with('{') && !raw.get().contains(['\n', '\r']) => {
                Body::Stored(raw)
            }
            // The collector stores compact JSON; a body written some other way is parsed and
            // written compact, so that it cannot break the line.
            _ => Body::Rewritten(serde_json::from_str(&self.body).unwrap_or_default()),
        };
        serde_json::to_string(&Line {
            source_id: &self.source_id,
            message_id: &self.message_id,
            kind: &self.kind,
            event: self.name.as_deref(),
            anonymous_id: self.anonymous_id.as_deref(),
            user_id: self.user_id.as_deref(),
            timestamp: format_iso8601(self.timestamp),
            received_at: format_iso8601(self.received_at),
            body,
        })
        .unwrap_or_default()
    }

    /// The UTC day it was received, `YYYY-MM-DD`: its partition.
    pub fn day(&self) -> String {
        day_text(self.received_at.div_euclid(DAY_MS))
    }
}

pub(crate) fn day_text(epoch_day: i64) -> String {
    format_iso8601(epoch_day * DAY_MS)
        .get(..10)
        .unwrap_or_default()
        .to_owned()
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

/// A claim's objects: one per day and source of its rows, each event once.
pub fn objects(claim: &str, rows: &[Row]) -> Vec<Object> {
    let mut partitions: BTreeMap<(String, &str), BTreeMap<&str, &Row>> = BTreeMap::new();
    for row in rows {
        partitions
            .entry((row.day(), row.source_id.as_str()))
            .or_default()
            .insert(row.message_id.as_str(), row);
    }
    partitions
        .into_iter()
        .map(|((day, source), rows)| {
            let mut text = String::new();
            for row in rows.values() {
                text.push_str(&row.line());
                text.push('\n');
            }
            Object {
                key: object_key(claim, &day, source),
                body: gzip(text.as_bytes()),
                events: rows.len(),
            }
        })
        .collect()
}

/// The key of a claim's object for a day and source.
pub fn object_key(claim: &str, day: &str, source_id: &str) -> String {
    format!(
        "{}{claim}.ndjson.gz",
        partition_prefix(day, Some(source_id))
    )
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

/// Source IDs are configuration, but a key must not let one escape its partition: anything
/// but letters, digits, `-`, `_` and `.` is percent-encoded (UTF-8).
fn escape(source_id: &str) -> String {
    let mut out = String::new();
    for b in source_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Claims the unclaimed among `keys` for `claim`: statements for one batch.
pub fn claim(keys: &[(String, String)], claim: &str) -> Vec<Statement> {
    keys.chunks(KEYS_PER_STATEMENT)
        .map(|chunk| Statement {
            sql: "UPDATE events SET archive_object = ?2 WHERE archive_object IS NULL \
                  AND (source_id, message_id) IN (SELECT json_extract(value, '$[0]'), \
                  json_extract(value, '$[1]') FROM json_each(?1))"
                .into(),
            params: vec![
                Param::Text(serde_json::to_string(chunk).unwrap_or_else(|_| "[]".into())),
                Param::Text(claim.into()),
            ],
        })
        .collect()
}

/// A claim's rows as D1 holds them now, unless the claim is finished: [`Row`]s. A finished
/// claim (every row marked: marking is all or nothing) has its objects written, and compaction
/// may since have taken some of its rows out of D1: writing it again from the rows left would
/// drop those events from the archive. (A message delivered twice, or queued again after a
/// mark whose answer was lost, names a finished claim.)
pub fn claimed_rows(claim: &str) -> Statement {
    Statement {
        sql: format!(
            "SELECT {COLUMNS} FROM events WHERE archive_object = ?1 AND EXISTS \
             (SELECT 1 FROM events WHERE archive_object = ?1 AND archived_at IS NULL)"
        ),
        params: vec![Param::Text(claim.into())],
    }
}

/// Marks a claim's rows archived at `now_ms`.
pub fn mark(claim: &str, now_ms: i64) -> Statement {
    Statement {
        sql: "UPDATE events SET archived_at = ?2 WHERE archive_object = ?1 AND archived_at IS NULL"
            .into(),
        params: vec![Param::Text(claim.into()), Param::Int(now_ms)],
    }
}

/// Up to `limit` keys of events received before `before_ms` that nobody claimed (the sweep
/// queues them again), oldest first: `source_id, message_id`.
pub fn unclaimed(before_ms: i64, limit: u32) -> Statement {
    Statement {
        sql: "SELECT source_id, message_id FROM events WHERE archived_at IS NULL \
              AND archive_object IS NULL AND received_at < ?1 ORDER BY received_at LIMIT ?2"
            .into(),
        params: vec![Param::Int(before_ms), Param::Int(i64::from(limit))],
    }
}

/// Up to `limit` claims with rows received before `before_ms` still unmarked: `claim`.
/// (`+archive_object`: found through the unmarked rows' index, not by walking every claimed
/// row's.)
pub fn unfinished(before_ms: i64, limit: u32) -> Statement {
    Statement {
        sql: "SELECT DISTINCT +archive_object AS claim FROM events WHERE archived_at IS NULL \
              AND archive_object IS NOT NULL AND received_at < ?1 LIMIT ?2"
            .into(),
        params: vec![Param::Int(before_ms), Param::Int(i64::from(limit))],
    }
}

/// Notes, before a statement deletes or changes the events selected by `selection` (a `FROM
/// events WHERE ...` tail, after a `with` prefix), which claims' objects hold them: the sweep
/// rebuilds those objects.
pub fn note_rewrites(with: &str, selection: &str, params: Vec<Param>, now_ms: i64) -> Statement {
    let at = params.len() + 1;
    let mut params = params;
    params.push(Param::Int(now_ms));
    Statement {
        sql: format!(
            "{with}INSERT INTO archive_rewrites (claim, day, source_id, noted_at) \
             SELECT DISTINCT archive_object, received_at / {DAY_MS}, source_id, ?{at} {selection} \
             AND archive_object IS NOT NULL \
             ON CONFLICT (claim, day, source_id) DO UPDATE SET noted_at = max(noted_at, excluded.noted_at)"
        ),
        params,
    }
}

/// A rewrite the sweep owes: a claim's object for a day and source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rewrite {
    /// The claim.
    pub claim: String,
    /// The UTC epoch day.
    pub day: i64,
    /// The source.
    pub source_id: String,
    /// When the latest change was noted: a change noted after the rebuild read its rows keeps
    /// the note for another rebuild.
    pub noted_at: i64,
}

impl Rewrite {
    /// The object's key.
    pub fn key(&self) -> String {
        object_key(&self.claim, &day_text(self.day), &self.source_id)
    }

    /// The rows the object holds now: [`Row`]s.
    pub fn rows(&self) -> Statement {
        Statement {
            sql: format!(
                "SELECT {COLUMNS} FROM events WHERE archive_object = ?1 AND source_id = ?2 \
                 AND received_at >= ?3 AND received_at < ?4"
            ),
            params: vec![
                Param::Text(self.claim.clone()),
                Param::Text(self.source_id.clone()),
                Param::Int(self.day * DAY_MS),
                Param::Int((self.day + 1) * DAY_MS),
            ],
        }
    }

    /// Which of `message_ids` D1 holds outside this object (stored again after their dedup
    /// window): `message_id`.
    pub fn held_elsewhere(&self, message_ids: &[&str]) -> Statement {
        Statement {
            sql: "SELECT message_id FROM events WHERE source_id = ?1 \
                  AND message_id IN (SELECT value FROM json_each(?2)) \
                  AND (archive_object IS NOT ?3 OR received_at < ?4 OR received_at >= ?5)"
                .into(),
            params: vec![
                Param::Text(self.source_id.clone()),
                Param::Text(serde_json::to_string(message_ids).unwrap_or_else(|_| "[]".into())),
                Param::Text(self.claim.clone()),
                Param::Int(self.day * DAY_MS),
                Param::Int((self.day + 1) * DAY_MS),
            ],
        }
    }

    /// Forgets the rewrite, done, unless a later change was noted meanwhile.
    pub fn done(&self) -> Statement {
        Statement {
            sql: "DELETE FROM archive_rewrites WHERE claim = ?1 AND day = ?2 AND source_id = ?3 \
                  AND noted_at = ?4"
                .into(),
            params: vec![
                Param::Text(self.claim.clone()),
                Param::Int(self.day),
                Param::Text(self.source_id.clone()),
                Param::Int(self.noted_at),
            ],
        }
    }
}

/// Up to `limit` rewrites noted before `before_ms` whose claim is finished: [`Rewrite`]s.
pub fn rewrites_due(before_ms: i64, limit: u32) -> Statement {
    Statement {
        sql: "SELECT claim, day, source_id, noted_at FROM archive_rewrites r WHERE noted_at < ?1 \
              AND NOT EXISTS (SELECT 1 FROM events e WHERE e.archive_object = r.claim \
              AND e.archived_at IS NULL) ORDER BY noted_at LIMIT ?2"
            .into(),
        params: vec![Param::Int(before_ms), Param::Int(i64::from(limit))],
    }
}

/// Whether an archive object's day is before `cutoff_day` (`YYYY-MM-DD`): retention deletes it.
pub fn expired(key: &str, cutoff_day: &str) -> bool {
    day_of(key).is_some_and(|day| day < cutoff_day)
}

/// The day (`YYYY-MM-DD`) of the epoch milliseconds `ms`.
pub fn day_of_ms(ms: i64) -> String {
    day_text(ms.div_euclid(DAY_MS))
}

/// Objects one export page returns at most.
pub const EXPORT_OBJECTS: usize = 50;
/// Days one export may span.
pub const MAX_EXPORT_DAYS: i64 = 400;

/// A mistake in an export request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// `from` or `to` is not a `YYYY-MM-DD` date.
    #[error("from and to must be dates (YYYY-MM-DD)")]
    InvalidDate,
    /// `to` before `from`, or more than [`MAX_EXPORT_DAYS`] days.
    #[error("to must not be before from, and the range at most 400 days")]
    InvalidRange,
    /// The cursor is not one this export handed out.
    #[error("the cursor is not one of this export's")]
    InvalidCursor,
}

impl ExportError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidDate => "invalid_date",
            Self::InvalidRange => "invalid_range",
            Self::InvalidCursor => "invalid_cursor",
        }
    }
}

/// An export's days and source, and where its next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    from: String,
    to: String,
    source: Option<String>,
    cursor: Option<String>,
}

/// What an export does with a listed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// One of the export's objects.
    Take,
    /// In range, but another source's (or not an archive object).
    Skip,
    /// Past the last day: the export is complete.
    Past,
}

impl Window {
    /// Validates an export request: `from` and `to` are days (inclusive), `cursor` the key a
    /// previous page ended at.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        source: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Self, ExportError> {
        let day = |d: Option<&str>| {
            d.filter(|d| d.len() == 10)
                .and_then(|d| crate::format::time::parse_iso8601(d).map(|ms| (d.to_owned(), ms)))
                .ok_or(ExportError::InvalidDate)
        };
        let ((from, from_ms), (to, to_ms)) = (day(from)?, day(to)?);
        let days = (to_ms - from_ms) / crate::format::time::DAY_MS;
        if !(0..MAX_EXPORT_DAYS).contains(&days) {
            return Err(ExportError::InvalidRange);
        }
        let cursor = cursor.filter(|c| !c.is_empty()).map(str::to_owned);
        if let Some(c) = &cursor {
            match day_of(c) {
                Some(d) if d >= from.as_str() && d <= to.as_str() => {}
                _ => return Err(ExportError::InvalidCursor),
            }
        }
        Ok(Self {
            from,
            to,
            source: source.filter(|s| !s.is_empty()).map(str::to_owned),
            cursor,
        })
    }

    /// The key to list after: the cursor, else just before the first day's partition.
    pub fn start_after(&self) -> String {
        self.cursor
            .clone()
            .unwrap_or_else(|| partition_prefix(&self.from, None))
    }

    /// What the export does with `key`, listed in order after [`Self::start_after`].
    pub fn select(&self, key: &str) -> Listed {
        match day_of(key) {
            Some(day) if day > self.to.as_str() => Listed::Past,
            Some(day) => {
                let prefix = partition_prefix(day, self.source.as_deref());
                if key.starts_with(&prefix) && key.ends_with(".ndjson.gz") {
                    Listed::Take
                } else {
                    Listed::Skip
                }
            }
            None if key > PREFIX => Listed::Past,
            None => Listed::Skip,
        }
    }
}

/// The NDJSON of an archive object, or `None` when it is not gzip or holds more than
/// `max_bytes` (never a silently cut file).
pub fn gunzip(bytes: &[u8], max_bytes: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= max_bytes).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Read;

    const DAY: i64 = 86_400_000;

    fn row(source: &str, id: &str, received_at: i64) -> Row {
        Row {
            source_id: source.into(),
            message_id: id.into(),
            kind: "track".into(),
            name: Some("Order Completed".into()),
            anonymous_id: Some("a1".into()),
            user_id: None,
            timestamp: received_at - 1000,
            received_at,
            body: json!({"type": "track", "event": "Order Completed", "messageId": id,
                "properties": {"revenue": 12.5}})
            .to_string(),
        }
    }

    fn keys(prefix: &str, n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| ("web".to_owned(), format!("{prefix}{i}")))
            .collect()
    }

    #[test]
    fn merges_a_batchs_small_messages_into_one_claim() {
        let merged = claims([keys("a", 3), keys("b", 1), keys("c", 4)]);
        assert_eq!(merged.len(), 1);
        let ids: Vec<&str> = merged[0].iter().map(|k| k.1.as_str()).collect();
        assert_eq!(ids, ["a0", "a1", "a2", "b0", "c0", "c1", "c2", "c3"]);
    }

    #[test]
    fn a_claim_never_holds_more_than_a_message_may() {
        let merged = claims([
            keys("a", 300),
            keys("b", 300),
            keys("c", KEYS_PER_MESSAGE + 1),
        ]);
        assert!(merged.iter().all(|c| c.len() <= KEYS_PER_MESSAGE));
        assert_eq!(
            merged.iter().map(Vec::len).sum::<usize>(),
            600 + KEYS_PER_MESSAGE + 1
        );
        assert_eq!(merged.len(), 3);
    }

    #[test]
    fn a_key_in_two_messages_is_claimed_once() {
        let merged = claims([keys("a", 2), keys("a", 3)]);
        assert_eq!(merged, vec![keys("a", 3)]);
        assert!(claims(Vec::<Vec<(String, String)>>::new()).is_empty());
    }

    fn gunzip_text(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .unwrap_or_default();
        out
    }

    #[test]
    fn a_line_has_typed_columns_and_the_whole_event() {
        let r = row("web", "m1", 20_000 * DAY + 5);
        assert_eq!(r.day(), "2024-10-04");
        let line: Value = serde_json::from_str(&r.line()).unwrap_or_default();
        assert_eq!(line["event"], "Order Completed");
        assert_eq!(line["received_at"], "2024-10-04T00:00:00.005Z");
        assert_eq!(line["body"]["properties"]["revenue"], 12.5);
        assert_eq!(line["user_id"], Value::Null);
    }

    #[test]
    fn a_line_copies_the_stored_body_after_the_columns() {
        let mut r = row("web", "m1", DAY);
        r.body = r#"{"type":"track","z":1,"a":{"b":[1,2]},"messageId":"m1"}"#.into();
        let line = r.line();
        assert!(
            line.starts_with(r#"{"source_id":"web","message_id":"m1","type":"track","#),
            "{line}"
        );
        assert!(
            line.ends_with(r#","body":{"type":"track","z":1,"a":{"b":[1,2]},"messageId":"m1"}}"#),
            "{line}"
        );
        r.body = "{\"a\":\n 1,\r\n\"b\": [2]}".into();
        let line = r.line();
        assert!(line.ends_with(r#","body":{"a":1,"b":[2]}}"#), "{line}");
        for broken in ["[1,2]", "{\"a\":", "", "null"] {
            r.body = broken.into();
            let line: Value = serde_json::from_str(&r.line()).unwrap_or_default();
            assert_eq!(line["body"], json!({}), "{broken}");
            assert_eq!(line["message_id"], "m1");
        }
    }

    #[test]
    fn a_claims_objects_are_one_per_day_and_source_keyed_by_the_claim() {
        let rows = vec![
            row("web", "m2", DAY + 1),
            row("web", "m1", DAY + 2),
            row("web", "m1", DAY + 2),
            row("pos/1", "m3", DAY + 3),
            row("web", "m4", 2 * DAY + 1),
        ];
        let objects = objects("c1", &rows);
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "events/dt=1970-01-02/source=pos%2F1/c1.ndjson.gz",
                "events/dt=1970-01-02/source=web/c1.ndjson.gz",
                "events/dt=1970-01-03/source=web/c1.ndjson.gz",
            ]
        );
        assert_eq!(objects[1].events, 2);
        let lines: Vec<Value> = gunzip_text(&objects[1].body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message_id"], "m1");
        assert_eq!(
            gunzip(&objects[1].body, 1 << 20).map(|b| b.len()),
            Some(gunzip_text(&objects[1].body).len())
        );
    }

    #[test]
    fn a_rewrite_names_the_object_a_claim_wrote() {
        let rewrite = Rewrite {
            claim: "c1".into(),
            day: 1,
            source_id: "pos/1".into(),
            noted_at: 9,
        };
        assert_eq!(
            rewrite.done().params[3],
            Param::Int(9),
            "a later note survives"
        );
        assert_eq!(
            rewrite.key(),
            objects("c1", &[row("pos/1", "m3", DAY + 3)])[0].key
        );
        assert_eq!(
            rewrite.rows().params[2..],
            [Param::Int(DAY), Param::Int(2 * DAY)]
        );
    }

    #[test]
    fn sources_are_escaped_byte_by_byte() {
        assert_eq!(escape("web-1_a.b"), "web-1_a.b");
        assert_ne!(escape("\u{4e2d}"), escape("\u{04e2}D"));
        assert_eq!(escape("a/b=c"), "a%2Fb%3Dc");
    }

    #[test]
    fn messages_and_claims_are_chunked() {
        let keys: Vec<(String, String)> =
            (0..1200).map(|i| ("web".into(), format!("m{i}"))).collect();
        let messages = messages(keys.clone());
        assert_eq!(messages.len(), 3);
        let text = serde_json::to_string(&messages[0]).unwrap_or_default();
        assert!(text.len() < 64 * 1024, "{}", text.len());
        assert_eq!(
            serde_json::from_str::<Message>(&text).ok(),
            Some(messages[0].clone())
        );
        assert_eq!(
            serde_json::from_str::<Message>(r#"{"claim":"c1"}"#).ok(),
            Some(Message::Claim { claim: "c1".into() })
        );
        assert_eq!(claim(&keys, "c1").len(), 2);
        assert_eq!(claim_id(0x1234, [0, 1, 2, 255]), "000000001234000102ff");
        assert!(claim_id(1_800_000_000_000, [0; 4]) < claim_id(1_800_000_000_001, [0; 4]));
        // Long, escaped IDs: messages stay small whatever the client sent.
        let long: Vec<(String, String)> = (0..900)
            .map(|i| ("web".into(), format!("{i}{}", "\u{1}".repeat(90))))
            .collect();
        for m in super::messages(long) {
            assert!(serde_json::to_string(&m).unwrap_or_default().len() < 64 * 1024);
        }
        assert!(
            gunzip(&objects("c", &[row("web", "m", 5)])[0].body, 10).is_none(),
            "too big: refused, not cut"
        );
    }

    #[test]
    fn notes_rewrites_with_its_own_parameter_after_the_selections() {
        let s = note_rewrites(
            "",
            "FROM events WHERE user_id = ?1",
            vec![Param::Text("u".into())],
            7,
        );
        assert!(
            s.sql
                .contains("?2 FROM events WHERE user_id = ?1 AND archive_object IS NOT NULL"),
            "{}",
            s.sql
        );
        assert_eq!(s.params, vec![Param::Text("u".into()), Param::Int(7)]);
    }

    #[test]
    fn an_export_window_takes_its_days_and_source_in_key_order() {
        let w = Window::parse(Some("2026-12-01"), Some("2026-12-02"), Some("web"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.start_after(), "events/dt=2026-12-01/");
        assert_eq!(
            w.select("events/dt=2026-12-01/source=web/aa.ndjson.gz"),
            Listed::Take
        );
        assert_eq!(
            w.select("events/dt=2026-12-02/source=pos/aa.ndjson.gz"),
            Listed::Skip
        );
        assert_eq!(
            w.select("events/dt=2026-12-02/source=web/aa.ndjson.gz"),
            Listed::Take
        );
        assert_eq!(
            w.select("events/dt=2026-12-03/source=web/aa.ndjson.gz"),
            Listed::Past
        );
        assert_eq!(w.select("exports/x"), Listed::Past);
        let all = Window::parse(Some("2026-12-01"), Some("2026-12-01"), None, None);
        assert_eq!(
            all.map(|w| w.select("events/dt=2026-12-01/source=pos/aa.ndjson.gz")),
            Ok(Listed::Take)
        );
    }

    #[test]
    fn an_export_request_is_validated() {
        let parse = |f, t, c| {
            Window::parse(f, t, None, c)
                .map(|_| ())
                .map_err(|e| e.code())
        };
        assert_eq!(
            parse(Some("2026-12-1"), Some("2026-12-02"), None),
            Err("invalid_date")
        );
        assert_eq!(parse(None, Some("2026-12-02"), None), Err("invalid_date"));
        assert_eq!(
            parse(Some("2026-02-30"), Some("2026-03-02"), None),
            Err("invalid_date")
        );
        assert_eq!(
            parse(Some("2026-12-02"), Some("2026-12-01"), None),
            Err("invalid_range")
        );
        assert_eq!(
            parse(Some("2024-01-01"), Some("2026-12-01"), None),
            Err("invalid_range")
        );
        let cursor = Some("events/dt=2026-11-30/source=web/aa.ndjson.gz");
        assert_eq!(
            parse(Some("2026-12-01"), Some("2026-12-02"), cursor),
            Err("invalid_cursor")
        );
        let cursor = Some("events/dt=2026-12-02/source=web/aa.ndjson.gz");
        assert_eq!(
            parse(Some("2026-12-01"), Some("2026-12-02"), cursor),
            Ok(())
        );
    }

    #[test]
    fn retention_deletes_whole_days_before_the_cutoff() {
        assert!(expired(
            "events/dt=2026-09-05/source=web/c.ndjson.gz",
            "2026-09-06"
        ));
        assert!(!expired(
            "events/dt=2026-09-06/source=web/c.ndjson.gz",
            "2026-09-06"
        ));
        assert!(!expired("elsewhere/x", "2026-09-06"));
        assert_eq!(day_of_ms(DAY + 5), "1970-01-02");
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
