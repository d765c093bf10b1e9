//! Retention: how long raw events and inactive anonymous profiles are kept, and the bounded
//! statements a scheduled run uses to purge them.
//!
//! Purges work in chunks ([`Retention::chunk`] rows per statement) so one run stays within the
//! Worker's CPU and D1's per-query limits; a run stops after [`Retention::max_chunks`] chunks and
//! the next run carries on.

use crate::format::time::DAY_MS;
use crate::identity::IdClass;
use crate::plan::{Param, Statement};

/// How often a profile's `last_seen` is refreshed at most: finer precision would cost a write
/// per request for nothing.
pub const TOUCH_GRANULARITY_MS: i64 = 3_600_000;

/// Retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw events older than this (by receive time) are deleted. Default 90.
    pub event_days: u32,
    /// Profiles with only anonymous identifiers, inactive this long, are deleted. Default 180.
    pub anonymous_profile_days: u32,
    /// Rows per delete statement. Default 500.
    pub chunk: u32,
    /// Chunks per run. Default 20.
    pub max_chunks: u32,
    /// Profiles one run walks looking for inactive anonymous ones; the next run carries
    /// on from there. Default 500,000.
    pub walk: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            event_days: 90,
            anonymous_profile_days: 180,
            chunk: 500,
            max_chunks: 20,
            walk: 500_000,
        }
    }
}

/// A retention setting that is not a whole number in range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention setting {name} must be a whole number from {min} to {max}")]
pub struct RetentionError {
    /// The setting.
    pub name: &'static str,
    /// Smallest allowed.
    pub min: u32,
    /// Largest allowed.
    pub max: u32,
}

impl RetentionError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "invalid_retention"
    }
}

impl Retention {
    /// Reads the settings (`RETENTION_EVENT_DAYS`, `RETENTION_ANONYMOUS_PROFILE_DAYS`,
    /// `RETENTION_CHUNK`, `RETENTION_MAX_CHUNKS`, `RETENTION_WALK`) through `get`; missing or empty ones default.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, RetentionError> {
        let defaults = Self::default();
        let read = |name: &'static str, default: u32, min: u32, max: u32| match get(name)
            .map(|v| v.trim().to_owned())
        {
            None => Ok(default),
            Some(v) if v.is_empty() => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or(RetentionError { name, min, max }),
        };
        Ok(Self {
            event_days: read("RETENTION_EVENT_DAYS", defaults.event_days, 1, 3650)?,
            anonymous_profile_days: read(
                "RETENTION_ANONYMOUS_PROFILE_DAYS",
                defaults.anonymous_profile_days,
                1,
                3650,
            )?,
            chunk: read("RETENTION_CHUNK", defaults.chunk, 1, 5000)?,
            max_chunks: read("RETENTION_MAX_CHUNKS", defaults.max_chunks, 1, 1000)?,
            // At most 200 walk steps, leaving most of D1's 1,000 queries per invocation to the
            // run's erasures and purges.
            walk: read("RETENTION_WALK", defaults.walk, 1, 200 * WALK_STEP)?,
        })
    }

    /// Events received before this are expired.
    pub fn event_cutoff(&self, now_ms: i64) -> i64 {
        now_ms - i64::from(self.event_days) * DAY_MS
    }

    /// Anonymous profiles last active before this are expired.
    pub fn profile_cutoff(&self, now_ms: i64) -> i64 {
        now_ms - i64::from(self.anonymous_profile_days) * DAY_MS
    }
}

/// Deletes one chunk of expired events (uses the `received_at` index). Repeat while it deletes a
/// full chunk. With an archive (`archived_only`), an event not yet in it stays until it is: an
/// accepted event is never lost to a stalled archive.
pub fn purge_events(retention: &Retention, now_ms: i64, archived_only: bool) -> Statement {
    let archived = if archived_only {
        " AND archived_at IS NOT NULL"
    } else {
        ""
    };
    Statement {
        sql: format!(
            "DELETE FROM events WHERE (source_id, message_id) IN \
             (SELECT source_id, message_id FROM events WHERE received_at < ?{archived} LIMIT ?)"
        ),
        params: vec![
            Param::Int(retention.event_cutoff(now_ms)),
            Param::Int(i64::from(retention.chunk)),
        ],
    }
}

/// Identifier classes that never name a person on their own.
const ANONYMOUS_CLASSES: [IdClass; 3] =
    [IdClass::AnonymousId, IdClass::CookieId, IdClass::DeviceId];

/// Profiles one walk step reads.
pub const WALK_STEP: u32 = 5_000;

/// The walk's saved position (`walk_cursors`): the last profile ID walked, "" to start over.
/// (Named anew when the walk went from identifiers to profiles, 2026-12-07.)
pub const WALK_CURSOR: &str = "inactive_profiles";

