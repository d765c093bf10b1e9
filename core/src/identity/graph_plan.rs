//! Write plans and queries for the identity graph (schema: `edge/migrations/0003_identity.sql`).
//!
//! A request stores its events' links and trait rows together with the events (one
//! transaction; with profile shards the links' copies elsewhere first, [`link_copies`]), then
//! loads the connected components those links touch (one recursive query, or a walk over the
//! databases: [`crate::identity::spread`]), recomputes their partition with
//! [`crate::identity::partition`], and writes the assignments guarded by the version of the
//! links it saw of each component ([`Version`]), so concurrent requests converge on the
//! partition of all links whatever order their writes land in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::collect::event::Event;
use crate::identity::{Conflict, Identifier, Link, Partition, ProfileId, Rules};
use crate::plan::{Param, Statement};

/// Multi-row inserts whose suffix binds nothing of its own.
fn multi_row(prefix: &str, suffix: &str, rows: Vec<Vec<Param>>) -> Vec<Statement> {
    crate::plan::multi_row(prefix, suffix, rows, &[])
}
use crate::identity::profile::{trait_rows, TraitRow};

/// Most links one component load returns; beyond it a runaway component is cut (and its
/// profiles are still capped by the identity rules).
pub const MAX_COMPONENT_LINKS: usize = 5000;

/// A link as stored: its set key and the identifier text forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    /// sha256 of the sorted identifier text forms.
    pub set_key: String,
    /// Order of the last change: its database's next, at least [`seq_floor`].
    pub seq: i64,
    /// The link.
    pub link: Link,
}

/// What a request's events add to the graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contributions {
    /// One link per event that carries identifiers (message keys are `<source>/<messageId>`,
    /// so sources never collide).
    pub links: Vec<Link>,
    /// Trait rows, under each event's best identifier.
    pub traits: Vec<TraitRow>,
}

/// Links and trait rows of stored events.
pub fn contributions(events: &[&Event], source_id: &str, rules: &Rules) -> Contributions {
    let mut out = Contributions::default();
    for event in events {
        let mut link = Link::from_event(event, rules);
        link.message_id = format!("{source_id}/{}", event.message_id);
        let Some(best) = link.identifiers.first() else {
            continue;
        };
        out.traits.extend(trait_rows(event, best, &link.message_id));
        out.links.push(link);
    }
    out
}

/// Text forms of every identifier in `links`, as the JSON array the load queries bind.
pub fn identifiers_param<'a>(identifiers: impl IntoIterator<Item = &'a Identifier>) -> String {
    let texts: BTreeSet<String> = identifiers.into_iter().map(ToString::to_string).collect();
    serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into())
}

/// The set key of a link: SHA-256 of its sorted identifier text forms, then (when it claims
/// any) `~` and its claimed ones: the same identifiers proven and merely claimed are two links.
/// 128 bits of it (32 hex digits): a collision stays out of reach at any number of links, and
/// the key is stored twice per link (links and members).
pub fn set_key(link: &Link) -> String {
    let texts: BTreeSet<String> = link.identifiers.iter().map(ToString::to_string).collect();
    let mut text = texts.into_iter().collect::<Vec<_>>().join("\n");
    if !link.claimed.is_empty() {
        let claimed: BTreeSet<String> = link.claimed.iter().map(ToString::to_string).collect();
        text.push_str("\n~\n");
        text.push_str(&claimed.into_iter().collect::<Vec<_>>().join("\n"));
    }
    let mut key = crate::identity::sha256_hex(text.as_bytes());
    key.truncate(SET_KEY_HEX);
    key
}

/// Hex digits of a set key.
pub const SET_KEY_HEX: usize = 32;

fn claimed_json(link: &Link) -> Option<String> {
    (!link.claimed.is_empty()).then(|| identifiers_param(&link.claimed))
}

fn identifiers_json(link: &Link) -> String {
    let texts: BTreeSet<String> = link.identifiers.iter().map(ToString::to_string).collect();
    serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into())
}

/// Upserts for links with at least one identifier, with a member row for every identifier. A
/// set seen before keeps its earliest event; when an earlier event arrives it replaces the key
/// and takes a new `seq`.
pub fn upsert_links(links: &[Link], floor: i64) -> Vec<Statement> {
    link_copies(links, floor, |_| 0)
        .remove(&0)
        .unwrap_or_default()
}

/// [`upsert_links`] for a graph spread over databases (`home`: an identifier's database): each
/// database gets a copy of every link one of its identifiers is in, and the member rows of its
/// own identifiers, so a walk finds an identifier's links where the identifier lives
/// ([`crate::identity::spread`]). A new or changed link's `seq` is the database's next one,
/// or `floor` ([`seq_floor`]) when that is higher.
pub fn link_copies(
    links: &[Link],
    floor: i64,
    home: impl Fn(&Identifier) -> usize,
) -> BTreeMap<usize, Vec<Statement>> {
    let mut by_set: BTreeMap<String, &Link> = BTreeMap::new();
    for link in links.iter().filter(|l| !l.identifiers.is_empty()) {
        let key = set_key(link);
        let earlier = by_set.get(&key).is_none_or(|cur| {
            (link.timestamp_ms, &link.message_id) < (cur.timestamp_ms, &cur.message_id)
        });
        if earlier {
            by_set.insert(key, link);
        }
    }
    let mut out: BTreeMap<usize, Vec<Statement>> = BTreeMap::new();
    for (key, link) in &by_set {
        let mut members: BTreeMap<usize, Vec<Vec<Param>>> = BTreeMap::new();
        for identifier in &link.identifiers {
            members.entry(home(identifier)).or_default().push(vec![
                Param::Text(identifier.to_string()),
                Param::Text(key.clone()),
            ]);
        }
        for (database, rows) in members {
            let statements = out.entry(database).or_default();
            statements.push(Statement {
                sql: "INSERT INTO identity_links (set_key, seq, timestamp, message_key, identifiers, claimed) \
                      VALUES (?1, max((SELECT seq + 1 FROM identity_link_seq), ?6), ?2, ?3, ?4, ?5) \
                      ON CONFLICT (set_key) DO UPDATE SET \
                      seq = max((SELECT seq + 1 FROM identity_link_seq), ?6), \
                      timestamp = excluded.timestamp, message_key = excluded.message_key \
                      WHERE (excluded.timestamp, excluded.message_key) < (identity_links.timestamp, identity_links.message_key) \
                      RETURNING set_key"
                    .into(),
                params: vec![
                    Param::Text(key.clone()),
                    Param::Int(link.timestamp_ms),
                    Param::Text(link.message_id.clone()),
                    Param::Text(identifiers_json(link)),
                    claimed_json(link).map_or(Param::Null, Param::Text),
                    Param::Int(floor),
                ],
            });
            statements.extend(multi_row(
                "INSERT OR IGNORE INTO link_members (identifier, set_key) VALUES ",
                "",
                rows,
            ));
        }
    }
    out
}

