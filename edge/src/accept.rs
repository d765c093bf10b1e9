//! Accepting decoded events, for the Tracking API (`routes::ingest`) and the provider webhooks
//! (`routes::hooks`): consent records, PII hashing, the suppression list, identity stitching,
//! the events with their deliveries in one D1 batch, then the profile refreshes after the
//! response.

use std::collections::{BTreeSet, HashMap, HashSet};

use seam_core::activate::deliver;
use seam_core::archive;
use seam_core::collect::deferred;
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::ingest::{Decoded, EventResult};
use seam_core::collect::ingest_plan::{settled_profiles, IngestInput, IngestPlan, Placed};
use seam_core::collect::source::Source;
use seam_core::identity::graph_plan::{contributions, link_copies, seq_floor};
use seam_core::identity::spread::AssignmentRow;
use seam_core::identity::{Identifier, Link, Rules};
use seam_core::personalise::refresh::{self, snapshot_changes, Committed, Loaded, SnapshotWrites};
use seam_core::plan::Statement;
use seam_core::privacy::{
    apply_suppressions, consent_records, hash_pii_fields, suppression_key, ConsentRecord,
};
use serde_json::Value;
use worker::{Context, D1Result, Env};

use crate::error::ApiError;
use crate::platform::{now_ms, Spans};
use crate::store::identity::Written;
use crate::store::shards::Shards;
use crate::{isolate, jobs, settings, store};

/// What became of a request's events.
pub struct Accepted {
    /// The per-event results.
    pub results: Vec<EventResult>,
    /// The profile the request's best identifier belongs to now, when it has one.
    pub profile_id: Option<String>,
    /// Where the time went.
    pub spans: Spans,
}

/// A request's events made ready to store: their consent records, then the events enriched
/// with the request's facts and their PII hashed. Several requests' can be stored as one
/// ([`Prepared::join`]).
pub struct Prepared {
    decoded: Decoded,
    consent: Vec<ConsentRecord>,
}

impl Prepared {
    /// `decoded`'s events from `source`, with the facts of the request they came in.
    pub fn new(source: &Source, decoded: Decoded, facts: &RequestFacts, rules: &Rules) -> Self {
        // Consent is recorded from the events as sent (bound to the browser's cookie): a
        // withdrawal must be on record even though the policy strips the event's identifiers.
        let decoded = decoded.bind_cookie(facts, source);
        let consent = consent_records(
            &decoded.valid().collect::<Vec<_>>(),
            &source.id,
            rules,
            facts.gpc,
            !source.is_trusted(),
        );
        let decoded = hash_pii_fields(decoded.enrich(facts, source), rules);
        Prepared { decoded, consent }
    }

    /// Several requests of one source as one, in order (see [`deferred::merge`]).
    pub fn join(parts: Vec<Prepared>) -> Self {
        let mut consent = Vec::new();
        let mut decoded = Vec::new();
        for part in parts {
            consent.extend(part.consent);
            decoded.push(part.decoded);
        }
        Prepared {
            decoded: deferred::merge(decoded),
            consent,
        }
    }
}

/// Accepts `decoded`'s valid events from `source`, received at `received_at` with `facts`.
pub async fn accept(
    env: &Env,
    ctx: &Context,
    source: &Source,
    decoded: Decoded,
    facts: &RequestFacts,
    received_at: i64,
) -> Result<Accepted, ApiError> {
    let rules = settings::identity_rules(env)?;
    let prepared = Prepared::new(source, decoded, facts, &rules);
    accept_prepared(env, ctx, source, prepared, &rules, received_at).await
}

