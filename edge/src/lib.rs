//! # seam-edge
//!
//! Seam's edge collector: a Cloudflare Worker (Rust, `worker` crate) that speaks the Segment HTTP
//! Tracking API and stores events in D1. Routes are thin: decode the request, let `seam-core`
//! validate and plan the writes, execute the plan on D1, encode the response. HTTP error mapping
//! lives only in [`error`]; D1 access only in [`store`].
//!
//! Requests that match no route fall through to the static assets (the site), which wrangler's
//! `[assets]` serves before the Worker for every path not listed in `run_worker_first`. The site's
//! HTML pages are listed there: the Worker fetches them from `ASSETS` and fills their
//! personalisation slots (`routes::render`).

pub mod error;
pub mod http;
pub mod limits;
pub mod retention;
pub mod routes;
pub mod settings;
pub mod store;
pub mod sweep;

use std::sync::atomic::{AtomicUsize, Ordering};

use seam_core::collect::event::EventType;
use worker::{
    event, Context, Env, Method, Request, Response, Result, ScheduleContext, ScheduledEvent,
};

use crate::error::ApiError;

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
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
    let mut response = match route(req, &env, &ctx).await {
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

/// The segment sweep's cron (`wrangler.toml`); any other trigger runs retention.
const SWEEP_CRON: &str = "*/5 * * * *";

/// The cron triggers, as of the trigger's scheduled time: the segment sweep every five minutes,
/// retention daily.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let now_ms = event.schedule() as i64;
    if event.cron() == SWEEP_CRON {
        match sweep::run(&env, now_ms).await {
            Ok(report) => worker::console_log!(
                "segment sweep: {} profiles, {} transitions",
                report.profiles,
                report.transitions
            ),
            Err(e) => worker::console_error!("segment sweep failed: {} ({})", e.code(), e),
        }
        return;
    }
    match retention::run(&env, now_ms).await {
        Ok(report) => worker::console_log!(
            "retention: {} events, {} anonymous profiles, {} chunks",
            report.events,
            report.profiles,
            report.chunks
        ),
        Err(e) => worker::console_error!("retention failed: {} ({})", e.code(), e),
    }
}

async fn route(req: Request, env: &Env, ctx: &Context) -> std::result::Result<Response, ApiError> {
    let path = req.path();
    let method = req.method();
    if method == Method::Options && path.starts_with("/v1/") && !is_admin_path(&path) {
        return routes::preflight::options(&req, env).await;
    }
    if path != "/health" {
        // Picks up an uploaded personalisation configuration (a KV read every 30 s at most).
        store::personalisation::refresh_config(env).await;
    }
    if let Some(action) = path.strip_prefix("/v1/privacy/") {
        let action = action.to_owned();
        return routes::privacy::handle(req, env, &action).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/admin/") {
        let rest = rest.to_owned();
        return routes::admin::handle(req, env, &rest).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/profiles/") {
        return match method {
            Method::Get => routes::profiles::get(&req, env, rest).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    match path.as_str() {
        "/health" if method == Method::Get => Ok(routes::health::get()?),
        "/health" => Err(ApiError::MethodNotAllowed),
        "/v1/decide" if method == Method::Post => routes::decide::post(req, env, ctx).await,
        "/v1/decide" => Err(ApiError::MethodNotAllowed),
        _ => {
            let Some(segment) = path.strip_prefix("/v1/") else {
                // Site pages routed to the Worker (`run_worker_first`): edge-rendered slots.
                return match method {
                    Method::Get | Method::Head => routes::render::page(req, env, ctx).await,
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
            routes::ingest::post(req, env, ctx, path_type).await
        }
    }
}

/// Work this isolate runs after its responses (profile refreshes, exposure logs) and has not
/// finished: `/health` reports it, so tests and operators can tell when derived state caught up.
static BACKGROUND: AtomicUsize = AtomicUsize::new(0);

/// Runs `work` after the response is sent (`ctx.wait_until`), counted in [`background`].
pub fn after_response(ctx: &Context, work: impl std::future::Future<Output = ()> + 'static) {
    BACKGROUND.fetch_add(1, Ordering::Relaxed);
    ctx.wait_until(async move {
        work.await;
        BACKGROUND.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Background tasks running now (see [`after_response`]).
pub fn background() -> usize {
    BACKGROUND.load(Ordering::Relaxed)
}

/// Admin routes: never CORS-enabled, never reachable with a write key.
fn is_admin_path(path: &str) -> bool {
    ["/v1/profiles", "/v1/privacy", "/v1/admin"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// Random bytes from the platform's CSPRNG. Workers always provide `crypto.getRandomValues`;
/// `Math.random` only guards the impossible case so an ID is never all zeros.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        for b in &mut bytes {
            *b = (worker::js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes
}
