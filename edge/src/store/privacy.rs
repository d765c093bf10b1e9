//! Data-subject storage: who a person is across D1 and KV, erasure with counts, export, the
//! suppression list and the audit log.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use futures_util::future::join_all;
use seam_core::archive::spread as archive_spread;
use seam_core::collect::event::Event;
use seam_core::collect::ingest::Decoded;
use seam_core::identity::spread::{self, Followup};
use seam_core::identity::{claims_of, identifiers_of, mentioned_identifiers, Identifier, Rules};
use seam_core::plan::{Param, Statement};
use seam_core::privacy::{
    archive_people, erase, erase_state, profile_rows_erased, suppression_candidates,
    suppression_key, suppression_probe, Subject, WITH_PERSON_EVENTS,
};
use serde::Deserialize;
use serde_json::{json, Value};
use worker::{D1Database, Env};

use crate::error::ApiError;
use crate::isolate;
use crate::store::shards::Shards;
use crate::store::{archive_index, archived, d1, identity, profiles, sources};

#[derive(Deserialize)]
struct KeyRow {
    key: String,
}

/// Most suppression keys an isolate holds (a 64-hex-digit key is about 130 bytes in the set:
/// some 2.6 MB). Past that, each request asks D1 about its own events' keys instead.
const MAX_HELD_SUPPRESSIONS: usize = 20_000;

/// The suppressed keys among those `decoded`'s events name: this isolate's copy of the whole
/// list when fresh and small enough to hold, else D1's answer for the request's own keys.
pub async fn suppressed_keys(
    db: &D1Database,
    decoded: &Decoded,
    rules: &Rules,
    now_ms: i64,
) -> worker::Result<Rc<HashSet<String>>> {
    match isolate::suppressions(now_ms) {
        Some(Some(keys)) => return Ok(keys),
        Some(None) => return probe(db, decoded, rules).await,
        None => {}
    }
    let keys: HashSet<String> = db
        .prepare("SELECT key FROM suppressions LIMIT ?1")
        .bind(&[((MAX_HELD_SUPPRESSIONS + 1) as f64).into()])?
        .all()
        .await?
        .results::<KeyRow>()?
        .into_iter()
        .map(|r| r.key)
        .collect();
    if keys.len() > MAX_HELD_SUPPRESSIONS {
        isolate::keep_suppressions(now_ms, None);
        return probe(db, decoded, rules).await;
    }
    let keys = Rc::new(keys);
    isolate::keep_suppressions(now_ms, Some(keys.clone()));
    Ok(keys)
}

async fn probe(
    db: &D1Database,
    decoded: &Decoded,
    rules: &Rules,
) -> worker::Result<Rc<HashSet<String>>> {
    let keys = suppression_candidates(decoded, rules);
    if keys.is_empty() {
        return Ok(Rc::default());
    }
    let result = d1::execute(db, &[suppression_probe(&keys)]).await?;
    match result.first() {
        Some(found) => Ok(Rc::new(probed_keys(found)?)),
        None => Ok(Rc::default()),
    }
}

/// Whether any of `identifiers` is suppressed (asked D1: a journey decides rarely and must not
/// act on a stale copy of the list).
pub async fn any_suppressed(db: &D1Database, identifiers: &[Identifier]) -> worker::Result<bool> {
    let keys: Vec<String> = identifiers.iter().map(suppression_key).collect();
    if keys.is_empty() {
        return Ok(false);
    }
    let found: Vec<KeyRow> = d1::rows(db, &suppression_probe(&keys)).await?;
    Ok(!found.is_empty())
}

/// The keys a [`seam_core::privacy::suppression_probe`] found.
pub fn probed_keys(result: &worker::D1Result) -> worker::Result<HashSet<String>> {
    Ok(result
        .results::<KeyRow>()?
        .into_iter()
        .map(|r| r.key)
        .collect())
}

