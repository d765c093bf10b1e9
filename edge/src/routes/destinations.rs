//! Destinations (admin key with `config:write`):
//! - `GET /v1/admin/destinations`: every destination, secrets masked, with its deliveries by
//!   status and its outcomes in the last 24 hours;
//! - `GET|PUT|DELETE /v1/admin/destinations/{name}`: one destination; `PUT` takes
//!   `{"type", "enabled"? (default true), "settings", "filter"?}`, validated (a mistake is a 400
//!   naming the destination and field), its secrets sealed; a secret sent back as `"********"`
//!   keeps the stored one;
//! - `GET /v1/admin/destinations/{name}/deliveries?status=&limit=`: the newest deliveries
//!   (`failed` is `dead`);
//! - `POST /v1/admin/destinations/{name}/replay {"messageIds"?}`: dead deliveries sent again.

use seam_core::activate::deliver::{MAX_ROWS, STATUSES};
use seam_core::activate::destination::{Destination, DestinationConfigError};
use seam_core::activate::{policy, sealed};
use seam_core::privacy::access::Scope;
use serde_json::{json, Map, Value};
use worker::{Env, Method, Request, Response};

use crate::error::ApiError;
use crate::http;
use crate::http::admin::{audit_entry, authorize, query_param};
use crate::store::destinations::StoredDestinations;
use crate::{jobs, platform, settings, store};

