//! Warehouse export (admin key with `export:read`), NDJSON a page at a time; each page's answer
//! names the next in `X-Seam-Next-Cursor` (absent on the last page). A page is whole or must
//! be asked for again: a cut-off answer is retried with the same cursor.
//! - `GET /v1/admin/export/events?from=YYYY-MM-DD&to=YYYY-MM-DD&source=&cursor=&limit=`: the
//!   archive's lines (docs/archive.md), days by receipt, `limit` archive objects a page (at
//!   most and by default 50).
//! - `GET /v1/admin/export/profiles?cursor=&limit=`: profiles with identifiers, traits,
//!   computed traits and segments, by profile ID, `limit` a page (at most and by default 200).

use futures_util::StreamExt;
use seam_core::archive::{self, Listed, Window, EXPORT_OBJECTS};
use seam_core::privacy::access::Scope;
use serde_json::json;
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{audit_entry, authorize, query_param};
use crate::store::shards::Shards;
use crate::store::{self, d1};

/// Listing calls one page may make looking for its objects (1,000 keys each).
const MAX_LISTS: usize = 10;
/// An archive object holds one claim: at most 500 events of at most 32 KB, with their columns.
const MAX_OBJECT_BYTES: usize = 32 * 1024 * 1024;
const NEXT: &str = "X-Seam-Next-Cursor";

/// Handles `/v1/admin/export/{rest}` at `now_ms`.
pub async fn get(req: &Request, env: &Env, rest: &str, now_ms: i64) -> Result<Response, ApiError> {
    let grant = authorize(req, env, Scope::ExportRead).await?;
    let text = |k: &str| query_param(req, k).filter(|v| v.len() <= 300);
    let db = Shards::of(env)?;
    match rest {
        "events" => {
            let window = Window::parse(
                text("from").as_deref(),
                text("to").as_deref(),
                text("source").as_deref(),
                text("cursor").as_deref(),
            )?;
            let limit = limit(text("limit"), EXPORT_OBJECTS);
            let (keys, next) = page(env, &window, limit).await?;
            let detail = json!({ "from": text("from"), "to": text("to"), "source": text("source"), "objects": keys.len() });
            d1::execute(&db, &[audit_entry(&grant, "export_events", detail, now_ms)]).await?;
            let bucket = env.bucket("ARCHIVE")?;
            let body = futures_util::stream::iter(keys).then(move |key| {
                let bucket = bucket.clone();
                async move {
                    let object = bucket.get(&key).execute().await?;
                    let bytes = match object.as_ref().and_then(|o| o.body()) {
                        Some(body) => body.bytes().await?,
                        // Removed since the listing (retention, compaction): nothing to send.
                        None => return Ok(Vec::new()),
                    };
                    archive::gunzip(&bytes, MAX_OBJECT_BYTES).ok_or_else(|| {
                        worker::console_error!("export: {key} is not gzip");
                        worker::Error::RustError("an archive object is unreadable".into())
                    })
                }
            });
            ndjson(Response::from_stream(body)?, next)
        }
        "profiles" => {
            let after = text("cursor").unwrap_or_default();
            let limit = limit(text("limit"), store::profiles::EXPORT_PAGE);
            let (profiles, next) = store::profiles::page(&db, &after, limit, now_ms).await?;
            let detail = json!({ "cursor": after, "profiles": profiles.len() });
            d1::execute(
                &db,
                &[audit_entry(&grant, "export_profiles", detail, now_ms)],
            )
            .await?;
            let mut body = String::new();
            for p in profiles {
                body.push_str(&p.to_string());
                body.push('\n');
            }
            ndjson(Response::ok(body)?, next)
        }
        _ => Err(ApiError::NotFound),
    }
}

/// `limit` as asked, between 1 and `max` (`max` when absent).
fn limit(asked: Option<String>, max: usize) -> usize {
    asked
        .and_then(|l| l.parse().ok())
        .unwrap_or(max)
        .clamp(1, max)
}

/// The keys of the window's next page, and the cursor after it (`None`: the export is done).
async fn page(
    env: &Env,
    window: &Window,
    limit: usize,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    let bucket = env.bucket("ARCHIVE")?;
    let mut keys = Vec::new();
    let mut after = window.start_after();
    for _ in 0..MAX_LISTS {
        let listed = bucket
            .list()
            .prefix(archive::PREFIX)
            .start_after(after.clone())
            .limit(1000)
            .execute()
            .await?;
        for object in listed.objects() {
            let key = object.key();
            match window.select(&key) {
                Listed::Past => return Ok((keys, None)),
                Listed::Skip => {}
                Listed::Take => keys.push(key.clone()),
            }
            after = key;
            if keys.len() == limit {
                return Ok((keys, Some(after)));
            }
        }
        if !listed.truncated() {
            return Ok((keys, None));
        }
    }
    // Only other sources' objects so far: the next page goes on from here.
    Ok((keys, Some(after)))
}

fn ndjson(mut response: Response, next: Option<String>) -> Result<Response, ApiError> {
    let headers = response.headers_mut();
    headers.set("Content-Type", "application/x-ndjson")?;
    headers.set("Cache-Control", "no-store")?;
    if let Some(next) = next {
        headers.set(NEXT, &next)?;
    }
    Ok(response)
}
