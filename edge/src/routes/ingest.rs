//! `POST /v1/{batch,track,identify,page,screen,group,alias}` and the short forms
//! `/v1/{b,t,i,p,s,g,a}`: the Segment HTTP Tracking API.

use seam_core::auth::{basic_user, WriteKeys};
use seam_core::event::EventType;
use seam_core::ingest::{decode, RequestError, MAX_REQUEST_BYTES};
use seam_core::{id, plan};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::store;

/// Handles one ingestion request; `path_type` is `None` for batches.
pub async fn post(
    mut req: Request,
    env: &Env,
    path_type: Option<EventType>,
) -> Result<Response, ApiError> {
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES) {
        return Err(RequestError::TooLarge.into());
    }
    let write_keys = WriteKeys::parse(
        &env.var("WRITE_KEYS")
            .map(|v| v.to_string())
            .unwrap_or_default(),
    );
    let header_key = req
        .headers()
        .get("Authorization")
        .ok()
        .flatten()
        .and_then(|h| basic_user(&h));
    // A key in the header is checked before the body is read, so bad keys cost no parsing.
    if header_key.is_some() {
        write_keys.source_for(header_key.as_deref())?;
    }
    let body = req.bytes().await.map_err(|_| RequestError::InvalidJson)?;
    let received_at = worker::Date::now().as_millis() as i64;
    let decoded = decode(&body, path_type, received_at, || {
        id::message_id("seam-edge", received_at, random_bytes())
    })?;
    let source = write_keys.source_for(decoded.write_key.as_deref().or(header_key.as_deref()))?;

    let valid: Vec<_> = decoded.valid().collect();
    let plan = plan::insert_events(source, &valid);
    let db = env.d1("DB")?;
    let inserted = store::d1::insert_events(&db, &plan).await?;
    let results = decoded.results(&inserted);
    Ok(Response::from_json(
        &serde_json::json!({ "results": results }),
    )?)
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // Workers always provide crypto.getRandomValues; Math.random only guards the impossible case
    // so a generated messageId is never all zeros.
    if getrandom::fill(&mut bytes).is_err() {
        for b in &mut bytes {
            *b = (worker::js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes
}
