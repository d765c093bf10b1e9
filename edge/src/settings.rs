//! Deployment settings beyond sources: identity rules, retention and admin access.

use seam_core::identity::Rules;
use seam_core::privacy::access::{self, bearer, Grant, Scope};
use seam_core::privacy::retention::Retention;
use worker::{Env, Request};

use crate::error::ApiError;
use crate::{http, store};

/// Identity rules from the optional `IDENTITY_RULES` JSON setting (defaults otherwise), with the
/// `PII_SALT` secret for hashed emails and phones.
pub fn identity_rules(env: &Env) -> Result<Rules, ApiError> {
    let mut rules = configured_rules(env)?;
    rules.pii_salt = env
        .secret("PII_SALT")
        .map(|s| s.to_string())
        .ok()
        .filter(|s| !s.is_empty());
    Ok(rules)
}

fn configured_rules(env: &Env) -> Result<Rules, ApiError> {
    let setting = env
        .var("IDENTITY_RULES")
        .map(|v| v.to_string())
        .unwrap_or_default();
    if setting.trim().is_empty() {
        return Ok(Rules::default());
    }
    let value: serde_json::Value = serde_json::from_str(&setting).map_err(|_| {
        ApiError::IdentityConfig(seam_core::identity::IdentityConfigError::NotAnObject)
    })?;
    Rules::from_json(&value).map_err(ApiError::IdentityConfig)
}

/// Admits an admin request whose bearer key has `scope`: the root key (a secret: `wrangler secret
/// put ADMIN_KEY`, or `.dev.vars` locally) or an issued key from the D1 `admin_keys` table. Write
/// keys (Basic auth) are refused outright. Returns who acted, for the audit log.
pub async fn authorize(req: &Request, env: &Env, scope: Scope) -> Result<Grant, ApiError> {
    let presented = bearer(http::header(req, "Authorization").as_deref())?.to_owned();
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

/// Retention settings (`RETENTION_*` vars); defaults otherwise.
pub fn retention(env: &Env) -> Result<Retention, ApiError> {
    Retention::from_settings(|name| env.var(name).ok().map(|v| v.to_string()))
        .map_err(ApiError::Retention)
}
