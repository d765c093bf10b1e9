//! Admission of admin requests: the bearer key and its scopes, and the identifier a route names.

use seam_core::format::id;
use seam_core::identity::{IdType, Identifier, Rules};
use seam_core::plan::Statement;
use seam_core::privacy::access::{self, bearer, Grant, Scope};
use seam_core::privacy::{audit, AuditEntry};
use serde_json::Value;
use worker::{Env, Request};

use super::header;
use crate::error::ApiError;
use crate::{platform, store};

/// Admits an admin request whose bearer key has `scope`: the root key (a secret: `wrangler secret
/// put ADMIN_KEY`, or `.dev.vars` locally) or an issued key from the D1 `admin_keys` table. Write
/// keys (Basic auth) are refused outright. Returns who acted, for the audit log.
pub async fn authorize(req: &Request, env: &Env, scope: Scope) -> Result<Grant, ApiError> {
    let presented = bearer(header(req, "Authorization").as_deref())?.to_owned();
    let root = env
        .secret("ADMIN_KEY")
        .map(|s| s.to_string())
        .or_else(|_| env.var("ADMIN_KEY").map(|v| v.to_string()))
        .ok();
    if let Ok(grant) = access::authorize(&presented, root.as_deref(), None, scope) {
        return Ok(grant);
    }
    let stored = store::keys::by_hash(&env.d1("DB")?, &access::key_hash(&presented)).await?;
    Ok(access::authorize(&presented, None, stored.as_ref(), scope)?)
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