/// Undoes a request's writes for events that carried an identifier suppressed while the request
/// ran (the isolate's cached list was stale): erases the suppressed identifiers and what those
/// events prove (never a profile they merely claim).
pub async fn undo_suppressed(
    env: &Env,
    db: &Shards,
    events: &[&Event],
    rules: &Rules,
    late: &HashSet<String>,
    now_ms: i64,
) -> Result<(), ApiError> {
    let mut subject = Subject::default();
    for event in events {
        let hits: Vec<Identifier> = mentioned_identifiers(event, rules)
            .into_iter()
            .filter(|i| late.contains(&suppression_key(i)))
            .collect();
        if hits.is_empty() {
            continue;
        }
        // What the event proves, not the device ID a browser only claims: that may be someone
        // else's, and its profile is theirs.
        let proven = identifiers_of(event, rules);
        let claimed = claims_of(event, &proven);
        let mut identifiers: Vec<Identifier> = proven
            .into_iter()
            .filter(|i| !claimed.contains(i))
            .collect();
        identifiers.extend(hits);
        for identifier in identifiers {
            let (found, _) = subject_of(db, &identifier).await?;
            subject.identifiers.extend(found.identifiers);
            subject.profile_ids.extend(found.profile_ids);
        }
    }
    if subject.identifiers.is_empty() {
        return Ok(());
    }
    let sources = sources::all_ids(env, &*sources::configured(env)?).await?;
    erase_subject(env, db, &subject, &sources, Vec::new(), now_ms).await?;
    Ok(())
}

/// Everything that identifies the person holding `identifier`: every identifier of its profile
/// and every profile ID it held (the current one and those merged into it), plus the current
/// profile ID. Just the identifier when no profile holds it.
pub async fn subject_of(
    db: &Shards,
    identifier: &Identifier,
) -> worker::Result<(Subject, Option<String>)> {
    let mut subject = Subject::default();
    subject.identifiers.insert(identifier.to_string());
    let Some(assigned) = profiles::profile_for(db, identifier).await? else {
        return Ok((subject, None));
    };
    // With profile shards an assignment can name the profile its identifier left, for the
    // moments a resolution failing part way takes to be redone: the merge records lead on.
    let profile_id = profiles::current_id(db, &assigned)
        .await?
        .unwrap_or(assigned);
    subject
        .identifiers
        .extend(profiles::identifier_texts(db, &profile_id).await?);
    subject.profile_ids.extend(
        db.prepare(
            "WITH RECURSIVE held(profile_id) AS (SELECT ?1 UNION \
             SELECT m.from_profile FROM merges m JOIN held h ON m.into_profile = h.profile_id) \
             SELECT profile_id FROM held LIMIT 1000",
        )
        .bind(&[profile_id.as_str().into()])?
        .all()
        .await?
        .results::<profiles::ProfileIdRow>()?
        .into_iter()
        .map(|r| r.profile_id),
    );
    Ok((subject, Some(profile_id)))
}

/// Deletes `subject` from D1 (one transaction in `DB`, together with `extra` statements such
/// as suppression and audit rows, after the state in other shards: [`run_erasure`]) and then
/// from KV. Returns rows changed per name (summed when a name repeats), KV keys included.
pub async fn erase_subject(
    env: &Env,
    db: &Shards,
    subject: &Subject,
    source_ids: &[String],
    extra: Vec<(&'static str, Statement)>,
    now_ms: i64,
) -> worker::Result<BTreeMap<&'static str, usize>> {
    let mut named = erase(subject, source_ids, now_ms);
    named.extend(extra);
    let mut counts = run_erasure(db, subject, named, Suppressed::Yes).await?;
    counts.insert("kvKeys", delete_kv(env, &subject.kv_keys()).await);
    Ok(counts)
}

