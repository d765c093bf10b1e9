//! Executes identity resolution on D1: load the touched components (one recursive query), load
//! their current assignments (one query), recompute the partition in core, write the changes
//! (one transaction, guarded by `seq`).

use std::collections::{HashMap, HashSet};

use seam_core::collect::event::{Event, EventType};
use seam_core::identity::graph_plan::{
    graph_writes, identifiers_param, parse_link, Assignment, LOAD_COMPONENT_SQL,
    LOAD_IDENTITIES_SQL,
};
use seam_core::identity::resolution::Resolved;
use seam_core::identity::{partition, Link, Rules};
use seam_core::plan::{Param, Statement};
use serde::Deserialize;
use worker::D1Database;

use crate::store::d1;

#[derive(Deserialize)]
struct LinkRow {
    set_key: String,
    seq: i64,
    timestamp: i64,
    message_key: String,
    identifiers: String,
    claimed: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AssignmentRow {
    identifier: String,
    profile_id: String,
    seq: i64,
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

/// Reads the probe's rows (see `graph_plan::probe_assignments`) into identifier -> profile.
pub fn probed(result: &worker::D1Result) -> worker::Result<HashMap<String, String>> {
    Ok(result
        .results::<AssignmentRow>()?
        .into_iter()
        .map(|r| (r.identifier, r.profile_id))
        .collect())
}

/// Recomputes and stores the partition of the components `links` touch.
pub async fn resolve(
    db: &D1Database,
    rules: &Rules,
    links: &[Link],
    now_ms: i64,
) -> worker::Result<Option<Resolved>> {
    let Some(cause) = links.last().map(|l| l.message_id.clone()) else {
        return Ok(None);
    };
    let seeds = identifiers_param(links.iter().flat_map(|l| &l.identifiers));
    let rows = db
        .prepare(LOAD_COMPONENT_SQL)
        .bind(&[seeds.into()])?
        .all()
        .await?
        .results::<LinkRow>()?;
    let stored: Vec<_> = rows
        .into_iter()
        .filter_map(|r| {
            parse_link(
                r.set_key,
                r.seq,
                r.timestamp,
                r.message_key,
                &r.identifiers,
                r.claimed.as_deref(),
            )
        })
        .collect();
    let seq = stored.iter().map(|l| l.seq).max().unwrap_or(0);
    let component: Vec<Link> = stored.into_iter().map(|l| l.link).collect();
    let partition = partition(&component, rules);

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
            seq: r.seq,
        })
        .collect();
    let writes = graph_writes(&partition, &before, seq, &cause, now_ms);
    d1::execute(db, &writes.statements).await?;
    Ok(Some(Resolved::new(&partition, before, writes.merges)))
}
