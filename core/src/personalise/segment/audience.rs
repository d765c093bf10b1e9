//! Segments as audiences (the console's segments page, `GET /v1/admin/segments`): how many
//! profiles each holds now, and its members, paged by profile ID.

use std::collections::BTreeMap;

use crate::plan::{distinct_values, Param, Statement};

/// Most members one page lists.
pub const MAX_PAGE: u32 = 1000;

/// Every segment's current size, counted in the `(segment, exited_at)` index one segment at a
/// time: the segments are walked by index seeks, so past members (never pruned) are not read.
/// `MATERIALIZED` counts each segment once.
fn with_sizes() -> String {
    format!(
        "WITH RECURSIVE {}, \
         sizes(segment, size) AS MATERIALIZED (SELECT value, (SELECT COUNT(*) \
         FROM segment_memberships WHERE segment = segs.value AND exited_at IS NULL) \
         FROM segs WHERE value IS NOT NULL) ",
        distinct_values("segs", "segment_memberships", "segment")
    )
}

/// Current members per segment: `segment, size`.
pub fn sizes() -> Statement {
    Statement {
        sql: format!(
            "{}SELECT segment, size FROM sizes WHERE size > 0",
            with_sizes()
        ),
        params: Vec::new(),
    }
}

/// Records `sizes` (segment -> current members, added up over the profile shards, each
/// counted by [`sizes`]) as the sizes of `now_ms`'s UTC day (the day's latest).
pub fn record_sizes(now_ms: i64, sizes: &BTreeMap<String, i64>) -> Statement {
    let rows: Vec<(&String, &i64)> = sizes.iter().filter(|(_, n)| **n > 0).collect();
    Statement {
        sql: "INSERT INTO segment_sizes (day, segment, size) \
              SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]') \
              FROM json_each(?2) WHERE true \
              ON CONFLICT (day, segment) DO UPDATE SET size = excluded.size"
            .into(),
        params: vec![
            Param::Int(now_ms.div_euclid(crate::format::time::DAY_MS)),
            Param::Text(serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())),
        ],
    }
}

/// Sizes from `from_day` on: `day, segment, size`.
pub fn size_history(from_day: i64) -> Statement {
    Statement {
        sql: "SELECT day, segment, size FROM segment_sizes WHERE day >= ?1 ORDER BY day".into(),
        params: vec![Param::Int(from_day)],
    }
}

/// A page of `segment`'s current members after profile ID `after` (exclusive; empty for the
/// first page): `profile_id, entered_at`, by profile ID. A full page means there may be more.
pub fn members(segment: &str, after: &str, limit: u32) -> Statement {
    page(segment, after, limit.clamp(1, MAX_PAGE))
}

/// Members an export reads per query: a Worker invocation makes at most 1,000 D1 queries
/// (paid plan), so an export stops at ten million members (less a page per profile shard).
pub const EXPORT_PAGE: u32 = 10_000;

/// [`members`] for an export: pages of [`EXPORT_PAGE`].
pub fn export_page(segment: &str, after: &str) -> Statement {
    page(segment, after, EXPORT_PAGE)
}

fn page(segment: &str, after: &str, limit: u32) -> Statement {
    Statement {
        sql: "SELECT profile_id, entered_at FROM segment_memberships \
              WHERE segment = ?1 AND exited_at IS NULL AND profile_id > ?2 \
              ORDER BY profile_id LIMIT ?3"
            .into(),
        params: vec![
            Param::Text(segment.into()),
            Param::Text(after.into()),
            Param::Int(i64::from(limit)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_bounded_and_starts_after_its_cursor() {
        let s = members("high_value", "prof_9", 1_000_000);
        assert_eq!(s.params[1], Param::Text("prof_9".into()));
        assert_eq!(s.params[2], Param::Int(1000));
        assert!(s.sql.contains("profile_id > ?2"));
    }

    #[test]
    fn recorded_sizes_leave_out_empty_segments() {
        let sizes = BTreeMap::from([("high_value".to_owned(), 3), ("vip".to_owned(), 0)]);
        let s = record_sizes(2 * crate::format::time::DAY_MS + 5, &sizes);
        assert_eq!(s.params[0], Param::Int(2));
        assert_eq!(s.params[1], Param::Text(r#"[["high_value",3]]"#.into()));
    }
}
