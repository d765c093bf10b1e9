//! `POST /v1/{batch,track,identify,page,screen,group,alias}` and the short forms
//! `/v1/{b,t,i,p,s,g,a}`: the Segment HTTP Tracking API.

use std::cell::RefCell;
use std::collections::HashMap;

use seam_core::collect::auth::basic_user;
use seam_core::collect::enrich::cookie_action;
use seam_core::collect::event::EventType;
use seam_core::collect::ingest::{decode, decompress, RequestError, MAX_REQUEST_BYTES};
use seam_core::format::time::{format_iso8601, DAY_MS};
use seam_core::identity::graph_plan::{
    contributions, identifiers_param, probe_assignments, upsert_links, upsert_traits,
};
use seam_core::identity::{IdType, Identifier};
use seam_core::personalise::coalesce::{Absorb, Claim, Coalescer, Offer};
use seam_core::privacy::retention::touch_identities;
use seam_core::privacy::{
    apply_suppressions, consent_records, count_rejections, hash_pii_fields, record_consent,
    suppression_key, suppression_probe,
};
use seam_core::{format::id, plan};
use worker::{Context, Env, Request, Response};

use crate::error::ApiError;
use crate::{http, limits, random_bytes, settings, store};

/// Handles one ingestion request; `path_type` is `None` for batches.
pub async fn post(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    path_type: Option<EventType>,
) -> Result<Response, ApiError> {
    let facts = http::facts(&req);
    limits::check_ip(env, facts.ip.as_deref()).await?;
    let declared = http::header(&req, "Content-Length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES) {
        return Err(RequestError::TooLarge.into());
    }
    let configured = store::sources::configured(env)?;
    let header_key = http::header(&req, "Authorization").and_then(|h| basic_user(&h));
    // A key in the header is checked before the body is read, so bad keys cost no parsing.
    if header_key.is_some() {
        store::sources::source_for(env, &configured, header_key.as_deref()).await?;
    }

    let raw = req.bytes().await.map_err(|_| RequestError::InvalidJson)?;
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge.into());
    }
    let body = decompress(&raw, http::header(&req, "Content-Encoding").as_deref())?;
    let received_at = worker::Date::now().as_millis() as i64;
    let decoded = decode(&body, path_type, received_at, || {
        id::message_id("seam-edge", received_at, random_bytes())
    })?;
    let key = decoded.write_key.as_deref().or(header_key.as_deref());
    let source = store::sources::source_for(env, &configured, key).await?;
    let origin = http::cross_origin(&req);
    if origin.as_deref().is_some_and(|o| !source.allows_origin(o)) {
        return Err(ApiError::OriginNotAllowed);
    }
    limits::check_source(env, &source.id).await?;

    let cookie = cookie_action(
        &decoded,
        facts.cookie_id.as_deref(),
        http::is_same_site(&req),
    );
    let rules = settings::identity_rules(env)?;
    let db = env.d1("DB")?;
    // Consent is recorded from the events as sent: a withdrawal must be on record even though
    // the policy below strips the event's identifiers.
    let consent = consent_records(
        &decoded.valid().collect::<Vec<_>>(),
        &source.id,
        &rules,
        facts.gpc,
    );
    let decoded = hash_pii_fields(decoded.enrich(&facts, &source), &rules);
    let suppressed = store::privacy::suppressed_keys(&db, received_at).await?;
    let decoded = if suppressed.is_empty() {
        decoded
    } else {
        apply_suppressions(decoded, &rules, |k| suppressed.contains(k)).0
    };
    let valid: Vec<_> = decoded.valid().collect();
    let hinted = store::identity::alias_hints(&db, &valid).await?;
    let linked: Vec<_> = valid
        .iter()
        .enumerate()
        .map(|(i, e)| hinted.get(&i).unwrap_or(e))
        .collect();
    let graph = contributions(&linked, &source.id, &rules);
    let cutoff = received_at - i64::from(source.dedup_window_days) * DAY_MS;
    // Events, their identity links and their trait values commit together: no event is ever
    // stored without its contribution to the graph. Links and traits are idempotent upserts, so
    // a retried batch changes nothing.
    let events = plan::insert_events(&source.id, &valid, cutoff);
    let links = upsert_links(&graph.links);
    let (n_events, n_links) = (events.len(), links.len());
    let mut plan = events;
    plan.extend(links);
    plan.extend(upsert_traits(&graph.traits));
    plan.extend(record_consent(
        &consent
            .into_iter()
            .filter(|r| !is_suppressed(&r.identifier, &suppressed))
            .collect::<Vec<_>>(),
    ));
    let day = format_iso8601(received_at);
    plan.extend(count_rejections(
        &source.id,
        day.get(..10).unwrap_or(&day),
        &decoded,
    ));
    let identifiers: Vec<&Identifier> = graph.links.iter().flat_map(|l| &l.identifiers).collect();
    let keys: Vec<String> = identifiers.iter().map(|i| suppression_key(i)).collect();
    // Another isolate may have suppressed someone since this one cached the list: the batch
    // checks again at commit time, and a hit undoes this request's writes for them below.
    let suppression_check = (!keys.is_empty()).then(|| {
        plan.push(suppression_probe(&keys));
        plan.push(touch_identities(
            &identifiers_param(identifiers.iter().copied()),
            received_at,
        ));
        plan.len() - 2
    });
    let best = graph.links.last().and_then(|l| l.identifiers.first());
    let probe_at = plan.len();
    if let Some(best) = best {
        plan.push(probe_assignments(&graph.links));
        // The profile's read model as this batch leaves it, for the refresh below when the
        // visitor's profile did not change (most traffic): one round trip fewer. Only when a
        // refresh is likely; otherwise the refresh reads for itself.
        let refresh_likely = !graph.traits.is_empty()
            || (store::personalisation::config().is_some()
                && store::personalisation::reads_any(valid.iter().copied()));
        if refresh_likely {
            let profile = "(SELECT profile_id FROM identities WHERE identifier = ?1)";
            plan.extend(store::profiles::view_reads(profile, &best.to_string()));
        }
    }
    let results = store::d1::execute(&db, &plan).await?;
    let inserted = store::d1::inserted_ids(results.get(..n_events).unwrap_or_default())?;
    if let Some(late) = suppression_check.and_then(|i| results.get(i)) {
        let late = store::privacy::probed_keys(late)?;
        if !late.is_empty() {
            store::privacy::forget_suppressions();
            store::privacy::undo_suppressed(env, &db, &linked, &rules, &late).await?;
            let decoded = apply_suppressions(decoded.clone(), &rules, |k| late.contains(k)).0;
            let body = serde_json::json!({ "results": decoded.results(&inserted) });
            return Ok(Response::from_json(&body)?);
        }
    }

    let mut body = serde_json::json!({ "results": decoded.results(&inserted) });
    if let Some(best) = best {
        // Known visitors with no new links (most traffic) need no recomputation: the probe at the
        // end of the batch already holds their profile.
        let links_changed = results
            .get(n_events..n_events + n_links)
            .unwrap_or_default()
            .iter()
            .any(|r| {
                r.results::<serde_json::Value>()
                    .is_ok_and(|rows| !rows.is_empty())
            });
        let assigned = match results.get(probe_at) {
            Some(probe) => store::identity::probed(probe)?,
            None => Default::default(),
        };
        let all_assigned = graph
            .links
            .iter()
            .filter_map(|l| l.identifiers.first())
            .all(|b| assigned.contains_key(&b.to_string()));
        let profile_id = if !links_changed && all_assigned {
            assigned.get(&best.to_string()).cloned()
        } else {
            None
        };
        let traits_changed = !graph.traits.is_empty();
        let (profile_id, profile_of, resolved, mut loaded) = match profile_id {
            Some(id) => {
                let loaded = results
                    .get(probe_at + 1..)
                    .and_then(|reads| store::profiles::loaded_from(reads, &id).ok());
                let profile_of: Vec<(String, String)> = graph
                    .links
                    .iter()
                    .filter_map(|l| {
                        let best = l.identifiers.first()?.to_string();
                        Some((l.message_id.clone(), assigned.get(&best)?.clone()))
                    })
                    .collect();
                (id, profile_of, None, loaded)
            }
            None => {
                let resolved = store::identity::resolve(&db, &rules, &graph.links, received_at)
                    .await?
                    .ok_or_else(|| ApiError::Storage("identity resolution had no links".into()))?;
                let id = resolved.profile_of(best);
                let profile_of = graph
                    .links
                    .iter()
                    .filter_map(|l| {
                        let best = l.identifiers.first()?;
                        Some((l.message_id.clone(), resolved.profile_of(best)))
                    })
                    .collect();
                (id, profile_of, Some(resolved), None)
            }
        };
        // Every profile the request touched (a server-side batch carries many users) gets its
        // derived state refreshed, the visitor's profile first. One pass groups the request's
        // events by profile: duplicates are included (the core dedups them, and a retry after a
        // failed personalisation step then heals it).
        let profile_by_key: HashMap<&str, &str> = profile_of
            .iter()
            .map(|(k, p)| (k.as_str(), p.as_str()))
            .collect();
        let mut events_of: Vec<(String, Vec<seam_core::collect::event::Event>)> =
            vec![(profile_id.clone(), Vec::new())];
        let mut slot_of: HashMap<String, usize> = HashMap::from([(profile_id.clone(), 0)]);
        for e in &valid {
            let key = format!("{}/{}", source.id, e.message_id);
            let Some(profile) = profile_by_key.get(key.as_str()) else {
                continue;
            };
            let i = *slot_of.entry((*profile).to_owned()).or_insert_with(|| {
                events_of.push(((*profile).to_owned(), Vec::new()));
                events_of.len() - 1
            });
            events_of[i].1.push((*e).clone());
        }
        let mut changed = match &resolved {
            Some(r) => snapshot_changes(r, &graph.links),
            None => HashMap::new(),
        };
        let config = store::personalisation::config();
        let mut refreshes = Vec::new();
        for (profile, mine) in events_of {
            let changed = changed.remove(&profile);
            let absorbed = changed
                .as_ref()
                .map(|s| s.absorbed.clone())
                .unwrap_or_default();
            let snapshot = changed.or_else(|| traits_changed.then(Snapshot::default));
            let config = config
                .clone()
                .filter(|_| !absorbed.is_empty() || store::personalisation::reads_any(&mine));
            if snapshot.is_some() || config.is_some() {
                refreshes.push(Refresh {
                    source: source.clone(),
                    loaded: if profile == profile_id {
                        loaded.take()
                    } else {
                        None
                    },
                    profile_id: profile,
                    snapshot: snapshot.unwrap_or_default(),
                    absorbed,
                    mine,
                    received_at,
                    config,
                });
            }
        }
        if !refreshes.is_empty() {
            // Derived state (computed traits, segments, the KV snapshot) is brought up to date
            // after the response: the events and the identity graph are already committed, so
            // the visitor's request does not wait for it. It is idempotent; a retried batch
            // re-applies it.
            let env = env.clone();
            crate::after_response(ctx, async move { refresh_spaced(&env, refreshes).await });
        }
        // Read-your-writes: the response names the profile as it is after this request.
        body["profileId"] = serde_json::Value::from(profile_id);
    }
    if let seam_core::collect::enrich::CookieAction::Set(id) = &cookie {
        // The SDK adopts this ID so the script's ID and the HttpOnly cookie agree.
        body["anonymousId"] = serde_json::Value::from(id.as_str());
    }
    let mut response = Response::from_json(&body)?;
    if let Some(set_cookie) = http::set_cookie(&cookie) {
        response.headers_mut().append("Set-Cookie", &set_cookie)?;
    }
    Ok(response)
}