/// Upserts for trait rows: plain rows replace older values, `$set_once` rows replace newer ones.
pub fn upsert_traits(rows: &[TraitRow]) -> Vec<Statement> {
    multi_row(
        "INSERT INTO trait_values (identifier, key, once, value, timestamp, message_key) VALUES ",
        " ON CONFLICT (identifier, key, once) DO UPDATE SET value = excluded.value, \
          timestamp = excluded.timestamp, message_key = excluded.message_key \
          WHERE CASE WHEN excluded.once = 1 \
            THEN (excluded.timestamp, excluded.message_key) < (trait_values.timestamp, trait_values.message_key) \
            ELSE (excluded.timestamp, excluded.message_key) > (trait_values.timestamp, trait_values.message_key) END",
        rows.iter()
            .map(|r| {
                vec![
                    Param::Text(r.identifier.clone()),
                    Param::Text(r.key.clone()),
                    Param::Int(i64::from(r.once)),
                    Param::Text(r.value.to_string()),
                    Param::Int(r.timestamp_ms),
                    Param::Text(r.message_key.clone()),
                ]
            })
            .collect(),
    )
}

/// One query: every link of the connected components containing `seeds` (a JSON array of
/// identifier text forms, bound as `?1`), following shared identifiers transitively.
///
/// Each step goes identifier -> its links (`link_members`' key) -> their identifiers (the link's
/// own JSON), so every lookup is a key seek. `CROSS JOIN` pins that order: without statistics
/// (D1 never runs ANALYZE) SQLite otherwise scanned all of `link_members` per call.
pub const LOAD_COMPONENT_SQL: &str = "WITH RECURSIVE ids(identifier) AS ( \
      SELECT value FROM json_each(?1) \
      UNION SELECT j.value FROM ids \
        CROSS JOIN link_members m ON m.identifier = ids.identifier \
        CROSS JOIN identity_links l ON l.set_key = m.set_key \
        CROSS JOIN json_each(l.identifiers) j) \
    SELECT DISTINCT l.set_key, l.seq, l.timestamp, l.message_key, l.identifiers, l.claimed \
    FROM ids CROSS JOIN link_members m ON m.identifier = ids.identifier \
    CROSS JOIN identity_links l ON l.set_key = m.set_key \
    ORDER BY l.seq LIMIT 5000";

/// Appended to a request's write batch: the current assignments of its links' identifiers.
/// When no link changed and each link's identifiers are in one profile, the request needs no
/// recomputation (`collect::ingest_plan::settled_profiles`).
pub fn probe_assignments<'i>(identifiers: impl IntoIterator<Item = &'i Identifier>) -> Statement {
    Statement {
        sql: LOAD_IDENTITIES_SQL.into(),
        params: vec![Param::Text(identifiers_param(identifiers))],
    }
}

/// The stored `seq`s of `links` (their set keys), read after they are written: a link stored
/// by a try that failed before its resolution is newer than its identifiers' assignments
/// (`collect::ingest_plan::settled_profiles`). `None` without a link with identifiers.
pub fn link_seqs(links: &[Link]) -> Option<Statement> {
    let keys: BTreeSet<String> = links
        .iter()
        .filter(|l| !l.identifiers.is_empty())
        .map(set_key)
        .collect();
    (!keys.is_empty()).then(|| Statement {
        sql: "SELECT set_key, seq FROM identity_links WHERE set_key IN (SELECT value FROM json_each(?1))"
            .into(),
        params: vec![Param::Text(
            serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into()),
        )],
    })
}

/// SQL for the identifiers (`identifier`) of the profile `profile` names (a parameter or a
/// subquery): its row in `profile_members` (edge/migrations 0029), one key seek.
pub fn members_of(profile: &str) -> String {
    format!(
        "SELECT m.value AS identifier FROM profile_members p CROSS JOIN json_each(p.identifiers) m \
         WHERE p.profile_id = {profile}"
    )
}

/// Current assignments of identifiers (a JSON array bound as `?1`).
pub const LOAD_IDENTITIES_SQL: &str =
    "SELECT identifier, profile_id, seq, seq_sum FROM identities \
    WHERE identifier IN (SELECT value FROM json_each(?1))";

/// Parses a stored link row.
pub fn parse_link(
    set_key: String,
    seq: i64,
    timestamp_ms: i64,
    message_key: String,
    identifiers_json: &str,
    claimed_json: Option<&str>,
) -> Option<StoredLink> {
    let parse = |json: &str| -> Option<Vec<Identifier>> {
        let texts: Vec<String> = serde_json::from_str(json).ok()?;
        Some(texts.iter().filter_map(|t| Identifier::parse(t)).collect())
    };
    let identifiers = parse(identifiers_json)?;
    let claimed = claimed_json
        .map(parse)
        .unwrap_or_default()
        .unwrap_or_default();
    Some(StoredLink {
        set_key,
        seq,
        link: Link::new(timestamp_ms, message_key, identifiers).with_claimed(claimed),
    })
}

/// A stored assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Identifier text form.
    pub identifier: String,
    /// Its profile.
    pub profile_id: String,
    /// The links it was computed from.
    pub version: Version,
}

/// What an assignment was computed from: the highest `seq` of the component's links and the sum
/// of their `seq`s, compared in that order. Every change to a link raises its `seq`, so a
/// computation that saw more of a component's links, or a newer state of one, is greater, even
/// when the highest `seq` is the same: over several databases a walk can see link 11 before
/// link 10 has landed (docs/scale.md), and the sum tells that view from the whole one. Links
/// go only by erasure and retention; after those, the next link written has a `seq` above
/// every earlier one ([`seq_floor`]), so the highest `seq` still rises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// The highest `seq` (`identities.seq`).
    pub max: i64,
    /// The sum of the `seq`s (`identities.seq_sum`).
    pub sum: i64,
}

