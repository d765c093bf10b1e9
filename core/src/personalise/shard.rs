//! Which D1 database holds a profile's personalisation state (its state row and segment
//! memberships) and its co-occurrence evidence, when a deployment spreads them over several
//! (`PROFILE_SHARDS`). That state is the largest per-person share of D1 and its busiest writer:
//! a refresh writes one profile's rows and nothing else of theirs, so each profile's writes
//! stay in one database.
//!
//! The choice is a jump consistent hash (Lamping and Veach, 2014) of the profile ID's SHA-256:
//! growing from `n` to `n + 1` shards moves only the profiles that land in the new one, about
//! `1 / (n + 1)` of them. Shard 0 is the shared database, so one shard is the layout of a
//! deployment that never sharded.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::personalise::segment::{recorded_writes, version_guard, Memberships};
use crate::personalise::stored::StoredState;
use crate::plan::{Param, Statement};

/// The saved position of a walk that is finished (`walk_cursors`).
pub const WALK_DONE: &str = "\u{10FFFF}done";

/// Most shards a deployment may name: each is a binding the Worker reads per request.
pub const MAX_SHARDS: u32 = 64;

/// Where profiles' state lives: `shards` databases, and while the count changes, the count it
/// changes `from`. During such a move a profile's state is in its home shard once anything
/// wrote it there, else still in its previous shard; reads look in both, writes go home, and
/// [`arrive`] and [`leave`] move what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The shard count in force.
    pub shards: u32,
    /// The count before it, while rows may still be where that count put them.
    pub from: Option<u32>,
}

impl Layout {
    /// The shard `profile_id`'s state belongs in.
    pub fn home(&self, profile_id: &str) -> u32 {
        shard_of(profile_id, self.shards)
    }

    /// The shard `profile_id`'s state may still be in, while moving (`None`: not moving, or
    /// the profile stays where it was).
    pub fn previous(&self, profile_id: &str) -> Option<u32> {
        let old = shard_of(profile_id, self.from?);
        (old != self.home(profile_id)).then_some(old)
    }

    /// How many databases must be bound: the larger of the two counts.
    pub fn databases(&self) -> u32 {
        self.shards.max(self.from.unwrap_or(0)).max(1)
    }
}

/// A profile's membership rows in a shard. Bind `?1` = profile ID.
pub const MEMBERSHIP_ROWS_SQL: &str =
    "SELECT segment, entered_at, exited_at FROM segment_memberships WHERE profile_id = ?1";

/// A profile's state row as a move copies it. Bind `?1` = profile ID.
pub const STATE_ROW_SQL: &str = "SELECT state, version, updated_at, check_at \
    FROM profile_personalisation WHERE profile_id = ?1";

/// Most evidence rows of each table one move carries: a long-time shopper's evidence can
/// outgrow one statement's JSON, so a move takes it over in parts (see [`Evidence::partial`]).
pub const EVIDENCE_PER_MOVE: usize = 2_000;

/// A profile's interaction evidence, up to [`EVIDENCE_PER_MOVE`] rows. Bind `?1` = profile ID.
pub const INTERACTION_ROWS_SQL: &str =
    "SELECT product_id, kind FROM item_interactions WHERE profile_id = ?1 LIMIT 2000";

/// A profile's pair evidence, up to [`EVIDENCE_PER_MOVE`] rows. Bind `?1` = profile ID.
pub const PAIR_ROWS_SQL: &str =
    "SELECT kind, item_a, item_b FROM item_pair_evidence WHERE profile_id = ?1 LIMIT 2000";

/// A row of [`INTERACTION_ROWS_SQL`].
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct InteractionRow {
    pub product_id: String,
    pub kind: String,
}

/// A row of [`PAIR_ROWS_SQL`].
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct PairRow {
    pub kind: String,
    pub item_a: String,
    pub item_b: String,
}

/// The evidence a move read in the previous shard.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Interaction rows.
    pub interactions: Vec<InteractionRow>,
    /// Pair rows.
    pub pairs: Vec<PairRow>,
}

impl Evidence {
    /// Whether a read stopped at [`EVIDENCE_PER_MOVE`], so more may be left behind.
    pub fn partial(&self) -> bool {
        self.interactions.len() >= EVIDENCE_PER_MOVE || self.pairs.len() >= EVIDENCE_PER_MOVE
    }

