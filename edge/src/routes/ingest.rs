//! `POST /v1/{batch,track,identify,page,screen,group,alias}` and the short forms
//! `/v1/{b,t,i,p,s,g,a}`: the Segment HTTP Tracking API.

use std::collections::HashSet;

use seam_core::collect::cookie::{self, asks_new_id, cookie_action, CookieAction};
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::event::EventType;
use seam_core::collect::ingest::{decode, decompress, Decoded, RequestError, MAX_REQUEST_BYTES};
use seam_core::collect::live;
use seam_core::collect::source::{IngestMode, Source};
use seam_core::format::id;
use seam_core::privacy::count_rejections;
use serde_json::Value;
use worker::{Context, Env, Request, Response};

use crate::error::ApiError;
use crate::http::{self, admission};
use crate::{accept, jobs, platform, settings, store};

/// Handles one ingestion request received at `received_at`; `path_type` is `None` for batches.
pub async fn post(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    path_type: Option<EventType>,
    received_at: i64,
) -> Result<Response, ApiError> {
    let mut spans = platform::Spans::start();
    let cookie_key = settings::cookie_key(env);
    let mut facts = http::facts(&req, cookie_key.as_ref());
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

    if asks_new_id(&decoded) {
        // A reset browser: its events are not the cookie holder's, and it gets a new ID.
        facts.cookie_id = None;
    }
    let cookie = cookie_action(
        &decoded,
        facts.cookie_id.as_deref(),
        http::cookie(&req, http::ID_COOKIE).is_some(),
        http::is_same_site(&req),
        cookie_key.map(|_| || cookie::issue(platform::random_bytes())),
    );
    if let CookieAction::Set(id) = &cookie {
        // This request's events already carry the ID the browser will hold. (On a withdrawal
        // they stay the cookie holder's, so the withdrawal is recorded for its ID.)
        facts.cookie_id = Some(id.clone());
    }
    spans.mark("read");
    let mut body = if source.ingest == IngestMode::Queue {
        let body = queue(env, ctx, &source, &facts, received_at, decoded).await?;
        spans.mark("queue");
        body
    } else {
        // Kept for the queue: `accept` consumes the request.
        let held = decoded.clone();
        match accept::accept(env, ctx, &source, decoded, &facts, received_at).await {
            Ok(accepted) => {
                // The console's live view shows what was refused.
                if let Some(log) = live::log_rejections(&source.id, &accepted.results, received_at)
                {
                    store::events::log_refusals(&env.d1("DB")?, &[log]).await;
                }
                spans.extend(accepted.spans);
                let mut body = serde_json::json!({ "results": accepted.results });
                // Read-your-writes: the response names the profile as it is after this
                // request, to trusted callers only (to a page it would tell whether an email
                // has a profile).
                if let (Some(profile_id), true) = (accepted.profile_id, source.is_trusted()) {
                    body["profileId"] = Value::from(profile_id);
                }
                body
            }
            Err(ApiError::Storage(detail)) => {
                // D1 is unavailable: the events wait on the queue and are stored when it is
                // back. If the queue fails too, the client keeps them and retries.
                worker::console_error!("storage unavailable, events queued: {detail}");
                queue(env, ctx, &source, &facts, received_at, held).await?
            }
            Err(e) => return Err(e),
        }
    };
    if let (Some(id), false) = (&facts.cookie_id, cookie == CookieAction::Clear) {
        // The SDK adopts this ID so the script's ID and the HttpOnly cookie agree.
        body["anonymousId"] = Value::from(id.as_str());
    }
    let mut response = Response::from_json(&body)?;
    if let Some(set_cookie) = http::set_cookie(&cookie, cookie_key.as_ref()) {
        response.headers_mut().append("Set-Cookie", &set_cookie)?;
    }
    if let Some(clear) = http::clear_old_cookie(&req) {
        response.headers_mut().append("Set-Cookie", &clear)?;
    }
    if settings::report_timings(env) {
        spans.mark("answer");
        response
            .headers_mut()
            .append("Server-Timing", &spans.header())?;
    }
    Ok(response)
}

/// Queues `decoded`'s valid events to be stored after the answer (`jobs::deferred`), and
/// answers for them: each valid one `accepted`, the rest as usual.
async fn queue(
    env: &Env,
    ctx: &Context,
    source: &Source,
    facts: &RequestFacts,
    received_at: i64,
    decoded: Decoded,
) -> Result<Value, ApiError> {
    jobs::deferred::send(env, source, facts, received_at, &decoded)
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))?;
    // Only valid events go on the queue, so the console's daily counts of refused events take
    // the request's other refusals here (the consumer counts what enrichment and suppression
    // refuse).
    let counted = count_rejections(&source.id, received_at, &decoded);
    // Enrichment (by the consumer) may refuse an event (consent): the answer says so already.
    let screened = decoded.screen(facts, source);
    let queued: HashSet<String> = screened.valid().map(|e| e.message_id.clone()).collect();
    let results = screened.results(&queued);
    // The console's live view shows what was refused, after the answer (D1 may be why these
    // events wait on the queue).
    let logs: Vec<_> = live::log_rejections(&source.id, &results, received_at)
        .into_iter()
        .chain(counted)
        .collect();
    if let (false, Ok(db)) = (logs.is_empty(), env.d1("DB")) {
        crate::isolate::after_response(ctx, "rejection log", async move {
            store::events::log_refusals(&db, &logs).await;
        });
    }
    Ok(serde_json::json!({ "results": results, "deferred": true }))
}
