//! The live view of what arrives (the console's debugger, `GET /v1/admin/events`): the newest
//! stored events, filtered, and the events rejected with their codes. Rejected events are not
//! stored as events; a short log of their codes is (`rejected_events`, migration 0014), without
//! their bodies: a rejected body is exactly what nobody checked.

use serde::Deserialize;

use super::event::Event;
use super::ingest::{EventResult, Status};
use crate::format::time::DAY_MS;
use crate::plan::{Param, Statement, MAX_BOUND_PARAMS};

/// Most rejections one request logs (the rest are counted in its answer only).
pub const MAX_LOGGED_PER_REQUEST: usize = 20;
/// Most rows one listing returns.
pub const MAX_LIST: u32 = 200;
/// Most of the newest rows (events, or rejections) one listing looks through for its matches.
pub const LIVE_WINDOW: u32 = 10_000;
/// How long rejections stay in the log.
pub const REJECTIONS_KEPT_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Longest reason kept.
const MAX_MESSAGE_CHARS: usize = 300;

/// The statement logging the rejected ones among `results` of a request from `source_id` at
/// `received_at`; `None` when nothing was rejected.
pub fn log_rejections(
    source_id: &str,
    results: &[EventResult],
    received_at: i64,
) -> Option<Statement> {
    let rejected: Vec<&EventResult> = results
        .iter()
        .filter(|r| r.status == Status::Rejected)
        .take(MAX_LOGGED_PER_REQUEST)
        .collect();
    if rejected.is_empty() {
        return None;
    }
    let mut params = vec![Param::Int(received_at), Param::Text(source_id.into())];
    let rows: Vec<String> = rejected
        .iter()
        .map(|r| {
            let at = params.len();
            params.push(r.message_id.clone().map_or(Param::Null, Param::Text));
            params.push(Param::Text(r.code.unwrap_or("rejected").into()));
            let message: String = r
                .message
                .clone()
                .unwrap_or_default()
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect();
            params.push(Param::Text(message));
            format!("(?1, ?2, ?{}, ?{}, ?{})", at + 1, at + 2, at + 3)
        })
        .collect();
    Some(Statement {
        sql: format!(
            "INSERT INTO rejected_events (received_at, source_id, message_id, code, message) VALUES {}",
            rows.join(", ")
        ),
        params,
    })
}

/// What a listing asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Filter {
    /// Only this source.
    pub source: Option<String>,
    /// Only this type (`track`, `identify`, ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only this event name.
    pub name: Option<String>,
    /// Only what arrived after this time (epoch ms): a live view polls with its newest.
    pub since: Option<i64>,
    /// At most this many (default 50, at most [`MAX_LIST`]).
    pub limit: Option<u32>,
}

impl Filter {
    fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(50).clamp(1, MAX_LIST))
    }
}

/// The newest stored events matching `filter`: `source_id, message_id, type, name, timestamp,
/// received_at, body`. A filtered listing looks through the newest [`LIVE_WINDOW`] events since
/// `filter.since` only: one that matches rarely would otherwise read the whole hot window (every
/// event of the last day) on each poll.
pub fn newest_events(filter: &Filter) -> Statement {
    let filtered = filter.source.is_some() || filter.kind.is_some() || filter.name.is_some();
    let mut params = vec![
        Param::Int(filter.since.unwrap_or(0)),
        filter.source.clone().map_or(Param::Null, Param::Text),
        filter.kind.clone().map_or(Param::Null, Param::Text),
        filter.name.clone().map_or(Param::Null, Param::Text),
        Param::Int(filter.limit()),
    ];
    // D1 refuses a parameter the statement does not use.
    if filtered {
        params.push(Param::Int(i64::from(LIVE_WINDOW)));
    }
    Statement {
        sql: windowed(
            "source_id, message_id, type, name, timestamp, received_at, body",
            "events",
            "(?2 IS NULL OR source_id = ?2) AND (?3 IS NULL OR type = ?3) AND (?4 IS NULL OR name = ?4)",
            filtered.then_some("?6"),
            "?5",
        ),
        params,
    }
}

/// The newest rejections matching `filter`'s source and time: `received_at, source_id,
/// message_id, code, message`; with a source, among the newest [`LIVE_WINDOW`] since
/// `filter.since`.
pub fn newest_rejections(filter: &Filter) -> Statement {
    let mut params = vec![
        Param::Int(filter.since.unwrap_or(0)),
        filter.source.clone().map_or(Param::Null, Param::Text),
        Param::Int(filter.limit()),
    ];
    if filter.source.is_some() {
        params.push(Param::Int(i64::from(LIVE_WINDOW)));
    }
    Statement {
        sql: windowed(
            "received_at, source_id, message_id, code, message",
            "rejected_events",
            "(?2 IS NULL OR source_id = ?2)",
            filter.source.is_some().then_some("?4"),
            "?3",
        ),
        params,
    }
}

/// `columns` of `table`'s rows received after `?1` that match `matches`, newest first, at most
/// `limit`; with a `window`, looked for among that many of the newest only. Unfiltered, the
/// newest rows are the answer and the time index's end gives them directly.
fn windowed(
    columns: &str,
    table: &str,
    matches: &str,
    window: Option<&str>,
    limit: &str,
) -> String {
    match window {
        Some(window) => format!(
            "SELECT * FROM (SELECT {columns} FROM {table} WHERE received_at > ?1 \
             ORDER BY received_at DESC LIMIT {window}) WHERE {matches} \
             ORDER BY received_at DESC LIMIT {limit}"
        ),
        None => format!(
            "SELECT {columns} FROM {table} WHERE received_at > ?1 AND {matches} \
             ORDER BY received_at DESC LIMIT {limit}"
        ),
    }
}