    fn rows(&self) -> (String, String) {
        let interactions: Vec<[&str; 2]> = self
            .interactions
            .iter()
            .map(|r| [r.product_id.as_str(), r.kind.as_str()])
            .collect();
        let pairs: Vec<[&str; 3]> = self
            .pairs
            .iter()
            .map(|r| [r.kind.as_str(), r.item_a.as_str(), r.item_b.as_str()])
            .collect();
        let text = |v: serde_json::Result<String>| v.unwrap_or_else(|_| "[]".into());
        (
            text(serde_json::to_string(&interactions)),
            text(serde_json::to_string(&pairs)),
        )
    }
}

/// A row of [`STATE_ROW_SQL`].
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Deserialize)]
pub struct StateRow {
    pub state: StoredState,
    pub version: i64,
    pub updated_at: i64,
    pub check_at: Option<i64>,
}

/// A row of [`MEMBERSHIP_ROWS_SQL`].
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MembershipRow {
    pub segment: String,
    pub entered_at: i64,
    pub exited_at: Option<i64>,
}

/// Up to `limit` profiles with rows in a shard after profile ID `after`, in key order (the
/// move's walk): `profile_id`. Memberships and evidence count too: a profile merged away keeps
/// its closed memberships and its evidence, and no state row; a move carried in parts may have
/// left only pair evidence (a profile has many more pairs than interactions).
pub fn walk(after: &str, limit: u32) -> Statement {
    let page = |table: &str| {
        format!(
            "SELECT profile_id FROM (SELECT DISTINCT profile_id FROM {table} \
             WHERE profile_id > ?1 ORDER BY profile_id LIMIT ?2)"
        )
    };
    let tables = [
        "profile_personalisation",
        "segment_memberships",
        "item_interactions",
        "item_pair_evidence",
    ];
    Statement {
        sql: format!(
            "{} ORDER BY profile_id LIMIT ?2",
            tables.map(page).join(" UNION ")
        ),
        params: vec![Param::Text(after.into()), Param::Int(i64::from(limit))],
    }
}

/// What a move found of a profile, read before [`arrive`].
pub struct Found<'a> {
    /// The previous shard's state row, to copy: only when the home had none.
    pub copy: Option<&'a StateRow>,
    /// The version of the state the memberships come from (the home's row, or the copy), or
    /// `None` when neither shard has a state row (a profile merged away keeps only its closed
    /// memberships).
    pub version: Option<i64>,
    /// The memberships that state records.
    pub segments: &'a Memberships,
    /// The previous shard's membership rows.
    pub previous_rows: &'a [MembershipRow],
    /// The previous shard's evidence rows (or the first [`EVIDENCE_PER_MOVE`] of them).
    pub evidence: &'a Evidence,
}

/// Writes in a profile's home shard that take its state over from the previous shard, in one
/// batch (one transaction): the previous shard's state row when the home had none, the
/// previous shard's membership rows (ignored where the home has its own), then the memberships
/// the state records, and the previous shard's evidence (ignored where the home has the same
/// row: the home's triggers count each profile once). While there is a state, each write holds only if the home's row is the
/// version read: a save or delete that came in between makes the batch change nothing. The
/// batch ends by reading the home's version: the caller deletes the previous shard's rows
/// ([`leave`]) only when it is [`Found::version`], and otherwise leaves them for a later try.
pub fn arrive(profile_id: &str, found: &Found<'_>) -> Vec<Statement> {
    let id = || Param::Text(profile_id.to_owned());
    let mut writes = Vec::new();
    if let Some(row) = found.copy {
        let stored = match &row.state {
            StoredState::Text(text) => Param::Text(text.clone()),
            StoredState::Bytes(bytes) => Param::Blob(bytes.clone()),
        };
        writes.push(Statement {
            sql: "INSERT OR IGNORE INTO profile_personalisation \
                  (profile_id, state, version, updated_at, check_at) VALUES (?1, ?2, ?3, ?4, ?5)"
                .into(),
            params: vec![
                id(),
                stored,
                Param::Int(row.version),
                Param::Int(row.updated_at),
                row.check_at.map_or(Param::Null, Param::Int),
            ],
        });
    }
    let rows: Vec<(&str, i64, Option<i64>)> = found
        .previous_rows
        .iter()
        .map(|r| (r.segment.as_str(), r.entered_at, r.exited_at))
        .collect();
    if !rows.is_empty() {
        let mut params = vec![id(), Param::Text(json_rows(&rows))];
        let guard = version_guard(found.version, &mut params);
        writes.push(Statement {
            sql: format!(
                "INSERT OR IGNORE INTO segment_memberships (profile_id, segment, entered_at, exited_at) \
                 SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                 json_extract(value, '$[2]') FROM json_each(?2) WHERE {guard}"
            ),
            params,
        });
    }
    // With no state (version `None`) the segments are empty and this writes nothing.
    writes.extend(recorded_writes(profile_id, found.segments, found.version));
    let (interactions, pairs) = found.evidence.rows();
    let evidence = [
        (
            !found.evidence.interactions.is_empty(),
            "INSERT OR IGNORE INTO item_interactions (profile_id, product_id, kind) \
             SELECT ?1, value ->> 0, value ->> 1 FROM json_each(?2)",
            interactions,
        ),
        (
            !found.evidence.pairs.is_empty(),
            "INSERT OR IGNORE INTO item_pair_evidence (profile_id, kind, item_a, item_b) \
             SELECT ?1, value ->> 0, value ->> 1, value ->> 2 FROM json_each(?2)",
            pairs,
        ),
    ];
    for (_, insert, rows) in evidence.into_iter().filter(|(any, ..)| *any) {
        let mut params = vec![id(), Param::Text(rows)];
        let guard = version_guard(found.version, &mut params);
        writes.push(Statement {
            sql: format!("{insert} WHERE {guard}"),
            params,
        });
    }
    writes.push(Statement {
        sql: "SELECT version FROM profile_personalisation WHERE profile_id = ?1".into(),
        params: vec![id()],
    });
    writes
}

