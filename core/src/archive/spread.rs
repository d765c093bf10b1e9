//! The archive's index by person (`archive_people`) and its tombstones over the profile
//! shards (docs/scale.md, "The archive's index in the profile shards"). A person key's entries
//! live in the database its decimal text hashes to ([`home_key`]), like an identifier's links;
//! the objects they name (`archive_objects`, a few per day) stay in `DB`, so an entry holds the
//! object's ID, not its name.
//!
//! Tombstones go to every database: `DB`'s serve the rebuild of an object (which reads them
//! for the lines it keeps), each shard's keep a late compaction or a walk's copy from indexing
//! an erased person there. An erasure writes them in the shards before it reads their entries,
//! in one batch, so an entry written before is found and one written after is refused.
//!
//! With one database, none of this runs: compaction, readers and erasure use `compact`'s
//! statements, which join the objects in the same statement.

use serde::Deserialize;
use serde_json::json;

use super::compact::Entry;
use crate::personalise::shard::WALK_DONE;
use crate::plan::{Param, Statement};

/// The text whose hash places a person key's entries (`Layout::home`).
pub fn home_key(person: i64) -> String {
    person.to_string()
}

/// The walk over `DB` that takes other databases' entries home, once (`DB` held every entry
/// before they moved, 2026-12-08).
pub const INDEX_HOME: &str = "archive_index_home:0";
/// The same walk again, from a run after the first one ended: what an older Worker's
/// compaction wrote into `DB` during the deploy.
pub const INDEX_HOME_AGAIN: &str = "archive_index_home:1";

/// An object as the index names it by ID in a shard.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ObjectId {
    /// `archive_objects.id`.
    pub id: i64,
    /// The claim that wrote it.
    pub claim: String,
    /// The UTC epoch day.
    pub day: i64,
    /// The source.
    pub source_id: String,
}

/// The objects `entries` name, made where missing, then read with their IDs ([`ObjectId`],
/// the second statement's rows): one batch in `DB`.
pub fn objects_of_entries(entries: &[Entry]) -> Vec<Statement> {
    let mut named: Vec<(&str, i64, &str)> = entries
        .iter()
        .map(|e| (e.claim.as_str(), e.day, e.source_id.as_str()))
        .collect();
    named.sort_unstable();
    named.dedup();
    let list = Param::Text(json!(named).to_string());
    vec![
        super::compact::insert_objects(list.clone()),
        Statement {
            sql: "SELECT id, claim, day, source_id FROM archive_objects \
                  WHERE (claim, day, source_id) IN (SELECT value ->> 0, value ->> 1, value ->> 2 \
                  FROM json_each(?1))"
                .into(),
            params: vec![list],
        },
    ]
}

/// Entries `(person, object ID, at)` written in a shard, except where the shard holds a
/// tombstone from an erasure at or after `at` (as `DB` refuses one); then, in the same batch,
/// the people so refused (`{"person": text}` rows). Unless `DB` holds their tombstone too
/// (the erasure committed there), their erasure is under way or failed and will be retried,
/// and the read it made in this shard did not see these entries: compaction leaves their rows
/// in `events` for its transaction in `DB` to take, noting their objects.
pub fn index(entries: &[(i64, i64, i64)]) -> Vec<Statement> {
    let list = Param::Text(json!(entries).to_string());
    let tombstoned = "SELECT 1 FROM archive_tombstones t \
                      WHERE t.person = j.value ->> 0 AND t.erased_at >= j.value ->> 2";
    vec![
        Statement {
            sql: format!(
                "INSERT OR IGNORE INTO archive_people (person, object) \
                 SELECT value ->> 0, value ->> 1 FROM json_each(?1) j WHERE NOT EXISTS ({tombstoned})"
            ),
            params: vec![list.clone()],
        },
        Statement {
            sql: format!(
                "SELECT DISTINCT CAST(value ->> 0 AS TEXT) AS person FROM json_each(?1) j \
                 WHERE EXISTS ({tombstoned})"
            ),
            params: vec![list],
        },
    ]
}

/// The IDs of the objects a database's entries name for `people` (`{"object": id}` rows):
/// all of them for an erasure, or for a reader the `limit` highest (objects are made as
/// compaction reaches them, so a higher ID is about a newer object).
pub fn object_ids(people: &[i64], limit: Option<u32>) -> Statement {
    let list = Param::Text(json!(people).to_string());
    match limit {
        None => Statement {
            sql: "SELECT DISTINCT object FROM archive_people \
                  WHERE person IN (SELECT value FROM json_each(?1))"
                .into(),
            params: vec![list],
        },
        Some(limit) => Statement {
            sql: "SELECT DISTINCT object FROM archive_people \
                  WHERE person IN (SELECT value FROM json_each(?1)) ORDER BY object DESC LIMIT ?2"
                .into(),
            params: vec![list, Param::Int(i64::from(limit))],
        },
    }
}