impl Version {
    /// The version of a component made of `links`.
    pub fn of(links: &[StoredLink]) -> Self {
        links.iter().fold(Version::default(), |v, l| Version {
            max: v.max.max(l.seq),
            sum: v.sum.saturating_add(l.seq),
        })
    }

    /// The version of each identifier's own component among `links` (by identifier text). A
    /// request can load several components (a queued batch of many visitors), and one
    /// component's newer links must not lend their `seq`s to another's stale view.
    pub fn by_component(links: &[StoredLink]) -> HashMap<String, Version> {
        // Union-find over the identifiers, numbered; path halving and union by size keep it
        // near linear (a user's thousand browsers would otherwise make one long chain).
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut parent: Vec<usize> = Vec::new();
        let mut size: Vec<usize> = Vec::new();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let mut firsts = Vec::with_capacity(links.len());
        for link in links {
            let mut first = None;
            for identifier in &link.link.identifiers {
                let next = index.len();
                let i = *index.entry(identifier.to_string()).or_insert(next);
                if i == parent.len() {
                    parent.push(i);
                    size.push(1);
                }
                let Some(head) = first else {
                    first = Some(i);
                    continue;
                };
                let (a, b) = (find(&mut parent, head), find(&mut parent, i));
                if a != b {
                    let (big, small) = if size[a] >= size[b] { (a, b) } else { (b, a) };
                    parent[small] = big;
                    size[big] += size[small];
                }
            }
            firsts.push(first);
        }
        let mut by_root: HashMap<usize, Version> = HashMap::new();
        for (link, first) in links.iter().zip(firsts) {
            let Some(first) = first else { continue };
            let version = by_root.entry(find(&mut parent, first)).or_default();
            version.max = version.max.max(link.seq);
            version.sum = version.sum.saturating_add(link.seq);
        }
        index
            .into_iter()
            .map(|(identifier, i)| {
                let root = find(&mut parent, i);
                (identifier, by_root.get(&root).copied().unwrap_or_default())
            })
            .collect()
    }
}

/// The least a new or changed link's `seq` may be: the clock, in milliseconds since
/// 2026-01-01. Over several databases it orders links written anywhere (each database's
/// counter only orders its own), and after an erasure took the newest links away, the next one
/// is still the newest. Counted from 2026 so that a component's sum of `seq`s (5,000 links at
/// most) stays exact as a JavaScript number, which D1's parameters are, for decades.
pub fn seq_floor(now_ms: i64) -> i64 {
    (now_ms - SEQ_EPOCH_MS).max(0)
}

/// 2026-01-01T00:00:00Z.
const SEQ_EPOCH_MS: i64 = 1_767_225_600_000;

/// What a request writes after recomputing the partition of the components it touched.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphWrites {
    /// Statements for one transaction in `DB`: the profile rows, the assignments homed there,
    /// the merge and conflict records.
    pub statements: Vec<Statement>,
    /// The assignments homed in other databases, by database ([`Resolution::home`]).
    pub elsewhere: BTreeMap<usize, Vec<Statement>>,
    /// Profiles absorbed into others: (from, into).
    pub merges: Vec<(String, String)>,
}

/// Diffs the recomputed partition against stored assignments. Assignments are written where the
/// stored row is missing, differs, or has an older version (`versions`: each identifier's
/// component's, [`Version::by_component`]), each guarded so an
/// older computation can never overwrite a newer one.
pub fn graph_writes(
    partition: &Partition,
    stored: &[Assignment],
    versions: &HashMap<String, Version>,
    resolution: Resolution<'_>,
) -> GraphWrites {
    let Resolution {
        seen,
        rules,
        cause,
        now_ms,
        home,
    } = resolution;
    let current: BTreeMap<&str, &Assignment> =
        stored.iter().map(|a| (a.identifier.as_str(), a)).collect();
    let mut rows: BTreeMap<usize, Vec<Vec<Param>>> = BTreeMap::new();
    // The components this resolution writes, by their version: only their profile rows and
    // tombstones are written (a component found as it was stored writes nothing).
    let mut written: BTreeSet<Version> = BTreeSet::new();
    // Identifiers leaving a profile: (its ID, the identifier, the version moving it).
    let mut moved: Vec<(&str, String, Version)> = Vec::new();
    // Profiles an identifier joins: they are as recent as now.
    let mut joined: BTreeSet<&str> = BTreeSet::new();
    let mut merges = BTreeSet::new();
    for profile in &partition.profiles {
        for identifier in &profile.identifiers {
            let text = identifier.to_string();
            let version = versions.get(&text).copied().unwrap_or_default();
            let old = current.get(text.as_str());
            let stale =
                old.is_none_or(|o| o.profile_id != profile.id.as_str() || o.version < version);
            if let Some(old) = old {
                if old.profile_id != profile.id.as_str() {
                    merges.insert((old.profile_id.clone(), profile.id.as_str().to_owned()));
                    moved.push((old.profile_id.as_str(), text.clone(), version));
                }
            }
            if old.is_none_or(|o| o.profile_id != profile.id.as_str()) {
                joined.insert(profile.id.as_str());
            }
            if stale {
                written.insert(version);
                rows.entry(home(&text)).or_default().push(vec![
                    Param::Text(text),
                    Param::Text(profile.id.as_str().to_owned()),
                    Param::Int(version.max),
                    Param::Int(version.sum),
                    Param::Int(now_ms),
                ]);
            }
        }
    }
    // A profile that still holds identifiers is not absorbed, only split/renamed ones are.
    let surviving: BTreeSet<&str> = partition.profiles.iter().map(|p| p.id.as_str()).collect();
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .filter(|(from, _)| !surviving.contains(from.as_str()))
        .collect();
    // The profile rows come first: an assignment whose profile's row is already at its
    // version is not edited again by the triggers that keep the rows for a Worker from before
    // migration 0030 (between migrate and deploy, or after a rollback).
    let writing = Writing {
        written: &written,
        moved: &moved,
        joined: &joined,
        rules,
        now_ms,
    };
    let mut statements = profile_rows(partition, seen, versions, writing);
    let mut elsewhere: BTreeMap<usize, Vec<Statement>> = rows
        .into_iter()
        .map(|(database, rows)| (database, upsert_assignments(rows)))
        .collect();
    statements.extend(elsewhere.remove(&0).unwrap_or_default());
    statements.extend(multi_row(
        "INSERT OR IGNORE INTO merges (from_profile, into_profile, message_key, merged_at) VALUES ",
        "",
        merges
            .iter()
            .map(|(from, into)| {
                vec![
                    Param::Text(from.clone()),
                    Param::Text(into.clone()),
                    Param::Text(cause.to_owned()),
                    Param::Int(now_ms),
                ]
            })
            .collect(),
    ));
    statements.extend(conflict_rows(&partition.conflicts, now_ms));
    GraphWrites {
        statements,
        elsewhere,
        merges,
    }
}

