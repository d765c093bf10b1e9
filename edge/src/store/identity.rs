//! Executes identity resolution on D1: load the touched components (one recursive query, or
//! with profile shards a walk over the databases: `identity::spread`), load their current
//! assignments (one query, or with profile shards one per database their identifiers live
//! in), recompute the partition in core, write the changes and the profiles' rows (one
//! transaction in `DB`, and with profile shards one in each database holding assignments,
//! all guarded by the links' version).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures_util::future::join_all;
use seam_core::collect::event::{Event, EventType};
use seam_core::collect::ingest_plan::Assigned;
use seam_core::identity::graph_plan::{
    graph_writes, identifiers_param, link_seqs, probe_assignments, set_key, Assignment, Resolution,
    StoredLink, Version, LOAD_COMPONENT_SQL, LOAD_IDENTITIES_SQL, MAX_COMPONENT_LINKS,
};
use seam_core::identity::resolution::Resolved;
use seam_core::identity::spread::{
    self, newest, AssignmentRow, ComponentWalk, Followup, LinkRow, Places, ASSIGNMENTS_HOME_AGAIN,
    ASSIGNMENT_OF_SQL, ERASURE_PENDING_SQL,
};
use seam_core::identity::{partition, Identifier, Link, Rules};
use seam_core::personalise::shard::WALK_DONE;
use seam_core::plan::{Param, Statement};
use seam_core::privacy::retention::walk_cursor;
use serde::Deserialize;
use serde_json::Value;

use crate::isolate;
use crate::store::d1;
use crate::store::shards::Shards;

/// An `alias` whose `previousId` is neither a UUID nor the event's `anonymousId` is read by core
/// as a previous *user* ID. When the graph already knows that value as an anonymous ID (a server
/// library aliasing a visitor at sign-up), the event's link copy gets it as `anonymousId` so it
/// merges as intended. The stored event is untouched. Returns the hinted copies by index. One
/// query for the whole request, however many aliases it carries (D1 caps queries per
/// invocation).
pub async fn alias_hints(db: &Shards, events: &[&Event]) -> worker::Result<HashMap<usize, Event>> {
    let candidates: Vec<(usize, &str)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventType::Alias && e.anonymous_id.is_none())
        .filter_map(|(i, e)| Some((i, e.body.get("previousId")?.as_str()?)))
        .collect();
    if candidates.is_empty() {
        return Ok(HashMap::new());
    }
    let asked: Vec<String> = candidates
        .iter()
        .map(|(_, previous)| format!("anonymous_id:{}", previous.trim()))
        .collect();
    let known: HashSet<String> = assignments(db, &asked).await?.into_keys().collect();
    let mut hinted = HashMap::new();
    for ((i, previous), key) in candidates.into_iter().zip(&asked) {
        if known.contains(key) {
            let mut copy = events[i].clone();
            copy.anonymous_id = Some(previous.to_owned());
            copy.body
                .insert("anonymousId".into(), serde_json::Value::from(previous));
            hinted.insert(i, copy);
        }
    }
    Ok(hinted)
}

/// Reads the rows of probes (see `graph_plan::probe_assignments`; one per database the
/// identifiers' assignments may be in) into identifier -> assignment, the newest of each.
pub fn probed(rows: Vec<(AssignmentRow, bool)>) -> HashMap<String, Assigned> {
    newest(rows)
        .into_iter()
        .map(|(identifier, r)| {
            let assigned = Assigned {
                profile_id: r.profile_id,
                seq: r.seq,
            };
            (identifier, assigned)
        })
        .collect()
}

/// Reads a [`link_seqs`] result into `seqs` (set key -> the highest `seq` of its copies).
pub fn add_link_seqs(
    result: &worker::D1Result,
    seqs: &mut HashMap<String, i64>,
) -> worker::Result<()> {
    #[derive(Deserialize)]
    struct Row {
        set_key: String,
        seq: i64,
    }
    for row in result.results::<Row>()? {
        let seq = seqs.entry(row.set_key).or_default();
        *seq = (*seq).max(row.seq);
    }
    Ok(())
}