/// Up to `limit` of the objects `ids` (`archive_objects.id`), newest first: `compact::Indexed`
/// rows, read in `DB`.
pub fn objects_by_id(ids: &[i64], limit: u32) -> Statement {
    Statement {
        sql: "SELECT claim, day, source_id FROM archive_objects \
              WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY claim DESC LIMIT ?2"
            .into(),
        params: vec![
            Param::Text(json!(ids).to_string()),
            Param::Int(i64::from(limit)),
        ],
    }
}

/// An erasure's first step in a shard (one batch): tombstones for `people`, then the IDs of
/// the objects the shard's entries name for them ([`object_ids`], the second statement's rows).
pub fn tombstone_and_find(people: &[i64], now_ms: i64) -> Vec<Statement> {
    vec![tombstone(people, now_ms), object_ids(people, None)]
}

fn tombstone(people: &[i64], now_ms: i64) -> Statement {
    Statement {
        sql: "INSERT INTO archive_tombstones (person, erased_at) \
              SELECT value, ?2 FROM json_each(?1) WHERE true \
              ON CONFLICT (person) DO UPDATE SET erased_at = max(erased_at, excluded.erased_at)"
            .into(),
        params: vec![Param::Text(json!(people).to_string()), Param::Int(now_ms)],
    }
}

/// IDs one statement binds (as one JSON parameter).
pub const IDS_PER_STATEMENT: usize = 2000;

/// Notes the objects `ids` found in the shards for rebuilding, in the erasure's batch in `DB`
/// (beside `compact::erase`, which notes those `DB`'s own entries name): a statement per
/// [`IDS_PER_STATEMENT`].
pub fn note_rewrites(ids: &[i64], now_ms: i64) -> Vec<Statement> {
    ids.chunks(IDS_PER_STATEMENT)
        .map(|chunk| Statement {
            sql: "INSERT INTO archive_rewrites (claim, day, source_id, noted_at) \
                  SELECT claim, day, source_id, ?2 FROM archive_objects \
                  WHERE id IN (SELECT value FROM json_each(?1)) \
                  ON CONFLICT (claim, day, source_id) DO UPDATE SET noted_at = max(noted_at, excluded.noted_at)"
                .into(),
            params: vec![Param::Text(json!(chunk).to_string()), Param::Int(now_ms)],
        })
        .collect()
}

/// An erasure's last step in a shard, once `DB` committed: the entries of `people` deleted.
/// (Until then a retry must still find the objects through them; an entry left by a failure
/// here names objects rebuilt without the person's lines, and goes with retention.)
pub fn forget(people: &[i64]) -> Statement {
    Statement {
        sql: "DELETE FROM archive_people WHERE person IN (SELECT value FROM json_each(?1))".into(),
        params: vec![Param::Text(json!(people).to_string())],
    }
}

/// Retention: up to `limit` IDs of the objects of days before `cutoff_day`, after the ID
/// `after` (`{"id": …}` rows, in order), read in `DB` before it deletes them.
pub fn expired_objects(cutoff_day: i64, after: i64, limit: u32) -> Statement {
    Statement {
        sql: "SELECT id FROM archive_objects WHERE day < ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            .into(),
        params: vec![
            Param::Int(cutoff_day),
            Param::Int(after),
            Param::Int(i64::from(limit)),
        ],
    }
}

/// Retention in a shard: the entries naming objects `ids`.
pub fn expire(ids: &[i64]) -> Statement {
    Statement {
        sql: "DELETE FROM archive_people WHERE object IN (SELECT value FROM json_each(?1))".into(),
        params: vec![Param::Text(json!(ids).to_string())],
    }
}

/// Retention in a shard: tombstones older than anything the archive still holds (as
/// `compact::expire_index` does in `DB`).
pub fn expire_tombstones(cutoff_day: i64) -> Statement {
    Statement {
        sql: "DELETE FROM archive_tombstones WHERE erased_at < ?1".into(),
        params: vec![Param::Int(cutoff_day * crate::format::time::DAY_MS)],
    }
}

/// A person [`index`] refused, as text (a JS number would round 64 bits).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Refused {
    /// The person key.
    pub person: String,
}

/// An entry as a walk reads it: the person key as text (a JS number would round 64 bits).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WalkedEntry {
    /// The person key, as text.
    pub person: String,
    /// The object's ID.
    pub object: i64,
}

impl WalkedEntry {
    /// The person key, if the text is one.
    pub fn key(&self) -> Option<i64> {
        self.person.parse().ok()
    }

    /// Where a walk that read this entry last goes on from.
    pub fn cursor(&self) -> String {
        format!("{}:{}", self.person, self.object)
    }
}

