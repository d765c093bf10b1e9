//! Admin profile API: `GET /v1/profiles/{profileId}` and
//! `GET /v1/profiles/lookup?type=email&value=...`. D1 is read directly (the truth), never KV.

use seam_core::identity::{IdType, Identifier};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::{settings, store};

/// Parses a lookup type: a standard identifier type or `external:<type>`.
fn id_type(name: &str) -> Option<IdType> {
    if let Some(external) = name.strip_prefix("external:") {
        return (!external.is_empty()).then(|| IdType::External(external.to_ascii_lowercase()));
    }
    Some(match name {
        "user_id" => IdType::UserId,
        "email" => IdType::Email,
        "phone" => IdType::Phone,
        "anonymous_id" => IdType::AnonymousId,
        "cookie_id" => IdType::CookieId,
        "device_id" => IdType::DeviceId,
        _ => return None,
    })
}

/// Handles `GET /v1/profiles/...`; `rest` is the path after `/v1/profiles/`.
pub async fn get(req: &Request, env: &Env, rest: &str) -> Result<Response, ApiError> {
    settings::require_admin(req, env)?;
    let db = env.d1("DB")?;
    let profile_id = if rest == "lookup" {
        let url = req.url().map_err(|_| ApiError::InvalidIdentifier)?;
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let kind = param("type")
            .and_then(|t| id_type(&t))
            .ok_or(ApiError::InvalidIdentifier)?;
        let raw = param("value").ok_or(ApiError::InvalidIdentifier)?;
        let rules = settings::identity_rules(env)?;
        let identifier =
            Identifier::normalized(kind, &raw, &rules).ok_or(ApiError::InvalidIdentifier)?;
        store::profiles::profile_for(&db, &identifier).await?
    } else {
        store::profiles::current_id(&db, rest).await?
    };
    let profile_id = profile_id.ok_or(ApiError::ProfileNotFound)?;
    let mut body = store::profiles::full(&db, &profile_id).await?;
    if rest != "lookup" && rest != profile_id {
        body["requestedId"] = serde_json::Value::from(rest);
    }
    Ok(Response::from_json(&body)?)
}
