//! Admin profile API: `GET /v1/profiles/{profileId}`,
//! `GET /v1/profiles/lookup?type=email&value=...` and
//! `GET /v1/profiles/{profileId}/recommendations`. The profile is read from D1 (the truth), never
//! KV; the recommendations are decided as for the person's pages, so from the snapshot their
//! pages read, with their last recorded consent, and log no exposure.

use seam_core::consent::recorded_personalisation_denied;
use seam_core::personalise::decide::Slot;
use seam_core::privacy::access::Scope;
use serde_json::Value;
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{authorize, identifier, query_param};
use crate::store::shards::Shards;
use crate::{isolate, settings, store};

/// The slot asked for when the site declares no recommendation slot.
const DEFAULT_SLOT: &str = "recommended-for-you";

/// Handles `GET /v1/profiles/...` at `now_ms`; `rest` is the path after `/v1/profiles/`.
pub async fn get(req: &Request, env: &Env, rest: &str, now_ms: i64) -> Result<Response, ApiError> {
    authorize(req, env, Scope::ProfilesRead).await?;
    let db = Shards::of(env)?;
    if let Some(requested) = rest.strip_suffix("/recommendations") {
        return recommendations(env, &db, requested, now_ms).await;
    }
    let profile_id = if rest == "lookup" {
        let identifier = identifier(
            query_param(req, "type").as_deref(),
            query_param(req, "value").as_deref(),
            &settings::identity_rules(env)?,
        )?;
        store::profiles::profile_for(&db, &identifier).await?
    } else {
        store::profiles::current_id(&db, rest).await?
    };
    let profile_id = profile_id.ok_or(ApiError::ProfileNotFound)?;
    let archive = store::archived::bucket(env);
    let mut body = store::profiles::full(&db, archive.as_ref(), &profile_id, now_ms).await?;
    if rest != "lookup" && rest != profile_id {
        body["requestedId"] = Value::from(rest);
    }
    Ok(Response::from_json(&body)?)
}

async fn recommendations(
    env: &Env,
    db: &Shards,
    requested: &str,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let profile_id = store::profiles::current_id(db, requested)
        .await?
        .ok_or(ApiError::ProfileNotFound)?;
    let names = isolate::config()
        .map(|c| {
            c.slots
                .recommendation_slots()
                .into_iter()
                .map(Slot::named)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    // A site that declares no recommendation slot still shows the default one.
    let slots = if names.is_empty() {
        vec![Slot::named(DEFAULT_SLOT)]
    } else {
        names
    };
    let denied = store::profiles::last_consent(db, &profile_id)
        .await?
        .is_some_and(|state| recorded_personalisation_denied(&state));
    let decisions =
        store::decisions::for_profile(env, db, &profile_id, &slots, denied, now_ms).await?;
    let mut out = decisions.to_json();
    out["profileId"] = Value::from(profile_id);
    out["consentDenied"] = Value::from(denied);
    Ok(Response::from_json(&out)?)
}
