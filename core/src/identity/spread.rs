//! The identity graph's links over several databases (docs/scale.md, "The identity graph's
//! links"). With profile shards, a link lives where its identifiers live: each identifier's
//! member rows in the database its text hashes to (the profile shards' [`Layout`]), and a copy
//! of the link in each of those databases ([`crate::identity::graph_plan::link_copies`]). So an
//! identifier's links are one key seek in one database, as in one database.
//!
//! A connected component is then loaded by a walk ([`ComponentWalk`]): each round asks every
//! database that may hold the identifiers not yet asked for the links it holds of them
//! (following its own links as far as they go), until no link names an identifier not asked.
//! The rounds read at different moments, so the walk is no snapshot; the assignments' guard
//! ([`crate::identity::graph_plan::Version`]) makes the resolution that saw every link win
//! whatever order the writes land in.
//!
//! When the shard count changes, or for links written in `DB` before they moved to the shards,
//! [`arrive`] and [`leave`] move an identifier's links home.
//!
//! [`Layout`]: crate::personalise::shard::Layout

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::identity::graph_plan::{
    parse_link, StoredLink, LOAD_COMPONENT_SQL, MAX_COMPONENT_LINKS,
};
use crate::plan::{Param, Statement};

/// Most rounds of one walk: each is a round trip, and a longer chain than this across
/// databases is a runaway component (cut like one past [`MAX_COMPONENT_LINKS`]).
pub const MAX_WALK_ROUNDS: usize = 16;

/// A link row as the loads and the moves read it.
#[allow(missing_docs)] // the columns of identity_links
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct LinkRow {
    pub set_key: String,
    pub seq: i64,
    pub timestamp: i64,
    pub message_key: String,
    pub identifiers: String,
    pub claimed: Option<String>,
}

impl LinkRow {
    /// The link, when its stored JSON parses.
    pub fn parse(self) -> Option<StoredLink> {
        parse_link(
            self.set_key,
            self.seq,
            self.timestamp,
            self.message_key,
            &self.identifiers,
            self.claimed.as_deref(),
        )
    }
}

/// Where an identifier's links may be: its home, and places they may not have left yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Places {
    /// Its previous shard while the count changes, and `DB` until other shards' links it
    /// held went home.
    pub before: Vec<usize>,
    /// Its shard.
    pub home: usize,
}

/// A component's load over several databases.
#[derive(Debug, Default)]
pub struct ComponentWalk {
    asked: BTreeSet<String>,
    frontier: BTreeSet<String>,
    links: BTreeMap<String, StoredLink>,
    rounds: usize,
}

impl ComponentWalk {
    /// A walk from `seeds` (identifier text forms).
    pub fn new(seeds: impl IntoIterator<Item = String>) -> Self {
        ComponentWalk {
            frontier: seeds.into_iter().collect(),
            ..Default::default()
        }
    }

