//! Retention: how long raw events and inactive anonymous profiles are kept, and the bounded
//! statements a scheduled run uses to purge them.
//!
//! Purges work in chunks ([`Retention::chunk`] rows per statement) so one run stays within the
//! Worker's CPU and D1's per-query limits; a run stops after [`Retention::max_chunks`] chunks and
//! the next run carries on.

use crate::format::time::DAY_MS;
use crate::identity::IdClass;
use crate::plan::{Param, Statement};

/// How often an identifier's `last_seen` is refreshed at most: finer precision would cost a write
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
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            event_days: 90,
            anonymous_profile_days: 180,
            chunk: 500,
            max_chunks: 20,
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
    /// `RETENTION_CHUNK`, `RETENTION_MAX_CHUNKS`) through `get`; missing or empty ones default.
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

/// Up to one chunk of profile IDs whose identifiers are all anonymous and were all last seen
/// before the cutoff. Their erasure is planned like a data-subject deletion, without suppression.
pub fn inactive_anonymous_profiles(retention: &Retention, now_ms: i64) -> Statement {
    let anonymous = ANONYMOUS_CLASSES
        .iter()
        .map(|c| format!("j.identifier LIKE '{}:%'", c.as_str()))
        .collect::<Vec<_>>()
        .join(" OR ");
    Statement {
        sql: format!(
            "SELECT DISTINCT i.profile_id AS profile_id FROM identities i \
             INDEXED BY identities_activity \
             WHERE coalesce(i.last_seen, i.updated_at) < ?1 AND NOT EXISTS \
             (SELECT 1 FROM identities j WHERE j.profile_id = i.profile_id AND \
             (coalesce(j.last_seen, j.updated_at) >= ?1 OR NOT ({anonymous}))) LIMIT ?2"
        ),
        params: vec![
            Param::Int(retention.profile_cutoff(now_ms)),
            Param::Int(i64::from(retention.chunk)),
        ],
    }
}

/// Marks identifiers seen now (at most once per [`TOUCH_GRANULARITY_MS`], so steady traffic
/// writes nothing). `identifiers_json` is a JSON array of identifier text forms.
pub fn touch_identities(identifiers_json: &str, now_ms: i64) -> Statement {
    Statement {
        sql: "UPDATE identities SET last_seen = ?1 WHERE identifier IN \
              (SELECT value FROM json_each(?2)) AND coalesce(last_seen, updated_at) < ?1 - ?3"
            .into(),
        params: vec![
            Param::Int(now_ms),
            Param::Text(identifiers_json.to_owned()),
            Param::Int(TOUCH_GRANULARITY_MS),
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
        let p = inactive_anonymous_profiles(&r, 181 * DAY_MS);
        assert!(p.sql.contains("LIMIT ?2"));
        assert!(p.sql.contains("j.identifier LIKE 'cookie_id:%'"));
        assert_eq!(p.params, vec![Param::Int(DAY_MS), Param::Int(7)]);
    }

    #[test]
    fn touch_skips_identifiers_seen_within_the_hour() {
        let s = touch_identities(r#"["anonymous_id:a"]"#, 5);
        assert!(s.sql.contains("< ?1 - ?3"));
        assert_eq!(s.params[2], Param::Int(TOUCH_GRANULARITY_MS));
    }
}
