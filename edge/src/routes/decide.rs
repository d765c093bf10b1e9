//! `POST /v1/decide {anonymousId|userId, slots: [...], context}`: per slot a decision (items,
//! variant, reason) from the profile's KV snapshot (D1 on a miss), honouring consent and the
//! holdout (`seam_core::personalise::decide`), and a `Decision Exposed` event for lift measurement.
//! Write-key auth and CORS as for ingestion: the SDK calls it from browsers.
//!
//! A browser key is public, so the answer is personal only for the identity the request proves
//! (see [`bound`]); a server key (or a `trust-browser` source) may ask for anyone.

use seam_core::collect::ingest::RequestError;
use seam_core::collect::proof::{self, TOKEN_FIELD};
use seam_core::consent::personalisation_denied;
use seam_core::identity::{Proof, PROOF_FIELD};
use seam_core::personalise::decide::{Exposure, Slot};
use serde_json::{json, Value};
use worker::{Context, Env, Request, Response};

use crate::error::ApiError;
use crate::http::{self, admission};
use crate::store::shards::Shards;
use crate::{jobs, settings, store};

/// A decision request is a few identifiers, slot names and a consent state: 64 KB is plenty.
const MAX_DECIDE_BYTES: usize = 64 * 1024;

/// Handles `POST /v1/decide` at `now_ms`.
pub async fn post(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let facts = http::facts(&req, settings::cookie_key(env).as_ref());
    let write_key = admission::WriteKey::read(&req, env)?;
    let declared = http::header(&req, "Content-Length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_DECIDE_BYTES) {
        return Err(RequestError::TooLarge.into());
    }
    let raw = req.bytes().await.map_err(|_| ApiError::InvalidBody)?;
    if raw.len() > MAX_DECIDE_BYTES {
        return Err(RequestError::TooLarge.into());
    }
    let body: Value = serde_json::from_slice(&raw).map_err(|_| ApiError::InvalidBody)?;
    let body = body.as_object().ok_or(ApiError::InvalidBody)?;
    let body_key = body.get("writeKey").and_then(Value::as_str);
    let source = write_key.source(&req, env, &facts, body_key).await?;
    let slots = Slot::parse_list(body.get("slots")).ok_or(ApiError::InvalidBody)?;
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (claimed_anonymous, claimed_user) = (text("anonymousId"), text("userId"));
    if claimed_anonymous.is_none() && claimed_user.is_none() {
        return Err(ApiError::InvalidIdentifier);
    }
    let mut context = body.get("context").cloned().unwrap_or_else(|| json!({}));
    let token = context
        .pointer(&format!("/seam/{TOKEN_FIELD}"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(c) = context.as_object_mut() {
        // Only the collector writes `context.seam` on stored events.
        c.remove("seam");
    }
    let (anonymous_id, user_id) = if source.is_trusted() {
        (claimed_anonymous.clone(), claimed_user)
    } else {
        let secret = settings::identity_secret(env);
        bound(
            facts.cookie_id.clone(),
            claimed_user,
            token.as_deref(),
            secret.as_deref(),
            now_ms,
        )
    };
    // Global Privacy Control and the SDK's consent cookie opt out of personalisation here as on
    // rendered pages (the cookie also covers a call made before the page's SDK was ready to say).
    let denied = facts.gpc
        || http::personalisation_refused(&req)
        || personalisation_denied(context.get("consent"));
    let rules = settings::identity_rules(env)?;
    let db = Shards::of(env)?;
    let visitor = store::decisions::Visitor {
        anonymous_id: anonymous_id.as_deref(),
        user_id: user_id.as_deref(),
    };
    let decisions =
        store::decisions::decide(env, &db, &rules, visitor, &slots, denied, now_ms).await?;

    // The exposure belongs to the proven visitor, or else to the browser's own anonymous ID
    // (a claim about itself, never a user ID).
    let exposed_anonymous = anonymous_id.as_deref().or(user_id
        .is_none()
        .then_some(claimed_anonymous.as_deref())
        .flatten());
    let exposed_context = exposure_context(&context, source.is_trusted(), user_id.is_some());
    let exposure = Exposure {
        decisions: &decisions,
        anonymous_id: exposed_anonymous,
        user_id: user_id.as_deref(),
        message_id: text("messageId"),
        context: &exposed_context,
    };
    let prepared = store::events::prepare(
        &db,
        &rules,
        &source,
        Some(&facts),
        &[exposure.event(now_ms)],
        now_ms,
    )
    .await?;
    let mut out = decisions.to_json();
    if let Some(event) = prepared.first() {
        out["exposureId"] = Value::from(event.message_id.as_str());
    }
    jobs::exposures::log_soon(env, ctx, &source, prepared)?;
    Ok(Response::from_json(&out)?)
}

/// The exposure event's context. From a page only what describes the page and the consent in
/// force, with the proof the collector marks browser events with: the rest of a page's context
/// (traits, external IDs) would be its claims about whomever it names, stored as an event the
/// collector made and sent on to destinations.
fn exposure_context(context: &Value, trusted: bool, verified: bool) -> Value {
    if trusted {
        return context.clone();
    }
    let mut kept = serde_json::Map::new();
    for key in ["page", "consent"] {
        if let Some(value) = context.get(key) {
            kept.insert(key.into(), value.clone());
        }
    }
    let proof = if verified {
        Proof::Verified
    } else {
        Proof::Claimed
    };
    if let Some(marker) = proof.marker() {
        kept.insert("seam".into(), json!({ PROOF_FIELD: marker }));
    }
    Value::Object(kept)
}

/// The identity a public-key request proves: a user ID with a valid identity token, else the
/// ID cookie's ID (the browser's own, in a cookie only the Worker can seal). Anything else in the
/// body is a claim and gets the non-personal answer.
fn bound(
    cookie: Option<String>,
    user_id: Option<String>,
    token: Option<&str>,
    secret: Option<&[u8]>,
    now_ms: i64,
) -> (Option<String>, Option<String>) {
    let verified = match (&user_id, token, secret) {
        (Some(u), Some(t), Some(secret)) => proof::verify(t, u, secret, now_ms).is_ok(),
        _ => false,
    };
    if verified {
        (None, user_id)
    } else {
        (cookie, None)
    }
}