/// A profile's refreshes start at most once a second in an isolate (KV takes one write per
/// second per key); what arrives in between runs once, after the spacing.
const REFRESH_SPACING_MS: i64 = 1_000;
/// Profiles whose spacing an isolate remembers.
const SPACED_PROFILES: usize = 10_000;

thread_local! {
    static REFRESHES: RefCell<Coalescer<Refresh>> =
        RefCell::new(Coalescer::new(REFRESH_SPACING_MS, SPACED_PROFILES));
}

/// Runs a request's refreshes: each at once unless its profile refreshed within the spacing,
/// then folded into that profile's trailing run (owned by the first request that waits).
async fn refresh_spaced(env: &Env, refreshes: Vec<Refresh>) {
    let now = || worker::Date::now().as_millis() as i64;
    let mut owed: Vec<(String, i64)> = Vec::new();
    for refresh in refreshes {
        let key = refresh.profile_id.clone();
        match REFRESHES.with(|c| c.borrow_mut().offer(&key, refresh, now())) {
            Offer::Run(refresh) => run_spaced(env, &key, refresh).await,
            Offer::Wait(ms) => owed.push((key, now() + ms)),
            Offer::Joined => {}
        }
    }
    while let Some(earliest) = owed.iter().map(|(_, at)| *at).min() {
        let wait = (earliest - now()).max(0) as u64;
        worker::Delay::from(std::time::Duration::from_millis(wait)).await;
        let mut later = Vec::new();
        for (key, at) in owed {
            if at > now() {
                later.push((key, at));
                continue;
            }
            match REFRESHES.with(|c| c.borrow_mut().claim(&key, now())) {
                Claim::Run(mut refresh) => {
                    // Read at run time: what the request read is older than the runs since.
                    refresh.loaded = None;
                    run_spaced(env, &key, refresh).await;
                }
                Claim::Wait(ms) => later.push((key, now() + ms)),
            }
        }
        owed = later;
    }
}