/// What writing the links outside `DB` found.
#[derive(Default)]
pub struct Written {
    /// Whether any link was new or changed.
    pub changed: bool,
    /// The links' stored `seq`s there, by set key.
    pub seqs: HashMap<String, i64>,
    /// The assignments there of the identifiers homed there, read after the links.
    pub assigned: Vec<(AssignmentRow, bool)>,
}

/// Writes link copies that live outside `DB` (`graph_plan::link_copies` by database; `DB`'s
/// share is left out, it goes in the request's batch), each database's in one batch that ends
/// by reading the `seq`s the links have there and the assignments of the identifiers homed
/// there (the probe `DB`'s batch makes for its own).
pub async fn write_links(
    db: &Shards,
    copies: &BTreeMap<usize, Vec<Statement>>,
    links: &[Link],
) -> worker::Result<Written> {
    let read = link_seqs(links);
    let writes = copies
        .iter()
        .filter(|(database, _)| **database != 0)
        .map(|(database, plan)| {
            let mut plan = plan.clone();
            plan.extend(read.clone());
            let homed = links
                .iter()
                .flat_map(|l| &l.identifiers)
                .filter(|i| db.index_of(&i.to_string()) == *database);
            plan.push(probe_assignments(homed));
            async move { d1::execute(db.at(*database), &plan).await }
        });
    let mut written = Written::default();
    for results in join_all(writes).await {
        let mut results = results?;
        if let Some(probe) = results.pop() {
            let rows = probe.results::<AssignmentRow>()?;
            written.assigned.extend(rows.into_iter().map(|r| (r, true)));
        }
        if read.is_some() {
            if let Some(seqs) = results.pop() {
                add_link_seqs(&seqs, &mut written.seqs)?;
            }
        }
        for result in results {
            written.changed |= !result.results::<Value>()?.is_empty();
        }
    }
    Ok(written)
}

/// The assignments of `identifiers` (text forms), each read where it may be (its home, its
/// previous home while the shard count changes, and `DB` until the walks took `DB`'s home:
/// [`places`]), the newest of each kept. One query per database, run at once.
pub async fn assignments(
    db: &Shards,
    identifiers: &[String],
) -> worker::Result<BTreeMap<String, AssignmentRow>> {
    if identifiers.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut asked: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    if db.all().len() == 1 {
        asked.insert(0, identifiers.iter().map(String::as_str).collect());
    } else {
        let legacy = left_in_db(db, ASSIGNMENTS_HOME_AGAIN).await;
        for identifier in identifiers {
            let Places { before, home } = places(db, identifier, legacy);
            for database in before.into_iter().chain([home]) {
                asked.entry(database).or_default().push(identifier);
            }
        }
    }
    let home = |identifier: &str, database: usize| db.index_of(identifier) == database;
    let reads = asked.into_iter().map(|(database, ids)| {
        let read = Statement {
            sql: LOAD_IDENTITIES_SQL.into(),
            params: vec![Param::Text(
                serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()),
            )],
        };
        async move {
            let rows = d1::rows::<AssignmentRow>(db.at(database), &read).await?;
            Ok::<_, worker::Error>((database, rows))
        }
    });
    let mut rows = Vec::new();
    for read in join_all(reads).await {
        let (database, found) = read?;
        rows.extend(found.into_iter().map(|r| {
            let at_home = home(&r.identifier, database);
            (r, at_home)
        }));
    }
    Ok(newest(rows))
}

/// Whether `DB` may hold assignments of other shards' identifiers (until the walks taking them
/// home are done): what the ingest batch's probe in `DB` must then also ask for.
pub async fn assignments_in_db(db: &Shards) -> bool {
    db.all().len() > 1 && left_in_db(db, ASSIGNMENTS_HOME_AGAIN).await
}