/// Whether the profile still exists in `DB` (`found` is 1 when it does): it has identifiers,
/// or it was merged into another (its state may not be merged yet, and its closed memberships
/// are history). An erasure deletes both, and a move that raced one must not leave the rows it
/// carried.
pub fn exists(profile_id: &str) -> Statement {
    Statement {
        sql: "SELECT (EXISTS (SELECT 1 FROM profile_members WHERE profile_id = ?1) \
              OR EXISTS (SELECT 1 FROM merges WHERE from_profile = ?1)) AS found"
            .into(),
        params: vec![Param::Text(profile_id.to_owned())],
    }
}

/// Writes in the previous shard once the home holds the state: its rows there go.
pub fn leave(profile_id: &str) -> Vec<Statement> {
    delete_rows(
        profile_id,
        &["profile_personalisation", "segment_memberships"],
    )
}

fn delete_rows(profile_id: &str, tables: &[&str]) -> Vec<Statement> {
    tables
        .iter()
        .map(|table| Statement {
            sql: format!("DELETE FROM {table} WHERE profile_id = ?1"),
            params: vec![Param::Text(profile_id.to_owned())],
        })
        .collect()
}

/// Writes in the previous shard once the home holds the evidence [`arrive`] carried: exactly
/// those rows go (their triggers take them out of the shard's counts), so a part left behind
/// by [`Evidence::partial`] waits for the next move.
pub fn leave_evidence(profile_id: &str, carried: &Evidence) -> Vec<Statement> {
    let (interactions, pairs) = carried.rows();
    let delete = |sql: &str, rows: String| Statement {
        sql: sql.into(),
        params: vec![Param::Text(profile_id.to_owned()), Param::Text(rows)],
    };
    let mut writes = Vec::new();
    if !carried.interactions.is_empty() {
        writes.push(delete(
            "DELETE FROM item_interactions WHERE profile_id = ?1 AND (product_id, kind) IN \
             (SELECT value ->> 0, value ->> 1 FROM json_each(?2))",
            interactions,
        ));
    }
    if !carried.pairs.is_empty() {
        writes.push(delete(
            "DELETE FROM item_pair_evidence WHERE profile_id = ?1 AND (kind, item_a, item_b) IN \
             (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?2))",
            pairs,
        ));
    }
    writes
}

/// Writes in a shard that take every row of a profile out of it: state, memberships and
/// evidence (a move that raced an erasure must not leave what it carried).
pub fn forget(profile_id: &str) -> Vec<Statement> {
    let mut writes = leave(profile_id);
    writes.extend(delete_rows(
        profile_id,
        &["item_interactions", "item_pair_evidence"],
    ));
    writes
}

fn json_rows(rows: &[(&str, i64, Option<i64>)]) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".into())
}