async fn run_spaced(env: &Env, key: &str, refresh: Refresh) {
    if let Err(e) = refresh.run(env).await {
        worker::console_error!("profile refresh failed: {}", e.code());
    }
    REFRESHES.with(|c| c.borrow_mut().finished(key));
}

/// Derived state of one profile to bring up to date after a request: computed traits, segments
/// (with their transition events) and the KV snapshot.
struct Refresh {
    source: seam_core::collect::source::Source,
    profile_id: String,
    snapshot: Snapshot,
    absorbed: Vec<String>,
    mine: Vec<seam_core::collect::event::Event>,
    received_at: i64,
    /// The profile's read model and state, when the request's batch already read them.
    loaded: Option<store::profiles::Loaded>,
    /// The personalisation configuration, when this profile's events feed it.
    config: Option<std::sync::Arc<seam_core::personalise::PersonalisationConfig>>,
}

impl Absorb for Refresh {
    /// Later requests' refresh folded in: their events (the core skips ones it has), pointer and
    /// forwarding writes, and the newest time and source.
    fn absorb(&mut self, later: Refresh) {
        self.mine.extend(later.mine);
        for (mine, theirs) in [
            (&mut self.snapshot.anonymous, later.snapshot.anonymous),
            (&mut self.snapshot.absorbed, later.snapshot.absorbed),
            (&mut self.absorbed, later.absorbed),
        ] {
            mine.extend(theirs);
            mine.sort();
            mine.dedup();
        }
        self.received_at = self.received_at.max(later.received_at);
        self.source = later.source;
        self.config = later.config.or(self.config.take());
        self.loaded = None;
    }
}