/// Where `identifier`'s links or assignment may be: its home, its previous home while the
/// shard count changes, and `DB` while `DB` still holds other shards' identifiers' rows
/// (written before they moved to the shards, 2026-12-07, until `jobs::reshard` took them home).
fn places(db: &Shards, identifier: &str, links_in_db: bool) -> Places {
    let mut before: Vec<usize> = db.previous(identifier).into_iter().collect();
    if links_in_db {
        before.push(0);
    }
    Places {
        before,
        home: db.index_of(identifier),
    }
}

/// Whether `DB` may still hold rows of other shards' identifiers that the walk `walk` takes
/// home ([`spread::LINKS_HOME_AGAIN`] for links, [`ASSIGNMENTS_HOME_AGAIN`] for assignments):
/// until it is done. Read at most once a minute per isolate, also once known done: deleting
/// the walk's position (after a rollback) makes every isolate read `DB` again within a minute.
/// A failed read counts as "may": reading `DB` costs a query, not reading it could miss a row.
pub(crate) async fn left_in_db(db: &Shards, walk: &'static str) -> bool {
    let now_ms = crate::platform::now_ms();
    if let Some(held) = isolate::left_in_db(walk, now_ms) {
        return held;
    }
    let read = walk_cursor(walk);
    match d1::rows::<Cursor>(db, &read).await {
        Ok(rows) => {
            let held = rows.first().is_none_or(|c| c.after != WALK_DONE);
            isolate::found_left_in_db(walk, held, now_ms);
            held
        }
        Err(e) => {
            worker::console_error!("reading where DB's rows stand failed: {e}");
            true
        }
    }
}

#[derive(Deserialize)]
struct Cursor {
    after: String,
}

/// The links of the components `seeds` (a JSON array of identifier text forms) touch.
async fn component(db: &Shards, seeds: String) -> worker::Result<Vec<StoredLink>> {
    let parse = |rows: Vec<LinkRow>| rows.into_iter().filter_map(LinkRow::parse);
    if db.all().len() == 1 {
        let read = Statement {
            sql: LOAD_COMPONENT_SQL.into(),
            params: vec![Param::Text(seeds)],
        };
        return Ok(parse(d1::rows::<LinkRow>(db, &read).await?).collect());
    }
    let legacy = left_in_db(db, spread::LINKS_HOME_AGAIN).await;
    let seeds: Vec<String> = serde_json::from_str(&seeds).unwrap_or_default();
    let mut walk = ComponentWalk::new(seeds);
    loop {
        let stages = walk.reads(|identifier| places(db, identifier, legacy));
        if stages.is_empty() {
            return Ok(walk.finish());
        }
        for stage in stages {
            let reads = stage
                .iter()
                .map(|(database, read)| d1::rows::<LinkRow>(db.at(*database), read));
            for rows in join_all(reads).await {
                walk.absorb(parse(rows?));
            }
        }
    }
}

/// A stored resolution.
pub struct Stored {
    /// What it resolved.
    pub resolved: Resolved,
    /// With profile shards, the statement deleting its follow-up in `DB` (its assignments in
    /// the shards are written): for after the response.
    pub followup_done: Option<Statement>,
}

/// Recomputes and stores the partition of the components `links` touch.
pub async fn resolve(
    db: &Shards,
    rules: &Rules,
    links: &[Link],
    seqs: &HashMap<String, i64>,
    now_ms: i64,
) -> worker::Result<Option<Stored>> {
    let Some(cause) = links.last().map(|l| l.message_id.clone()) else {
        return Ok(None);
    };
    let seeds = identifiers_param(links.iter().flat_map(|l| &l.identifiers));
    let request = Request {
        links,
        seqs,
        cause,
        now_ms,
        replacing: None,
    };
    resolve_seeded(db, rules, seeds, request).await.map(Some)
}

/// Resolves again the components of `identifiers` (a JSON array of text forms) as stored, for
/// a follow-up (`token`) a resolution failing part way left: only their links count (a
/// component past the cut then misses what it always misses; an identifier with no links
/// left, erased since, gets no assignment). The new resolution's `DB` transaction deletes
/// the follow-up, and records its own while its shards are written.
pub async fn resolve_again(
    db: &Shards,
    rules: &Rules,
    identifiers: String,
    token: &str,
    now_ms: i64,
) -> worker::Result<Stored> {
    let request = Request {
        links: &[],
        seqs: &HashMap::new(),
        cause: format!("followup/{token}"),
        now_ms,
        replacing: Some(spread::followup_done(token)),
    };
    resolve_seeded(db, rules, identifiers, request).await
}

