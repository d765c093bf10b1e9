//! Executes identity resolution on D1: load the touched components (one recursive query, or
//! with profile shards a walk over the databases: `identity::spread`), load their current
//! assignments (one query), recompute the partition in core, write the changes and the
//! profiles' rows (one transaction in `DB`, guarded by the links' version).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures_util::future::join_all;
use seam_core::collect::event::{Event, EventType};
use seam_core::collect::ingest_plan::Assigned;
use seam_core::identity::graph_plan::{
    graph_writes, identifiers_param, link_seqs, set_key, Assignment, Resolution, StoredLink,
    Version, LOAD_COMPONENT_SQL, LOAD_IDENTITIES_SQL, MAX_COMPONENT_LINKS,
};
use seam_core::identity::resolution::Resolved;
use seam_core::identity::spread::{self, ComponentWalk, LinkRow, Places};
use seam_core::identity::{partition, Identifier, Link, Rules};
use seam_core::personalise::shard::WALK_DONE;
use seam_core::plan::{Param, Statement};
use seam_core::privacy::retention::walk_cursor;
use serde::Deserialize;
use serde_json::Value;
use worker::D1Database;

use crate::isolate;
use crate::store::d1;
use crate::store::shards::Shards;

#[derive(Deserialize)]
pub(crate) struct AssignmentRow {
    identifier: String,
    profile_id: String,
    seq: i64,
    #[serde(default)]
    seq_sum: i64,
}

/// An `alias` whose `previousId` is neither a UUID nor the event's `anonymousId` is read by core
/// as a previous *user* ID. When the graph already knows that value as an anonymous ID (a server
/// library aliasing a visitor at sign-up), the event's link copy gets it as `anonymousId` so it
/// merges as intended. The stored event is untouched. Returns the hinted copies by index. One
/// query for the whole request, however many aliases it carries (D1 caps queries per
/// invocation).
pub async fn alias_hints(
    db: &D1Database,
    events: &[&Event],
) -> worker::Result<HashMap<usize, Event>> {
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
    let statement = Statement {
        sql: "SELECT identifier FROM identities WHERE identifier IN (SELECT value FROM json_each(?1))"
            .into(),
        params: vec![Param::Text(serde_json::to_string(&asked).unwrap_or_default())],
    };
    let known: HashSet<String> = d1::rows::<IdentifierRow>(db, &statement)
        .await?
        .into_iter()
        .map(|r| r.identifier)
        .collect();
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

#[derive(Deserialize)]
struct IdentifierRow {
    identifier: String,
}

/// Reads the probe's rows (see `graph_plan::probe_assignments`) into identifier -> assignment.
pub fn probed(result: &worker::D1Result) -> worker::Result<HashMap<String, Assigned>> {
    Ok(result
        .results::<AssignmentRow>()?
        .into_iter()
        .map(|r| {
            let assigned = Assigned {
                profile_id: r.profile_id,
                seq: r.seq,
            };
            (r.identifier, assigned)
        })
        .collect())
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
}

/// Writes link copies that live outside `DB` (`graph_plan::link_copies` by database; `DB`'s
/// share is left out, it goes in the request's batch), each database's in one batch that ends
/// by reading the `seq`s the links have there.
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
            async move { d1::execute(db.at(*database), &plan).await }
        });
    let mut written = Written::default();
    for results in join_all(writes).await {
        let mut results = results?;
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

/// Where `identifier`'s links may be: its home, its previous home while the shard count
/// changes, and `DB` while `DB` still holds links of other shards' identifiers (written before
/// they moved to the shards, 2026-12-07, until `jobs::reshard` took them home).
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

/// Whether `DB` may still hold links of other shards' identifiers: until the walks taking
/// them home are done ([`spread::LINKS_HOME_AGAIN`]). Read at most once a minute per isolate,
/// also once known done: deleting the walk's position (after a rollback) makes every isolate
/// read `DB` again within a minute. A failed read counts as "may": reading `DB` costs a query,
/// not reading it could miss a link.
async fn links_in_db(db: &Shards) -> bool {
    let now_ms = crate::platform::now_ms();
    if let Some(held) = isolate::links_in_db(now_ms) {
        return held;
    }
    let read = walk_cursor(spread::LINKS_HOME_AGAIN);
    match d1::rows::<Cursor>(db, &read).await {
        Ok(rows) => {
            let held = rows.first().is_none_or(|c| c.after != WALK_DONE);
            isolate::found_links_in_db(held, now_ms);
            held
        }
        Err(e) => {
            worker::console_error!("reading where DB's links stand failed: {e}");
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
    let legacy = links_in_db(db).await;
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

/// Recomputes and stores the partition of the components `links` touch.
pub async fn resolve(
    db: &Shards,
    rules: &Rules,
    links: &[Link],
    seqs: &HashMap<String, i64>,
    now_ms: i64,
) -> worker::Result<Option<Resolved>> {
    let Some(cause) = links.last().map(|l| l.message_id.clone()) else {
        return Ok(None);
    };
    let seeds = identifiers_param(links.iter().flat_map(|l| &l.identifiers));
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

    let all = identifiers_param(partition.profiles.iter().flat_map(|p| &p.identifiers));
    let before: Vec<Assignment> = db
        .prepare(LOAD_IDENTITIES_SQL)
        .bind(&[all.into()])?
        .all()
        .await?
        .results::<AssignmentRow>()?
        .into_iter()
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
    };
    let writes = graph_writes(&partition, &before, &versions, resolution);
    d1::execute(db, &writes.statements).await?;
    Ok(Some(Resolved::new(
        &partition,
        before,
        writes.merges,
        rules,
    )))
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
    let assigned = by_id("SELECT 1 AS one FROM identities WHERE identifier = ?1");
    let was_assigned = !d1::rows::<Value>(db, &assigned).await?.is_empty();
    let rows = d1::rows::<LinkRow>(db.at(from), &by_id(spread::LINKS_OF_SQL)).await?;
    if rows.is_empty() {
        return Ok(true);
    }
    // (The assignment is read before the links: an erasure between the two reads would
    // otherwise look like an identifier never assigned.)
    let home = db.at(db.index_of(identifier));
    d1::execute(home, &spread::arrive(identifier, &rows)).await?;
    let keys: Vec<&str> = rows.iter().map(|r| r.set_key.as_str()).collect();
    if was_assigned && d1::rows::<Value>(db, &assigned).await?.is_empty() {
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