impl Refresh {
    async fn run(mut self, env: &Env) -> Result<(), ApiError> {
        let db = env.d1("DB")?;
        let (mut view, loaded) = match self.loaded.take() {
            Some(loaded) => loaded,
            None => store::profiles::view_and_state(&db, &self.profile_id).await?,
        };
        if view.identifiers.is_empty() {
            // The profile was erased (or merged away) since the request committed: writing its
            // state or snapshot now would bring the person's data back.
            return Ok(());
        }
        let Some(config) = self.config.take() else {
            store::profiles::fill_personalisation(&mut view, &loaded.0, self.received_at);
            return self.publish(env, &view, &loaded.0).await;
        };
        let mine: Vec<&seam_core::collect::event::Event> = self.mine.iter().collect();
        let update = store::personalisation::update(
            &db,
            &config,
            &view,
            &self.absorbed,
            &mine,
            self.received_at,
            loaded,
        )
        .await;
        let update = match update {
            // New product evidence changes partner lists, listings and popularity (a merge moves
            // evidence between profiles: everything).
            Ok(update) if self.absorbed.is_empty() => {
                super::decide::forget_candidates(Some(&update.changed));
                update
            }
            Ok(update) => {
                super::decide::forget_candidates(None);
                update
            }
            Err(e) => {
                // The snapshot still gets the new traits; a retry of the batch re-applies the rest.
                worker::console_error!("personalisation skipped: {}", e.code());
                let (stored, _) = store::personalisation::load(&db, &self.profile_id).await?;
                store::profiles::fill_personalisation(&mut view, &stored, self.received_at);
                return self.publish(env, &view, &stored).await;
            }
        };
        store_internal(
            &db,
            &self.source,
            None,
            &update.internal_events,
            self.received_at,
        )
        .await?;
        view.computed_traits = update.computed;
        view.segments = update.segments;
        self.publish(env, &view, &update.state).await
    }