/// The shard of `profile_id` among `shards` (0 when there is one, or none).
pub fn shard_of(profile_id: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let digest = Sha256::digest(profile_id.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    jump(u64::from_be_bytes(key), shards)
}

/// The jump consistent hash: the bucket `key` lands in among `buckets` (at least 1).
fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut bucket, mut next) = (0i64, 0i64);
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("prof_{i:06}")).collect()
    }

    #[test]
    fn one_shard_is_the_shared_database() {
        assert_eq!(shard_of("prof_a", 1), 0);
        assert_eq!(shard_of("prof_a", 0), 0);
    }

    #[test]
    fn a_profile_always_lands_in_the_same_shard() {
        for id in ids(50) {
            let s = shard_of(&id, 7);
            assert!(s < 7);
            assert_eq!(shard_of(&id, 7), s);
        }
    }

    #[test]
    fn profiles_spread_evenly() {
        let mut counts = [0usize; 4];
        for id in ids(8_000) {
            counts[shard_of(&id, 4) as usize] += 1;
        }
        for c in counts {
            assert!((1_800..2_200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_profiles_into_it() {
        let (mut moved, all) = (0, ids(6_000));
        for id in &all {
            let (before, after) = (shard_of(id, 5), shard_of(id, 6));
            if before != after {
                assert_eq!(after, 5, "{id} moved between old shards");
                moved += 1;
            }
        }
        // About a sixth.
        assert!((800..1_200).contains(&moved), "{moved}");
    }

    #[test]
    fn a_move_names_a_previous_shard_only_for_profiles_that_change_shard() {
        let moving = Layout {
            shards: 4,
            from: Some(3),
        };
        let mut moved = 0;
        for id in ids(600) {
            match moving.previous(&id) {
                Some(old) => {
                    assert_eq!(old, shard_of(&id, 3));
                    assert_eq!(
                        moving.home(&id),
                        3,
                        "growing moves profiles only into the new shard"
                    );
                    moved += 1;
                }
                None => assert_eq!(moving.home(&id), shard_of(&id, 3)),
            }
        }
        assert!((100..200).contains(&moved), "{moved}");
        let settled = Layout {
            shards: 4,
            from: None,
        };
        assert!(ids(50).iter().all(|id| settled.previous(id).is_none()));
        assert_eq!(moving.databases(), 4);
        assert_eq!(
            Layout {
                shards: 2,
                from: Some(5)
            }
            .databases(),
            5,
            "shrinking reads the old ones"
        );
    }

    #[test]
    fn arriving_copies_the_old_row_and_writes_only_while_the_home_holds_the_version_read() {
        use crate::personalise::segment::Membership;
        let state = StateRow {
            state: StoredState::Bytes(vec![1, 2, 3]),
            version: 7,
            updated_at: 3,
            check_at: Some(11),
        };
        let segments = Memberships::from([(
            "vip".to_owned(),
            Membership {
                entered_at: 5,
                exited_at: Some(9),
            },
        )]);
        let rows = [MembershipRow {
            segment: "vip".into(),
            entered_at: 5,
            exited_at: None,
        }];
        let writes = arrive(
            "prof_1",
            &Found {
                copy: Some(&state),
                version: Some(7),
                segments: &segments,
                previous_rows: &rows,
                evidence: &Evidence::default(),
            },
        );
        assert_eq!(writes.len(), 4);
        assert!(writes[0]
            .sql
            .starts_with("INSERT OR IGNORE INTO profile_personalisation"));
        assert_eq!(writes[0].params[1], Param::Blob(vec![1, 2, 3]));
        assert_eq!(writes[0].params[4], Param::Int(11), "still due when it was");
        assert!(writes[1]
            .sql
            .starts_with("INSERT OR IGNORE INTO segment_memberships"));
        assert_eq!(
            writes[1].params[1],
            Param::Text(r#"[["vip",5,null]]"#.into())
        );
        // The state says the profile left: that wins over the stale row.
        assert_eq!(writes[2].params[1], Param::Text(r#"[["vip",5,9]]"#.into()));
        for w in &writes[1..3] {
            assert!(w
                .sql
                .contains("WHERE (SELECT version FROM profile_personalisation"));
            assert_eq!(w.params[2], Param::Int(7), "guarded by the version read");
        }
        assert!(writes[3].sql.starts_with("SELECT version"));

        // The home already had a newer row: nothing is copied over it.
        let home = arrive(
            "prof_1",
            &Found {
                copy: None,
                version: Some(8),
                segments: &segments,
                previous_rows: &rows,
                evidence: &Evidence::default(),
            },
        );
        assert!(home
            .iter()
            .all(|w| !w.sql.contains("INTO profile_personalisation")));

        // Merged away: only closed memberships, moved while no state row appears.
        let merged = arrive(
            "prof_1",
            &Found {
                copy: None,
                version: None,
                segments: &Memberships::new(),
                previous_rows: &rows,
                evidence: &Evidence::default(),
            },
        );
        assert_eq!(merged.len(), 2);
        assert!(merged[0].sql.contains("NOT EXISTS"));
        assert_eq!(
            merged[0].params.len(),
            2,
            "no parameter the guard does not use"
        );
        assert_eq!(leave("prof_1").len(), 2);
    }

    fn evidence() -> Evidence {
        Evidence {
            interactions: vec![
                InteractionRow {
                    product_id: "run-1".into(),
                    kind: "view".into(),
                },
                InteractionRow {
                    product_id: "run-2".into(),
                    kind: "purchase".into(),
                },
            ],
            pairs: vec![PairRow {
                kind: "view".into(),
                item_a: "run-1".into(),
                item_b: "run-2".into(),
            }],
        }
    }

    #[test]
    fn evidence_moves_with_the_state_and_leaves_only_what_was_carried() {
        let (carried, none) = (evidence(), Memberships::new());
        let found = |version| Found {
            copy: None,
            version,
            segments: &none,
            previous_rows: &[],
            evidence: &carried,
        };
        let writes = arrive("prof_1", &found(Some(4)));
        let copies: Vec<&Statement> = writes
            .iter()
            .filter(|w| w.sql.contains("INTO item_"))
            .collect();
        assert_eq!(copies.len(), 2);
        assert!(copies[0]
            .sql
            .starts_with("INSERT OR IGNORE INTO item_interactions"));
        assert_eq!(
            copies[0].params[1],
            Param::Text(r#"[["run-1","view"],["run-2","purchase"]]"#.into())
        );
        assert!(copies[1]
            .sql
            .starts_with("INSERT OR IGNORE INTO item_pair_evidence"));
        assert_eq!(
            copies[1].params[1],
            Param::Text(r#"[["view","run-1","run-2"]]"#.into())
        );
        for copy in &copies {
            assert!(copy.sql.contains("= ?3"), "guarded by the version read");
            assert_eq!(copy.params[2], Param::Int(4));
        }
        assert!(writes.last().unwrap().sql.starts_with("SELECT version"));
        // Merged away (no state): copied while no state row appears.
        let merged = arrive("prof_1", &found(None));
        assert!(merged
            .iter()
            .filter(|w| w.sql.contains("INTO item_"))
            .all(|w| w.sql.contains("NOT EXISTS") && w.params.len() == 2));

        let gone = leave_evidence("prof_1", &carried);
        assert_eq!(gone.len(), 2);
        assert!(gone[0]
            .sql
            .contains("(product_id, kind) IN (SELECT value ->> 0, value ->> 1"));
        assert_eq!(
            gone[0].params[1], copies[0].params[1],
            "exactly the rows carried"
        );
        assert_eq!(gone[1].params[1], copies[1].params[1]);
        assert!(leave_evidence("prof_1", &Evidence::default()).is_empty());
        let tables: Vec<String> = forget("prof_1").into_iter().map(|w| w.sql).collect();
        for table in [
            "profile_personalisation",
            "segment_memberships",
            "item_interactions",
            "item_pair_evidence",
        ] {
            assert!(tables
                .iter()
                .any(|sql| sql == &format!("DELETE FROM {table} WHERE profile_id = ?1")));
        }
    }

    #[test]
    fn a_move_carries_evidence_in_parts() {
        let limit = format!("LIMIT {EVIDENCE_PER_MOVE}");
        assert!(INTERACTION_ROWS_SQL.ends_with(&limit));
        assert!(PAIR_ROWS_SQL.ends_with(&limit));
        let mut many = evidence();
        assert!(!many.partial());
        many.pairs = vec![many.pairs[0].clone(); EVIDENCE_PER_MOVE];
        assert!(many.partial(), "a full read may have left rows behind");
    }

    #[test]
    fn the_walk_finds_profiles_with_only_evidence() {
        let walk = walk("prof_0", 10);
        for table in [
            "profile_personalisation",
            "segment_memberships",
            "item_interactions",
            "item_pair_evidence",
        ] {
            let page = format!("FROM {table} WHERE profile_id > ?1 ORDER BY profile_id LIMIT ?2");
            assert!(walk.sql.contains(&page), "{table}");
        }
    }

    #[test]
    fn the_hash_is_the_published_algorithm() {
        // Other implementations' published buckets (jump_consistent_hash, go-jump, the paper's
        // Python port): a tool outside the Worker computes the same shard.
        for (key, buckets, bucket) in [
            (0, 60, 0),
            (1, 60, 55),
            (2, 60, 46),
            (256, 1024, 520),
            (42, 57, 43),
            (0xDEAD_10CC, 666, 361),
            (0xDEAD_10CC, 1, 0),
        ] {
            assert_eq!(jump(key, buckets), bucket, "jump({key}, {buckets})");
        }
    }
}