/// Stores prepared events from `source`, the newest of them received at `received_at`.
pub async fn accept_prepared(
    env: &Env,
    ctx: &Context,
    source: &Source,
    prepared: Prepared,
    rules: &Rules,
    received_at: i64,
) -> Result<Accepted, ApiError> {
    let _storing = isolate::storing();
    let mut spans = Spans::start();
    let db = Shards::of(env)?;
    let Prepared { decoded, consent } = prepared;
    let suppressed = store::privacy::suppressed_keys(&db, &decoded, rules, received_at).await?;
    spans.mark("suppressions");
    let decoded = if suppressed.is_empty() {
        decoded
    } else {
        apply_suppressions(decoded, rules, |k| suppressed.contains(k)).0
    };
    let valid: Vec<_> = decoded.valid().collect();
    let hinted = store::identity::alias_hints(&db, &valid).await?;
    spans.mark("hints");
    let linked: Vec<_> = valid
        .iter()
        .enumerate()
        .map(|(i, e)| hinted.get(&i).unwrap_or(e))
        .collect();
    let graph = contributions(&linked, &source.id, rules);
    let consent: Vec<_> = consent
        .into_iter()
        .filter(|r| !is_suppressed(&r.identifier, &suppressed))
        .collect();
    let config = isolate::config();
    if !isolate::destinations_loaded() {
        // The destinations could not be read: storing events without their deliveries would
        // lose them for every destination. The client retries.
        return Err(ApiError::Storage("destinations not loaded".into()));
    }
    // With profile shards, the links other databases hold are written first: an event is
    // never stored without its links. A failure here or in `DB`'s batch fails the request and
    // the client retries: its links are upserts, and a link whose resolution never ran is
    // resolved then (`settled_profiles`).
    let floor = seq_floor(now_ms());
    let mut copies = link_copies(&graph.links, floor, |i| db.index_of(&i.to_string()));
    let links_here = copies.remove(&0).unwrap_or_default();
    let links_elsewhere = store::identity::write_links(&db, &copies, &graph.links).await?;
    // With profile shards, each identifier's assignment lives in its home, probed there with
    // its links; `DB` probes its own, and every identifier while it may still hold other
    // shards' (until the walk took them home).
    let sharded = db.all().len() > 1;
    let legacy = sharded && store::identity::assignments_in_db(&db).await;
    let elsewhere: BTreeSet<&str> = links_elsewhere
        .assigned
        .iter()
        .map(|(a, _)| a.profile_id.as_str())
        .collect();
    let elsewhere = serde_json::to_string(&elsewhere).unwrap_or_else(|_| "[]".into());
    let at_home = |i: &Identifier| {
        let text = i.to_string();
        db.index_of(&text) == 0 && db.previous(&text).is_none()
    };
    let may_be_here = |i: &Identifier| !sharded || legacy || at_home(i);
    let placed = Placed {
        may_be_here: &may_be_here,
        only_here: &|i: &Identifier| !sharded || at_home(i),
        elsewhere: &elsewhere,
    };
    let plan = IngestPlan::new(IngestInput {
        source,
        events: &valid,
        graph: &graph,
        links: &links_here,
        consent: &consent,
        decoded: &decoded,
        received_at,
        rules,
        personalising: config.is_some(),
        routes: &deliver::route(&isolate::destinations(), &valid),
        placed,
    });
    let results = store::d1::execute(&db, plan.statements()).await?;
    spans.mark("store");
    let inserted = store::d1::inserted_ids(plan.event_results(&results))?;
    // The outbox rows are committed: the queue messages can wait for the response.
    jobs::deliver::send_after_response(
        ctx,
        env,
        store::deliveries::jobs_of(plan.delivery_results(&results)),
    );
    if let Some(late) = plan.suppression_probe(&results) {
        let late = store::privacy::probed_keys(late)?;
        if !late.is_empty() {
            // Someone was suppressed since this isolate cached the list: undo this request's
            // writes for them.
            isolate::forget_suppressions();
            store::privacy::undo_suppressed(env, &db, &linked, rules, &late, received_at).await?;
            let decoded = apply_suppressions(decoded.clone(), rules, |k| late.contains(k)).0;
            return Ok(Accepted {
                results: decoded.results(&inserted),
                profile_id: None,
                spans,
            });
        }
    }

    // Only now, past the suppression probe: an undone request leaves its events unclaimed, and
    // the sweep archives whichever of them are still stored.
    jobs::archive::send_after_response(
        ctx,
        env,
        archive::stored_keys(&source.id, &valid, &inserted),
    );
    let mut accepted = Accepted {
        results: decoded.results(&inserted),
        profile_id: None,
        spans,
    };
    if let Some(best) = plan.best() {
        let Settled {
            profile_id,
            profile_of,
            changed,
            loaded,
            followup_done,
        } = profiles_after(
            &db,
            rules,
            (&plan, &results),
            links_elsewhere,
            &graph.links,
            best,
            received_at,
        )
        .await?;
        // Derived state (computed traits, segments, the KV snapshot) is brought up to date
        // after the response: the events and the identity graph are already committed, so the
        // visitor's request does not wait for it.
        let refreshes = refresh::plan(Committed {
            source,
            profile_id: &profile_id,
            profile_of: &profile_of,
            events: &valid,
            changed,
            traits_changed: !graph.traits.is_empty(),
            config,
            loaded,
            received_at,
        });
        jobs::refresh::after_response(ctx, env, refreshes);
        if let Some(done) = followup_done {
            // Its assignments in the shards are written: nothing for the sweep to redo.
            let env = env.clone();
            isolate::after_response(ctx, "resolution follow-up", async move {
                let done = match env.d1("DB") {
                    Ok(db) => store::d1::execute(&db, &[done]).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    worker::console_error!("a resolution's follow-up stays for the sweep: {e}");
                }
            });
        }
        accepted.profile_id = Some(profile_id);
        accepted.spans.mark("resolve");
    }
    Ok(accepted)
}

