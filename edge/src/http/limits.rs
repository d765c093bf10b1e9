//! Rate limits through Cloudflare's rate-limiting bindings (`[[ratelimits]]` in wrangler.toml):
//! `IP_LIMITER` per client IP, `SOURCE_LIMITER` per source, `SIGN_IN_LIMITER` per client IP for
//! sign-ins. Limits and periods are configured there. A missing binding means no limit (logged
//! once per request), never an outage.

use worker::{Env, Request};

use crate::error::ApiError;

async fn check(env: &Env, binding: &str, key: String, period_var: &str) -> Result<(), ApiError> {
    let Ok(limiter) = env.rate_limiter(binding) else {
        return Ok(());
    };
    match limiter.limit(key).await {
        Ok(outcome) if !outcome.success => {
            let retry_after = env
                .var(period_var)
                .ok()
                .and_then(|v| v.to_string().parse().ok())
                .unwrap_or(60);
            Err(ApiError::RateLimited { retry_after })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            // The limiter failing must not drop events: let the request through.
            worker::console_error!("rate limiter {binding} failed: {e}");
            Ok(())
        }
    }
}

/// Limits requests per client IP, an IPv6 client by its /64 (as sign-ins).
pub async fn check_ip(env: &Env, ip: Option<&str>) -> Result<(), ApiError> {
    let Some(ip) = ip else {
        return Ok(());
    };
    let client = seam_core::collect::enrich::limit_client(ip);
    check(env, "IP_LIMITER", format!("ip:{client}"), "IP_LIMIT_PERIOD").await
}

/// Limits requests per source.
pub async fn check_source(env: &Env, source_id: &str) -> Result<(), ApiError> {
    check(
        env,
        "SOURCE_LIMITER",
        format!("source:{source_id}"),
        "SOURCE_LIMIT_PERIOD",
    )
    .await
}

/// Limits sign-in attempts (the console's, the demo shop's) per client IP, an IPv6 client by
/// its /64.
pub async fn check_sign_in(env: &Env, req: &Request) -> Result<(), ApiError> {
    let Some(ip) = super::header(req, "CF-Connecting-IP") else {
        return Ok(());
    };
    let client = seam_core::collect::enrich::limit_client(&ip);
    check(
        env,
        "SIGN_IN_LIMITER",
        format!("sign-in:{client}"),
        "SIGN_IN_LIMIT_PERIOD",
    )
    .await
}
