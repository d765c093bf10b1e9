//! `POST /v1/{batch,track,identify,page,screen,group,alias}` and the short forms
//! `/v1/{b,t,i,p,s,g,a}`: the Segment HTTP Tracking API.

use std::collections::{HashMap, HashSet};

use seam_core::activate::deliver;
use seam_core::collect::enrich::{cookie_action, CookieAction};
use seam_core::collect::event::EventType;
use seam_core::collect::ingest::{decode, decompress, RequestError, MAX_REQUEST_BYTES};
use seam_core::collect::ingest_plan::{settled_profiles, IngestInput, IngestPlan};
use seam_core::format::id;
use seam_core::identity::graph_plan::contributions;
use seam_core::identity::{Identifier, Link, Rules};
use seam_core::personalise::refresh::{self, snapshot_changes, Committed, Loaded, SnapshotWrites};
use seam_core::privacy::{apply_suppressions, consent_records, hash_pii_fields, suppression_key};
use serde_json::Value;
use worker::{Context, D1Database, D1Result, Env, Request, Response};

use crate::error::ApiError;
use crate::http::{self, admission};
use crate::{isolate, jobs, platform, settings, store};

/// Handles one ingestion request received at `received_at`; `path_type` is `None` for batches.
pub async fn post(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    path_type: Option<EventType>,
    received_at: i64,
) -> Result<Response, ApiError> {
    let facts = http::facts(&req);
    let declared = http::header(&req, "Content-Length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES) {
        return Err(RequestError::TooLarge.into());
    }
    let write_key = admission::WriteKey::read(&req, env)?;
    write_key.check_header(env).await?;

    let raw = req.bytes().await.map_err(|_| RequestError::InvalidJson)?;
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge.into());
    }
    let body = decompress(&raw, http::header(&req, "Content-Encoding").as_deref())?;
    let decoded = decode(&body, path_type, received_at, || {
        id::message_id("seam-edge", received_at, platform::random_bytes())
    })?;
    let source = write_key
        .source(&req, env, &facts, decoded.write_key.as_deref())
        .await?;
    let decoded = decoded
        .prove(
            &source,
            settings::identity_secret(env).as_deref(),
            received_at,
        )
        .clamp_clock(&source);

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
        !source.is_trusted(),
    );
    let decoded = hash_pii_fields(decoded.enrich(&facts, &source), &rules);
    let suppressed = store::privacy::suppressed_keys(&db, &decoded, &rules, received_at).await?;
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
    let plan = IngestPlan::new(IngestInput {
        source: &source,
        events: &valid,
        graph: &graph,
        consent: &consent,
        decoded: &decoded,
        received_at,
        rules: &rules,
        personalising: config.is_some(),
        routes: &deliver::route(&isolate::destinations(), &valid),
    });
    let results = store::d1::execute(&db, plan.statements()).await?;
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
            store::privacy::undo_suppressed(env, &db, &linked, &rules, &late).await?;
            let decoded = apply_suppressions(decoded.clone(), &rules, |k| late.contains(k)).0;
            let body = serde_json::json!({ "results": decoded.results(&inserted) });
            return Ok(Response::from_json(&body)?);
        }
    }

    let mut body = serde_json::json!({ "results": decoded.results(&inserted) });
    if let Some(best) = plan.best() {
        let Settled {
            profile_id,
            profile_of,
            changed,
            loaded,
        } = profiles_after(
            &db,
            &rules,
            &plan,
            &results,
            &graph.links,
            best,
            received_at,
        )
        .await?;
        // Derived state (computed traits, segments, the KV snapshot) is brought up to date
        // after the response: the events and the identity graph are already committed, so the
        // visitor's request does not wait for it.
        let refreshes = refresh::plan(Committed {
            source: &source,
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
        // Read-your-writes: the response names the profile as it is after this request, to
        // trusted callers only (to a page it would tell whether an email has a profile).
        if source.is_trusted() {
            body["profileId"] = Value::from(profile_id);
        }
    }
    if let CookieAction::Set(id) = &cookie {
        // The SDK adopts this ID so the script's ID and the HttpOnly cookie agree.
        body["anonymousId"] = Value::from(id.as_str());
    }
    let mut response = Response::from_json(&body)?;
    if let Some(set_cookie) = http::set_cookie(&cookie) {
        response.headers_mut().append("Set-Cookie", &set_cookie)?;
    }
    Ok(response)
}

/// What the request's links belong to after the commit: the visitor's profile, the profile of
/// every link, the KV snapshot writes a resolution caused, and the visitor's profile as the
/// batch read it. Known visitors with no new links (most traffic) need no resolution: the probe
/// at the end of the batch already holds their profile.
async fn profiles_after(
    db: &D1Database,
    rules: &Rules,
    plan: &IngestPlan,
    results: &[D1Result],
    links: &[Link],
    best: &Identifier,
    received_at: i64,
) -> Result<Settled, ApiError> {
    let links_changed = plan.links_changed(results, |r| {
        r.results::<Value>().is_ok_and(|rows| !rows.is_empty())
    });
    let assigned = match plan.assignments(results) {
        Some(probe) => store::identity::probed(probe)?,
        None => Default::default(),
    };
    if let Some((id, profile_of)) = settled_profiles(links, best, links_changed, &assigned) {
        let loaded = plan
            .profile_reads(results)
            .and_then(|reads| store::profiles::loaded_from(reads, &id).ok());
        return Ok(Settled {
            profile_id: id,
            profile_of,
            changed: HashMap::new(),
            loaded,
        });
    }
    let resolved = store::identity::resolve(db, rules, links, received_at)
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
    })
}

struct Settled {
    profile_id: String,
    profile_of: Vec<(String, String)>,
    changed: HashMap<String, SnapshotWrites>,
    loaded: Option<Loaded>,
}

fn is_suppressed(identifier_text: &str, keys: &HashSet<String>) -> bool {
    !keys.is_empty()
        && Identifier::parse(identifier_text).is_some_and(|i| keys.contains(&suppression_key(&i)))
}