    /// The next round's reads, in stages: each database that `places` says may hold one of
    /// the identifiers not yet asked for is asked for their links ([`LOAD_COMPONENT_SQL`],
    /// which also follows the links that database holds). The places links move away from (a
    /// previous shard, `DB` before its links went home) are read in a stage before the homes
    /// they move to: a move copies home before it deletes, so a link in flight is found in
    /// one or the other. Empty when the walk is over.
    pub fn reads(&mut self, places: impl Fn(&str) -> Places) -> Vec<BTreeMap<usize, Statement>> {
        if self.rounds >= MAX_WALK_ROUNDS || self.links.len() >= MAX_COMPONENT_LINKS {
            self.frontier.clear();
        }
        let mut before: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
        let mut home: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
        for identifier in &self.frontier {
            let at = places(identifier);
            for database in at.before.into_iter().filter(|d| *d != at.home) {
                before.entry(database).or_default().push(identifier);
            }
            home.entry(at.home).or_default().push(identifier);
        }
        let stage = |by_database: BTreeMap<usize, Vec<&String>>| -> BTreeMap<usize, Statement> {
            by_database
                .into_iter()
                .map(|(database, identifiers)| {
                    let seeds = serde_json::to_string(&identifiers).unwrap_or_else(|_| "[]".into());
                    let read = Statement {
                        sql: LOAD_COMPONENT_SQL.into(),
                        params: vec![Param::Text(seeds)],
                    };
                    (database, read)
                })
                .collect()
        };
        let stages: Vec<BTreeMap<usize, Statement>> = [stage(before), stage(home)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        self.asked.append(&mut self.frontier);
        if !stages.is_empty() {
            self.rounds += 1;
        }
        stages
    }

    /// Takes a round's rows in. Copies of one link can differ while a write is landing: the
    /// walk keeps the highest `seq` and the earliest event (a link only ever changes to an
    /// earlier one), which is what every copy holds once the write has landed everywhere.
    pub fn absorb(&mut self, rows: impl IntoIterator<Item = StoredLink>) {
        for row in rows {
            for identifier in &row.link.identifiers {
                let text = identifier.to_string();
                if !self.asked.contains(&text) {
                    self.frontier.insert(text);
                }
            }
            match self.links.get_mut(&row.set_key) {
                None => {
                    self.links.insert(row.set_key.clone(), row);
                }
                Some(held) => {
                    let seq = held.seq.max(row.seq);
                    let order = |l: &StoredLink| (l.link.timestamp_ms, l.link.message_id.clone());
                    if order(&row) < order(held) {
                        *held = row;
                    }
                    held.seq = seq;
                }
            }
        }
    }

    /// The component's links in `seq` order, at most [`MAX_COMPONENT_LINKS`].
    pub fn finish(self) -> Vec<StoredLink> {
        let mut links: Vec<StoredLink> = self.links.into_values().collect();
        links.sort_by(|a, b| (a.seq, &a.set_key).cmp(&(b.seq, &b.set_key)));
        links.truncate(MAX_COMPONENT_LINKS);
        links
    }
}

/// A redacted link's claimed list without the erased identifiers (`?1`, a JSON array of text
/// forms): a claim names a person as much as a member does. NULL when none is left, as a link
/// that claims nothing stores it.
pub const REDACTED_CLAIMED: &str = "(SELECT nullif(json_group_array(value), '[]') \
    FROM json_each(identity_links.claimed) WHERE value NOT IN (SELECT value FROM json_each(?1)))";

/// The walk over `DB` that takes other shards' identifiers' links home (`walk_cursors`): links
/// stayed in `DB` before they moved to the profile shards (2026-12-07).
pub const LINKS_HOME: &str = "identity_links_home:0";

/// A second walk like [`LINKS_HOME`], begun in a run after that one ended: it takes home what
/// an older Worker still running during the deploy wrote behind the first. Until it is done, a
/// component's walk reads `DB` for every identifier.
pub const LINKS_HOME_AGAIN: &str = "identity_links_home:1";

/// Most links of one identifier a move carries: a busy identifier's links can outgrow one
/// statement's JSON, so a move takes them over in parts (the walk comes back for the rest).
pub const LINKS_PER_MOVE: usize = 2_000;

/// An identifier's links in one database, up to [`LINKS_PER_MOVE`]. Bind `?1` = identifier.
pub const LINKS_OF_SQL: &str = "SELECT l.set_key, l.seq, l.timestamp, l.message_key, \
    l.identifiers, l.claimed FROM link_members m CROSS JOIN identity_links l \
    ON l.set_key = m.set_key WHERE m.identifier = ?1 LIMIT 2000";

/// One page of a database's identifiers with links, in key order, after `after`.
pub fn walk(after: &str, limit: u32) -> Statement {
    Statement {
        sql: "SELECT DISTINCT identifier AS key FROM link_members WHERE identifier > ?1 \
              ORDER BY identifier LIMIT ?2"
            .into(),
        params: vec![Param::Text(after.to_owned()), Param::Int(i64::from(limit))],
    }
}

/// Writes `identifier`'s links, as read in another database, in its home: each link merged
/// with a copy already there (the higher `seq`, the earlier event), and its member row.
pub fn arrive(identifier: &str, rows: &[LinkRow]) -> Vec<Statement> {
    if rows.is_empty() {
        return Vec::new();
    }
    let json = serde_json::to_string(rows).unwrap_or_else(|_| "[]".into());
    let keys: Vec<&str> = rows.iter().map(|r| r.set_key.as_str()).collect();
    vec![
        Statement {
            sql: "INSERT INTO identity_links (set_key, seq, timestamp, message_key, identifiers, claimed) \
                  SELECT json_extract(value, '$.set_key'), json_extract(value, '$.seq'), \
                  json_extract(value, '$.timestamp'), json_extract(value, '$.message_key'), \
                  json_extract(value, '$.identifiers'), json_extract(value, '$.claimed') \
                  FROM json_each(?1) WHERE true \
                  ON CONFLICT (set_key) DO UPDATE SET seq = max(identity_links.seq, excluded.seq), \
                  timestamp = CASE WHEN (excluded.timestamp, excluded.message_key) < \
                    (identity_links.timestamp, identity_links.message_key) \
                    THEN excluded.timestamp ELSE identity_links.timestamp END, \
                  message_key = CASE WHEN (excluded.timestamp, excluded.message_key) < \
                    (identity_links.timestamp, identity_links.message_key) \
                    THEN excluded.message_key ELSE identity_links.message_key END"
                .into(),
            params: vec![Param::Text(json)],
        },
        Statement {
            sql: "INSERT OR IGNORE INTO link_members (identifier, set_key) \
                  SELECT ?1, value FROM json_each(?2)"
                .into(),
            params: vec![
                Param::Text(identifier.to_owned()),
                Param::Text(serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into())),
            ],
        },
    ]
}

