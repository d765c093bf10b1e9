//! The route table: which route answers a method and path, CORS on every answer to an allowed
//! browser origin, and the request's one reading of the clock.

use seam_core::collect::event::EventType;
use worker::{Context, Env, Method, Request, Response, Result};

use crate::error::ApiError;
use crate::{http, platform, routes, store};

/// Answers one request.
pub async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    // Browsers on an allowed origin get CORS headers on every answer, errors included, so the SDK
    // can read a 429's Retry-After.
    let cors_origin = match http::cross_origin(&req) {
        // Admin routes never get CORS: no browser page may read profiles.
        Some(origin) if req.path().starts_with("/v1/") && !is_admin_path(&req.path()) => {
            let allowed = match store::sources::configured(&env) {
                Ok(configured) => store::sources::any_allows_origin(&env, &configured, &origin)
                    .await
                    .unwrap_or(false),
                Err(_) => false,
            };
            allowed.then_some(origin)
        }
        _ => None,
    };
    let is_preflight = req.method() == Method::Options;
    let mut response = match route(req, &env, &ctx, platform::now_ms()).await {
        Ok(response) => response,
        Err(error) => error.into_response()?,
    };
    if let Some(origin) = cors_origin {
        let headers = response.headers_mut();
        if is_preflight {
            http::preflight_headers(headers, &origin)?;
        } else {
            http::allow_origin(headers, &origin)?;
        }
    }
    Ok(response)
}

async fn route(
    req: Request,
    env: &Env,
    ctx: &Context,
    now_ms: i64,
) -> std::result::Result<Response, ApiError> {
    let path = req.path();
    let method = req.method();
    if method == Method::Options && path.starts_with("/v1/") && !is_admin_path(&path) {
        return routes::preflight::options(&req, env).await;
    }
    if path != "/health" {
        // Picks up an uploaded personalisation configuration (a KV read every 30 s at most).
        store::config::refresh(env, now_ms).await;
        store::destinations::refresh(env, now_ms).await;
    }
    if let Some(action) = path.strip_prefix("/v1/privacy/") {
        let action = action.to_owned();
        return routes::privacy::handle(req, env, &action, now_ms).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/hooks/") {
        return match method {
            Method::Post => {
                let rest = rest.to_owned();
                routes::hooks::post(req, env, ctx, &rest, now_ms).await
            }
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/admin/segments") {
        if rest.is_empty() || rest.starts_with('/') {
            return match method {
                Method::Get => routes::segments::get(&req, env, rest, now_ms).await,
                _ => Err(ApiError::MethodNotAllowed),
            };
        }
    }
    if path == "/v1/admin/preview" {
        return match method {
            Method::Post => routes::preview::post(req, env, now_ms).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if path == "/v1/admin/overview" {
        return match method {
            Method::Get => routes::overview::get(&req, env, now_ms).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if path == "/v1/admin/events" {
        return match method {
            Method::Get => routes::events::get(&req, env).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/admin/journeys") {
        if rest.is_empty() || rest.starts_with('/') {
            let rest = rest.to_owned();
            return routes::journeys::handle(req, env, &rest, now_ms).await;
        }
    }
    if let Some(rest) = path.strip_prefix("/v1/admin/destinations") {
        if rest.is_empty() || rest.starts_with('/') {
            let rest = rest.to_owned();
            return routes::destinations::handle(req, env, &rest, now_ms).await;
        }
    }
    if path == "/v1/admin/import" {
        return match method {
            Method::Post => routes::import::post(req, env, now_ms).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if let Some(id) = path.strip_prefix("/v1/admin/import/") {
        return match method {
            Method::Get => routes::import::get(&req, env, id).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/admin/export/") {
        return match method {
            Method::Get => routes::export::get(&req, env, rest, now_ms).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/admin/") {
        let rest = rest.to_owned();
        return routes::admin::handle(req, env, &rest, now_ms).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/profiles/") {
        return match method {
            Method::Get => routes::profiles::get(&req, env, rest, now_ms).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    match path.as_str() {
        "/health" if method == Method::Get => Ok(routes::health::get(env)?),
        "/health" => Err(ApiError::MethodNotAllowed),
        "/v1/decide" if method == Method::Post => routes::decide::post(req, env, ctx, now_ms).await,
        "/v1/decide" => Err(ApiError::MethodNotAllowed),
        "/demo/sign-in" if method == Method::Post => {
            routes::demo::sign_in(req, env, ctx, now_ms).await
        }
        "/demo/sign-in" => Err(ApiError::MethodNotAllowed),
        "/console/session" => routes::console::session(req, env, now_ms).await,
        _ => {
            let Some(segment) = path.strip_prefix("/v1/") else {
                // Site pages routed to the Worker (`run_worker_first`): edge-rendered slots.
                return match method {
                    Method::Get | Method::Head => routes::render::page(req, env, ctx, now_ms).await,
                    _ => Err(ApiError::MethodNotAllowed),
                };
            };
            let path_type = match segment {
                "batch" | "b" => None,
                other => Some(EventType::from_path(other).ok_or(ApiError::NotFound)?),
            };
            if method != Method::Post {
                return Err(ApiError::MethodNotAllowed);
            }
            routes::ingest::post(req, env, ctx, path_type, now_ms).await
        }
    }
}

/// Admin routes and provider webhooks: never CORS-enabled, never reachable with a write key.
fn is_admin_path(path: &str) -> bool {
    ["/v1/profiles", "/v1/privacy", "/v1/admin", "/v1/hooks"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
}
