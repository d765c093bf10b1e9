//! Segments as audiences (admin key or console session with `profiles:read`):
//! - `GET /v1/admin/segments`: every segment of the configuration in force with its rule,
//!   current size and daily sizes for 30 days (`history`, recorded by the segment sweep; a
//!   `forEach` family lists each member segment it has made);
//! - `GET /v1/admin/segments/{name}/members?after=&limit=`: a page of current members by
//!   profile ID (`next` is the cursor of the following page), or with `format=csv` the whole
//!   audience as CSV, streamed page by page.

use futures_util::StreamExt;
use seam_core::format::time::DAY_MS;
use seam_core::personalise::segment::audience;
use seam_core::privacy::access::Scope;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{authorize, query_param};
use crate::store::audiences::{self, Member, Members};
use crate::store::config::{self, ConfigDocuments};
use crate::store::d1;
use crate::store::shards::Shards;

/// Handles `/v1/admin/segments{rest}`.
pub async fn get(req: &Request, env: &Env, rest: &str, now_ms: i64) -> Result<Response, ApiError> {
    authorize(req, env, Scope::ProfilesRead).await?;
    let db = Shards::of(env)?;
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [""] => {
            let stored = config::load_stored(env).await?;
            let documents = stored.documents.unwrap_or_else(ConfigDocuments::committed);
            let sizes: Map<String, Value> = audiences::sizes(&db)
                .await?
                .into_iter()
                .map(|(segment, size)| (segment, Value::from(size)))
                .collect();
            #[derive(Deserialize)]
            struct Day {
                day: i64,
                segment: String,
                size: i64,
            }
            let from_day = now_ms.div_euclid(DAY_MS) - 29;
            let history: Vec<Day> = d1::rows(&db, &audience::size_history(from_day)).await?;
            let history_of = |name: &str| -> Vec<Value> {
                history
                    .iter()
                    .filter(|d| d.segment == name)
                    .map(|d| json!({ "day": d.day, "size": d.size }))
                    .collect()
            };
            let mut list = Vec::new();
            for segment in documents.segments["segments"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let name = segment["name"].as_str().unwrap_or_default();
                let mut entry = json!({
                    "name": name,
                    "description": segment.get("description"),
                    "rule": segment.get("rule"),
                    "size": sizes.get(name).cloned().unwrap_or(Value::from(0)),
                    "history": history_of(name),
                });
                if segment.get("forEach").is_some() {
                    let prefix = format!("{name}:");
                    entry["forEach"] = segment["forEach"].clone();
                    entry["members"] = sizes
                        .iter()
                        .filter(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, v)| json!({ "name": k, "size": v, "history": history_of(k) }))
                        .collect();
                }
                list.push(entry);
            }
            Ok(Response::from_json(&json!({ "segments": list }))?)
        }
        [name, "members"] => {
            let name = urlencoding_decode(name);
            if query_param(req, "format").as_deref() == Some("csv") {
                // Streamed a page at a time, so no audience sits in memory whole. The first
                // page is read before answering, so a database that is down gets its coded
                // error; a failure after that can only end the file early.
                let export = audience::EXPORT_PAGE as usize;
                let mut members = Members::of(&db, &name);
                let first = members.next(&db, export).await?;
                let csv = |page: &[Member]| {
                    let mut chunk = String::new();
                    for m in page {
                        chunk.push_str(&format!("{},{}\n", m.profile_id, m.entered_at));
                    }
                    chunk.into_bytes()
                };
                let more = first.len() == export;
                let head = futures_util::stream::once(futures_util::future::ready(Ok::<
                    _,
                    worker::Error,
                >(
                    [b"profile_id,entered_at\n".to_vec(), csv(&first)].concat(),
                )));
                let rest = futures_util::stream::try_unfold(
                    (db, members, more),
                    move |(db, mut members, more)| async move {
                        if !more {
                            return Ok(None);
                        }
                        let page = members.next(&db, export).await.inspect_err(|e| {
                            worker::console_error!("segment CSV cut short: {e}")
                        })?;
                        let more = page.len() == export;
                        Ok(Some((csv(&page), (db, members, more))))
                    },
                );
                let mut response = Response::from_stream(head.chain(rest))?;
                let headers = response.headers_mut();
                headers.set("Content-Type", "text/csv; charset=utf-8")?;
                let file: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                headers.set(
                    "Content-Disposition",
                    &format!("attachment; filename=\"{file}.csv\""),
                )?;
                return Ok(response);
            }
            let limit = query_param(req, "limit")
                .and_then(|l| l.parse::<u32>().ok())
                .unwrap_or(100);
            let after = query_param(req, "after").unwrap_or_default();
            let limit = limit.clamp(1, audience::MAX_PAGE) as usize;
            let page =
                audiences::members(&db, &audience::members(&name, &after, limit as u32), limit)
                    .await?;
            let next = (page.len() == limit)
                .then(|| page.last().map(|m| m.profile_id.clone()))
                .flatten();
            Ok(Response::from_json(
                &json!({ "segment": name, "members": page, "next": next }),
            )?)
        }
        _ => Err(ApiError::NotFound),
    }
}

/// A path segment as written in the URL (`interested_in%3ARunning%20Shoes`).
fn urlencoding_decode(text: &str) -> String {
    let fields = seam_core::journey::inbound::parse_form(format!("x={text}").as_bytes());
    fields
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default()
}