/// Assignment rows (identifier, profile ID, `seq`, `seq_sum`, time) written under the version
/// guard: an older computation never overwrites a newer one, and a rules change recomputes at
/// the same version.
pub fn upsert_assignments(rows: Vec<Vec<Param>>) -> Vec<Statement> {
    multi_row(
        "INSERT INTO identities (identifier, profile_id, seq, seq_sum, updated_at) VALUES ",
        " ON CONFLICT (identifier) DO UPDATE SET profile_id = excluded.profile_id, \
          seq = excluded.seq, seq_sum = excluded.seq_sum, updated_at = excluded.updated_at \
          WHERE (excluded.seq, excluded.seq_sum) >= (identities.seq, identities.seq_sum)",
        rows,
    )
}

/// What a resolution computed its partition from, beside the links' versions.
#[derive(Clone, Copy)]
pub struct Resolution<'a> {
    /// Every identifier of the links loaded (blocked ones too): each names a profile ID some
    /// view of the component could have made.
    pub seen: &'a [&'a Identifier],
    /// The rules the partition was computed under (their profile salt names the IDs).
    pub rules: &'a Rules,
    /// The message key of the request's last link, for the merge records.
    pub cause: &'a str,
    /// Now, in ms.
    pub now_ms: i64,
    /// The database an identifier's assignment lives in, by its text: its home shard (0 is
    /// `DB`, the only one without profile shards).
    pub home: &'a dyn Fn(&str) -> usize,
}

/// What [`profile_rows`] needs of [`graph_writes`]' diff.
#[derive(Clone, Copy)]
struct Writing<'a> {
    /// The versions of the components written.
    written: &'a BTreeSet<Version>,
    /// Identifiers leaving a profile: (its ID, the identifier, the version moving it).
    moved: &'a [(&'a str, String, Version)],
    /// Profiles an identifier joins.
    joined: &'a BTreeSet<&'a str>,
    rules: &'a Rules,
    now_ms: i64,
}

/// Whether an identifier's text form (SQL `value`) is an email or a user ID: a profile holding
/// one is identified (the census's count).
fn identified_sql(value: &str) -> String {
    format!(
        "(({value} >= 'email:' AND {value} < 'email;') \
         OR ({value} >= 'user_id:' AND {value} < 'user_id;'))"
    )
}

/// The assignments of an `UPDATE profile_members` that takes the identifiers of `list` (an SQL
/// list) out of a row, and its flag with them.
pub fn rows_without(list: &str) -> String {
    format!(
        "identifiers = (SELECT json_group_array(value) FROM json_each(profile_members.identifiers) \
         WHERE value NOT IN {list}), identified = EXISTS (SELECT 1 FROM \
         json_each(profile_members.identifiers) WHERE value NOT IN {list} AND {})",
        identified_sql("value")
    )
}

fn identified(text: &str) -> bool {
    text.starts_with("email:") || text.starts_with("user_id:")
}