/// What a resolution is for, beside the identifiers it starts from.
struct Request<'a> {
    /// The request's links, added to a component past the cut.
    links: &'a [Link],
    /// Their stored `seq`s, by set key.
    seqs: &'a HashMap<String, i64>,
    /// The message key of the merge records.
    cause: String,
    now_ms: i64,
    /// A statement for `DB`'s transaction: a follow-up this resolution takes over.
    replacing: Option<Statement>,
}

async fn resolve_seeded(
    db: &Shards,
    rules: &Rules,
    seeds: String,
    request: Request<'_>,
) -> worker::Result<Stored> {
    let Request {
        links,
        seqs,
        cause,
        now_ms,
        replacing,
    } = request;
    let mut stored = component(db, seeds).await?;
    // A component past the cut (`MAX_COMPONENT_LINKS`, the oldest kept) leaves out the newest
    // links, the request's own among them: they are added, so the assignments are computed
    // from them and the request's retries find them resolved (`settled_profiles`).
    // Only then: a request link missing from an uncut component was erased meanwhile.
    let cut = stored.len() >= MAX_COMPONENT_LINKS;
    let mut loaded: HashSet<String> = stored.iter().map(|l| l.set_key.clone()).collect();
    for link in links.iter().filter(|l| cut && !l.identifiers.is_empty()) {
        let key = set_key(link);
        if loaded.insert(key.clone()) {
            let seq = seqs.get(&key).copied().unwrap_or_default();
            stored.push(StoredLink {
                set_key: key,
                seq,
                link: link.clone(),
            });
        }
    }
    let versions = Version::by_component(&stored);
    let component: Vec<Link> = stored.into_iter().map(|l| l.link).collect();
    let partition = partition(&component, rules);
    let seen: BTreeSet<&Identifier> = component.iter().flat_map(|l| &l.identifiers).collect();
    let seen: Vec<&Identifier> = seen.into_iter().collect();

    let all: Vec<String> = partition
        .profiles
        .iter()
        .flat_map(|p| &p.identifiers)
        .map(Identifier::to_string)
        .collect();
    let before: Vec<Assignment> = assignments(db, &all)
        .await?
        .into_values()
        .map(|r| Assignment {
            identifier: r.identifier,
            profile_id: r.profile_id,
            version: Version {
                max: r.seq,
                sum: r.seq_sum,
            },
        })
        .collect();
    let resolution = Resolution {
        seen: &seen,
        rules,
        cause: &cause,
        now_ms,
        home: &|identifier| db.index_of(identifier),
    };
    let mut writes = graph_writes(&partition, &before, &versions, resolution);
    // `DB` first (the profile rows, tombstones and merge records), then the shards'
    // assignments, each database one transaction, each idempotent under the version guard.
    // A request failing part way leaves those assignments at their older version; `DB`'s
    // transaction records a follow-up that the sweep resolves again if the request does not
    // get to delete it (its retry may find its own links settled while another identifier
    // of the component was left behind). The other order could leave the assignments done
    // and the rows not, with nothing to notice it.
    writes.statements.extend(replacing);
    let followup = (!writes.elsewhere.is_empty()).then(|| {
        let away: Vec<&String> = all.iter().filter(|i| db.index_of(i) != 0).collect();
        let json = serde_json::to_string(&away).unwrap_or_else(|_| "[]".into());
        let token = followup_token();
        let at = crate::platform::now_ms();
        writes
            .statements
            .push(Followup::Resolve.record(&json, at, &token));
        spread::followup_done(&token)
    });
    d1::execute(db, &writes.statements).await?;
    let runs = writes
        .elsewhere
        .iter()
        .map(|(database, plan)| d1::execute(db.at(*database), plan));
    for run in join_all(runs).await {
        run?;
    }
    Ok(Stored {
        resolved: Resolved::new(&partition, before, writes.merges, rules),
        followup_done: followup,
    })
}

