//! Provider webhooks, verified by the secret in their URL (`HOOKS_SECRET`):
//! - `POST /v1/hooks/sendgrid/{secret}`: SendGrid's Event Webhook (a JSON array of events);
//! - `POST /v1/hooks/twilio/{secret}`: Twilio's status callbacks and inbound STOP replies
//!   (form-encoded).
//!
//! Their entries become events on the person's profile (`seam_core::journey::inbound`):
//! opens, clicks, reads and opt-outs that journeys branch on and every later send respects.
//! They are accepted like the Tracking API's events, under the server source [`HOOKS_SOURCE`].

use seam_core::collect::auth::constant_time_eq;
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::ingest::{decode, MAX_REQUEST_BYTES};
use seam_core::collect::source::Source;
use seam_core::format::id;
use seam_core::journey::inbound;
use serde_json::{json, Value};
use worker::{Context, Env, Request, Response};

use crate::error::ApiError;
use crate::{accept, http, platform, settings};

/// The source provider events are stored under (source IDs starting with `$` are the
/// collector's own).
pub const HOOKS_SOURCE: &str = "$hooks";
/// Largest webhook body (SendGrid batches up to some thousand entries).
const MAX_HOOK_BYTES: usize = 1024 * 1024;
/// Events per accepted batch.
const CHUNK: usize = 500;
/// Bytes of events per accepted batch, well within the Tracking API's request cap.
const MAX_BATCH_BYTES: usize = MAX_REQUEST_BYTES / 2;

/// Handles `POST /v1/hooks/{provider}/{secret}` received at `now_ms`.
pub async fn post(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    rest: &str,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let (provider, secret) = rest.split_once('/').ok_or(ApiError::NotFound)?;
    if !matches!(provider, "sendgrid" | "twilio") {
        return Err(ApiError::NotFound);
    }
    let expected = settings::hooks_secret(env).ok_or(ApiError::HookForbidden)?;
    if !constant_time_eq(secret.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::HookForbidden);
    }
    let body = http::capped_body(&mut req, MAX_HOOK_BYTES).await?;
    let events = if provider == "sendgrid" {
        let entries: Value = serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
        if !entries.is_array() {
            return Err(ApiError::InvalidBody);
        }
        inbound::sendgrid_events(&entries, expected.as_bytes())
    } else {
        inbound::twilio_events(&inbound::parse_form(&body), now_ms, expected.as_bytes())
    };
    let source = Source::server(HOOKS_SOURCE);
    let mut stored = 0;
    for batch in batches(&events) {
        let decoded = decode(batch.as_bytes(), None, now_ms, || {
            id::message_id("seam-hooks", now_ms, platform::random_bytes())
        })?
        .prove(&source, None, now_ms)
        .clamp_clock(&source);
        let accepted =
            accept::accept(env, ctx, &source, decoded, &RequestFacts::default(), now_ms).await?;
        stored += accepted.results.len();
    }
    Ok(Response::from_json(&json!({ "received": stored }))?)
}

/// `{"batch": [...]}` bodies of `events`, each within the Tracking API's request size (a
/// webhook body may be larger) and event count.
fn batches(events: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&Value> = Vec::new();
    let mut size = 0;
    for event in events {
        let len = event.to_string().len() + 1;
        if len > MAX_BATCH_BYTES {
            // Only a provider's absurdly long field makes one: it is dropped, not retried forever.
            continue;
        }
        if !current.is_empty() && (size + len > MAX_BATCH_BYTES || current.len() >= CHUNK) {
            out.push(json!({ "batch": current }).to_string());
            current.clear();
            size = 0;
        }
        current.push(event);
        size += len;
    }
    if !current.is_empty() {
        out.push(json!({ "batch": current }).to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_webhook_is_split_within_the_request_cap_and_an_oversized_event_dropped() {
        let long = "x".repeat(1000);
        let mut events: Vec<Value> = (0..1200)
            .map(|i| json!({"type": "track", "event": "Email Opened", "messageId": i, "properties": {"url": long}}))
            .collect();
        events.push(json!({"type": "track", "properties": {"url": "y".repeat(MAX_BATCH_BYTES)}}));
        let bodies = batches(&events);
        assert!(bodies.len() >= 3, "{} bodies", bodies.len());
        let mut kept = 0;
        for body in &bodies {
            assert!(body.len() <= MAX_REQUEST_BYTES);
            let batch: Value = serde_json::from_str(body).unwrap();
            let n = batch["batch"].as_array().unwrap().len();
            assert!(n <= CHUNK);
            kept += n;
        }
        assert_eq!(kept, 1200);
    }

    #[test]
    fn the_secret_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcde"));
    }
}