/// Runs an erasure plan of `DB` (`named`) with the subject's personalisation state and
/// evidence ([`erase_state`]) in each profile's shard (and, while the shard count changes, its
/// previous shard), and with profile shards the copies of the subject's links in every
/// database (`spread::erase`). The other shards go first: if `DB`'s transaction then fails, the subject is
/// still found there (its rows in `DB`, its assignments in the shards, which go only after
/// `DB` committed) and the erasure runs again whole. `DB`'s transaction takes every profile's
/// state: shard 0's, and evidence `DB` held before it moved to the shards.
/// After it commits, the other shards are cleared once more: a refresh that ran in between
/// (before the suppression committed) may have written a state there again. Rows changed per
/// name, summed over the shards.
pub async fn run_erasure(
    db: &Shards,
    subject: &Subject,
    mut named: Vec<(&'static str, Statement)>,
    suppressed: Suppressed,
) -> worker::Result<BTreeMap<&'static str, usize>> {
    let mut places: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
    for profile in &subject.profile_ids {
        for shard in std::iter::once(db.index_of(profile)).chain(db.previous(profile)) {
            places.entry(shard).or_default().push(profile);
        }
    }
    places.remove(&0);
    let mut done = Counted::default();
    // With profile shards, links are copied where each of their identifiers lives: the
    // subject's links are found by their member rows, in every database, then erased by set
    // key wherever a copy is (another person's database holds no member row of the subject).
    // Every copy goes before any member row: a retry after a failure part way finds every key
    // again from the member rows left.
    let spread = db.all().len() > 1;
    let ids = serde_json::to_string(&subject.identifiers).unwrap_or_else(|_| "[]".into());
    let keys = if spread {
        let keys = subject_links(db, &ids).await?;
        for shard in db.all() {
            done.add(run_keyed(shard, &spread::erase_copies(&ids, &keys)).await?);
        }
        keys
    } else {
        Vec::new()
    };
    for shard in 1..db.all().len() {
        let mut plan = spread::erase_members(&ids, &keys);
        if let Some(profiles) = places.get(&shard) {
            plan.extend(erase_state(profiles.iter().copied()));
        }
        done.add(run_keyed(db.at(shard), &plan).await?);
    }
    named.extend(erase_state(&subject.profile_ids));
    // The subject's assignments in the shards go after `DB` commits (a retry must still find
    // the person through them); `DB`'s transaction records that they are still to go.
    let at = crate::platform::now_ms();
    let token = identity::followup_token();
    if spread {
        named.extend(spread::erase(&ids, &keys));
        named.push((FOLLOWUP, Followup::Erase.record(&ids, at, &token)));
        // The rows of profiles the shards' assignments name beyond the subject's own (a row
        // and an assignment can disagree until a resolution failing part way is redone).
        let held = identity::assignments(db, &ids_of(subject)).await?;
        let others: BTreeSet<&String> = held
            .values()
            .map(|a| &a.profile_id)
            .filter(|p| !subject.profile_ids.contains(*p))
            .collect();
        if !others.is_empty() {
            let others = serde_json::to_string(&others).unwrap_or_else(|_| "[]".into());
            let rows = profile_rows_erased(&Param::Text(ids.clone()), &Param::Text(others));
            named.extend(rows);
        }
    }
    // The archive's index in the shards: tombstoned there and read before `DB`'s batch notes
    // the objects it names, deleted once that batch committed (`store::archive_index`).
    let people = archive_people(subject, suppressed == Suppressed::Yes);
    let found = archive_index::erase_first(db, &people, at).await?;
    let noted = archive_spread::note_rewrites(&found, at);
    named.extend(noted.into_iter().map(|s| ("archiveObjects", s)));
    done.add(run_keyed(db, &named).await?);
    done.counts.remove(FOLLOWUP);
    archive_index::erase_last(db, &people).await;
    // `DB` has committed: the receipt stands, and a failure from here is only logged. The
    // other shards are cleared once more: a refresh that ran in between (before the
    // suppression committed) may have written a state there again, and an ingest that passed
    // the suppression check before it committed may have written links since the keys were
    // read (its own batch in `DB` committed first, or it would have undone itself).
    if spread && suppressed == Suppressed::Yes {
        match erase_links(db, &ids).await {
            Ok(changed) => done.add(changed),
            Err(e) => worker::console_error!("erasure's second pass over the links failed: {e}"),
        }
    }
    for (shard, profiles) in &places {
        match run_keyed(db.at(*shard), &erase_state(profiles.iter().copied())).await {
            Ok(changed) => done.add(changed),
            Err(e) => {
                worker::console_error!("erasure's second pass in a profile shard failed: {e}")
            }
        }
    }
    // Last, after the links' second pass: a resolution that loaded the links before they
    // went may have written the assignments since.
    if spread {
        match finish_assignments(db, &ids, &token).await {
            Ok(deleted) => *done.counts.entry("identities").or_default() += deleted,
            Err(e) => worker::console_error!(
                "erasure's assignments in the shards: {e} (the sweep finishes them)"
            ),
        }
    }
    Ok(done.totals())
}