/// The rows per profile (`profile_members`, migration 0030) of the components a resolution
/// writes (`written`, by version): each profile of the partition whole, guarded by the
/// version as its assignments are, a tombstone (`profile_tombstones`) for every other
/// profile ID the components' identifiers name, and for a profile identifiers leave that
/// none of them names, an edit of its row.
///
/// Written explicitly, not by triggers, so that the rows can live in another database than the
/// assignments (docs/scale.md). The tombstones cover the ghost profile: a resolution that saw
/// fewer links, landing after this one, would make a profile (a new key) that nothing later
/// replaces. Profile IDs are hashes of a profile's best identifier, so any profile an earlier
/// view of these links could have made is named by one of their identifiers: its tombstone,
/// at this version, refuses the older view's row, and deletes a row of an older view already
/// there (an absorbed profile's). A tombstone is kept an hour ([`sweep_tombstones`]), longer
/// than a request runs. At the same version the last write wins, as for the assignments (a
/// rules change recomputes at the same version).
fn profile_rows(
    partition: &Partition,
    seen: &[&Identifier],
    versions: &HashMap<String, Version>,
    writing: Writing<'_>,
) -> Vec<Statement> {
    let Writing {
        written,
        moved,
        joined,
        rules,
        now_ms,
    } = writing;
    if written.is_empty() {
        return Vec::new();
    }
    let version_of = |text: &str| versions.get(text).copied().unwrap_or_default();
    let mut live = BTreeSet::new();
    let mut rows = Vec::new();
    for profile in &partition.profiles {
        live.insert(profile.id.as_str());
        let texts: BTreeSet<String> = profile
            .identifiers
            .iter()
            .map(ToString::to_string)
            .collect();
        let version = texts
            .iter()
            .map(|t| version_of(t))
            .max()
            .unwrap_or_default();
        if !written.contains(&version) {
            continue;
        }
        rows.push((
            joined.contains(profile.id.as_str()),
            vec![
                Param::Text(profile.id.as_str().to_owned()),
                Param::Int(i64::from(texts.iter().any(|t| identified(t)))),
                Param::Int(now_ms),
                Param::Int(version.max),
                Param::Int(version.sum),
                Param::Text(serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into())),
            ],
        ));
    }
    let seen_json = identifiers_param(seen.iter().copied());
    let mut tombstones: BTreeMap<String, Version> = BTreeMap::new();
    for identifier in seen {
        let version = version_of(&identifier.to_string());
        let id = ProfileId::salted(identifier, rules.profile_salt.as_deref());
        if written.contains(&version) && !live.contains(id.as_str()) {
            let at = tombstones.entry(id.as_str().to_owned()).or_default();
            *at = (*at).max(version);
        }
    }
    let mut statements = Vec::new();
    if !tombstones.is_empty() {
        statements.extend(multi_row(
            "INSERT INTO profile_tombstones (profile_id, seq, seq_sum, at) VALUES ",
            " ON CONFLICT (profile_id) DO UPDATE SET seq = excluded.seq, \
              seq_sum = excluded.seq_sum, at = excluded.at \
              WHERE (excluded.seq, excluded.seq_sum) >= (profile_tombstones.seq, profile_tombstones.seq_sum)",
            tombstones
                .iter()
                .map(|(id, v)| {
                    vec![
                        Param::Text(id.clone()),
                        Param::Int(v.max),
                        Param::Int(v.sum),
                        Param::Int(now_ms),
                    ]
                })
                .collect(),
        ));
        // Rows an older view wrote under them lose what this resolution saw, and go when
        // emptied (what it did not see, past a component's cut, stays where it is assigned):
        // compared with this resolution's own version (the stored tombstone may be a newer
        // one's, under which a rules change at the same version made the profile live again).
        let mut by_version: BTreeMap<Version, Vec<&String>> = BTreeMap::new();
        for (id, version) in &tombstones {
            by_version.entry(*version).or_default().push(id);
        }
        for (version, ids) in by_version {
            let ids = Param::Text(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()));
            statements.push(Statement {
                sql: format!(
                    "UPDATE profile_members SET {} WHERE profile_id IN \
                     (SELECT value FROM json_each(?1)) AND (seq, seq_sum) <= (?2, ?3)",
                    rows_without("(SELECT value FROM json_each(?4))")
                ),
                params: vec![
                    ids.clone(),
                    Param::Int(version.max),
                    Param::Int(version.sum),
                    Param::Text(seen_json.clone()),
                ],
            });
            statements.push(Statement {
                sql: "DELETE FROM profile_members WHERE profile_id IN \
                      (SELECT value FROM json_each(?1)) AND identifiers = '[]'"
                    .into(),
                params: vec![ids],
            });
        }
    }
    // A profile its identifiers leave that none of them names (a salt change renamed the
    // profiles, or its best identifier is no longer among the links loaded): its row loses
    // them, unless a newer view wrote it, and goes when emptied.
    let mut leaving: BTreeMap<&str, (BTreeSet<&str>, Version)> = BTreeMap::new();
    for (profile, identifier, version) in moved {
        if !live.contains(profile) && !tombstones.contains_key(*profile) {
            let (identifiers, at) = leaving.entry(profile).or_default();
            identifiers.insert(identifier);
            *at = (*at).max(*version);
        }
    }
    for (profile, (identifiers, version)) in &leaving {
        let gone = serde_json::to_string(identifiers).unwrap_or_else(|_| "[]".into());
        let params = vec![
            Param::Text((*profile).to_owned()),
            Param::Text(gone),
            Param::Int(version.max),
            Param::Int(version.sum),
        ];
        statements.push(Statement {
            sql: format!(
                "UPDATE profile_members SET {} WHERE profile_id = ?1 AND (seq, seq_sum) <= (?3, ?4)",
                rows_without("(SELECT value FROM json_each(?2))")
            ),
            params: params.clone(),
        });
        statements.push(Statement {
            sql: "DELETE FROM profile_members WHERE profile_id = ?1 AND identifiers = '[]'".into(),
            params: params[..1].to_vec(),
        });
    }
    // A stored row keeps the identifiers this resolution did not see: assigned to the profile
    // by a view this one does not repeat (past a component's cut, its newest links are not
    // loaded). (`WHERE` before `ON CONFLICT`: SQLite's parser needs it after a SELECT.)
    let unseen = "FROM json_each(profile_members.identifiers) \
                  WHERE value NOT IN (SELECT value FROM json_each(?))";
    // A profile rewritten only for its version keeps its activity; a new row is active now.
    let (active, rewritten): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(joins, _)| *joins);
    for (rows, activity) in [
        (active, "max(profile_members.last_seen, excluded.last_seen)"),
        (rewritten, "profile_members.last_seen"),
    ] {
        statements.extend(crate::plan::multi_row(
            "INSERT INTO profile_members (profile_id, identified, last_seen, seq, seq_sum, identifiers) \
             SELECT * FROM (VALUES ",
            &format!(
                ") v WHERE NOT EXISTS (SELECT 1 FROM profile_tombstones t \
                   WHERE t.profile_id = v.column1 AND (t.seq, t.seq_sum) > (v.column4, v.column5)) \
                 ON CONFLICT (profile_id) DO UPDATE SET \
                   identified = excluded.identified OR EXISTS (SELECT 1 {unseen} AND {}), \
                   last_seen = {activity}, seq = excluded.seq, seq_sum = excluded.seq_sum, \
                   identifiers = (SELECT json_group_array(value) FROM (SELECT value {unseen} \
                     UNION SELECT value FROM json_each(excluded.identifiers))) \
                 WHERE (excluded.seq, excluded.seq_sum) >= (profile_members.seq, profile_members.seq_sum)",
                identified_sql("value")
            ),
            rows.into_iter().map(|(_, row)| row).collect(),
            &[Param::Text(seen_json.clone()), Param::Text(seen_json.clone())],
        ));
    }
    statements
}

/// Deletes tombstones written more than [`TOMBSTONE_KEPT_MS`] before `now_ms` (at the segment
/// sweep's run, every five minutes).
pub fn sweep_tombstones(now_ms: i64) -> Statement {
    Statement {
        sql: "DELETE FROM profile_tombstones WHERE at < ?1".into(),
        params: vec![Param::Int(now_ms - TOMBSTONE_KEPT_MS)],
    }
}

/// How long a profile's tombstone refuses older views: longer than any request runs.
pub const TOMBSTONE_KEPT_MS: i64 = 60 * 60 * 1000;