/// Largest request body accepted (an entry, a replay list).
const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Most `messageIds` one replay names (one statement's parameters).
const MAX_REPLAY_IDS: usize = 97;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Handles `/v1/admin/destinations{rest}` at `now_ms`.
pub async fn handle(
    mut req: Request,
    env: &Env,
    rest: &str,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let grant = authorize(&req, env, Scope::ConfigWrite).await?;
    let log = |action: &'static str, detail: Value| audit_entry(&grant, action, detail, now_ms);
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let db = env.d1("DB")?;
    match (req.method(), parts.as_slice()) {
        (Method::Get, [""]) => {
            let stored = store::destinations::load(env).await?;
            let mut counts = store::deliveries::summary(&db, now_ms - DAY_MS).await?;
            let list: Vec<Value> = stored
                .entries
                .iter()
                .map(|(name, entry)| view(name, entry, counts.remove(name)))
                .collect();
            Ok(Response::from_json(&json!({ "destinations": list }))?)
        }
        (Method::Get, [name]) => {
            let stored = store::destinations::load(env).await?;
            let entry = stored
                .entries
                .get(*name)
                .ok_or(ApiError::DestinationNotFound)?;
            let mut counts = store::deliveries::summary(&db, now_ms - DAY_MS).await?;
            Ok(Response::from_json(&view(
                name,
                entry,
                counts.remove(*name),
            ))?)
        }
        (Method::Put, [name]) => {
            let body = http::capped_body(&mut req, MAX_ENTRY_BYTES).await?;
            let mut entry: Value =
                serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
            let Some(fields) = entry.as_object_mut() else {
                return Err(ApiError::InvalidBody);
            };
            fields.entry("enabled").or_insert_with(|| Value::Bool(true));
            let mut stored = store::destinations::load_current(env).await?;
            let sealed_entry = seal(env, name, &entry, stored.entries.get(*name))?;
            let key = settings::secrets_key(env);
            let opened = sealed::open_entry(key.as_ref(), name, &sealed_entry)?;
            let destination = Destination::parse(name, &opened)?;
            let allow_local = settings::allow_local_destinations(env);
            for url in destination.kind.urls() {
                policy::check_url(url, allow_local)?;
            }
            let created = !stored.entries.contains_key(*name);
            let mut entries: Map<String, Value> = std::mem::take(&mut stored.entries);
            entries.insert((*name).to_owned(), sealed_entry.clone());
            let stored = StoredDestinations::new(entries);
            let audit = log(
                "put_destination",
                json!({ "name": name, "type": destination.kind.name(), "enabled": destination.enabled }),
            );
            store::destinations::save(env, &stored, audit, now_ms).await?;
            let status = if created { 201 } else { 200 };
            Ok(Response::from_json(&view(name, &sealed_entry, None))?.with_status(status))
        }
        (Method::Delete, [name]) => {
            let mut stored = store::destinations::load_current(env).await?;
            if stored.entries.remove(*name).is_none() {
                return Err(ApiError::DestinationNotFound);
            }
            let stored = StoredDestinations::new(stored.entries);
            let audit = log("delete_destination", json!({ "name": name }));
            store::destinations::save(env, &stored, audit, now_ms).await?;
            Ok(Response::from_json(
                &json!({ "name": name, "deleted": true }),
            )?)
        }
        (Method::Get, [name, "deliveries"]) => {
            let status = match query_param(&req, "status").as_deref() {
                None | Some("") => None,
                Some("failed") => Some("dead".to_owned()),
                Some(s) if STATUSES.contains(&s) => Some(s.to_owned()),
                Some(_) => return Err(ApiError::InvalidBody),
            };
            let limit = query_param(&req, "limit")
                .and_then(|l| l.parse::<u32>().ok())
                .unwrap_or(100)
                .clamp(1, MAX_ROWS);
            let rows = store::deliveries::list(&db, name, status.as_deref(), limit).await?;
            Ok(Response::from_json(
                &json!({ "destination": name, "deliveries": rows }),
            )?)
        }
        (Method::Post, [name, "replay"]) => {
            let stored = store::destinations::load(env).await?;
            if !stored.entries.contains_key(*name) {
                return Err(ApiError::DestinationNotFound);
            }
            let body = http::capped_body(&mut req, MAX_ENTRY_BYTES).await?;
            let only: Option<Vec<String>> = if body.is_empty() {
                None
            } else {
                let body: Value =
                    serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
                match body.get("messageIds") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(ids)) if ids.len() <= MAX_REPLAY_IDS => Some(
                        ids.iter()
                            .map(|v| v.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or(ApiError::InvalidBody)?,
                    ),
                    Some(_) => return Err(ApiError::InvalidBody),
                }
            };
            let audit = log(
                "replay_deliveries",
                json!({ "name": name, "messageIds": only.as_ref().map(Vec::len) }),
            );
            let jobs = store::deliveries::replay(&db, name, only.as_deref(), audit, now_ms).await?;
            let replayed = jobs.len();
            jobs::deliver::send(env, jobs).await;
            Ok(Response::from_json(
                &json!({ "destination": name, "replayed": replayed }),
            )?)
        }
        (_, [""] | [_] | [_, "deliveries" | "replay"]) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    }
}

/// `entry` with its secrets sealed (a masked one keeps `previous`'s).
fn seal(env: &Env, name: &str, entry: &Value, previous: Option<&Value>) -> Result<Value, ApiError> {
    let has_secret = entry
        .get("settings")
        .and_then(Value::as_object)
        .is_some_and(|s| {
            seam_core::activate::destination::SECRET_FIELDS
                .iter()
                .any(|f| s.get(*f).is_some_and(Value::is_string))
        });
    if !has_secret {
        return Ok(entry.clone());
    }
    if name.is_empty() {
        return Err(DestinationConfigError::InvalidName.into());
    }
    let key = settings::secrets_key(env).ok_or(sealed::SealError::NoKey)?;
    Ok(sealed::seal_entry(
        &key,
        name,
        entry,
        previous,
        platform::random_bytes::<12>,
    )?)
}

/// A destination as the admin API shows it: secrets masked, with its delivery counts.
fn view(name: &str, entry: &Value, counts: Option<Value>) -> Value {
    let mut shown = Destination::redacted(entry);
    if let Some(fields) = shown.as_object_mut() {
        fields.insert("name".into(), Value::from(name));
        fields.insert(
            "deliveries".into(),
            counts.unwrap_or_else(|| json!({"byStatus": {}, "last24h": {}})),
        );
    }
    shown
}