/// The daily counts (`event_counts`, by UTC day, source and type) of the events a batch
/// stored at `received_at`: only rows this request stored, selected by its receipt time and
/// message IDs like the delivery outbox, so duplicates count nothing. The console's overview
/// reads these instead of scanning the events.
pub fn count_stored(source_id: &str, received_at: i64, events: &[&Event]) -> Vec<Statement> {
    let day = received_at.div_euclid(DAY_MS);
    events
        .chunks(MAX_BOUND_PARAMS - 3)
        .map(|chunk| {
            let mut params = vec![
                Param::Int(day),
                Param::Text(source_id.into()),
                Param::Int(received_at),
            ];
            params.extend(chunk.iter().map(|e| Param::Text(e.message_id.clone())));
            let list: Vec<String> = (4..4 + chunk.len()).map(|i| format!("?{i}")).collect();
            Statement {
                sql: format!(
                    "INSERT INTO event_counts (day, source_id, type, count) \
                     SELECT ?1, source_id, type, COUNT(*) FROM events \
                     WHERE source_id = ?2 AND received_at = ?3 AND message_id IN ({}) \
                     GROUP BY source_id, type \
                     ON CONFLICT (day, source_id, type) DO UPDATE SET count = count + excluded.count",
                    list.join(",")
                ),
                params,
            }
        })
        .collect()
}

/// The daily counts from `from_day` on (epoch days): `day, source_id, type, count`.
pub fn daily_counts(from_day: i64) -> Statement {
    Statement {
        sql: "SELECT day, source_id, type, count FROM event_counts WHERE day >= ?1 \
              ORDER BY day, source_id, type"
            .into(),
        params: vec![Param::Int(from_day)],
    }
}

/// Retention of the rejection log.
pub fn prune_rejections(now_ms: i64) -> Statement {
    Statement {
        sql: "DELETE FROM rejected_events WHERE received_at < ?1".into(),
        params: vec![Param::Int(now_ms - REJECTIONS_KEPT_MS)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Status, code: Option<&'static str>) -> EventResult {
        EventResult {
            message_id: Some("m".into()),
            status,
            code,
            message: code.map(|c| format!("because {c}")),
        }
    }

    #[test]
    fn only_rejections_are_logged_and_a_flood_is_capped() {
        let ok = [
            result(Status::Accepted, None),
            result(Status::Duplicate, None),
        ];
        assert!(log_rejections("web", &ok, 5).is_none());
        let mut results = vec![result(Status::Accepted, None)];
        results.extend((0..50).map(|_| result(Status::Rejected, Some("missing_id"))));
        let s = log_rejections("web", &results, 5).unwrap();
        assert_eq!(s.params.len(), 2 + 3 * MAX_LOGGED_PER_REQUEST);
        assert_eq!(s.params[3], Param::Text("missing_id".into()));
        assert!(s.sql.ends_with("(?1, ?2, ?60, ?61, ?62)"), "{}", s.sql);
    }

    #[test]
    fn counts_select_only_this_batchs_rows_in_chunks() {
        let events: Vec<Event> = (0..150)
            .map(|i| {
                crate::collect::event::validate(
                    serde_json::json!({"type": "track", "event": "x", "anonymousId": "a", "messageId": format!("m{i}")}),
                    10,
                    &crate::collect::event::Envelope::default(),
                    String::new,
                )
                .unwrap()
            })
            .collect();
        let refs: Vec<&Event> = events.iter().collect();
        let plan = count_stored("web", DAY_MS * 3 + 5, &refs);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].params[0], Param::Int(3), "the UTC day");
        assert_eq!(plan[0].params.len() + plan[1].params.len(), 3 * 2 + 150);
        assert!(plan[0].sql.contains("received_at = ?3 AND message_id IN"));
    }

    #[test]
    fn a_listing_is_bounded() {
        let f = Filter {
            limit: Some(100_000),
            ..Filter::default()
        };
        assert_eq!(newest_events(&f).params[4], Param::Int(200));
        assert_eq!(
            newest_rejections(&Filter::default()).params[2],
            Param::Int(50)
        );
    }

    #[test]
    fn a_filter_looks_through_the_newest_window_only() {
        let f = Filter {
            name: Some("Rare Event".into()),
            ..Filter::default()
        };
        let events = newest_events(&f);
        assert!(events
            .sql
            .contains("ORDER BY received_at DESC LIMIT ?6) WHERE"));
        assert_eq!(events.params[5], Param::Int(i64::from(LIVE_WINDOW)));
        let by_source = Filter {
            source: Some("web".into()),
            ..Filter::default()
        };
        let rejections = newest_rejections(&by_source);
        assert!(rejections
            .sql
            .contains("ORDER BY received_at DESC LIMIT ?4) WHERE"));
        assert_eq!(rejections.params[3], Param::Int(i64::from(LIVE_WINDOW)));
        // Unfiltered, the newest rows are the answer: no window to read through (and no
        // parameter for one: D1 refuses a parameter the statement does not use).
        let unfiltered = newest_events(&Filter::default());
        assert!(!unfiltered.sql.contains("?6"));
        assert_eq!(unfiltered.params.len(), 5);
        let unwindowed = newest_rejections(&f);
        assert!(!unwindowed.sql.contains("?4"));
        assert_eq!(unwindowed.params.len(), 3);
    }
}