/// A follow-up's key (`spread::Followup::record`): random, so no two share one.
pub fn followup_token() -> String {
    seam_core::format::encode::hex(&crate::platform::random_bytes::<16>())
}

/// Whether `identifier` has no assignment, or one an erasure is still to delete.
async fn erased(db: &Shards, identifier: &str) -> worker::Result<bool> {
    let asked = [identifier.to_owned()];
    if assignments(db, &asked).await?.is_empty() {
        return Ok(true);
    }
    let pending = Statement {
        sql: ERASURE_PENDING_SQL.into(),
        params: vec![Param::Text(identifier.to_owned())],
    };
    Ok(db.all().len() > 1 && !d1::rows::<Value>(db, &pending).await?.is_empty())
}

/// Moves `identifier`'s links from database `from` to its home: copies them there (merged with
/// any copy already home), then deletes in `from` exactly what was copied. False when more are
/// left than one move carries (`spread::LINKS_PER_MOVE`): the walk comes back for them. An
/// identifier erased while this ran (assigned before, not after) takes what arrived with it:
/// either this sees the erasure, or the erasure's second pass finds the arrived member row.
pub async fn settle_links(db: &Shards, identifier: &str, from: usize) -> worker::Result<bool> {
    let by_id = |sql: &str| Statement {
        sql: sql.into(),
        params: vec![Param::Text(identifier.to_owned())],
    };
    let was_assigned = !erased(db, identifier).await?;
    let rows = d1::rows::<LinkRow>(db.at(from), &by_id(spread::LINKS_OF_SQL)).await?;
    if rows.is_empty() {
        return Ok(true);
    }
    // (The assignment is read before the links: an erasure between the two reads would
    // otherwise look like an identifier never assigned.)
    let home = db.at(db.index_of(identifier));
    d1::execute(home, &spread::arrive(identifier, &rows)).await?;
    let keys: Vec<&str> = rows.iter().map(|r| r.set_key.as_str()).collect();
    if was_assigned && erased(db, identifier).await? {
        let ids = serde_json::to_string(&[identifier]).unwrap_or_else(|_| "[]".into());
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let undo: Vec<Statement> = spread::erase(&ids, &owned)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        d1::execute(home, &undo).await?;
    }
    d1::execute(db.at(from), &spread::leave(identifier, &keys)).await?;
    Ok(rows.len() < spread::LINKS_PER_MOVE)
}

/// Moves `identifier`'s assignment from database `from` to its home: writes it there under
/// the version guard, then deletes it in `from` as it was read. False when it changed in
/// `from` meanwhile (an older Worker's resolution during the deploy): the walk comes back.
/// An assignment erased in `from` meanwhile is deleted from the home again, when the home
/// still holds what this copied: an erasure must not be undone by a move.
pub async fn settle_assignment(
    db: &Shards,
    identifier: &str,
    from: usize,
    now_ms: i64,
) -> worker::Result<bool> {
    let read = Statement {
        sql: ASSIGNMENT_OF_SQL.into(),
        params: vec![Param::Text(identifier.to_owned())],
    };
    let Some(row) = d1::rows::<AssignmentRow>(db.at(from), &read)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(true);
    };
    let home = db.at(db.index_of(identifier));
    d1::execute(home, &[spread::arrive_assignment(&row, now_ms)]).await?;
    let left = d1::execute(db.at(from), &[spread::leave_assignment(&row)]).await?;
    if left
        .iter()
        .any(|r| r.results::<Value>().is_ok_and(|v| !v.is_empty()))
    {
        return Ok(true);
    }
    let now_there = d1::rows::<AssignmentRow>(db.at(from), &read).await?;
    if now_there.is_empty() {
        d1::execute(home, &[spread::leave_assignment(&row)]).await?;
        return Ok(true);
    }
    Ok(false)
}