/// Whether an erasure puts the person on the suppression list (a deletion asked for does;
/// retention's erasure of inactive visitors does not). Only then do the links get a second
/// pass: without a suppression, links written after `DB` committed can be a returning
/// visitor's own (mid-resolution, so not even assigned yet), and a pass would redact them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// With the suppression in the same transaction.
    Yes,
    /// Without.
    No,
}

/// The links of `identifiers` (a JSON array) erased in every database, keys read afresh.
async fn erase_links(db: &Shards, identifiers: &str) -> worker::Result<Counted> {
    let keys = subject_links(db, identifiers).await?;
    let mut done = Counted::default();
    for shard in db.all() {
        done.add(run_keyed(shard, &spread::erase(identifiers, &keys)).await?);
    }
    Ok(done)
}

/// The name of an erasure's follow-up record in its plan (not counted in the receipt).
const FOLLOWUP: &str = "followup";

/// Deletes the assignments of `identifiers` (a JSON array) in every database (a move may have
/// copied one into `DB` since its transaction), then the follow-up that transaction recorded
/// under `token` ([`Followup::Erase`]): rows deleted.
pub async fn finish_assignments(
    db: &Shards,
    identifiers: &str,
    token: &str,
) -> worker::Result<usize> {
    let erase = [spread::erase_assignments(identifiers)];
    let runs = db.all().iter().map(|shard| d1::execute(shard, &erase));
    let mut deleted = 0;
    for results in join_all(runs).await {
        deleted += results?
            .first()
            .and_then(|r| r.meta().ok().flatten())
            .and_then(|m| m.changes)
            .unwrap_or(0);
    }
    d1::execute(db, &[spread::followup_done(token)]).await?;
    Ok(deleted)
}

fn ids_of(subject: &Subject) -> Vec<String> {
    subject.identifiers.iter().cloned().collect()
}

/// The set keys of `identifiers`' links (a JSON array), read in every database.
async fn subject_links(db: &Shards, identifiers: &str) -> worker::Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Row {
        set_key: String,
    }
    let read = Statement {
        sql: spread::MEMBER_LINKS_SQL.into(),
        params: vec![Param::Text(identifiers.to_owned())],
    };
    let mut keys = BTreeSet::new();
    for rows in join_all(db.all().iter().map(|d| d1::rows::<Row>(d, &read))).await {
        keys.extend(rows?.into_iter().map(|r| r.set_key));
    }
    Ok(keys.into_iter().collect())
}

/// What plans changed: rows per name, and the set keys of the statements that return them
/// (links, counted once over their copies).
#[derive(Default)]
struct Counted {
    counts: BTreeMap<&'static str, usize>,
    keys: BTreeMap<&'static str, BTreeSet<String>>,
}

impl Counted {
    fn add(&mut self, other: Counted) {
        for (what, n) in other.counts {
            *self.counts.entry(what).or_default() += n;
        }
        for (what, keys) in other.keys {
            self.keys.entry(what).or_default().extend(keys);
        }
    }

    fn totals(mut self) -> BTreeMap<&'static str, usize> {
        for (what, keys) in self.keys {
            *self.counts.entry(what).or_default() += keys.len();
        }
        self.counts
    }
}

