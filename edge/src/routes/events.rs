//! `GET /v1/admin/events?source=&type=&name=&since=&limit=` (admin key or console session with
//! `profiles:read`): the newest stored events, each with its body, and the newest rejections
//! with their codes (`seam_core::collect::live`). The console's live view polls it with
//! `since` set to the newest time it has.

use seam_core::collect::live::{self, Filter};
use seam_core::privacy::access::Scope;
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{authorize, query_param};
use crate::store::d1;

/// Handles the listing.
pub async fn get(req: &Request, env: &Env) -> Result<Response, ApiError> {
    authorize(req, env, Scope::ProfilesRead).await?;
    let text = |k: &str| query_param(req, k).filter(|v| !v.is_empty() && v.len() <= 200);
    let filter = Filter {
        source: text("source"),
        kind: text("type"),
        name: text("name"),
        since: text("since").and_then(|v| v.parse().ok()),
        limit: text("limit").and_then(|v| v.parse().ok()),
    };
    let db = env.d1("DB")?;
    let results = d1::execute(
        &db,
        &[
            live::newest_events(&filter),
            live::newest_rejections(&filter),
        ],
    )
    .await?;
    let rows = |i: usize| d1::rows_at(&results, i);
    let events: Vec<Value> = rows(0)?
        .into_iter()
        .map(|mut row| {
            let body = row["body"]
                .as_str()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .unwrap_or(Value::Null);
            row["body"] = body;
            row
        })
        .collect();
    Ok(Response::from_json(
        &json!({ "events": events, "rejected": rows(1)? }),
    )?)
}
