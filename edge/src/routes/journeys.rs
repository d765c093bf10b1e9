//! Journeys (admin key with `config:write`):
//! - `GET /v1/admin/journeys`: the journeys and templates documents in force and their stamp;
//! - `PUT /v1/admin/journeys {"journeys"?, "templates"?}`: replaces them (an omitted document is
//!   the committed one), validated together: a mistake is a 400 naming the journey, step and
//!   field (or the template and field), and nothing changes;
//! - `DELETE /v1/admin/journeys`: back to the committed `config/journeys.json` and
//!   `config/templates.json`;
//! - `GET /v1/admin/journeys/{name}`: one journey's runs by group, status and end, and its
//!   decisions by step and outcome (sent, holdout, no_consent, ...);
//! - `GET /v1/admin/journeys/{name}/runs?status=&profileId=&limit=`: its newest runs.

use seam_core::journey::run;
use seam_core::privacy::access::Scope;
use serde_json::{json, Value};
use worker::{Env, Method, Request, Response};

use crate::error::ApiError;
use crate::http;
use crate::http::admin::{audit_entry, authorize, query_param};
use crate::store;
use crate::store::d1;
use crate::store::journeys::StoredJourneys;

/// Largest upload (both documents).
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Handles `/v1/admin/journeys{rest}` at `now_ms`.
pub async fn handle(
    mut req: Request,
    env: &Env,
    rest: &str,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let grant = authorize(&req, env, Scope::ConfigWrite).await?;
    let log = |action: &'static str, detail: Value| audit_entry(&grant, action, detail, now_ms);
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (Method::Get, [""]) => {
            let stored = store::journeys::load(env).await?;
            Ok(Response::from_json(&stored)?)
        }
        (Method::Put, [""]) => {
            let body = http::capped_body(&mut req, MAX_DOCUMENT_BYTES).await?;
            let body: Value = serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
            let body = body.as_object().ok_or(ApiError::InvalidBody)?;
            if body.keys().any(|k| k != "journeys" && k != "templates") {
                return Err(ApiError::InvalidBody);
            }
            let committed = StoredJourneys::committed();
            let stored = StoredJourneys::new(
                body.get("journeys").cloned().unwrap_or(committed.journeys),
                body.get("templates")
                    .cloned()
                    .unwrap_or(committed.templates),
            );
            let parsed = stored.parse()?;
            let names: Vec<&str> = parsed.journeys.iter().map(|j| j.name.as_str()).collect();
            let audit = log(
                "upload_journeys",
                json!({ "stamp": stored.stamp, "journeys": names }),
            );
            store::journeys::save(env, Some(&stored), audit, now_ms).await?;
            Ok(Response::from_json(
                &json!({ "stamp": stored.stamp, "journeys": names }),
            )?)
        }
        (Method::Delete, [""]) => {
            let audit = log("reset_journeys", json!({}));
            let stored = store::journeys::save(env, None, audit, now_ms).await?;
            Ok(Response::from_json(&json!({ "stamp": stored.stamp }))?)
        }
        (Method::Get, [name]) => {
            let stored = store::journeys::load(env).await?;
            let definition = stored
                .journeys
                .get(*name)
                .filter(|_| !name.starts_with('_'))
                .ok_or(ApiError::JourneyNotFound)?;
            let db = env.d1("DB")?;
            let [runs, decisions] = run::stats(name);
            let results = d1::execute(&db, &[runs, decisions]).await?;
            let rows = |i: usize| d1::rows_at(&results, i);
            Ok(Response::from_json(&json!({
                "name": name,
                "definition": definition,
                "runs": rows(0)?,
                "decisions": rows(1)?,
            }))?)
        }
        (Method::Get, [name, "runs"]) => {
            let limit = query_param(&req, "limit")
                .and_then(|l| l.parse::<u32>().ok())
                .unwrap_or(100)
                .clamp(1, 1000);
            let status = query_param(&req, "status");
            let profile_id = query_param(&req, "profileId");
            let db = env.d1("DB")?;
            let statement = run::list(name, status.as_deref(), profile_id.as_deref(), limit);
            let rows: Vec<Value> = d1::rows(&db, &statement).await?;
            Ok(Response::from_json(&json!({ "runs": rows }))?)
        }
        (_, [""] | [_] | [_, "runs"]) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    }
}
