//! Admin profile API: `GET /v1/profiles/{profileId}` and
//! `GET /v1/profiles/lookup?type=email&value=...`. D1 is read directly (the truth), never KV.

use seam_core::privacy::access::Scope;
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{authorize, identifier, query_param};
use crate::{settings, store};

/// Handles `GET /v1/profiles/...` at `now_ms`; `rest` is the path after `/v1/profiles/`.
pub async fn get(req: &Request, env: &Env, rest: &str, now_ms: i64) -> Result<Response, ApiError> {
    authorize(req, env, Scope::ProfilesRead).await?;
    let db = env.d1("DB")?;
    let profile_id = if rest == "lookup" {
        let identifier = identifier(
            query_param(req, "type").as_deref(),
            query_param(req, "value").as_deref(),
            &settings::identity_rules(env)?,
        )?;
        store::profiles::profile_for(&db, &identifier).await?
    } else {
        store::profiles::current_id(&db, rest).await?
    };
    let profile_id = profile_id.ok_or(ApiError::ProfileNotFound)?;
    let mut body = store::profiles::full(&db, &profile_id, now_ms).await?;
    if rest != "lookup" && rest != profile_id {
        body["requestedId"] = serde_json::Value::from(rest);
    }
    Ok(Response::from_json(&body)?)
}