/// One step of the walk over the profiles' rows (`profile_members`) in key order: reads up to
/// `rows` profiles after `after` and returns those whose identifiers are all anonymous and
/// which were last seen before the cutoff (at most one chunk, in key order: `profile_id` and
/// its `identifiers` as JSON), then one row with the last profile ID read (`walked_to`, NULL
/// past the end) and how many were read (`walked`). Their erasure is planned like a
/// data-subject deletion, without suppression.
///
/// A walk instead of an index over each profile's activity: that index would hold every
/// profile ID once more, for a query run once a day.
pub fn inactive_anonymous_profiles(
    retention: &Retention,
    now_ms: i64,
    after: &str,
    rows: u32,
) -> Statement {
    let anonymous = ANONYMOUS_CLASSES
        .iter()
        .map(|c| format!("m.value LIKE '{}:%'", c.as_str()))
        .collect::<Vec<_>>()
        .join(" OR ");
    Statement {
        sql: format!(
            "WITH walked AS MATERIALIZED (SELECT profile_id, last_seen \
             FROM profile_members WHERE profile_id > ?3 ORDER BY profile_id LIMIT ?4) \
             SELECT * FROM (SELECT p.profile_id AS profile_id, p.identifiers AS identifiers, \
             NULL AS walked_to, NULL AS walked FROM walked w \
             CROSS JOIN profile_members p ON p.profile_id = w.profile_id \
             WHERE w.last_seen < ?1 AND NOT EXISTS \
             (SELECT 1 FROM json_each(p.identifiers) m WHERE NOT ({anonymous})) \
             ORDER BY w.profile_id LIMIT ?2) \
             UNION ALL SELECT NULL, NULL, max(profile_id), count(*) FROM walked"
        ),
        params: vec![
            Param::Int(retention.profile_cutoff(now_ms)),
            Param::Int(i64::from(retention.chunk)),
            Param::Text(after.to_owned()),
            Param::Int(i64::from(rows)),
        ],
    }
}

/// Where the walk goes on after a step that asked for `rows` profiles, read `read` of them
/// up to `walked_to`, and found `found` (the last being `last_found`). A full chunk found may
/// have left more in the rows read, so the walk resumes after the last one found. Otherwise it
/// resumes after the rows read, or, when fewer came than asked (the end of the table), starts
/// over: "" and `true`.
pub fn walk_resumes_after(
    retention: &Retention,
    found: usize,
    last_found: Option<&str>,
    (read, rows): (u32, u32),
    walked_to: Option<&str>,
) -> (String, bool) {
    match (last_found, walked_to) {
        (Some(last), _) if found >= retention.chunk as usize => (last.to_owned(), false),
        (_, Some(to)) if read >= rows => (to.to_owned(), false),
        _ => (String::new(), true),
    }
}

/// Reads the saved position of the walk `name` (`walk_cursors`; [`WALK_CURSOR`] is this
/// module's; the profile shards' move has its own).
pub fn walk_cursor(name: &str) -> Statement {
    Statement {
        sql: "SELECT after FROM walk_cursors WHERE name = ?".into(),
        params: vec![Param::Text(name.into())],
    }
}

/// Saves the position of the walk `name`.
pub fn save_walk_cursor(name: &str, after: &str) -> Statement {
    Statement {
        sql: "INSERT INTO walk_cursors (name, after) VALUES (?1, ?2) \
              ON CONFLICT (name) DO UPDATE SET after = excluded.after"
            .into(),
        params: vec![Param::Text(name.into()), Param::Text(after.to_owned())],
    }
}

/// Saves the position of the walk over the profiles' rows: the greatest profile ID still
/// stored up to `after`. The profile last read may be erased by the step's own erasure
/// (committed in the same batch, before this) or by a deletion request since: a position must
/// not keep it, and nothing stored lies between the two, so the walk goes on the same.
pub fn save_profiles_walk(after: &str) -> Statement {
    Statement {
        sql: "INSERT INTO walk_cursors (name, after) VALUES (?1, coalesce((SELECT max(profile_id) \
              FROM profile_members WHERE profile_id <= ?2), '')) \
              ON CONFLICT (name) DO UPDATE SET after = excluded.after"
            .into(),
        params: vec![
            Param::Text(WALK_CURSOR.into()),
            Param::Text(after.to_owned()),
        ],
    }
}

