//! The profile read model: D1 is the truth; KV holds snapshots for the decision path.

use seam_core::collect::ingest_plan::view_reads;
use seam_core::format::time::format_iso8601;
use seam_core::identity::graph_plan::members_of;
use seam_core::identity::profile::{ProfileView, TraitRow};
use seam_core::identity::{IdType, Identifier};
use seam_core::personalise::refresh::Loaded;
use seam_core::personalise::ProfileState;
use seam_core::plan::{Param, Statement};
use seam_core::privacy::WITH_PERSON_EVENTS;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

use futures_util::future::join_all;
use worker::{D1Database, D1Result};

use crate::isolate;
use crate::store::shards::Shards;
use crate::store::{archived, d1, identity, personalisation};

#[derive(Deserialize)]
struct TraitRowDb {
    identifier: String,
    key: String,
    once: i64,
    value: String,
    timestamp: i64,
    message_key: String,
}

#[derive(Deserialize)]
struct IdentifierRow {
    identifier: String,
}

/// A row naming a profile.
#[derive(Deserialize)]
pub struct ProfileIdRow {
    /// The profile ID.
    pub profile_id: String,
}

/// Text forms of every identifier a profile holds now.
pub async fn identifier_texts(db: &D1Database, profile_id: &str) -> worker::Result<Vec<String>> {
    Ok(db
        .prepare(format!("{} ORDER BY identifier", members_of("?1")))
        .bind(&[profile_id.into()])?
        .all()
        .await?
        .results::<IdentifierRow>()?
        .into_iter()
        .map(|r| r.identifier)
        .collect())
}

/// The profile holding an identifier, if any.
pub async fn profile_for(db: &Shards, identifier: &Identifier) -> worker::Result<Option<String>> {
    let asked = [identifier.to_string()];
    Ok(identity::assignments(db, &asked)
        .await?
        .into_values()
        .next()
        .map(|r| r.profile_id))
}

