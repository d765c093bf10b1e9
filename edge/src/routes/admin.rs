//! Admin configuration (admin key with `config:write`):
//! - `GET /v1/admin/keys`: issued keys (labels, scopes, dates; never hashes);
//! - `POST /v1/admin/keys {"label", "scopes": [...]}`: issues a key, returned once (201);
//! - `DELETE /v1/admin/keys/{label}`: revokes it;
//! - `GET /v1/admin/audit?limit=`: the latest audit log entries;
//! - `POST /v1/admin/catalog {"items": [...]}`: upserts product catalogue items (all or none);
//! - `GET /v1/admin/personalisation`: the personalisation documents in force and their stamp;
//! - `PUT /v1/admin/personalisation {"computedTraits"?, "segments"?, "recommendations"?,
//!   "slots"?}`: replaces them (an omitted document is the committed one), validated together:
//!   a mistake is a 400 naming the document's trait/segment/slot and field, and nothing changes;
//! - `DELETE /v1/admin/personalisation`: back to the committed `config/*.json`.

use seam_core::personalise::recommend::{catalog_from_json, upsert_catalog};
use seam_core::privacy::access::{self, parse_key_request, Scope};
use serde_json::{json, Value};
use worker::{Env, Method, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{audit_entry, authorize, query_param};
use crate::store::config::{self, ConfigDocuments, StoredConfig};
use crate::{isolate, platform, store};

/// Handles `/v1/admin/{rest}` at `now_ms`.
pub async fn handle(
    mut req: Request,
    env: &Env,
    rest: &str,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let grant = authorize(&req, env, Scope::ConfigWrite).await?;
    let db = env.d1("DB")?;
    let log = |action: &'static str, detail: Value| audit_entry(&grant, action, detail, now_ms);
    match (req.method(), rest) {
        (Method::Get, "keys") => Ok(Response::from_json(
            &json!({ "keys": store::keys::list(&db).await? }),
        )?),
        (Method::Post, "keys") => {
            let body: Value = req.json().await.map_err(|_| ApiError::InvalidBody)?;
            let request = parse_key_request(&body)?;
            grant.may_issue(&request.scopes)?;
            let key = access::issue_key(platform::random_bytes());
            if !store::keys::insert(&db, &request, &access::key_hash(&key), &grant.label, now_ms)
                .await?
            {
                return Err(ApiError::LabelTaken);
            }
            let scopes: Vec<&str> = request.scopes.iter().map(|s| s.as_str()).collect();
            store::d1::execute(
                &db,
                &[log(
                    "issue_key",
                    json!({ "label": request.label, "scopes": scopes }),
                )],
            )
            .await?;
            let body = json!({ "label": request.label, "scopes": scopes, "key": key });
            Ok(Response::from_json(&body)?.with_status(201))
        }
        (Method::Get, "audit") => {
            let limit = query_param(&req, "limit")
                .and_then(|l| l.parse::<u32>().ok())
                .unwrap_or(100)
                .clamp(1, 1000);
            let rows = store::audit::recent(&db, limit).await?;
            Ok(Response::from_json(&json!({ "entries": rows }))?)
        }
        (Method::Delete, path) if path.starts_with("keys/") => {
            let label = &path["keys/".len()..];
            if !store::keys::revoke(&db, label, now_ms).await? {
                return Err(ApiError::KeyNotFound);
            }
            store::d1::execute(&db, &[log("revoke_key", json!({ "label": label }))]).await?;
            Ok(Response::from_json(
                &json!({ "label": label, "revoked": true }),
            )?)
        }
        (Method::Post, "catalog") => {
            let body: Value = req.json().await.map_err(|_| ApiError::InvalidBody)?;
            let items = catalog_from_json(&body)?;
            let mut plan = upsert_catalog(&items, now_ms);
            plan.push(log("upload_catalog", json!({ "items": items.len() })));
            store::d1::execute(&db, &plan).await?;
            isolate::forget_candidates(None);
            Ok(Response::from_json(&json!({ "stored": items.len() }))?)
        }
        (Method::Get, "personalisation") => {
            let stored = config::load_stored(env).await?;
            let documents = stored.documents.unwrap_or_else(ConfigDocuments::committed);
            Ok(Response::from_json(
                &json!({ "stamp": stored.stamp, "documents": documents }),
            )?)
        }
        (Method::Put, "personalisation") => {
            let body: Value = req.json().await.map_err(|_| ApiError::InvalidBody)?;
            let body = body.as_object().ok_or(ApiError::InvalidBody)?;
            let known = ["computedTraits", "segments", "recommendations", "slots"];
            if body.keys().any(|k| !known.contains(&k.as_str())) {
                return Err(ApiError::InvalidBody);
            }
            let mut documents = ConfigDocuments::committed();
            for (name, slot) in [
                ("computedTraits", &mut documents.computed_traits),
                ("segments", &mut documents.segments),
                ("recommendations", &mut documents.recommendations),
                ("slots", &mut documents.slots),
            ] {
                if let Some(doc) = body.get(name) {
                    *slot = doc.clone();
                }
            }
            documents.validate()?;
            let stored = StoredConfig {
                stamp: documents.stamp(),
                documents: Some(documents),
            };
            config::save_stored(env, &stored, now_ms).await?;
            let names: Vec<&str> = known
                .iter()
                .copied()
                .filter(|k| body.contains_key(*k))
                .collect();
            store::d1::execute(
                &db,
                &[log(
                    "upload_personalisation",
                    json!({ "stamp": stored.stamp, "documents": names }),
                )],
            )
            .await?;
            Ok(Response::from_json(&json!({ "stamp": stored.stamp }))?)
        }
        (Method::Delete, "personalisation") => {
            let stored = StoredConfig::committed();
            config::save_stored(env, &stored, now_ms).await?;
            store::d1::execute(&db, &[log("reset_personalisation", json!({}))]).await?;
            Ok(Response::from_json(&json!({ "stamp": stored.stamp }))?)
        }
        (_, "keys" | "audit" | "catalog" | "personalisation") => Err(ApiError::MethodNotAllowed),
        (_, path) if path.starts_with("keys/") => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    }
}
