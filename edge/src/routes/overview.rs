//! `GET /v1/admin/overview` (admin key or console session with `profiles:read`): the console's
//! first page. Events per day for the last 30 days by type and source (from the daily counters
//! written with the events, never a scan of them), events rejected per day, profiles and the
//! share identified (as the sweep last counted them), segment sizes, deliveries in the last 24
//! hours by outcome, and the consent choices recorded in 30 days per Consent Mode purpose and
//! value.

use seam_core::collect::live;
use seam_core::format::time::DAY_MS;
use seam_core::identity::census;
use seam_core::plan::{Param, Statement};
use seam_core::privacy::access::Scope;
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::authorize;
use crate::store::shards::Shards;
use crate::store::{audiences, d1};

/// Days the chart covers.
const DAYS: i64 = 30;

/// Handles the overview at `now_ms`.
pub async fn get(req: &Request, env: &Env, now_ms: i64) -> Result<Response, ApiError> {
    authorize(req, env, Scope::ProfilesRead).await?;
    let from_day = now_ms.div_euclid(DAY_MS) - (DAYS - 1);
    let from_date = seam_core::format::time::format_iso8601(from_day * DAY_MS);
    let plan = [
        live::daily_counts(from_day),
        Statement {
            sql: "SELECT day, SUM(count) AS count FROM drop_counts WHERE day >= ?1 GROUP BY day"
                .into(),
            params: vec![Param::Text(from_date.get(..10).unwrap_or_default().into())],
        },
        census::latest(),
        Statement {
            sql: "SELECT outcome, SUM(count) AS count FROM delivery_counts WHERE hour >= ?1 \
                  GROUP BY outcome"
                .into(),
            params: vec![Param::Int(now_ms - DAY_MS)],
        },
        Statement {
            sql: "SELECT purpose, value, SUM(count) AS count FROM consent_counts WHERE day >= ?1 \
                  GROUP BY purpose, value"
                .into(),
            params: vec![Param::Int(from_day)],
        },
    ];
    let db = Shards::of(env)?;
    let (results, sizes) =
        futures_util::future::join(d1::execute(&db, &plan), audiences::sizes(&db)).await;
    let (results, sizes) = (results?, sizes?);
    let rows = |i: usize| d1::rows_at(&results, i);
    let days: Vec<Value> = rows(0)?
        .into_iter()
        .map(|mut r| {
            let day = r["day"].as_i64().unwrap_or_default();
            let date = seam_core::format::time::format_iso8601(day * DAY_MS);
            r["date"] = Value::from(date.get(..10).unwrap_or_default());
            r
        })
        .collect();
    let people = rows(2)?.into_iter().next().unwrap_or(Value::Null);
    Ok(Response::from_json(&json!({
        "fromDate": from_date.get(..10),
        "events": days,
        "rejected": rows(1)?,
        "profiles": people.get("profiles"),
        "identified": people.get("identified"),
        "profilesCountedAt": people.get("counted_at"),
        "segments": sizes
            .into_iter()
            .filter(|(_, size)| *size > 0)
            .map(|(segment, size)| json!({ "segment": segment, "size": size }))
            .collect::<Vec<_>>(),
        "deliveries24h": rows(3)?,
        "consent": rows(4)?,
    }))?)
}