    async fn publish(
        self,
        env: &Env,
        view: &seam_core::identity::profile::ProfileView,
        state: &seam_core::personalise::ProfileState,
    ) -> Result<(), ApiError> {
        let Snapshot {
            anonymous,
            absorbed,
        } = self.snapshot;
        store::profiles::publish(env, view, Some(state), &anonymous, &absorbed).await;
        Ok(())
    }
}

/// What a KV snapshot refresh must also write: pointers from anonymous IDs and forwarding records
/// for absorbed profiles.
#[derive(Default)]
struct Snapshot {
    anonymous: Vec<String>,
    absorbed: Vec<String>,
}

/// The KV snapshot writes this request caused, per profile: pointers from anonymous IDs that
/// changed profile, and forwarding records for absorbed profiles. One pass over the links (a
/// batch may carry thousands of users).
fn snapshot_changes(
    resolved: &store::identity::Resolved,
    links: &[seam_core::identity::Link],
) -> HashMap<String, Snapshot> {
    let before: HashMap<&str, &str> = resolved
        .before
        .iter()
        .map(|a| (a.identifier.as_str(), a.profile_id.as_str()))
        .collect();
    let mut out: HashMap<String, Snapshot> = HashMap::new();
    for i in links
        .iter()
        .flat_map(|l| &l.identifiers)
        .filter(|i| i.kind == IdType::AnonymousId)
    {
        let now = resolved.profile_of(i);
        if before.get(i.to_string().as_str()) != Some(&now.as_str()) {
            out.entry(now).or_default().anonymous.push(i.value.clone());
        }
    }
    for (from, into) in &resolved.merges {
        out.entry(into.clone())
            .or_default()
            .absorbed
            .push(from.clone());
    }
    for snapshot in out.values_mut() {
        snapshot.anonymous.sort();
        snapshot.anonymous.dedup();
    }
    out
}

/// Stores server-generated events (segment transitions, decision exposures) like client events:
/// validated by the same decoder, deduplicated by their derived `messageId`.
pub(crate) async fn store_internal(
    db: &worker::D1Database,
    source: &seam_core::collect::source::Source,
    facts: Option<&seam_core::collect::enrich::RequestFacts>,
    events: &[serde_json::Value],
    received_at: i64,
) -> Result<Vec<String>, ApiError> {
    let valid = prepare_internal(source, facts, events, received_at)?;
    insert_internal(db, source, &valid, received_at).await
}

/// Validates and enriches server-logged events like client events (invalid ones are dropped).
pub(crate) fn prepare_internal(
    source: &seam_core::collect::source::Source,
    facts: Option<&seam_core::collect::enrich::RequestFacts>,
    events: &[serde_json::Value],
    received_at: i64,
) -> Result<Vec<seam_core::collect::event::Event>, ApiError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let body = serde_json::json!({ "batch": events }).to_string();
    let mut decoded = decode(body.as_bytes(), None, received_at, || {
        id::message_id("seam-edge", received_at, random_bytes())
    })?;
    if let Some(facts) = facts {
        decoded = decoded.enrich(facts, source);
    }
    Ok(decoded.valid().cloned().collect())
}

/// Stores prepared events of `source` (deduplicated by `messageId`); returns their IDs.
pub(crate) async fn insert_internal(
    db: &worker::D1Database,
    source: &seam_core::collect::source::Source,
    events: &[seam_core::collect::event::Event],
    now_ms: i64,
) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let valid: Vec<_> = events.iter().collect();
    let cutoff = now_ms - i64::from(source.dedup_window_days) * DAY_MS;
    store::d1::execute(db, &plan::insert_events(&source.id, &valid, cutoff)).await?;
    Ok(valid.iter().map(|e| e.message_id.clone()).collect())
}

fn is_suppressed(identifier_text: &str, keys: &std::collections::HashSet<String>) -> bool {
    !keys.is_empty()
        && Identifier::parse(identifier_text).is_some_and(|i| keys.contains(&suppression_key(&i)))
}