/// Removes from a database what [`arrive`] copied home: `identifier`'s member rows of
/// `set_keys`, then those links' copies that no identifier living here is a member of any more.
pub fn leave(identifier: &str, set_keys: &[&str]) -> Vec<Statement> {
    let keys = Param::Text(serde_json::to_string(set_keys).unwrap_or_else(|_| "[]".into()));
    vec![
        Statement {
            sql: "DELETE FROM link_members WHERE identifier = ?1 \
                  AND set_key IN (SELECT value FROM json_each(?2))"
                .into(),
            params: vec![Param::Text(identifier.to_owned()), keys.clone()],
        },
        unheld_copies(keys),
    ]
}

/// Deletes the copies among `keys` (a JSON array, `?1`) whose identifiers have no member row
/// here: each member row is a key seek on `link_members`' primary key.
fn unheld_copies(keys: Param) -> Statement {
    Statement {
        sql: "DELETE FROM identity_links WHERE set_key IN (SELECT value FROM json_each(?1)) \
              AND NOT EXISTS (SELECT 1 FROM json_each(identity_links.identifiers) j \
              CROSS JOIN link_members m ON m.identifier = j.value AND m.set_key = identity_links.set_key) \
              RETURNING set_key"
            .into(),
        params: vec![keys],
    }
}

/// The set keys of links with a member among `identifiers` (a JSON array), in one database:
/// what an erasure reads everywhere before [`erase`].
pub const MEMBER_LINKS_SQL: &str = "SELECT DISTINCT set_key FROM link_members \
    WHERE identifier IN (SELECT value FROM json_each(?1))";

/// An erasure's link statements for one database, by the set keys of the subject's links
/// (read with [`MEMBER_LINKS_SQL`] in every database): another person's database holds a
/// copy of a link the two share but no member row of the subject, so the copies are found by
/// key. [`erase_copies`], then [`erase_members`]. `(what, statement)` pairs as
/// [`crate::privacy::erase`]'s.
pub fn erase(identifiers: &str, set_keys: &[String]) -> Vec<(&'static str, Statement)> {
    let mut plan = erase_copies(identifiers, set_keys);
    plan.extend(erase_members(identifiers, set_keys));
    plan
}

