//! How many people there are: profiles, and those identified by an email or a user ID. The
//! totals are kept by triggers on the profile rows (edge/migrations 0029); the segment sweep
//! records them per day, at most hourly, and the console's overview reads the latest record.

use crate::format::time::DAY_MS;
use crate::plan::{Param, Statement};

const COUNTS: &str = "SELECT profiles, identified FROM profile_totals WHERE id = 1";

/// How old the latest count may grow before the sweep counts again.
pub const RECOUNT_AFTER_MS: i64 = 60 * 60 * 1000;

/// Counts now as `now_ms`'s UTC day's (the day's latest), unless the latest count is younger
/// than [`RECOUNT_AFTER_MS`]: the sweep runs every five minutes, the count need not.
pub fn record(now_ms: i64) -> Statement {
    Statement {
        sql: format!(
            "INSERT INTO profile_counts (day, profiles, identified, counted_at) \
             SELECT ?1, profiles, identified, ?2 FROM ({COUNTS}) \
             WHERE NOT EXISTS (SELECT 1 FROM profile_counts WHERE counted_at > ?2 - ?3) \
             ON CONFLICT (day) DO UPDATE SET profiles = excluded.profiles, \
             identified = excluded.identified, counted_at = excluded.counted_at"
        ),
        params: vec![
            Param::Int(now_ms.div_euclid(DAY_MS)),
            Param::Int(now_ms),
            Param::Int(RECOUNT_AFTER_MS),
        ],
    }
}

/// The latest count: `profiles, identified, counted_at`. Before the first sweep has counted
/// (a new install, with few profiles) it counts now, `counted_at` NULL.
pub fn latest() -> Statement {
    Statement {
        sql: format!(
            "SELECT profiles, identified, counted_at FROM profile_counts \
             WHERE day = (SELECT max(day) FROM profile_counts) \
             UNION ALL SELECT profiles, identified, NULL FROM ({COUNTS}) \
             WHERE NOT EXISTS (SELECT 1 FROM profile_counts) LIMIT 1"
        ),
        params: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_recorded_under_its_day() {
        let s = record(3 * DAY_MS + 5);
        assert_eq!(s.params[..2], [Param::Int(3), Param::Int(3 * DAY_MS + 5)]);
        assert!(s.sql.contains("ON CONFLICT (day) DO UPDATE"));
    }
}