/// Runs named statements as one transaction; rows changed per name (summed when a name repeats).
pub async fn run_counted(
    db: &D1Database,
    named: &[(&'static str, Statement)],
) -> worker::Result<BTreeMap<&'static str, usize>> {
    Ok(run_keyed(db, named).await?.totals())
}

async fn run_keyed(
    db: &D1Database,
    named: &[(&'static str, Statement)],
) -> worker::Result<Counted> {
    #[derive(Deserialize)]
    struct Row {
        set_key: String,
    }
    let plan: Vec<Statement> = named.iter().map(|(_, s)| s.clone()).collect();
    let results = d1::execute(db, &plan).await?;
    let mut done = Counted::default();
    for ((what, statement), result) in named.iter().zip(&results) {
        if statement.sql.ends_with(" RETURNING set_key") {
            let rows = result.results::<Row>()?.into_iter().map(|r| r.set_key);
            done.keys.entry(*what).or_default().extend(rows);
            continue;
        }
        // A statement with RETURNING is counted by its rows: `changes` includes trigger writes.
        let changes = if statement.sql.contains(" RETURNING ") {
            result.results::<Value>()?.len()
        } else {
            result.meta()?.and_then(|m| m.changes).unwrap_or(0)
        };
        *done.counts.entry(*what).or_default() += changes;
    }
    Ok(done)
}

/// Deletes KV keys; returns how many existed. A KV failure is logged: D1 (the truth) is already
/// clean and the snapshots would point at nothing.
async fn delete_kv(env: &Env, keys: &[String]) -> usize {
    let Ok(kv) = env.kv("CACHE") else {
        return 0;
    };
    let mut existed = 0;
    for key in keys {
        if matches!(kv.get(key).text().await, Ok(Some(_))) {
            existed += 1;
        }
        if let Err(e) = kv.delete(key).await {
            worker::console_error!("kv delete failed: {e}");
        }
    }
    existed
}

/// Everything stored about `subject`, for handing to the person: profile (identifiers, traits,
/// merge history), every event (up to `max_events`, newest first), consent history, and whether
/// processing is suppressed.
pub async fn export(
    db: &Shards,
    archive: Option<&worker::Bucket>,
    subject: &Subject,
    profile_id: Option<&str>,
    source_ids: &[String],
    max_events: usize,
    now_ms: i64,
) -> worker::Result<Value> {
    let profile = match profile_id {
        Some(id) => Some(profiles::full(db, archive, id, now_ms).await?),
        None => None,
    };
    let list = |items: Vec<String>| serde_json::to_string(&items).unwrap_or_else(|_| "[]".into());
    let events: Vec<Value> = db
        .prepare(format!(
            "{WITH_PERSON_EVENTS}SELECT e.source_id AS sourceId, e.message_id AS messageId, type, \
             name, e.timestamp, received_at AS receivedAt, body FROM mine CROSS JOIN events e \
             ON e.source_id = mine.source_id AND e.message_id = mine.message_id \
             ORDER BY mine.timestamp DESC LIMIT ?4"
        ))
        .bind(&[
            list(source_ids.to_vec()).into(),
            list(subject.anonymous_values().into_iter().collect()).into(),
            list(subject.user_values().into_iter().collect()).into(),
            (max_events as f64).into(),
        ])?
        .all()
        .await?
        .results::<Value>()?
        .into_iter()
        .map(profiles::parse_body)
        .collect();
    // Events compacted out of D1 are in the archive: the person gets those too.
    let (archived, more) = archived::person_events(
        db,
        archive,
        &subject.anonymous_values(),
        &subject.user_values(),
        max_events,
        archived::EXPORT_OBJECTS,
    )
    .await?;
    let events = archived::newest(events, archived, max_events);
    let truncated = more || events.len() >= max_events;
    let consent: Vec<Value> = db
        .prepare(
            "SELECT identifier, timestamp, source_id AS sourceId, message_key AS cause, state \
             FROM consent_history WHERE identifier IN (SELECT value FROM json_each(?)) ORDER BY timestamp",
        )
        .bind(&[list(subject.identifiers.iter().cloned().collect()).into()])?
        .all()
        .await?
        .results::<Value>()?
        .into_iter()
        .map(|row| profiles::parse_json_column(row, "state"))
        .collect();
    let keys: Vec<String> = subject
        .suppression_keys()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let suppressed = !db
        .prepare(
            "SELECT key FROM suppressions WHERE key IN (SELECT value FROM json_each(?)) LIMIT 1",
        )
        .bind(&[list(keys).into()])?
        .all()
        .await?
        .results::<Value>()?
        .is_empty();
    let found = profile.is_some() || !events.is_empty() || !consent.is_empty();
    Ok(json!({
        "found": found,
        "identifiers": if found { json!(subject.identifiers) } else { json!([]) },
        "profile": profile,
        "events": events,
        "eventsTruncated": truncated,
        "consentHistory": consent,
        "suppressed": suppressed,
    }))
}