/// The copies among `set_keys`: links made only of the subject (`identifiers`, a JSON array)
/// go, the others lose the subject's identifiers. Run in every database before any member
/// row goes, so an erasure that fails part way finds every key again when it is retried. Each
/// returns its set keys: the receipt counts links, not copies.
pub fn erase_copies(identifiers: &str, set_keys: &[String]) -> Vec<(&'static str, Statement)> {
    let both = vec![
        Param::Text(identifiers.to_owned()),
        Param::Text(serde_json::to_string(set_keys).unwrap_or_else(|_| "[]".into())),
    ];
    vec![
        (
            "identityLinks",
            Statement {
                sql:
                    "DELETE FROM identity_links WHERE set_key IN (SELECT value FROM json_each(?2)) \
                      AND NOT EXISTS (SELECT 1 FROM json_each(identity_links.identifiers) j \
                      WHERE j.value NOT IN (SELECT value FROM json_each(?1))) RETURNING set_key"
                        .into(),
                params: both.clone(),
            },
        ),
        (
            "sharedLinksRedacted",
            Statement {
                sql: format!(
                    "UPDATE identity_links SET identifiers = (SELECT json_group_array(value) \
                      FROM json_each(identity_links.identifiers) \
                      WHERE value NOT IN (SELECT value FROM json_each(?1))), \
                      claimed = {REDACTED_CLAIMED} \
                      WHERE set_key IN (SELECT value FROM json_each(?2)) \
                      AND EXISTS (SELECT 1 FROM json_each(identity_links.identifiers) j \
                      WHERE j.value IN (SELECT value FROM json_each(?1))) RETURNING set_key"
                ),
                params: both,
            },
        ),
    ]
}

/// The subject's member rows, then the copies among `set_keys` that no member in this
/// database holds any more (counted as redacted shared links, by key).
pub fn erase_members(identifiers: &str, set_keys: &[String]) -> Vec<(&'static str, Statement)> {
    let keys = Param::Text(serde_json::to_string(set_keys).unwrap_or_else(|_| "[]".into()));
    vec![
        (
            "linkMembers",
            Statement {
                sql:
                    "DELETE FROM link_members WHERE identifier IN (SELECT value FROM json_each(?1))"
                        .into(),
                params: vec![Param::Text(identifiers.to_owned())],
            },
        ),
        ("sharedLinksRedacted", unheld_copies(keys)),
    ]
}

/// The subject's assignments in one database other than `DB` (with profile shards each lives
/// in its identifier's home; `DB`'s go in [`crate::privacy::erase`]'s own plan). Run after
/// `DB`'s transaction, which records them as still to go ([`followup`]).
pub fn erase_assignments(identifiers: &str) -> Statement {
    Statement {
        sql: "DELETE FROM identities WHERE identifier IN (SELECT value FROM json_each(?1))".into(),
        params: vec![Param::Text(identifiers.to_owned())],
    }
}

/// Work on assignments in the shards that a `DB` transaction leaves to be done after it
/// commits, recorded in that transaction (`followups`) and deleted once done; the five-minute
/// sweep finishes what is left older than a minute (a failure part way, an isolate that
/// stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followup {
    /// An erasure's: delete the identifiers' assignments in every database.
    Erase,
    /// A resolution's: its assignments in the shards, written after `DB`; resolve the
    /// identifiers again.
    Resolve,
}

