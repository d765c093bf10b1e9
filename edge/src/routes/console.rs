//! The console's session (`/console` is a page of the site's assets that uses the JSON admin
//! API; this is how it signs in):
//! - `POST /console/session {"key"}`: exchanges an admin key for a session. The answer sets an
//!   `HttpOnly; Secure; SameSite=Strict` cookie holding an opaque token (only its hash is stored)
//!   and returns `{label, scopes, csrf, expiresAt}`; the key is never sent again.
//! - `GET /console/session`: the session in the cookie, or 401.
//! - `DELETE /console/session`: logout (with the CSRF token), the cookie cleared.
//!
//! Every admin route accepts the session in place of a bearer key (`http::admin::authorize`).

use seam_core::privacy::access::{self, AccessError, Session};
use serde_json::{json, Value};
use worker::{Env, Method, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{audit_entry, authorize_session, identify};
use crate::{http, platform, store};

/// A key fits in far less.
const MAX_BODY_BYTES: usize = 4 * 1024;

/// Handles `/console/session` at `now_ms`.
pub async fn session(mut req: Request, env: &Env, now_ms: i64) -> Result<Response, ApiError> {
    let db = env.d1("DB")?;
    match req.method() {
        Method::Post => {
            http::limits::check_sign_in(env, &req).await?;
            let body = http::capped_body(&mut req, MAX_BODY_BYTES).await?;
            let body: Value = serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
            let key = body
                .get("key")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .ok_or(AccessError::MissingAdminKey)?;
            let grant = identify(env, key).await?;
            let token = access::token(platform::random_bytes());
            let csrf = access::token(platform::random_bytes());
            let audit = audit_entry(&grant, "console_sign_in", json!({}), now_ms);
            store::d1::execute(
                &db,
                &[access::open_session(&token, &grant, &csrf, now_ms), audit],
            )
            .await?;
            let session = Session {
                grant,
                csrf,
                expires_ms: now_ms + access::SESSION_MS,
            };
            let cookie = format!(
                "{}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
                access::SESSION_COOKIE,
                access::SESSION_MS / 1000
            );
            let mut response = Response::from_json(&describe(&session))?.with_status(201);
            response.headers_mut().set("Set-Cookie", &cookie)?;
            Ok(response)
        }
        Method::Get => {
            let session = authorize_session(&req, env).await?;
            Ok(Response::from_json(&describe(&session))?)
        }
        Method::Delete => {
            let session = authorize_session(&req, env).await?;
            let token = http::cookie(&req, access::SESSION_COOKIE).unwrap_or_default();
            let audit = audit_entry(&session.grant, "console_sign_out", json!({}), now_ms);
            store::d1::execute(&db, &[access::close_session(&token, now_ms), audit]).await?;
            let cookie = format!(
                "{}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
                access::SESSION_COOKIE
            );
            let mut response = Response::from_json(&json!({ "signedOut": true }))?;
            response.headers_mut().set("Set-Cookie", &cookie)?;
            Ok(response)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn describe(session: &Session) -> Value {
    let scopes: Vec<&str> = session.grant.scopes.iter().map(|s| s.as_str()).collect();
    json!({
        "label": session.grant.label,
        "scopes": scopes,
        "csrf": session.csrf,
        "expiresAt": session.expires_ms,
    })
}