/// What the request's links belong to after the commit: the visitor's profile, the profile of
/// every link, the KV snapshot writes a resolution caused, and the visitor's profile as the
/// batch read it. Known visitors with no new links (most traffic) need no resolution: the probe
/// at the end of the batch already holds their profile.
async fn profiles_after(
    db: &Shards,
    rules: &Rules,
    (plan, results): (&IngestPlan, &[D1Result]),
    elsewhere: Written,
    links: &[Link],
    best: &Identifier,
    received_at: i64,
) -> Result<Settled, ApiError> {
    let links_changed = elsewhere.changed
        || plan.links_changed(results, |r| {
            r.results::<Value>().is_ok_and(|rows| !rows.is_empty())
        });
    let mut rows = elsewhere.assigned;
    if let Some(probe) = plan.assignments(results) {
        let found = probe.results::<AssignmentRow>()?;
        rows.extend(found.into_iter().map(|r| {
            let at_home = db.index_of(&r.identifier) == 0;
            (r, at_home)
        }));
    }
    if db.moving() {
        // An assignment may still be in its previous shard, which no batch probed.
        let texts: Vec<String> = links
            .iter()
            .flat_map(|l| &l.identifiers)
            .map(Identifier::to_string)
            .collect();
        let read = store::identity::assignments(db, &texts).await?;
        // Already the newest of each identifier's places, its home among them.
        rows.extend(read.into_values().map(|r| (r, true)));
    }
    let assigned = store::identity::probed(rows);
    let mut seqs = elsewhere.seqs;
    if let Some(read) = plan.link_seqs(results) {
        store::identity::add_link_seqs(read, &mut seqs)?;
    }
    if let Some((id, profile_of)) = settled_profiles(links, best, links_changed, &assigned, &seqs) {
        // The batch read the state in `DB`: the profile's own only when that is its shard.
        let loaded = plan
            .profile_reads(results)
            .filter(|_| db.index_of(&id) == 0 && db.previous(&id).is_none())
            .and_then(|reads| store::profiles::loaded_from(reads, &id).ok());
        return Ok(Settled {
            profile_id: id,
            profile_of,
            changed: HashMap::new(),
            loaded,
            followup_done: None,
        });
    }
    let store::identity::Stored {
        resolved,
        followup_done,
    } = store::identity::resolve(db, rules, links, &seqs, received_at)
        .await?
        .ok_or_else(|| ApiError::Storage("identity resolution had no links".into()))?;
    let profile_of = links
        .iter()
        .filter_map(|l| {
            let best = l.identifiers.first()?;
            Some((l.message_id.clone(), resolved.profile_of(best)))
        })
        .collect();
    let changed = snapshot_changes(&resolved, links);
    Ok(Settled {
        profile_id: resolved.profile_of(best),
        profile_of,
        changed,
        loaded: None,
        followup_done,
    })
}

struct Settled {
    profile_id: String,
    profile_of: Vec<(String, String)>,
    changed: HashMap<String, SnapshotWrites>,
    loaded: Option<Loaded>,
    /// The resolution's follow-up, done (`store::identity::Stored`).
    followup_done: Option<Statement>,
}

fn is_suppressed(identifier_text: &str, keys: &HashSet<String>) -> bool {
    !keys.is_empty()
        && Identifier::parse(identifier_text).is_some_and(|i| keys.contains(&suppression_key(&i)))
}