impl Followup {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Followup::Erase => "erase",
            Followup::Resolve => "resolve",
        }
    }

    /// The kind a stored name names.
    pub fn parse(name: &str) -> Option<Self> {
        [Followup::Erase, Followup::Resolve]
            .into_iter()
            .find(|f| f.as_str() == name)
    }

    /// Records the follow-up for `identifiers` (a JSON array of text forms) under `token`
    /// (random: two follow-ups never share one), at `at` (now).
    pub fn record(self, identifiers: &str, at: i64, token: &str) -> Statement {
        Statement {
            sql: "INSERT INTO followups (token, kind, identifiers, at) VALUES (?1, ?2, ?3, ?4)"
                .into(),
            params: vec![
                Param::Text(token.to_owned()),
                Param::Text(self.as_str().into()),
                Param::Text(identifiers.to_owned()),
                Param::Int(at),
            ],
        }
    }
}

/// Deletes the follow-up recorded under `token` once done.
pub fn followup_done(token: &str) -> Statement {
    Statement {
        sql: "DELETE FROM followups WHERE token = ?1".into(),
        params: vec![Param::Text(token.to_owned())],
    }
}

/// Puts a follow-up that could not be finished behind the others (`at` = `now_ms`): one that
/// keeps failing must not hold up the rest.
pub fn followup_later(token: &str, now_ms: i64) -> Statement {
    Statement {
        sql: "UPDATE followups SET at = ?2 WHERE token = ?1".into(),
        params: vec![Param::Text(token.to_owned()), Param::Int(now_ms)],
    }
}

/// Follow-ups left behind (older than a minute, so not one whose work is still running): up
/// to `limit`, oldest first (`token`, `kind`, `identifiers`).
pub fn followups_due(now_ms: i64, limit: u32) -> Statement {
    Statement {
        sql: "SELECT token, kind, identifiers FROM followups WHERE at < ?1 ORDER BY at LIMIT ?2"
            .into(),
        params: vec![Param::Int(now_ms - 60_000), Param::Int(i64::from(limit))],
    }
}

/// Whether an erasure not yet finished in the shards names `identifier` (`?1`): its
/// assignments there are erased, though not yet deleted.
pub const ERASURE_PENDING_SQL: &str = "SELECT 1 AS one FROM followups f WHERE kind = 'erase' \
    AND EXISTS (SELECT 1 FROM json_each(f.identifiers) WHERE value = ?1) LIMIT 1";

/// The walk over `DB` that takes other shards' identifiers' assignments home (`walk_cursors`):
/// assignments stayed in `DB` before they moved to the shards (2026-12-07, migration 0031).
pub const ASSIGNMENTS_HOME: &str = "identity_assignments_home:0";

/// A second walk like [`ASSIGNMENTS_HOME`], begun in a run after that one ended, for what an
/// older Worker still running during the deploy wrote behind the first. Until it is done,
/// reads of an assignment also ask `DB`.
pub const ASSIGNMENTS_HOME_AGAIN: &str = "identity_assignments_home:1";

/// An assignment as the reads and the moves see it.
#[allow(missing_docs)] // the columns of identities
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AssignmentRow {
    pub identifier: String,
    pub profile_id: String,
    pub seq: i64,
    #[serde(default)]
    pub seq_sum: i64,
}

impl AssignmentRow {
    /// Whether this row was written by a newer resolution than `other` (the version guard's
    /// order): of an identifier's rows in several databases, the newest is its assignment.
    pub fn newer_than(&self, other: &AssignmentRow) -> bool {
        (self.seq, self.seq_sum) > (other.seq, other.seq_sum)
    }
}

/// Keeps the newest row of each identifier, of rows read in several databases, each with
/// whether it was read in the identifier's home. At the same version the home's row wins: a
/// rules change recomputes at the version it had, and writes only the home.
pub fn newest(
    rows: impl IntoIterator<Item = (AssignmentRow, bool)>,
) -> BTreeMap<String, AssignmentRow> {
    let mut out: BTreeMap<String, (AssignmentRow, bool)> = BTreeMap::new();
    for (row, home) in rows {
        let wins = match out.get(&row.identifier) {
            None => true,
            Some((kept, kept_home)) => {
                row.newer_than(kept) || (!kept.newer_than(&row) && home && !kept_home)
            }
        };
        if wins {
            out.insert(row.identifier.clone(), (row, home));
        }
    }
    out.into_iter().map(|(k, (row, _))| (k, row)).collect()
}

