//! `POST /v1/admin/preview {"profileId", "slots": [...]}` (admin key or console session with
//! `config:write`): what each slot would show that person now, decided exactly as for their
//! pages (`store::decisions::decide`, consent not denied), but logging no exposure: a preview
//! is not a view.

use seam_core::personalise::decide::Slot;
use seam_core::privacy::access::Scope;
use serde_json::Value;
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::authorize;
use crate::store::shards::Shards;
use crate::{http, store};

/// Slot names and a profile ID fit in far less.
const MAX_BODY_BYTES: usize = 8 * 1024;

/// Handles the preview at `now_ms`.
pub async fn post(mut req: Request, env: &Env, now_ms: i64) -> Result<Response, ApiError> {
    authorize(&req, env, Scope::ConfigWrite).await?;
    let body = http::capped_body(&mut req, MAX_BODY_BYTES).await?;
    let body: Value = serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
    let slots = Slot::parse_list(body.get("slots")).ok_or(ApiError::InvalidBody)?;
    let requested = body
        .get("profileId")
        .and_then(Value::as_str)
        .ok_or(ApiError::InvalidBody)?;
    let db = Shards::of(env)?;
    let profile_id = store::profiles::current_id(&db, requested)
        .await?
        .ok_or(ApiError::ProfileNotFound)?;
    let decisions =
        store::decisions::for_profile(env, &db, &profile_id, &slots, false, now_ms).await?;
    let mut out = decisions.to_json();
    out["profileId"] = Value::from(profile_id);
    Ok(Response::from_json(&out)?)
}