fn conflict_rows(conflicts: &[Conflict], now_ms: i64) -> Vec<Statement> {
    multi_row(
        "INSERT OR IGNORE INTO identity_conflicts \
         (message_key, refused, reason, profile_id, refused_profile, recorded_at) VALUES ",
        "",
        conflicts
            .iter()
            .map(|c| {
                vec![
                    Param::Text(c.message_id.clone()),
                    Param::Text(c.refused.to_string()),
                    Param::Text(c.reason.code().to_owned()),
                    Param::Text(c.profile.as_str().to_owned()),
                    Param::Text(c.refused_profile.as_str().to_owned()),
                    Param::Int(now_ms),
                ]
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope};
    use crate::identity::{partition, IdType, ProfileId};
    use serde_json::json;

    #[test]
    fn contributions_key_links_by_source_and_skip_anonymized_events() {
        let ev =
            |raw: serde_json::Value| validate(raw, 10, &Envelope::default(), String::new).unwrap();
        let identify = ev(
            json!({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1", "traits": {"plan": "pro"}}),
        );
        let mut anonymized =
            ev(json!({"type": "track", "event": "x", "anonymousId": "a2", "messageId": "m2"}));
        anonymized.anonymized = true;
        let c = contributions(&[&identify, &anonymized], "web", &Rules::default());
        assert_eq!(c.links.len(), 1);
        assert_eq!(c.links[0].message_id, "web/m1");
        assert_eq!(c.traits.len(), 1);
        assert_eq!(c.traits[0].identifier, "user_id:u1");
        assert_eq!(c.traits[0].message_key, "web/m1");
    }

    fn id(kind: IdType, v: &str) -> Identifier {
        Identifier::new(kind, v)
    }

    /// A resolution of `seen` under `rules` at `now_ms`.
    fn at<'a>(seen: &'a [&'a Identifier], rules: &'a Rules, now_ms: i64) -> Resolution<'a> {
        Resolution {
            seen,
            rules,
            cause: "src/m",
            now_ms,
            home: &|_| 0,
        }
    }

    /// Every identifier of `p` at `version`.
    fn all(p: &Partition, version: Version) -> HashMap<String, Version> {
        p.profiles
            .iter()
            .flat_map(|profile| &profile.identifiers)
            .map(|i| (i.to_string(), version))
            .collect()
    }

    #[test]
    fn each_component_has_its_own_version() {
        let (a, u, b) = (
            id(IdType::AnonymousId, "a"),
            id(IdType::UserId, "u"),
            id(IdType::AnonymousId, "b"),
        );
        let stored = |seq, message: &str, ids: Vec<Identifier>| StoredLink {
            set_key: message.into(),
            seq,
            link: Link::new(1, message, ids),
        };
        // A queued batch loads a's component (a sign-in still landing) and b's (a newer link).
        let links = [
            stored(5, "m1", vec![a.clone()]),
            stored(7, "m2", vec![u.clone(), a.clone()]),
            stored(900, "m3", vec![b.clone()]),
        ];
        let versions = Version::by_component(&links);
        assert_eq!(versions["anonymous_id:a"], Version { max: 7, sum: 12 });
        assert_eq!(versions["user_id:u"], Version { max: 7, sum: 12 });
        assert_eq!(versions["anonymous_id:b"], Version { max: 900, sum: 900 });
        assert_eq!(seq_floor(1_767_225_600_000 + 42), 42);
        assert_eq!(seq_floor(0), 0);
    }

    #[test]
    fn set_key_ignores_identifier_order() {
        let a = Link::new(
            1,
            "m1",
            vec![id(IdType::UserId, "u"), id(IdType::AnonymousId, "a")],
        );
        let b = Link::new(
            2,
            "m2",
            vec![id(IdType::AnonymousId, "a"), id(IdType::UserId, "u")],
        );
        assert_eq!(set_key(&a), set_key(&b));
        assert_eq!(set_key(&a).len(), SET_KEY_HEX);
    }

    #[test]
    fn upserts_one_link_per_identifier_set_keeping_the_earliest() {
        let links = [
            Link::new(5, "late", vec![id(IdType::AnonymousId, "a")]),
            Link::new(1, "early", vec![id(IdType::AnonymousId, "a")]),
            Link::new(1, "empty", vec![]),
        ];
        let plan = upsert_links(&links, 0);
        assert_eq!(plan.len(), 2, "one link upsert + one member insert");
        assert_eq!(plan[0].params[2], Param::Text("early".into()));
        assert_eq!(plan[0].params.len(), 6, "numbered parameters ?1..?6");
        assert_eq!(plan[0].params[4], Param::Null, "nothing claimed");
        assert_eq!(plan[1].sql.matches('?').count(), plan[1].params.len());
    }

    #[test]
    fn a_claimed_link_is_stored_apart_from_the_proven_one() {
        let (a, c) = (id(IdType::AnonymousId, "a"), id(IdType::CookieId, "c"));
        let proven = Link::new(1, "m1", vec![c.clone(), a.clone()]);
        let claimed = proven.clone().with_claimed(vec![a.clone()]);
        assert_ne!(set_key(&proven), set_key(&claimed));
        let plan = upsert_links(std::slice::from_ref(&claimed), 0);
        let Param::Text(json) = &plan[0].params[4] else {
            panic!("claimed identifiers are stored");
        };
        let Param::Text(identifiers) = &plan[0].params[3] else {
            panic!("identifiers are stored");
        };
        let stored = parse_link(
            set_key(&claimed),
            1,
            1,
            "m1".into(),
            identifiers,
            Some(json),
        );
        assert_eq!(stored.map(|s| s.link.claimed), Some(vec![a]));
    }

    #[test]
    fn a_view_of_more_links_wins_at_the_same_highest_seq_and_a_later_link_after_an_erasure() {
        let a = id(IdType::AnonymousId, "a");
        let stored_link = |seq, message: &str| StoredLink {
            set_key: message.into(),
            seq,
            link: Link::new(1, message, vec![a.clone()]),
        };
        // A walk that saw link 11 before link 10 landed, against the one that saw both.
        let partial = Version::of(&[stored_link(11, "m11")]);
        let whole = Version::of(&[stored_link(10, "m10"), stored_link(11, "m11")]);
        assert!(partial < whole);
        assert_eq!(whole, Version { max: 11, sum: 21 });
        // An erasure took links 10 and 11; the next link written has the higher seq.
        let after_erasure = Version::of(&[stored_link(12, "m12")]);
        assert!(whole < after_erasure);

        let rules = Rules::default();
        let p = partition(&[Link::new(1, "m", vec![a.clone()])], &rules);
        let profile = ProfileId::for_identifier(&a).as_str().to_owned();
        let stored = |version| Assignment {
            identifier: "anonymous_id:a".into(),
            profile_id: profile.clone(),
            version,
        };
        assert!(
            !graph_writes(
                &p,
                &[stored(partial)],
                &all(&p, whole),
                at(&[&a], &rules, 0)
            )
            .statements
            .is_empty(),
            "the whole view rewrites what the partial one wrote"
        );
        assert!(graph_writes(
            &p,
            &[stored(whole)],
            &all(&p, partial),
            at(&[&a], &rules, 0)
        )
        .statements
        .is_empty());
    }

    /// The profile rows (ID -> the row's parameters) and tombstones (ID -> version) `writes`
    /// makes, from its statements' parameters.
    fn rows_and_tombstones(
        writes: &GraphWrites,
    ) -> (BTreeMap<String, Vec<Param>>, BTreeMap<String, Version>) {
        let text = |p: &Param| match p {
            Param::Text(t) => t.clone(),
            other => panic!("a profile ID, not {other:?}"),
        };
        let int = |p: &Param| match p {
            Param::Int(i) => *i,
            other => panic!("a number, not {other:?}"),
        };
        let (mut rows, mut tombstones) = (BTreeMap::new(), BTreeMap::new());
        for statement in &writes.statements {
            if statement.sql.starts_with("INSERT INTO profile_members") {
                // (The last two parameters are the identifiers seen, for rows stored.)
                let rows_end = statement.params.len() - 2;
                for row in statement.params[..rows_end].chunks(6) {
                    rows.insert(text(&row[0]), row.to_vec());
                }
            } else if statement.sql.starts_with("INSERT INTO profile_tombstones") {
                for row in statement.params.chunks(4) {
                    let version = Version {
                        max: int(&row[1]),
                        sum: int(&row[2]),
                    };
                    tombstones.insert(text(&row[0]), version);
                }
            }
        }
        (rows, tombstones)
    }

    #[test]
    fn a_sign_in_writes_the_profile_row_whole_and_tombstones_the_other_ids_its_identifiers_name() {
        use crate::identity::test_support::{anon, email, uid};
        let rules = Rules::default();
        let (a, u, e) = (anon("a"), uid("u"), email("jane@example.com"));
        let links = [
            Link::new(1, "m1", vec![a.clone()]),
            Link::new(2, "m2", vec![u.clone(), a.clone(), e.clone()]),
        ];
        let p = partition(&links, &rules);
        let anon_profile = ProfileId::for_identifier(&a);
        let stored = [Assignment {
            identifier: a.to_string(),
            profile_id: anon_profile.as_str().into(),
            version: Version { max: 1, sum: 1 },
        }];
        let v2 = Version { max: 2, sum: 3 };
        let writes = graph_writes(&p, &stored, &all(&p, v2), at(&[&a, &u, &e], &rules, 7));
        let (rows, tombstones) = rows_and_tombstones(&writes);
        let user = ProfileId::for_identifier(&u).as_str().to_owned();
        let texts = json!([a.to_string(), e.to_string(), u.to_string()]).to_string();
        assert_eq!(
            rows[&user],
            vec![
                Param::Text(user.clone()),
                Param::Int(1),
                Param::Int(7),
                Param::Int(2),
                Param::Int(3),
                Param::Text(texts)
            ],
            "identified, seen now, at the version, every identifier"
        );
        assert_eq!(rows.len(), 1);
        let absorbed = anon_profile.as_str().to_owned();
        let never_made = ProfileId::for_identifier(&e).as_str().to_owned();
        assert_eq!(
            tombstones,
            BTreeMap::from([(absorbed.clone(), v2), (never_made.clone(), v2)])
        );
        let retired: Vec<&Statement> = writes
            .statements
            .iter()
            .filter(|s| s.sql.starts_with("UPDATE profile_members"))
            .collect();
        let seen_json = json!([a.to_string(), e.to_string(), u.to_string()]).to_string();
        assert_eq!(
            retired[0].params,
            vec![
                Param::Text(json!([absorbed, never_made]).to_string()),
                Param::Int(2),
                Param::Int(3),
                Param::Text(seen_json)
            ],
            "rows under them lose what this resolution saw, up to its own version"
        );
        // A later link changes no membership: the row is rewritten for its version only and
        // keeps its activity.
        let settled: Vec<Assignment> = [&a, &u, &e]
            .iter()
            .map(|i| Assignment {
                identifier: i.to_string(),
                profile_id: user.clone(),
                version: v2,
            })
            .collect();
        let v3 = Version { max: 3, sum: 6 };
        let writes = graph_writes(&p, &settled, &all(&p, v3), at(&[&a, &u, &e], &rules, 9));
        let (rows, _) = rows_and_tombstones(&writes);
        assert_eq!(rows[&user][3], Param::Int(3));
        let upsert = writes
            .statements
            .iter()
            .find(|s| s.sql.starts_with("INSERT INTO profile_members"))
            .expect("the row is written");
        assert!(
            upsert
                .sql
                .contains("last_seen = profile_members.last_seen,"),
            "last_seen left as it is"
        );
        // Salted IDs are what the partition names, and what the tombstones name.
        let salted = Rules {
            profile_salt: Some("s".into()),
            ..Rules::default()
        };
        let p = partition(&links, &salted);
        let writes = graph_writes(&p, &[], &all(&p, v2), at(&[&a, &u, &e], &salted, 7));
        let (rows, tombstones) = rows_and_tombstones(&writes);
        assert!(rows.contains_key(ProfileId::salted(&u, Some("s")).as_str()));
        assert!(tombstones.contains_key(ProfileId::salted(&a, Some("s")).as_str()));
        assert_eq!(tombstones.len(), 2);
        // A profile no identifier names (made before the salt): its row loses what leaves it.
        let unsalted = [Assignment {
            identifier: a.to_string(),
            profile_id: anon_profile.as_str().into(),
            version: Version { max: 1, sum: 1 },
        }];
        let writes = graph_writes(&p, &unsalted, &all(&p, v2), at(&[&a, &u, &e], &salted, 7));
        let leaves: Vec<&Statement> = writes
            .statements
            .iter()
            .filter(|s| s.sql.starts_with("UPDATE profile_members") && s.sql.contains("= ?1"))
            .collect();
        assert_eq!(leaves.len(), 1);
        assert_eq!(
            leaves[0].params,
            vec![
                Param::Text(anon_profile.as_str().into()),
                Param::Text(json!([a.to_string()]).to_string()),
                Param::Int(2),
                Param::Int(3)
            ]
        );
    }

    #[test]
    fn every_profile_an_older_view_of_the_links_makes_is_a_row_or_a_tombstone_of_the_whole_view() {
        use crate::identity::test_support::{anon, cookie, email, uid};
        let rules = Rules::default();
        let (a, b, c, u, e) = (anon("a"), anon("b"), cookie("c"), uid("u"), email("j@x.io"));
        // Seq order: a browser, its cookie, a sign-in, an email, a second browser's sign-in.
        let links = [
            vec![a.clone()],
            vec![c.clone(), a.clone()],
            vec![e.clone(), c.clone()],
            vec![u.clone(), e.clone()],
            vec![b.clone(), u.clone()],
        ];
        let stored: Vec<StoredLink> = links
            .iter()
            .enumerate()
            .map(|(i, ids)| StoredLink {
                set_key: format!("k{i}"),
                seq: i as i64 + 1,
                link: Link::new(i as i64, format!("m{i}"), ids.clone()),
            })
            .collect();
        let view = |subset: &[StoredLink]| {
            let versions = Version::by_component(subset);
            let component: Vec<Link> = subset.iter().map(|l| l.link.clone()).collect();
            let p = partition(&component, &rules);
            let seen: BTreeSet<&Identifier> =
                subset.iter().flat_map(|l| &l.link.identifiers).collect();
            let seen: Vec<&Identifier> = seen.into_iter().collect();
            let writes = graph_writes(&p, &[], &versions, at(&seen, &rules, 0));
            (rows_and_tombstones(&writes), Version::of(subset))
        };
        let ((whole_rows, whole_tombstones), whole) = view(&stored);
        assert_eq!(whole_rows.len(), 1, "one person");
        // Every older view: any subset of the links (a walk can miss any of them).
        for mask in 1..(1u32 << stored.len()) - 1 {
            let subset: Vec<StoredLink> = stored
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, l)| l.clone())
                .collect();
            let ((rows, _), older) = view(&subset);
            assert!(older < whole);
            for profile in rows.keys() {
                let covered = whole_rows.contains_key(profile)
                    || whole_tombstones.get(profile).is_some_and(|v| *v > older);
                assert!(
                    covered,
                    "view {mask:b} makes {profile}, which nothing refuses"
                );
            }
        }
    }

    #[test]
    fn writes_only_changed_or_newer_assignments_and_reports_merges() {
        let rules = Rules::default();
        let links = [
            Link::new(1, "m1", vec![id(IdType::AnonymousId, "a")]),
            Link::new(
                2,
                "m2",
                vec![id(IdType::UserId, "u"), id(IdType::AnonymousId, "a")],
            ),
        ];
        let p = partition(&links, &rules);
        let anon_profile = ProfileId::for_identifier(&id(IdType::AnonymousId, "a"));
        let user_profile = ProfileId::for_identifier(&id(IdType::UserId, "u"));
        let stored = [Assignment {
            identifier: "anonymous_id:a".into(),
            profile_id: anon_profile.as_str().into(),
            version: Version { max: 1, sum: 1 },
        }];
        let v2 = Version { max: 2, sum: 3 };
        let seen = [&id(IdType::AnonymousId, "a"), &id(IdType::UserId, "u")];
        let writes = graph_writes(&p, &stored, &all(&p, v2), at(&seen, &rules, 0));
        assert_eq!(
            writes.merges,
            vec![(
                anon_profile.as_str().to_owned(),
                user_profile.as_str().to_owned()
            )]
        );
        let identities = writes
            .statements
            .iter()
            .find(|s| s.sql.starts_with("INSERT INTO identities"))
            .expect("assignments written");
        assert_eq!(identities.params.len(), 10, "both identifiers written");
        assert!(identities.sql.contains(
            "WHERE (excluded.seq, excluded.seq_sum) >= (identities.seq, identities.seq_sum)"
        ));

        let up_to_date = [
            Assignment {
                identifier: "anonymous_id:a".into(),
                profile_id: user_profile.as_str().into(),
                version: v2,
            },
            Assignment {
                identifier: "user_id:u".into(),
                profile_id: user_profile.as_str().into(),
                version: v2,
            },
        ];
        let writes = graph_writes(&p, &up_to_date, &all(&p, v2), at(&seen, &rules, 0));
        assert!(
            writes.statements.is_empty(),
            "nothing changed, nothing written"
        );
        assert!(writes.merges.is_empty());
    }

    #[test]
    fn writes_each_assignment_in_its_identifiers_home_and_the_rows_in_db() {
        let rules = Rules::default();
        let links = [Link::new(
            2,
            "m2",
            vec![id(IdType::UserId, "u"), id(IdType::AnonymousId, "a")],
        )];
        let p = partition(&links, &rules);
        let seen = [&id(IdType::AnonymousId, "a"), &id(IdType::UserId, "u")];
        let v = Version { max: 2, sum: 2 };
        let home = |text: &str| usize::from(text.starts_with("user_id:")) * 2;
        let resolution = Resolution {
            home: &home,
            ..at(&seen, &rules, 0)
        };
        let writes = graph_writes(&p, &[], &all(&p, v), resolution);
        let assigned = |plan: &[Statement]| -> Vec<String> {
            plan.iter()
                .filter(|s| s.sql.starts_with("INSERT INTO identities"))
                .flat_map(|s| s.params.iter().step_by(5))
                .filter_map(|p| match p {
                    Param::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(assigned(&writes.statements), vec!["anonymous_id:a"]);
        assert_eq!(writes.elsewhere.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(assigned(&writes.elsewhere[&2]), vec!["user_id:u"]);
        assert!(
            writes.elsewhere[&2]
                .iter()
                .all(|s| s.sql.starts_with("INSERT INTO identities")),
            "only assignments leave DB"
        );
        assert!(
            writes
                .statements
                .iter()
                .any(|s| s.sql.contains("INSERT INTO profile_members")),
            "the profile's row is written in DB"
        );
    }
}