/// One page of a database's assigned identifiers, in key order, after `after`.
pub fn walk_assignments(after: &str, limit: u32) -> Statement {
    Statement {
        sql: "SELECT identifier AS key FROM identities WHERE identifier > ?1 \
              ORDER BY identifier LIMIT ?2"
            .into(),
        params: vec![Param::Text(after.to_owned()), Param::Int(i64::from(limit))],
    }
}

/// An identifier's assignment in one database. Bind `?1` = identifier.
pub const ASSIGNMENT_OF_SQL: &str =
    "SELECT identifier, profile_id, seq, seq_sum FROM identities WHERE identifier = ?1";

/// Writes an assignment read in another database in its identifier's home, only over an
/// older one (one written there at the same version is a recomputation the other database
/// has not seen).
pub fn arrive_assignment(row: &AssignmentRow, now_ms: i64) -> Statement {
    let mut params = row.params();
    params.push(Param::Int(now_ms));
    Statement {
        sql: "INSERT INTO identities (identifier, profile_id, seq, seq_sum, updated_at) \
              VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (identifier) DO UPDATE SET \
              profile_id = excluded.profile_id, seq = excluded.seq, \
              seq_sum = excluded.seq_sum, updated_at = excluded.updated_at \
              WHERE (excluded.seq, excluded.seq_sum) > (identities.seq, identities.seq_sum)"
            .into(),
        params,
    }
}

/// Deletes `row` where it was read, only as it was read: a resolution that rewrote it there
/// meanwhile (an older Worker during a deploy) leaves it for the walk's next pass. Returns the
/// row deleted, if any.
pub fn leave_assignment(row: &AssignmentRow) -> Statement {
    Statement {
        sql: "DELETE FROM identities WHERE identifier = ?1 AND profile_id = ?2 \
              AND seq = ?3 AND seq_sum = ?4 RETURNING identifier"
            .into(),
        params: row.params(),
    }
}

