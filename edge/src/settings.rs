//! Deployment settings beyond sources: identity rules and the admin key.

use seam_core::auth::constant_time_eq;
use seam_core::identity::Rules;
use worker::{Env, Request};

use crate::error::ApiError;
use crate::http;

/// Identity rules from the optional `IDENTITY_RULES` JSON setting; defaults otherwise.
pub fn identity_rules(env: &Env) -> Result<Rules, ApiError> {
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

/// Admits a request carrying `Authorization: Bearer <ADMIN_KEY>` (a secret: `wrangler secret put
/// ADMIN_KEY`, or `.dev.vars` locally). Write keys (Basic auth) are refused outright.
pub fn require_admin(req: &Request, env: &Env) -> Result<(), ApiError> {
    let header = http::header(req, "Authorization").ok_or(ApiError::MissingAdminKey)?;
    let (scheme, presented) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::WriteKeyForbidden);
    }
    if !scheme.eq_ignore_ascii_case("bearer") || presented.trim().is_empty() {
        return Err(ApiError::MissingAdminKey);
    }
    let expected = env
        .secret("ADMIN_KEY")
        .map(|s| s.to_string())
        .or_else(|_| env.var("ADMIN_KEY").map(|v| v.to_string()))
        .unwrap_or_default();
    // An unset or short key disables admin access rather than accepting a guessable one.
    if expected.len() < 16 || !constant_time_eq(expected.as_bytes(), presented.trim().as_bytes()) {
        return Err(ApiError::InvalidAdminKey);
    }
    Ok(())
}
