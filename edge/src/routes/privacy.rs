//! Data-subject requests (admin key with `privacy:write`):
//! - `POST /v1/privacy/delete {"type","value"}`: erase the person's whole stitched profile from D1
//!   and KV and suppress their identifiers; returns a receipt. Idempotent.
//! - `POST /v1/privacy/suppress` / `POST /v1/privacy/unsuppress {"type","value"}`: stop (or
//!   resume) accepting events that carry any of the person's identifiers, deleting nothing.
//! - `GET /v1/privacy/export?type=&value=`: everything stored about the person, as JSON.
//!
//! Every action is written to the audit log with the acting key's label, in the same transaction
//! as its effect.

use std::collections::BTreeMap;

use seam_core::activate::deliver;
use seam_core::format::time::format_iso8601;
use seam_core::identity::Identifier;
use seam_core::plan::Statement;
use seam_core::privacy::access::{Grant, Scope};
use seam_core::privacy::{audit, suppress, unsuppress, AuditEntry, Subject};
use seam_core::{format::id, privacy};
use serde_json::{json, Value};
use worker::{Env, Method, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{authorize, identifier, query_param};
use crate::store::shards::Shards;
use crate::{isolate, jobs, platform, settings, store};

/// Events an export returns at most (newest first); the receipt says when there were more.
const MAX_EXPORT_EVENTS: usize = 10_000;

/// Handles `/v1/privacy/{action}` at `now_ms`.
pub async fn handle(
    mut req: Request,
    env: &Env,
    action: &str,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let action_at = Action::start(now_ms);
    match (req.method(), action) {
        (Method::Get, "export") => export(&req, env, action_at).await,
        (Method::Post, "delete" | "suppress" | "unsuppress") => {
            let grant = authorize(&req, env, Scope::PrivacyWrite).await?;
            let body: Value = req.json().await.map_err(|_| ApiError::InvalidBody)?;
            // Accept {"type","value"} and {"identifier": {"type","value"}}.
            let target = body.get("identifier").unwrap_or(&body);
            let identifier = identifier(
                target.get("type").and_then(Value::as_str),
                target.get("value").and_then(Value::as_str),
                &settings::identity_rules(env)?,
            )?;
            match action {
                "delete" => delete(env, &grant, &identifier, action_at).await,
                _ => {
                    let on = action == "suppress";
                    set_suppression(env, &grant, &identifier, on, action_at).await
                }
            }
        }
        (_, "export" | "delete" | "suppress" | "unsuppress") => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    }
}

struct Action {
    request_id: String,
    now_ms: i64,
}

impl Action {
    fn start(now_ms: i64) -> Self {
        Self {
            request_id: id::message_id("privacy", now_ms, platform::random_bytes()),
            now_ms,
        }
    }

    fn audit(
        &self,
        action: &'static str,
        grant: &Grant,
        subject: &Identifier,
        detail: Value,
    ) -> Statement {
        audit(&AuditEntry {
            request_id: self.request_id.clone(),
            action,
            actor: grant.label.clone(),
            subject: Some(privacy::suppression_key(subject)),
            detail,
            at_ms: self.now_ms,
        })
    }

    fn receipt(&self, action: &str, grant: &Grant, identifier: &Identifier, extra: Value) -> Value {
        let mut receipt = json!({
            "requestId": self.request_id,
            "action": action,
            "actor": grant.label,
            "identifierType": identifier.class().as_str(),
            "completedAt": format_iso8601(self.now_ms),
        });
        if let (Value::Object(r), Value::Object(e)) = (&mut receipt, extra) {
            r.extend(e);
        }
        receipt
    }
}

fn counts_json(counts: &BTreeMap<&'static str, usize>, skip: &[&str]) -> Value {
    Value::Object(
        counts
            .iter()
            .filter(|(k, _)| !skip.contains(k))
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect(),
    )
}

fn subject_detail(subject: &Subject) -> Value {
    json!({
        "identifiers": subject.identifiers.len(),
        "profiles": subject.profile_ids.len(),
    })
}

async fn delete(
    env: &Env,
    grant: &Grant,
    identifier: &Identifier,
    action: Action,
) -> Result<Response, ApiError> {
    let db = Shards::of(env)?;
    let (subject, _) = store::privacy::subject_of(&db, identifier).await?;
    let sources = store::sources::all_ids(env, &*store::sources::configured(env)?).await?;
    let mut extra: Vec<(&'static str, Statement)> = suppress(
        &subject.suppression_keys(),
        &action.request_id,
        action.now_ms,
    )
    .into_iter()
    .map(|s| ("suppressed", s))
    .collect();
    // Destinations with a deletion API are told, through the delivery queue, once every
    // delivery already under way is over.
    let erasure_delay_ms = settings::erasure_delay_ms(env);
    let (forwards, rows) = deliver::forward_erasure(
        &isolate::destinations(),
        &action.request_id,
        &subject,
        action.now_ms,
        erasure_delay_ms,
    );
    extra.extend(rows.into_iter().map(|s| ("forwarded", s)));
    extra.push((
        "audit",
        action.audit("delete", grant, identifier, subject_detail(&subject)),
    ));
    let counts =
        store::privacy::erase_subject(env, &db, &subject, &sources, extra, action.now_ms).await?;
    let delay_seconds = u32::try_from(erasure_delay_ms.div_euclid(1000) + 1).unwrap_or(u32::MAX);
    jobs::deliver::send_delayed(env, forwards, delay_seconds).await;
    // The person's evidence no longer counts in co-occurrence and popularity.
    isolate::forget_candidates(None);
    isolate::forget_suppressions();
    let receipt = action.receipt(
        "delete",
        grant,
        identifier,
        json!({
            "profileIds": subject.profile_ids,
            "deleted": counts_json(&counts, &["suppressed", "audit", "forwarded"]),
            "suppressed": counts.get("suppressed").copied().unwrap_or(0),
            "forwardedTo": counts.get("forwarded").copied().unwrap_or(0),
        }),
    );
    Ok(Response::from_json(&receipt)?)
}

async fn set_suppression(
    env: &Env,
    grant: &Grant,
    identifier: &Identifier,
    on: bool,
    action: Action,
) -> Result<Response, ApiError> {
    let db = Shards::of(env)?;
    let (subject, _) = store::privacy::subject_of(&db, identifier).await?;
    let keys = subject.suppression_keys();
    let (name, mut plan): (&'static str, Vec<(&'static str, Statement)>) = if on {
        let statements = suppress(&keys, &action.request_id, action.now_ms);
        let profile_ids: Vec<String> = subject.profile_ids.iter().cloned().collect();
        // They leave every journey at once; a message not yet sent is not sent.
        let journeys =
            seam_core::journey::run::leave_all(&profile_ids, "suppressed", action.now_ms);
        (
            "suppress",
            statements
                .into_iter()
                .map(|s| ("changed", s))
                .chain(journeys.into_iter().map(|s| ("journeys", s)))
                .collect(),
        )
    } else {
        let keys: Vec<String> = keys.into_iter().map(|(k, _)| k).collect();
        ("unsuppress", vec![("changed", unsuppress(&keys))])
    };
    plan.push((
        "audit",
        action.audit(name, grant, identifier, subject_detail(&subject)),
    ));
    let counts = store::privacy::run_counted(&db, &plan).await?;
    isolate::forget_suppressions();
    let receipt = action.receipt(
        name,
        grant,
        identifier,
        json!({
            "identifiers": subject.identifiers.len(),
            "changed": counts.get("changed").copied().unwrap_or(0),
        }),
    );
    Ok(Response::from_json(&receipt)?)
}

async fn export(req: &Request, env: &Env, action: Action) -> Result<Response, ApiError> {
    let grant = authorize(req, env, Scope::PrivacyWrite).await?;
    let identifier = identifier(
        query_param(req, "type").as_deref(),
        query_param(req, "value").as_deref(),
        &settings::identity_rules(env)?,
    )?;
    let db = Shards::of(env)?;
    let (subject, profile_id) = store::privacy::subject_of(&db, &identifier).await?;
    let sources = store::sources::all_ids(env, &*store::sources::configured(env)?).await?;
    let data = store::privacy::export(
        &db,
        store::archived::bucket(env).as_ref(),
        &subject,
        profile_id.as_deref(),
        &sources,
        MAX_EXPORT_EVENTS,
        action.now_ms,
    )
    .await?;
    let events = data["events"].as_array().map_or(0, Vec::len);
    store::d1::execute(
        &db,
        &[action.audit(
            "export",
            &grant,
            &identifier,
            json!({ "events": events, "found": data["found"] }),
        )],
    )
    .await?;
    let mut body = action.receipt("export", &grant, &identifier, json!({}));
    body["data"] = data;
    Ok(Response::from_json(&body)?)
}
