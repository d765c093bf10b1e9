//! Admission of admin requests: the bearer key and its scopes, and the identifier a route names.

use seam_core::collect::auth::constant_time_eq;
use seam_core::format::id;
use seam_core::identity::{IdType, Identifier, Rules};
use seam_core::plan::Statement;
use seam_core::privacy::access::{self, bearer, AccessError, Grant, Scope, Session};
use seam_core::privacy::{audit, AuditEntry};
use serde_json::Value;
use worker::{Env, Method, Request};

use super::header;
use crate::error::ApiError;
use crate::{platform, store};

/// Admits an admin request whose bearer key has `scope`: the root key (a secret: `wrangler secret
/// put ADMIN_KEY`, or `.dev.vars` locally) or an issued key from the D1 `admin_keys` table; or,
/// without an `Authorization` header, the console session in its cookie (the key's grant). Write
/// keys (Basic auth) are refused outright. Returns who acted, for the audit log.
pub async fn authorize(req: &Request, env: &Env, scope: Scope) -> Result<Grant, ApiError> {
    let authorization = header(req, "Authorization");
    if authorization.is_none() && super::cookie(req, access::SESSION_COOKIE).is_some() {
        let grant = authorize_session(req, env).await?.grant;
        grant.require(scope)?;
        return Ok(grant);
    }
    let presented = bearer(authorization.as_deref())?.to_owned();
    let grant = identify(env, &presented).await?;
    grant.require(scope)?;
    Ok(grant)
}

/// Who `presented` is (the root key or a live issued key), whatever it may do.
pub async fn identify(env: &Env, presented: &str) -> Result<Grant, ApiError> {
    let root = env
        .secret("ADMIN_KEY")
        .map(|s| s.to_string())
        .or_else(|_| env.var("ADMIN_KEY").map(|v| v.to_string()))
        .ok();
    if let Ok(grant) = access::identify(presented, root.as_deref(), None) {
        return Ok(grant);
    }
    let stored = store::keys::by_hash(&env.d1("DB")?, &access::key_hash(presented)).await?;
    Ok(access::identify(presented, None, stored.as_ref())?)
}

/// The console session in the request's cookie. A request that changes anything must also
/// carry the session's CSRF token and, when it says where it comes from, this origin: the
/// cookie is `SameSite=Strict` already, this is the second lock.
pub async fn authorize_session(req: &Request, env: &Env) -> Result<Session, ApiError> {
    let token = super::cookie(req, access::SESSION_COOKIE).ok_or(AccessError::SessionEnded)?;
    let session = store::keys::session(&env.d1("DB")?, &token, platform::now_ms())
        .await?
        .ok_or(AccessError::SessionEnded)?;
    if !matches!(req.method(), Method::Get | Method::Head) {
        let csrf = header(req, access::CSRF_HEADER).unwrap_or_default();
        let same_origin = super::cross_origin(req).is_none();
        if !same_origin || !constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
            return Err(AccessError::CrossSiteRequest.into());
        }
    }
    Ok(session)
}

/// Parses an identifier type name: a standard type or `external:<type>`.
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

/// The normalised identifier named by a type name and a raw value (as the store holds it).
pub fn identifier(
    kind: Option<&str>,
    value: Option<&str>,
    rules: &Rules,
) -> Result<Identifier, ApiError> {
    let kind = kind.and_then(id_type).ok_or(ApiError::InvalidIdentifier)?;
    let value = value.ok_or(ApiError::InvalidIdentifier)?;
    Identifier::normalized(kind, value, rules).ok_or(ApiError::InvalidIdentifier)
}

/// A query parameter of the request URL.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.url().ok().and_then(|url| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// The audit log entry of an admin action by `grant` that names no person.
pub fn audit_entry(grant: &Grant, action: &'static str, detail: Value, now_ms: i64) -> Statement {
    audit(&AuditEntry {
        request_id: id::message_id("admin", now_ms, platform::random_bytes()),
        action,
        actor: grant.label.clone(),
        subject: None,
        detail,
        at_ms: now_ms,
    })
}