impl AssignmentRow {
    /// Its columns as parameters: identifier, profile ID, `seq`, `seq_sum`.
    fn params(&self) -> Vec<Param> {
        vec![
            Param::Text(self.identifier.clone()),
            Param::Text(self.profile_id.clone()),
            Param::Int(self.seq),
            Param::Int(self.seq_sum),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followup_is_deleted_by_its_own_token() {
        for kind in [Followup::Erase, Followup::Resolve] {
            assert_eq!(Followup::parse(kind.as_str()), Some(kind));
            let recorded = kind.record(r#"["email:a@b.c"]"#, 7, "t1");
            assert_eq!(recorded.params[0], Param::Text("t1".into()));
            assert_eq!(recorded.params[1], Param::Text(kind.as_str().into()));
        }
        assert_eq!(followup_done("t1").params, vec![Param::Text("t1".into())]);
        assert!(followup_done("t1").sql.ends_with("WHERE token = ?1"));
        assert_eq!(Followup::parse("other"), None);
    }

    #[test]
    fn the_newest_assignment_of_each_identifier_wins_whatever_the_order_read() {
        let row = |identifier: &str, profile: &str, seq: i64, seq_sum: i64| AssignmentRow {
            identifier: identifier.into(),
            profile_id: profile.into(),
            seq,
            seq_sum,
        };
        let rows = [
            row("anonymous_id:a", "old", 5, 5),
            row("anonymous_id:a", "new", 5, 9),
            row("anonymous_id:a", "older", 4, 20),
            row("user_id:u", "only", 1, 1),
        ];
        let away = |r: &AssignmentRow| (r.clone(), false);
        for order in [rows.to_vec(), rows.iter().rev().cloned().collect()] {
            let kept = newest(order.iter().map(away));
            assert_eq!(kept["anonymous_id:a"].profile_id, "new");
            assert_eq!(kept["user_id:u"].profile_id, "only");
            assert_eq!(kept.len(), 2);
        }
        // The same version in two places: the home's row, whichever came first.
        let there = row("anonymous_id:a", "recomputed", 5, 9);
        for order in [
            vec![(rows[1].clone(), false), (there.clone(), true)],
            vec![(there.clone(), true), (rows[1].clone(), false)],
        ] {
            assert_eq!(newest(order)["anonymous_id:a"].profile_id, "recomputed");
        }
    }
    use crate::identity::graph_plan::{link_copies, set_key, Version};
    use crate::identity::{IdType, Identifier, Link};

    fn id(kind: IdType, v: &str) -> Identifier {
        Identifier::new(kind, v)
    }

    fn stored(seq: i64, ts: i64, message: &str, ids: &[Identifier]) -> StoredLink {
        let link = Link::new(ts, message, ids.to_vec());
        StoredLink {
            set_key: set_key(&link),
            seq,
            link,
        }
    }

    #[test]
    fn a_link_is_copied_where_each_of_its_identifiers_lives() {
        let (a, u, e) = (
            id(IdType::AnonymousId, "a"),
            id(IdType::UserId, "u"),
            id(IdType::Email, "e@x.io"),
        );
        let home = |i: &Identifier| match i.to_string().as_str() {
            "anonymous_id:a" => 1,
            "user_id:u" => 2,
            _ => 1,
        };
        let links = [Link::new(1, "m1", vec![u.clone(), a.clone(), e.clone()])];
        let copies = link_copies(&links, 77, home);
        assert_eq!(copies.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        let members = |database: usize| -> Vec<String> {
            copies[&database]
                .iter()
                .filter(|s| s.sql.contains("link_members"))
                .flat_map(|s| s.params.iter().step_by(2))
                .map(|p| format!("{p:?}"))
                .collect()
        };
        assert_eq!(members(1).len(), 2, "a and e live in 1: {:?}", members(1));
        assert!(members(2)[0].contains("user_id:u"));
        for statements in copies.values() {
            assert_eq!(
                statements[0].params[5],
                Param::Int(77),
                "the clock floors the seq"
            );
        }
    }

    #[test]
    fn one_database_gets_the_links_as_before() {
        let a = id(IdType::AnonymousId, "a");
        let links = [Link::new(1, "m1", vec![a])];
        let copies = link_copies(&links, 0, |_| 0);
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[&0].len(), 2, "the link and its member row");
    }

    #[test]
    fn walks_until_no_link_names_an_identifier_not_asked() {
        let (a, u, b) = (
            id(IdType::AnonymousId, "a"),
            id(IdType::UserId, "u"),
            id(IdType::AnonymousId, "b"),
        );
        // DB (0) still holds links that are going home, so it is read first.
        let places = |i: &str| Places {
            before: vec![0],
            home: if i.starts_with("user_id") { 2 } else { 1 },
        };
        let keys = |stage: &BTreeMap<usize, Statement>| stage.keys().copied().collect::<Vec<_>>();
        let mut walk = ComponentWalk::new(["anonymous_id:a".to_owned()]);
        let first = walk.reads(places);
        assert_eq!(
            first.iter().map(keys).collect::<Vec<_>>(),
            vec![vec![0], vec![1]]
        );
        walk.absorb([stored(5, 10, "m1", &[a.clone(), u.clone()])]);
        let second = walk.reads(places);
        assert_eq!(
            second.iter().map(keys).collect::<Vec<_>>(),
            vec![vec![0], vec![2]],
            "u is asked where it lives"
        );
        assert!(matches!(&second[1][&2].params[0], Param::Text(t) if t == "[\"user_id:u\"]"));
        walk.absorb([
            stored(5, 10, "m1", &[a.clone(), u.clone()]),
            stored(7, 20, "m2", &[u.clone(), b.clone()]),
        ]);
        let third = walk.reads(|i| Places {
            before: vec![],
            ..places(i)
        });
        assert_eq!(
            third.len(),
            1,
            "nothing read first once DB's links are home"
        );
        assert!(matches!(&third[0][&1].params[0], Param::Text(t) if t == "[\"anonymous_id:b\"]"));
        walk.absorb([stored(7, 20, "m2", &[u, b])]);
        assert!(
            walk.reads(places).is_empty(),
            "nothing new: the walk is over"
        );
        let links = walk.finish();
        assert_eq!(links.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![5, 7]);
        assert_eq!(Version::of(&links), Version { max: 7, sum: 12 });
    }

    #[test]
    fn copies_of_a_link_landing_at_different_moments_read_as_the_landed_one() {
        let a = id(IdType::AnonymousId, "a");
        let mut walk = ComponentWalk::new(["anonymous_id:a".to_owned()]);
        walk.reads(|_| Places::default());
        // The old copy has the higher seq of its database; the new one the earlier event.
        walk.absorb([
            stored(40, 20, "late", std::slice::from_ref(&a)),
            stored(9, 10, "early", &[a]),
        ]);
        let links = walk.finish();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].seq, 40);
        assert_eq!(links[0].link.message_id, "early");
    }

    #[test]
    fn a_runaway_walk_stops_after_its_rounds() {
        let mut walk = ComponentWalk::new(["anonymous_id:0".to_owned()]);
        let mut rounds = 0;
        while !walk.reads(|_| Places::default()).is_empty() {
            rounds += 1;
            let (this, next) = (
                id(IdType::AnonymousId, &(rounds - 1).to_string()),
                id(IdType::AnonymousId, &rounds.to_string()),
            );
            walk.absorb([stored(rounds as i64, 1, "m", &[this, next])]);
        }
        assert_eq!(rounds, MAX_WALK_ROUNDS);
    }

    #[test]
    fn a_move_merges_copies_and_leaves_only_what_it_copied() {
        let row = LinkRow {
            set_key: "k1".into(),
            seq: 3,
            timestamp: 1,
            message_key: "s/m".into(),
            identifiers: "[\"anonymous_id:a\"]".into(),
            claimed: None,
        };
        let copied = arrive("anonymous_id:a", std::slice::from_ref(&row));
        assert_eq!(copied.len(), 2);
        assert!(copied[0]
            .sql
            .contains("max(identity_links.seq, excluded.seq)"));
        assert!(copied.iter().all(|s| s.sql.contains("?1")));
        assert!(arrive("anonymous_id:a", &[]).is_empty());
        let left = leave("anonymous_id:a", &["k1"]);
        assert_eq!(left[0].params[1], Param::Text("[\"k1\"]".into()));
        assert!(left[1].sql.contains("NOT EXISTS"));
        assert_eq!(row.parse().map(|l| l.seq), Some(3));
    }

    #[test]
    fn erasure_finds_copies_by_key_and_counts_links_by_key() {
        let plan = erase("[\"user_id:u\"]", &["k1".into(), "k2".into()]);
        let names: Vec<&str> = plan.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "identityLinks",
                "sharedLinksRedacted",
                "linkMembers",
                "sharedLinksRedacted"
            ]
        );
        assert!(plan[1].1.sql.starts_with("UPDATE identity_links"));
        for (name, statement) in &plan {
            assert!(statement.sql.contains("?1"));
            if *name != "linkMembers" {
                assert!(statement.sql.ends_with("RETURNING set_key"), "{name}");
            }
            if statement.sql.starts_with("UPDATE identity_links") {
                assert!(
                    statement
                        .sql
                        .contains(&format!("claimed = {REDACTED_CLAIMED}")),
                    "a redacted link's claims lose the person too"
                );
            }
        }
    }
}
