//! `POST /v1/{batch,track,identify,page,screen,group,alias}` and the short forms
//! `/v1/{b,t,i,p,s,g,a}`: the Segment HTTP Tracking API.

use seam_core::auth::basic_user;
use seam_core::enrich::cookie_action;
use seam_core::event::EventType;
use seam_core::ingest::{decode, decompress, RequestError, MAX_REQUEST_BYTES};
use seam_core::{id, plan};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::{http, limits, store};

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
    let decoded = decoded.enrich(&facts, &source);
    let valid: Vec<_> = decoded.valid().collect();
    let cutoff = received_at - i64::from(source.dedup_window_days) * DAY_MS;
    let plan = plan::insert_events(&source.id, &valid, cutoff);
    let db = env.d1("DB")?;
    let inserted = store::d1::insert_events(&db, &plan).await?;

    let mut body = serde_json::json!({ "results": decoded.results(&inserted) });
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

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // Workers always provide crypto.getRandomValues; Math.random only guards the impossible case
    // so a generated messageId is never all zeros.
    if getrandom::fill(&mut bytes).is_err() {
        for b in &mut bytes {
            *b = (worker::js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes
}
