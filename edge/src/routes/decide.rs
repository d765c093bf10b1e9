//! `POST /v1/decide {anonymousId|userId, slots: [...], context}`: per slot a decision (items,
//! variant, reason) from the profile's KV snapshot (D1 on a miss), honouring consent and the
//! holdout (`seam_core::personalise::decide`), and a `Decision Exposed` event for lift measurement.
//! Write-key auth and CORS as for ingestion: the SDK calls it from browsers.

use seam_core::collect::ingest::RequestError;
use seam_core::consent::personalisation_denied;
use seam_core::personalise::decide::{Exposure, Slot};
use serde_json::{json, Value};
use worker::{Context, Env, Request, Response};

use crate::error::ApiError;
use crate::http::{self, admission};
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
    let facts = http::facts(&req);
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
    let (anonymous_id, user_id) = (text("anonymousId"), text("userId"));
    if anonymous_id.is_none() && user_id.is_none() {
        return Err(ApiError::InvalidIdentifier);
    }
    let context = body.get("context").cloned().unwrap_or_else(|| json!({}));
    // Global Privacy Control opts out of personalisation here as on rendered pages.
    let denied = facts.gpc || personalisation_denied(context.get("consent"));
    let rules = settings::identity_rules(env)?;
    let db = env.d1("DB")?;
    let visitor = store::decisions::Visitor {
        anonymous_id: anonymous_id.as_deref(),
        user_id: user_id.as_deref(),
    };
    let decisions =
        store::decisions::decide(env, &db, &rules, visitor, &slots, denied, now_ms).await?;

    let exposure = Exposure {
        decisions: &decisions,
        anonymous_id: anonymous_id.as_deref(),
        user_id: user_id.as_deref(),
        message_id: text("messageId"),
        context: &context,
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
