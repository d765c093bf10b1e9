//! `POST /demo/sign-in {email, password}`: the demo shop's stand-in for a site backend's login.
//! It answers `{userId, identityToken, expires}`, the token signed with `IDENTITY_SECRET` the way
//! a real site's backend would sign it (`seam_core::collect::proof::sign`), so the shop can show
//! identity verification end to end. Like a real backend's login handler, it also tells the
//! collector from the server who signed in: an identify under the trusted `server` source with
//! the email and the shopper's marketing choice (`offers` -> `email_opt_in`), which is what makes
//! the email an address journeys may write to. It exists only where the `DEMO_PASSWORD` secret is
//! set (`scripts/setup.sh` generates one into `.dev.vars`; deployments have none): every shopper
//! signs in with that one password, so it must never guard anything real.

use seam_core::collect::auth::constant_time_eq;
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::ingest::decode;
use seam_core::collect::proof;
use seam_core::collect::source::Source;
use seam_core::format::id;
use seam_core::identity::{IdType, Identifier, Rules};
use serde_json::{json, Value};
use worker::{Context, Env, Request, Response};

use crate::error::ApiError;
use crate::{accept, platform, settings};

/// How long a demo sign-in's token lasts.
const TOKEN_SECONDS: i64 = 24 * 60 * 60;
/// An email and a password fit in far less.
const MAX_BODY_BYTES: usize = 4 * 1024;

/// Handles `POST /demo/sign-in` at `now_ms`.
pub async fn sign_in(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let password = env
        .secret("DEMO_PASSWORD")
        .map(|s| s.to_string())
        .ok()
        .filter(|p| p.len() >= 8);
    let (Some(password), Some(secret)) = (password, settings::identity_secret(env)) else {
        return Err(ApiError::NotFound);
    };
    crate::http::limits::check_sign_in(env, &req).await?;
    let declared =
        crate::http::header(&req, "Content-Length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::InvalidBody);
    }
    let raw = req.bytes().await.map_err(|_| ApiError::InvalidBody)?;
    if raw.len() > MAX_BODY_BYTES {
        return Err(ApiError::InvalidBody);
    }
    let body: Value = serde_json::from_slice(&raw).map_err(|_| ApiError::InvalidBody)?;
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let email = Identifier::normalized(IdType::Email, field("email"), &Rules::default())
        .ok_or(ApiError::InvalidIdentifier)?;
    if !constant_time_eq(field("password").as_bytes(), password.as_bytes()) {
        return Err(ApiError::InvalidCredentials);
    }
    // The shop's own account ID for the email, as a site's user table would have it.
    let mut user_id = "shopper-".to_owned();
    user_id.push_str(
        seam_core::privacy::access::key_hash(&email.value)
            .get(..16)
            .unwrap_or_default(),
    );
    let offers = body.get("offers").and_then(Value::as_bool).unwrap_or(false);
    let identify = json!({ "batch": [{
        "type": "identify",
        "userId": user_id,
        "messageId": id::message_id("demo-backend", now_ms, platform::random_bytes()),
        "traits": { "email": email.value, "email_opt_in": offers },
    }]})
    .to_string();
    let source = Source::server("server");
    let decoded = decode(identify.as_bytes(), None, now_ms, String::new)?
        .prove(&source, None, now_ms)
        .clamp_clock(&source);
    accept::accept(env, ctx, &source, decoded, &RequestFacts::default(), now_ms).await?;
    let expires = now_ms / 1000 + TOKEN_SECONDS;
    let token = proof::sign(&secret, &user_id, expires);
    Ok(Response::from_json(&json!({
        "userId": user_id,
        "email": email.value,
        "identityToken": token,
        "expires": expires,
    }))?)
}
