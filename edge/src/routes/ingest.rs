//! `POST /v1/{batch,track,identify,page,screen,group,alias}` and the short forms
//! `/v1/{b,t,i,p,s,g,a}`: the Segment HTTP Tracking API.

use seam_core::auth::basic_user;
use seam_core::enrich::cookie_action;
use seam_core::event::EventType;
use seam_core::graph_plan::{
    contributions, identifiers_param, probe_assignments, upsert_links, upsert_traits,
};
use seam_core::identity::{IdType, Identifier};
use seam_core::ingest::{decode, decompress, RequestError, MAX_REQUEST_BYTES};
use seam_core::privacy::{
    apply_suppressions, consent_records, count_rejections, hash_pii_fields, record_consent,
    suppression_key,
};
use seam_core::retention::touch_identities;
use seam_core::time::format_iso8601;
use seam_core::{id, plan};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::{http, limits, random_bytes, settings, store};

const DAY_MS: i64 = 86_400_000;

/// Handles one ingestion request; `path_type` is `None` for batches.
pub async fn post(
    mut req: Request,
    env: &Env,
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
        plan.push(store::privacy::suppression_probe(&keys));
        plan.push(touch_identities(
            &identifiers_param(identifiers.iter().copied()),
            received_at,
        ));
        plan.len() - 2
    });
    if !graph.links.is_empty() {
        plan.push(probe_assignments(&graph.links));
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
    if let Some(best) = graph.links.last().and_then(|l| l.identifiers.first()) {
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
        let assigned = match results.last() {
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
        let profile_id = match profile_id {
            Some(id) => {
                if !graph.traits.is_empty() {
                    let view = store::profiles::view(&db, &id).await?;
                    store::profiles::publish(env, &view, &[], &[]).await;
                }
                id
            }
            None => {
                let resolved = store::identity::resolve(&db, &rules, &graph.links, received_at)
                    .await?
                    .ok_or_else(|| ApiError::Storage("identity resolution had no links".into()))?;
                let id = resolved.profile_of(best);
                publish_snapshot(
                    env,
                    &db,
                    &resolved,
                    &graph.links,
                    &id,
                    !graph.traits.is_empty(),
                )
                .await?;
                id
            }
        };
        // Read-your-writes: the response names the profile as it is after this request.
        body["profileId"] = serde_json::Value::from(profile_id);
    }
    if let seam_core::enrich::CookieAction::Set(id) = &cookie {
        // The SDK adopts this ID so the script's ID and the HttpOnly cookie agree.
        body["anonymousId"] = serde_json::Value::from(id.as_str());
    }
    let mut response = Response::from_json(&body)?;
    if let Some(set_cookie) = http::set_cookie(&cookie) {
        response.headers_mut().append("Set-Cookie", &set_cookie)?;
    }
    Ok(response)
}

/// Refreshes the KV snapshot of `profile_id` when this request changed it (new traits, a merge,
/// or an anonymous ID that now points elsewhere): at most one snapshot write per request.
async fn publish_snapshot(
    env: &Env,
    db: &worker::D1Database,
    resolved: &store::identity::Resolved,
    links: &[seam_core::identity::Link],
    profile_id: &str,
    traits_changed: bool,
) -> Result<(), ApiError> {
    let before = |text: &str| {
        resolved
            .before
            .iter()
            .find(|a| a.identifier == text)
            .map(|a| a.profile_id.as_str())
    };
    let mut moved_anonymous: Vec<String> = links
        .iter()
        .flat_map(|l| &l.identifiers)
        .filter(|i| i.kind == IdType::AnonymousId)
        .filter(|i| {
            resolved.profile_of(i) == profile_id && before(&i.to_string()) != Some(profile_id)
        })
        .map(|i| i.value.clone())
        .collect();
    moved_anonymous.sort();
    moved_anonymous.dedup();
    let absorbed: Vec<String> = resolved
        .merges
        .iter()
        .filter(|(_, into)| into == profile_id)
        .map(|(from, _)| from.clone())
        .collect();
    if !traits_changed && moved_anonymous.is_empty() && absorbed.is_empty() {
        return Ok(());
    }
    let view = store::profiles::view(db, profile_id).await?;
    store::profiles::publish(env, &view, &moved_anonymous, &absorbed).await;
    Ok(())
}

fn is_suppressed(identifier_text: &str, keys: &std::collections::HashSet<String>) -> bool {
    !keys.is_empty()
        && Identifier::parse(identifier_text).is_some_and(|i| keys.contains(&suppression_key(&i)))
}