/// Marks the profiles of identifiers seen now (at most once per [`TOUCH_GRANULARITY_MS`], so
/// steady traffic writes nothing). `identifiers_json` is a JSON array of identifier text forms
/// whose assignments are looked up here; `profiles_json` one of profiles found assigned in
/// other databases (with profile shards). An identifier not assigned yet gets its profile's
/// row, with its time, from the resolution.
pub fn touch_profiles(identifiers_json: &str, profiles_json: &str, now_ms: i64) -> Statement {
    Statement {
        sql: "UPDATE profile_members SET last_seen = ?1 WHERE (profile_id IN \
              (SELECT profile_id FROM identities WHERE identifier IN (SELECT value FROM json_each(?2))) \
              OR profile_id IN (SELECT value FROM json_each(?4))) AND last_seen < ?1 - ?3"
            .into(),
        params: vec![
            Param::Int(now_ms),
            Param::Text(identifiers_json.to_owned()),
            Param::Int(TOUCH_GRANULARITY_MS),
            Param::Text(profiles_json.to_owned()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_to_90_days_of_events_and_180_of_anonymous_profiles() {
        let r = Retention::from_settings(settings(&[("RETENTION_CHUNK", "")])).unwrap();
        assert_eq!(r, Retention::default());
        assert_eq!((r.event_days, r.anonymous_profile_days), (90, 180));
        assert_eq!(r.event_cutoff(100 * DAY_MS), 10 * DAY_MS);
        assert_eq!(r.profile_cutoff(200 * DAY_MS), 20 * DAY_MS);
    }

    #[test]
    fn rejects_settings_out_of_range_naming_them() {
        for (name, value) in [
            ("RETENTION_EVENT_DAYS", "0"),
            ("RETENTION_EVENT_DAYS", "ninety"),
            ("RETENTION_CHUNK", "100000"),
            ("RETENTION_MAX_CHUNKS", "-1"),
        ] {
            let err = Retention::from_settings(settings(&[(name, value)])).unwrap_err();
            assert_eq!(err.name, name);
            assert!(err.to_string().contains(name));
            assert_eq!(err.code(), "invalid_retention");
        }
        let custom =
            Retention::from_settings(settings(&[("RETENTION_EVENT_DAYS", " 30 ")])).unwrap();
        assert_eq!(custom.event_days, 30);
    }

    #[test]
    fn purges_are_bounded_by_the_chunk() {
        let r = Retention {
            chunk: 7,
            ..Retention::default()
        };
        let s = purge_events(&r, 91 * DAY_MS, false);
        assert!(s.sql.contains("LIMIT ?"));
        assert_eq!(s.params, vec![Param::Int(DAY_MS), Param::Int(7)]);
        assert!(!s.sql.contains("archived_at"));
        let archived = purge_events(&r, 91 * DAY_MS, true);
        assert!(archived
            .sql
            .contains("received_at < ? AND archived_at IS NOT NULL LIMIT ?"));
        let p = inactive_anonymous_profiles(&r, 181 * DAY_MS, "prof_a", 50);
        assert!(p.sql.contains("LIMIT ?2"));
        assert!(p.sql.contains("m.value LIKE 'cookie_id:%'"));
        assert_eq!(
            p.params,
            vec![
                Param::Int(DAY_MS),
                Param::Int(7),
                Param::Text("prof_a".into()),
                Param::Int(50)
            ]
        );
    }

    #[test]
    fn walk_resumes_after_the_last_found_when_a_chunk_filled() {
        let r = Retention {
            chunk: 2,
            ..Retention::default()
        };
        let resume = |found, last, read, to| walk_resumes_after(&r, found, last, (read, 4), to);
        assert_eq!(resume(2, Some("b"), 4, Some("z")), ("b".to_owned(), false));
        // A full chunk at the end of the table: what is left after it is read next.
        assert_eq!(resume(2, Some("b"), 3, Some("z")), ("b".to_owned(), false));
        assert_eq!(resume(1, Some("b"), 4, Some("z")), ("z".to_owned(), false));
        assert_eq!(resume(0, None, 4, Some("z")), ("z".to_owned(), false));
        // Fewer rows than asked: the end of the table, so the walk starts over.
        assert_eq!(resume(1, Some("b"), 3, Some("z")), (String::new(), true));
        assert_eq!(resume(0, None, 0, None), (String::new(), true));
    }

    #[test]
    fn reads_the_walk_setting_within_d1_query_limits() {
        let get = settings(&[("RETENTION_WALK", "10")]);
        assert_eq!(Retention::from_settings(get).unwrap().walk, 10);
        let err = Retention::from_settings(settings(&[("RETENTION_WALK", "0")])).unwrap_err();
        assert_eq!(err.name, "RETENTION_WALK");
        assert_eq!(err.max, 200 * WALK_STEP);
    }

    #[test]
    fn a_saved_walk_position_is_a_profile_still_stored() {
        let s = save_profiles_walk("prof_gone");
        assert!(s.sql.contains(
            "coalesce((SELECT max(profile_id) FROM profile_members WHERE profile_id <= ?2), '')"
        ));
        assert_eq!(
            s.params,
            vec![
                Param::Text(WALK_CURSOR.into()),
                Param::Text("prof_gone".into())
            ]
        );
    }

    #[test]
    fn touch_skips_profiles_seen_within_the_hour() {
        let s = touch_profiles(r#"["anonymous_id:a"]"#, "[]", 5);
        assert!(s.sql.contains("< ?1 - ?3"));
        assert_eq!(s.params[2], Param::Int(TOUCH_GRANULARITY_MS));
    }
}