/// Follows merge records from an absorbed profile ID to the one that holds its identifiers now.
pub async fn current_id(db: &D1Database, profile_id: &str) -> worker::Result<Option<String>> {
    let mut id = profile_id.to_owned();
    // Merge chains are short; the bound only guards against a cycle in corrupt data.
    for _ in 0..8 {
        let held = db
            .prepare("SELECT 1 AS one FROM profile_members WHERE profile_id = ?")
            .bind(&[id.as_str().into()])?
            .first::<Value>(None)
            .await?;
        if held.is_some() {
            return Ok(Some(id));
        }
        match db
            .prepare("SELECT into_profile AS profile_id FROM merges WHERE from_profile = ? ORDER BY merged_at DESC LIMIT 1")
            .bind(&[id.as_str().into()])?
            .first::<ProfileIdRow>(None)
            .await?
        {
            Some(next) => id = next.profile_id,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// The newest consent state recorded for any of a profile's identifiers.
pub async fn last_consent(db: &D1Database, profile_id: &str) -> worker::Result<Option<Value>> {
    #[derive(Deserialize)]
    struct Row {
        state: String,
    }
    Ok(db
        .prepare(format!(
            "SELECT c.state FROM ({}) i CROSS JOIN consent_history c \
             ON c.identifier = i.identifier ORDER BY c.timestamp DESC, c.identifier LIMIT 1",
            members_of("?1")
        ))
        .bind(&[profile_id.into()])?
        .first::<Row>(None)
        .await?
        // A state that does not parse stays text, which refuses personalisation (fail closed).
        .map(|r| serde_json::from_str(&r.state).unwrap_or(Value::String(r.state))))
}

/// A profile with its computed traits and segments as of `now_ms`.
pub async fn view(db: &Shards, profile_id: &str, now_ms: i64) -> worker::Result<ProfileView> {
    let (mut view, state) = view_and_state(db, profile_id).await?;
    fill_personalisation(&mut view, &state.0, now_ms);
    Ok(view)
}

/// Fills computed traits and segments from a stored personalisation state, evaluated at
/// `now_ms` (time-driven segments may have changed since the last event).
pub fn fill_personalisation(view: &mut ProfileView, state: &ProfileState, now_ms: i64) {
    if let Some(config) = isolate::config() {
        (view.computed_traits, view.segments) =
            personalisation::values(state, &view.traits, &config, now_ms);
    }
}

/// The identifiers and folded traits of a profile (no personalisation yet), with its stored
/// personalisation state and version: one round trip (two at once when its state lives in
/// another shard).
pub async fn view_and_state(db: &Shards, profile_id: &str) -> worker::Result<Loaded> {
    views_and_states(db, &[profile_id])
        .await?
        .pop()
        .ok_or_else(|| worker::Error::RustError("a read batch lost a result".into()))
}

/// Where a read went: (shard, position in its batch).
type Place = (usize, usize);

/// [`view_and_state`] for several profiles: one batch per database, run at once. `DB` reads
/// the identifiers and traits, each profile's shard its state.
pub async fn views_and_states(db: &Shards, profile_ids: &[&str]) -> worker::Result<Vec<Loaded>> {
    let mut plans: BTreeMap<usize, Vec<Statement>> = BTreeMap::new();
    // While the shard count changes, states in their previous shards are read first: a move
    // copies home before it deletes, so the home read after it cannot miss a row in between.
    let mut earlier: BTreeMap<usize, Vec<Statement>> = BTreeMap::new();
    // Per profile, where each of its reads went: (shard, position in its batch); the fourth
    // is its state in its previous shard (in `earlier`).
    let mut places: Vec<([Place; 3], Option<Place>)> = Vec::with_capacity(profile_ids.len());
    for id in profile_ids {
        let state_shard = db.index_of(id);
        let mut at = [(0, 0); 3];
        let mut previous = None;
        for (i, read) in view_reads("?1", id).into_iter().enumerate() {
            let shard = if i == 2 { state_shard } else { 0 };
            if let Some(old) = db.previous(id).filter(|_| i == 2) {
                let plan = earlier.entry(old).or_default();
                previous = Some((old, plan.len()));
                plan.push(read.clone());
            }
            let plan = plans.entry(shard).or_default();
            at[i] = (shard, plan.len());
            plan.push(read);
        }
        places.push((at, previous));
    }
    let earlier = run_plans(db, &earlier).await?;
    let results = run_plans(db, &plans).await?;
    fn read(done: &BTreeMap<usize, Vec<D1Result>>, (shard, i): Place) -> worker::Result<&D1Result> {
        done.get(&shard)
            .and_then(|r| r.get(i))
            .ok_or_else(|| worker::Error::RustError("a read batch lost a result".into()))
    }
    profile_ids
        .iter()
        .zip(places)
        .map(|(id, ([ids, traits, state], previous))| {
            let mut state = read(&results, state)?;
            if let Some(previous) = previous {
                // Not yet written in its new shard: the previous shard's row holds it.
                if state.results::<Value>()?.is_empty() {
                    state = read(&earlier, previous)?;
                }
            }
            loaded_of(id, read(&results, ids)?, read(&results, traits)?, state)
        })
        .collect()
}

/// Runs each shard's batch at once: results by shard.
async fn run_plans(
    db: &Shards,
    plans: &BTreeMap<usize, Vec<Statement>>,
) -> worker::Result<BTreeMap<usize, Vec<D1Result>>> {
    let runs = plans
        .iter()
        .map(|(shard, plan)| async move { (*shard, d1::execute(db.at(*shard), plan).await) });
    let mut done = BTreeMap::new();
    for (shard, results) in join_all(runs).await {
        done.insert(shard, results?);
    }
    Ok(done)
}

/// Reads the results of [`view_reads`] for `profile_id`, as one batch returned them.
pub fn loaded_from(results: &[D1Result], profile_id: &str) -> worker::Result<Loaded> {
    let [identifiers, traits, state] = results else {
        return Err(worker::Error::RustError(
            "a read batch lost a result".into(),
        ));
    };
    loaded_of(profile_id, identifiers, traits, state)
}

fn loaded_of(
    profile_id: &str,
    identifiers: &D1Result,
    traits: &D1Result,
    state: &D1Result,
) -> worker::Result<Loaded> {
    Ok(loaded(
        profile_id,
        identifiers.results::<IdentifierRow>()?,
        traits.results::<TraitRowDb>()?,
        state.results()?.into_iter().next(),
    ))
}

fn loaded(
    profile_id: &str,
    identifiers: Vec<IdentifierRow>,
    traits: Vec<TraitRowDb>,
    state: Option<personalisation::StateRow>,
) -> Loaded {
    let mut identifiers: Vec<Identifier> = identifiers
        .iter()
        .filter_map(|r| Identifier::parse(&r.identifier))
        .collect();
    identifiers.sort_by_key(|i| i.class() as usize);
    let rows: Vec<TraitRow> = traits
        .into_iter()
        .map(|r| TraitRow {
            identifier: r.identifier,
            key: r.key,
            value: serde_json::from_str(&r.value).unwrap_or(Value::Null),
            timestamp_ms: r.timestamp,
            message_key: r.message_key,
            once: r.once != 0,
        })
        .collect();
    let texts = identifiers.iter().map(ToString::to_string).collect();
    let state = personalisation::state_of(state);
    (ProfileView::new(profile_id, texts, &rows), state)
}

fn values_of<'a>(identifiers: &'a [String], kind: &'a IdType) -> Vec<String> {
    identifiers
        .iter()
        .filter_map(|t| Identifier::parse(t))
        .filter(|i| &i.kind == kind)
        .map(|i| i.value)
        .collect()
}

fn anonymous_values(identifiers: &[String]) -> Vec<String> {
    [IdType::AnonymousId, IdType::CookieId]
        .iter()
        .flat_map(|kind| values_of(identifiers, kind))
        .collect()
}

#[derive(Deserialize)]
struct Stats {
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    events: i64,
}

/// A row with the JSON text stored in `column` parsed back into JSON.
pub fn parse_json_column(mut row: Value, column: &str) -> Value {
    if let Some(text) = row.get(column).and_then(Value::as_str) {
        row[column] = serde_json::from_str(text).unwrap_or(Value::Null);
    }
    row
}

/// An event row with its stored `body` parsed.
pub fn parse_body(row: Value) -> Value {
    parse_json_column(row, "body")
}

/// Profiles one export page holds at most.
pub const EXPORT_PAGE: usize = 200;

/// A page of up to `limit` profiles after profile ID `after`, by ID, each with identifiers,
/// traits, computed traits and segments as of `now_ms`, in four reads; and the last ID when
/// there may be more.
pub async fn page(
    db: &Shards,
    after: &str,
    limit: usize,
    now_ms: i64,
) -> worker::Result<(Vec<Value>, Option<String>)> {
    let ids: Vec<String> = d1::rows::<ProfileIdRow>(
        db,
        &Statement {
            sql: "SELECT profile_id FROM profile_members WHERE profile_id > ?1 \
                  ORDER BY profile_id LIMIT ?2"
                .into(),
            params: vec![
                Param::Text(after.into()),
                Param::Int(limit.min(EXPORT_PAGE) as i64),
            ],
        },
    )
    .await?
    .into_iter()
    .map(|r| r.profile_id)
    .collect();
    let in_page = "(SELECT value FROM json_each(?1))";
    let of = |ids: &[&String], sql: String| Statement {
        sql,
        params: vec![Param::Text(json!(ids).to_string())],
    };
    let all: Vec<&String> = ids.iter().collect();
    let mut plans: BTreeMap<usize, Vec<Statement>> = BTreeMap::new();
    plans.insert(
        0,
        vec![
            of(
                &all,
                format!(
                    "SELECT p.profile_id, m.value AS identifier FROM profile_members p \
                     CROSS JOIN json_each(p.identifiers) m WHERE p.profile_id IN {in_page} \
                     ORDER BY p.profile_id, identifier"
                ),
            ),
            of(
                &all,
                format!(
                    "SELECT p.profile_id, t.identifier, t.key, t.once, t.value, t.timestamp, \
                     t.message_key FROM profile_members p CROSS JOIN json_each(p.identifiers) m \
                     CROSS JOIN trait_values t ON t.identifier = m.value \
                     WHERE p.profile_id IN {in_page}"
                ),
            ),
        ],
    );
    let states_sql = format!(
        "SELECT profile_id, state, version FROM profile_personalisation WHERE profile_id IN {in_page}"
    );
    // Each state read's place: (shard, position in its batch, whether it reads a previous
    // shard while the shard count changes: those rows count only where the home has none).
    let mut state_reads: Vec<(usize, usize, bool)> = Vec::new();
    let moving: Vec<(usize, &String)> = ids
        .iter()
        .filter_map(|id| Some((db.previous(id)?, id)))
        .collect();
    let homes = db.group(ids.iter(), |id| id.as_str());
    let previous = moving
        .into_iter()
        .fold(BTreeMap::new(), |mut by, (shard, id)| {
            by.entry(shard).or_insert_with(Vec::new).push(id);
            by
        });
    // Previous shards are read first (see `views_and_states`).
    let mut earlier: BTreeMap<usize, Vec<Statement>> = BTreeMap::new();
    for (is_previous, groups) in [(false, homes), (true, previous)] {
        for (shard, theirs) in groups {
            let plan = match is_previous {
                true => earlier.entry(shard).or_default(),
                false => plans.entry(shard).or_default(),
            };
            state_reads.push((shard, plan.len(), is_previous));
            plan.push(of(&theirs, states_sql.clone()));
        }
    }
    let earlier = run_plans(db, &earlier).await?;
    let done = run_plans(db, &plans).await?;
    let results = done.get(&0).map(Vec::as_slice).unwrap_or_default();
    #[derive(Deserialize)]
    struct Owned<T> {
        profile_id: String,
        #[serde(flatten)]
        row: T,
    }
    let mut identifiers: HashMap<String, Vec<IdentifierRow>> = HashMap::new();
    for r in results_of::<Owned<IdentifierRow>>(results, 0)? {
        identifiers.entry(r.profile_id).or_default().push(r.row);
    }
    let mut traits: HashMap<String, Vec<TraitRowDb>> = HashMap::new();
    for r in results_of::<Owned<TraitRowDb>>(results, 1)? {
        traits.entry(r.profile_id).or_default().push(r.row);
    }
    let mut states: HashMap<String, personalisation::StateRow> = HashMap::new();
    for (shard, i, is_previous) in state_reads {
        let results = match is_previous {
            true => &earlier,
            false => &done,
        };
        let results = results.get(&shard).map(Vec::as_slice).unwrap_or_default();
        for r in results_of::<Owned<personalisation::StateRow>>(results, i)? {
            // Home reads come first: a previous shard's row fills only a gap.
            if !is_previous || !states.contains_key(&r.profile_id) {
                states.insert(r.profile_id, r.row);
            }
        }
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let (mut view, state) = loaded(
            id,
            identifiers.remove(id).unwrap_or_default(),
            traits.remove(id).unwrap_or_default(),
            states.remove(id),
        );
        fill_personalisation(&mut view, &state.0, now_ms);
        out.push(serde_json::to_value(view)?);
    }
    let next = (ids.len() == limit.min(EXPORT_PAGE))
        .then(|| ids.last().cloned())
        .flatten();
    Ok((out, next))
}

fn results_of<T: serde::de::DeserializeOwned>(
    results: &[D1Result],
    i: usize,
) -> worker::Result<Vec<T>> {
    match results.get(i) {
        Some(r) => r.results::<T>(),
        None => Err(worker::Error::RustError(
            "a read batch lost a result".into(),
        )),
    }
}

/// A profile's memberships as the profile API lists them.
const MEMBERSHIPS_SQL: &str = "SELECT segment, entered_at AS enteredAt, exited_at AS exitedAt \
    FROM segment_memberships WHERE profile_id = ?1 ORDER BY entered_at DESC LIMIT 100";

/// Newest events, consent changes and deliveries the profile view lists.
const TIMELINE: i64 = 50;
/// Deliveries are looked up for this many of the newest events (and every journey message).
const DELIVERED_EVENTS: i64 = 200;

/// Everything the profile API returns: the view, recent events (including anonymous ones from
/// before a merge), consent changes, deliveries, merge history, refused merges, journeys and
/// segment memberships with their times, read in one round trip. Every read seeks an index, so
/// the cost grows with the person's own events, not with everyone's.
pub async fn full(
    db: &Shards,
    archive: Option<&worker::Bucket>,
    profile_id: &str,
    now_ms: i64,
) -> worker::Result<Value> {
    let mut view = view(db, profile_id, now_ms).await?;
    let text = |t: String| Param::Text(t);
    let person = |sql: String, extra: Vec<Param>| Statement {
        sql: format!("{WITH_PERSON_EVENTS}{sql}"),
        params: [
            vec![
                text("[]".into()),
                // The SDK's anonymous ID is its cookie ID: events carry either as anonymousId.
                text(json!(anonymous_values(&view.identifiers)).to_string()),
                text(json!(values_of(&view.identifiers, &IdType::UserId)).to_string()),
            ],
            extra,
        ]
        .concat(),
    };
    let by_profile = |sql: &str| Statement {
        sql: sql.into(),
        params: vec![text(profile_id.into())],
    };
    let mut reads = vec![
        person(
            "SELECT min(timestamp) AS first_seen, max(timestamp) AS last_seen, count(*) AS events \
             FROM mine"
                .into(),
            vec![],
        ),
        person(
            "SELECT e.source_id AS sourceId, e.message_id AS messageId, e.type, e.name, \
             e.timestamp, e.body \
             FROM (SELECT * FROM mine ORDER BY timestamp DESC LIMIT ?4) m CROSS JOIN events e \
             ON e.source_id = m.source_id AND e.message_id = m.message_id \
             ORDER BY m.timestamp DESC"
                .into(),
            vec![Param::Int(TIMELINE)],
        ),
        Statement {
            sql: "SELECT identifier, timestamp, source_id AS sourceId, message_key AS cause, state \
                  FROM consent_history WHERE identifier IN (SELECT value FROM json_each(?1)) \
                  ORDER BY timestamp DESC LIMIT ?2"
                .into(),
            params: vec![text(json!(view.identifiers).to_string()), Param::Int(TIMELINE)],
        },
        // The delivery log is keyed by destination first: each destination is one seek per
        // event, the destinations read by seeking the key once each.
        person(
            ", dests(name) AS (SELECT (SELECT min(destination) FROM deliveries) \
             UNION ALL SELECT (SELECT min(destination) FROM deliveries WHERE destination > dests.name) \
             FROM dests WHERE dests.name IS NOT NULL) \
             SELECT d.destination, d.source_id AS sourceId, d.message_id AS messageId, \
             (SELECT name FROM events x WHERE x.source_id = d.source_id AND x.message_id = d.message_id) AS about, \
             d.status, d.attempts, d.updated_at AS updatedAt, d.last_status AS lastStatus, \
             d.last_error AS lastError \
             FROM (SELECT * FROM mine ORDER BY timestamp DESC LIMIT ?5) m CROSS JOIN dests \
             CROSS JOIN deliveries d ON d.destination = dests.name \
             AND d.source_id = m.source_id AND d.message_id = m.message_id \
             UNION ALL SELECT d.destination, d.source_id, d.message_id, j.journey || ': ' || j.step, \
             d.status, d.attempts, d.updated_at, d.last_status, d.last_error \
             FROM journey_decisions j CROSS JOIN deliveries d ON d.destination = j.destination \
             AND d.source_id = '$journey' AND d.message_id = j.key \
             WHERE j.profile_id = ?4 AND j.outcome = 'sent' \
             ORDER BY updatedAt DESC LIMIT ?6"
                .into(),
            vec![
                text(profile_id.into()),
                Param::Int(DELIVERED_EVENTS),
                Param::Int(TIMELINE),
            ],
        ),
        by_profile(
            "SELECT from_profile AS \"from\", into_profile AS \"into\", message_key AS cause, merged_at AS mergedAt \
             FROM merges WHERE into_profile = ?1 OR from_profile = ?1 ORDER BY merged_at",
        ),
        by_profile(
            "SELECT message_key AS cause, refused, reason, refused_profile AS refusedProfile \
             FROM identity_conflicts WHERE profile_id = ? ORDER BY recorded_at LIMIT 50",
        ),
        by_profile(
            "SELECT journey, status, step, end_reason AS endReason, entered_at AS enteredAt, \
             next_at AS nextAt, control FROM journey_runs WHERE profile_id = ?1 \
             ORDER BY entered_at DESC LIMIT 20",
        ),
    ];
    let memberships = by_profile(MEMBERSHIPS_SQL);
    // Memberships live in the profile's shard: in the one batch when that is `DB`.
    let shard = db.index_of(profile_id);
    if shard == 0 {
        reads.push(memberships.clone());
    }
    let results = d1::execute(db, &reads).await?;
    let mut memberships = match shard {
        0 => d1::rows_at(&results, 7)?,
        _ => d1::rows::<Value>(db.at(shard), &memberships).await?,
    };
    if let Some(previous) = db.previous(profile_id) {
        // Rows not yet moved from the previous shard: the home's row of a segment wins.
        let old = d1::rows::<Value>(db.at(previous), &by_profile(MEMBERSHIPS_SQL)).await?;
        for row in old {
            if !memberships.iter().any(|m| m["segment"] == row["segment"]) {
                memberships.push(row);
            }
        }
        memberships.sort_by_key(|m| std::cmp::Reverse(m["enteredAt"].as_i64().unwrap_or(0)));
        memberships.truncate(100);
    }
    let rows = |i: usize| d1::rows_at(&results, i);
    let stats = results
        .first()
        .and_then(|r| r.results::<Stats>().ok())
        .and_then(|rows| rows.into_iter().next());
    let mut count = stats.as_ref().map_or(0, |s| s.events);
    let mut first_seen = stats.as_ref().and_then(|s| s.first_seen);
    let mut last_seen = stats.as_ref().and_then(|s| s.last_seen);
    // Older events only the archive holds: the newest of them, and they count.
    let (archived, _) = archived::person_events(
        db,
        archive,
        &anonymous_values(&view.identifiers).into_iter().collect(),
        &values_of(&view.identifiers, &IdType::UserId)
            .into_iter()
            .collect(),
        TIMELINE as usize,
        archived::TIMELINE_OBJECTS,
    )
    .await?;
    let hot: Vec<Value> = rows(1)?.into_iter().map(parse_body).collect();
    let hot_ids: std::collections::HashSet<(String, String)> =
        hot.iter().map(archived::event_key).collect();
    let mut cold: Vec<(Value, Value, Value)> = Vec::new();
    for event in &archived {
        // An object may hold a line D1 still has (compaction left its row for a destination).
        if hot_ids.contains(&archived::event_key(event)) {
            continue;
        }
        cold.push((
            event["sourceId"].clone(),
            event["messageId"].clone(),
            event["name"].clone(),
        ));
        count += 1;
        if let Some(t) = event["timestamp"].as_i64() {
            first_seen = Some(first_seen.map_or(t, |f| f.min(t)));
            last_seen = Some(last_seen.map_or(t, |l| l.max(t)));
        }
    }
    view.first_seen = first_seen.map(format_iso8601);
    view.last_seen = last_seen.map(format_iso8601);
    let mut out = serde_json::to_value(view)?;
    // D1's count covers the hot window; archived events are counted as far as read.
    out["eventCount"] = json!(count);
    out["recentEvents"] = Value::Array(archived::newest(hot, archived, TIMELINE as usize));
    out["consent"] = rows(2)?
        .into_iter()
        .map(|row| parse_json_column(row, "state"))
        .collect();
    let mut deliveries = rows(3)?;
    if !cold.is_empty() {
        // Deliveries of events that left D1: the log joins them through the hot rows only.
        let keys: Vec<Value> = cold.iter().map(|(s, m, _)| json!([s, m])).collect();
        let read = Statement {
            sql: "SELECT destination, source_id AS sourceId, message_id AS messageId, status, \
                  attempts, updated_at AS updatedAt, last_status AS lastStatus, \
                  last_error AS lastError FROM deliveries WHERE (source_id, message_id) IN \
                  (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))"
                .into(),
            params: vec![Param::Text(Value::Array(keys).to_string())],
        };
        for mut delivery in d1::rows::<Value>(db, &read).await? {
            let about = cold
                .iter()
                .find(|(s, m, _)| *s == delivery["sourceId"] && *m == delivery["messageId"])
                .map_or(Value::Null, |(_, _, name)| name.clone());
            delivery["about"] = about;
            deliveries.push(delivery);
        }
        deliveries.sort_by_key(|d| std::cmp::Reverse(d["updatedAt"].as_i64().unwrap_or(0)));
        deliveries.truncate(TIMELINE as usize);
    }
    out["deliveries"] = Value::Array(deliveries);
    out["merges"] = Value::Array(rows(4)?);
    out["refusedMerges"] = Value::Array(rows(5)?);
    out["journeys"] = Value::Array(rows(6)?);
    out["memberships"] = Value::Array(memberships);
    Ok(out)
}