/// A page of entries in key order after `after` ([`WalkedEntry::cursor`]; empty: from the
/// start).
pub fn walk(after: &str, limit: u32) -> Statement {
    let (person, object) = match after.split_once(':') {
        Some((p, o)) => (
            p.parse::<i64>().unwrap_or(i64::MIN),
            o.parse::<i64>().unwrap_or(i64::MIN),
        ),
        None => (i64::MIN, i64::MIN),
    };
    debug_assert_ne!(after, WALK_DONE);
    Statement {
        // Qualified: in ORDER BY, `person` would name the text column and sort as text.
        sql: "SELECT CAST(p.person AS TEXT) AS person, p.object FROM archive_people p \
              WHERE (p.person, p.object) > (CAST(?1 AS INTEGER), CAST(?2 AS INTEGER)) \
              ORDER BY p.person, p.object LIMIT ?3"
            .into(),
        params: vec![
            // As text: the Worker binds numbers as doubles.
            Param::Text(person.to_string()),
            Param::Text(object.to_string()),
            Param::Int(i64::from(limit)),
        ],
    }
}

fn pairs(entries: &[(i64, i64)]) -> Param {
    Param::Text(json!(entries).to_string())
}

/// How long after an erasure's tombstone a walk's copy waits: longer than an erasure takes
/// from its tombstones to its last step.
pub const ERASURE_IN_FLIGHT_MS: i64 = 3_600_000;

/// A walk's copy of `entries` into their home, except for a person the home holds a tombstone
/// of from the last [`ERASURE_IN_FLIGHT_MS`]: an erasure there may have read the home's
/// entries already, and must find this one where it was (the walk then leaves it, and goes
/// round again). An older tombstone's erasure is over; an entry since is the person's anew.
pub fn copy(entries: &[(i64, i64)], now_ms: i64) -> Statement {
    Statement {
        sql: "INSERT OR IGNORE INTO archive_people (person, object) \
              SELECT value ->> 0, value ->> 1 FROM json_each(?1) j \
              WHERE NOT EXISTS (SELECT 1 FROM archive_tombstones t \
              WHERE t.person = j.value ->> 0 AND t.erased_at > ?2)"
            .into(),
        params: vec![pairs(entries), Param::Int(now_ms - ERASURE_IN_FLIGHT_MS)],
    }
}

/// Which of `entries` a database holds (`{"person": text, "object": id}` rows): after a copy,
/// what the walk may delete where it read them. A copy a tombstone refused stays where it
/// was, for the erasure (which reads there after its tombstones) to find.
pub fn present(entries: &[(i64, i64)]) -> Statement {
    Statement {
        sql: "SELECT CAST(person AS TEXT) AS person, object FROM archive_people \
              WHERE (person, object) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
            .into(),
        params: vec![pairs(entries)],
    }
}

/// The walk's delete of `entries` where it read them, once their home holds them.
pub fn remove(entries: &[(i64, i64)]) -> Statement {
    Statement {
        sql: "DELETE FROM archive_people \
              WHERE (person, object) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
            .into(),
        params: vec![pairs(entries)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_bind_people_as_json_integers() {
        let big = i64::MAX - 7;
        let statement = &index(&[(big, 3, 10)])[0];
        let Param::Text(list) = &statement.params[0] else {
            panic!("a JSON list")
        };
        assert_eq!(list, &format!("[[{big},3,10]]"), "64 bits, not a double");
    }

    #[test]
    fn an_erasure_notes_many_objects_in_bounded_statements() {
        let ids: Vec<i64> = (0..4001).collect();
        let plan = note_rewrites(&ids, 1);
        assert_eq!(plan.len(), 3);
        assert!(note_rewrites(&[], 1).is_empty());
    }

    #[test]
    fn a_walk_starts_before_every_key_and_goes_on_after_the_last_read() {
        let from_start = walk("", 10);
        assert_eq!(
            from_start.params[..2],
            [
                Param::Text(i64::MIN.to_string()),
                Param::Text(i64::MIN.to_string())
            ]
        );
        let row = WalkedEntry {
            person: "-42".into(),
            object: 7,
        };
        assert_eq!(row.key(), Some(-42));
        let next = walk(&row.cursor(), 10);
        assert_eq!(
            next.params[..2],
            [Param::Text("-42".into()), Param::Text("7".into())]
        );
    }

    #[test]
    fn objects_of_entries_name_each_object_once() {
        let entry = |person, claim: &str| Entry {
            person,
            claim: claim.into(),
            day: 3,
            source_id: "web".into(),
            at: 1,
        };
        let plan = objects_of_entries(&[entry(1, "c1"), entry(2, "c1"), entry(1, "c2")]);
        assert_eq!(
            plan[1].params[0],
            Param::Text(r#"[["c1",3,"web"],["c2",3,"web"]]"#.into())
        );
    }

    #[test]
    fn a_walks_copy_and_an_erasures_find_respect_tombstones() {
        assert_eq!(
            copy(&[(1, 2)], 5 * ERASURE_IN_FLIGHT_MS).params[1],
            Param::Int(4 * ERASURE_IN_FLIGHT_MS),
            "only a tombstone of an erasure that may still be running refuses"
        );
        let first = tombstone_and_find(&[5], 9);
        assert!(
            first[0].sql.starts_with("INSERT INTO archive_tombstones"),
            "tombstones before the read, in one batch"
        );
        assert!(first[1].sql.contains("FROM archive_people"));
    }
}
