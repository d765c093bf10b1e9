//! Write plans: the SQL a request needs, as data. The edge executes a plan in one D1 `batch()`
//! (a transaction); tests inspect it without a database.

use crate::collect::event::Event;
use crate::format::time::DAY_MS;

/// D1 binds at most 100 parameters per statement.
pub const MAX_BOUND_PARAMS: usize = 100;

/// A bound SQL parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// TEXT.
    Text(String),
    /// INTEGER.
    Int(i64),
    /// BLOB.
    Blob(Vec<u8>),
    /// NULL.
    Null,
}

impl From<Option<&String>> for Param {
    fn from(v: Option<&String>) -> Self {
        v.map_or(Param::Null, |s| Param::Text(s.clone()))
    }
}

/// One SQL statement with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// Values for the placeholders, in order.
    pub params: Vec<Param>,
}

const EVENT_COLUMNS: [&str; 9] = [
    "source_id",
    "message_id",
    "type",
    "name",
    "anonymous_id",
    "user_id",
    "timestamp",
    "received_at",
    "body",
];

/// Inserts for `events` of source `source_id`, as few statements as the parameter limit allows.
///
/// A `messageId` stored within the source's dedup window (`window_days` before `now_ms`) is a
/// duplicate and changes nothing. One stored before it is outside the window: the new event
/// replaces it (the table still holds one row per `messageId`). Each statement ends in
/// `RETURNING message_id`, so the rows it returns are exactly the events stored now; every other
/// event was a duplicate.
pub fn insert_events(
    source_id: &str,
    events: &[&Event],
    now_ms: i64,
    window_days: u32,
) -> Vec<Statement> {
    let window_ms = i64::from(window_days) * DAY_MS;
    let dedup_cutoff_ms = now_ms - window_ms;
    // A replaced event is a new one: the archive takes it too.
    let updates: Vec<String> = EVENT_COLUMNS[2..]
        .iter()
        .map(|c| format!("{c}=excluded.{c}"))
        .chain([
            "archive_object=NULL".to_owned(),
            "archived_at=NULL".to_owned(),
        ])
        .collect();
    let rows = events
        .iter()
        .map(|e| {
            vec![
                Param::Text(source_id.to_owned()),
                Param::Text(e.message_id.clone()),
                Param::Text(e.kind.as_str().to_owned()),
                Param::from(e.name.as_ref()),
                Param::from(e.anonymous_id.as_ref()),
                Param::from(e.user_id.as_ref()),
                Param::Int(e.timestamp_ms),
                Param::Int(e.received_at_ms),
                // Serialising a map of Values cannot fail.
                Param::Text(serde_json::to_string(&e.body).unwrap_or_default()),
                // As text: a JS number would round 64 bits.
                Param::Text(
                    crate::archive::compact::event_key(source_id, &e.message_id).to_string(),
                ),
            ]
        })
        .collect();
    multi_row(
        &format!(
            "INSERT INTO events ({}) SELECT {} FROM (VALUES ",
            EVENT_COLUMNS.join(","),
            (1..=EVENT_COLUMNS.len())
                .map(|i| format!("column{i}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        // An event compaction took out of D1 left its dedup key (`event_keys`) until the end
        // of the UTC day its window ends (against this event's receipt time: column 8, cast
        // because the Worker binds numbers as floats, which would make the day fractional).
        // Each day that can hold a live key is one key seek.
        &format!(
            ") WHERE NOT EXISTS (SELECT 1 FROM event_keys k WHERE k.day IN (SELECT value FROM json_each(?)) \
             AND k.key = CAST(column{} AS INTEGER) AND k.day >= CAST(column8 AS INTEGER) / {DAY_MS}) \
             ON CONFLICT (source_id, message_id) DO UPDATE SET {} \
             WHERE events.received_at < ? RETURNING message_id",
            EVENT_COLUMNS.len() + 1,
            updates.join(",")
        ),
        rows,
        &[
            Param::Text(key_days(events, now_ms, window_ms)),
            Param::Int(dedup_cutoff_ms),
        ],
    )
}

/// A queued request is stored up to this long after `now_ms` (its receipt): the queue keeps a
/// message four days. A later copy of its events may have been stored and compacted meanwhile,
/// its key filed as late as that time plus the window.
const QUEUED_FOR_AT_MOST_MS: i64 = 5 * DAY_MS;

/// The expiry days (UTC epoch days, as a JSON array) a live key of these events' source can
/// be filed under: from the earliest receipt among them to a window past the latest receipt
/// or `now_ms`, plus [`QUEUED_FOR_AT_MOST_MS`]. (So a source whose window was shortened by up
/// to five days still finds the keys filed under the longer one.)
fn key_days(events: &[&Event], now_ms: i64, window_ms: i64) -> String {
    let first = events
        .iter()
        .map(|e| e.received_at_ms)
        .min()
        .unwrap_or(now_ms)
        .min(now_ms);
    let last = events
        .iter()
        .map(|e| e.received_at_ms)
        .max()
        .unwrap_or(now_ms)
        .max(now_ms)
        .saturating_add(window_ms)
        .saturating_add(QUEUED_FOR_AT_MOST_MS);
    let days: Vec<i64> = (first.div_euclid(DAY_MS)..=last.div_euclid(DAY_MS)).collect();
    serde_json::to_string(&days).unwrap_or_else(|_| "[]".into())
}

/// A recursive CTE `name(value)`: the distinct non-null values of `table.column`, walked by one
/// index seek each (the column must lead an index). Without statistics (D1 never runs ANALYZE)
/// SQLite reads every row for a `DISTINCT` or `GROUP BY` instead.
pub fn distinct_values(name: &str, table: &str, column: &str) -> String {
    format!(
        "{name}(value) AS ( \
           SELECT (SELECT min({column}) FROM {table}) \
           UNION ALL SELECT (SELECT min({column}) FROM {table} WHERE {column} > {name}.value) \
           FROM {name} WHERE {name}.value IS NOT NULL)"
    )
}

/// `<prefix> (..),(..) <suffix>` statements for `rows` (all of one width), as few as the
/// parameter limit allows; `trailing` binds the suffix's own placeholders in every statement.
pub fn multi_row(
    prefix: &str,
    suffix: &str,
    rows: Vec<Vec<Param>>,
    trailing: &[Param],
) -> Vec<Statement> {
    let width = rows.first().map_or(1, Vec::len).max(1);
    let per_statement = (MAX_BOUND_PARAMS.saturating_sub(trailing.len()) / width).max(1);
    let row = format!("({})", vec!["?"; width].join(","));
    rows.chunks(per_statement)
        .map(|chunk| {
            let mut params: Vec<Param> = chunk.iter().flatten().cloned().collect();
            params.extend_from_slice(trailing);
            Statement {
                sql: format!(
                    "{prefix}{}{suffix}",
                    vec![row.as_str(); chunk.len()].join(",")
                ),
                params,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope};
    use serde_json::json;

    fn event(n: usize) -> Event {
        let raw = json!({"type": "track", "event": "e", "anonymousId": "a", "messageId": format!("m{n}")});
        validate(raw, 10, &Envelope::default(), String::new).unwrap()
    }

    #[test]
    fn chunks_inserts_under_the_parameter_limit() {
        let events: Vec<Event> = (0..25).map(event).collect();
        let refs: Vec<&Event> = events.iter().collect();
        let plan = insert_events("src", &refs, 8 * DAY_MS, 7);
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(|s| s.params.len() <= MAX_BOUND_PARAMS));
        assert_eq!(
            plan.iter().map(|s| s.params.len()).sum::<usize>(),
            25 * 10 + 3 * 2
        );
        assert!(plan
            .iter()
            .all(|s| s.params.last() == Some(&Param::Int(DAY_MS))));
        for s in &plan {
            assert_eq!(s.sql.matches('?').count(), s.params.len());
            assert!(s.sql.ends_with("RETURNING message_id"));
        }
        assert_eq!(plan[0].params[1], Param::Text("m0".into()));
        assert_eq!(plan[2].params[0], Param::Text("src".into()));
    }

    #[test]
    fn plans_nothing_for_no_events() {
        assert!(insert_events("src", &[], 0, 7).is_empty());
    }

    #[test]
    fn looks_keys_up_under_every_day_a_live_one_can_expire() {
        let mut early = event(0);
        early.received_at_ms = 3 * DAY_MS + 5;
        let mut late = event(1);
        late.received_at_ms = 10 * DAY_MS;
        let plan = insert_events("src", &[&early, &late], 9 * DAY_MS, 7);
        let days = &plan[0].params[plan[0].params.len() - 2];
        assert_eq!(
            days,
            &Param::Text("[3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22]".into())
        );
    }
}
