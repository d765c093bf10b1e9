//! KV snapshots for the decision path: the profile by ID (with its personalisation `state`, so
//! decisions evaluate time-driven segments without a D1 read), `anon:<id>` pointers, and
//! `mergedInto` forwarding records. KV is a cache: D1 stays the truth, and a failed KV write is
//! logged, never fatal.

use seam_core::identity::profile::ProfileView;
use seam_core::identity::{IdType, Identifier, Rules};
use seam_core::personalise::ProfileState;
use serde::Serialize;
use serde_json::{json, Value};
use worker::Env;

use crate::error::ApiError;
use crate::isolate;
use crate::settings;
use crate::store::profiles;
use crate::store::shards::Shards;

/// KV forwarding hops followed (`mergedInto`).
const MAX_HOPS: usize = 4;

/// A snapshot as KV holds it: the view's fields and the personalisation `state`.
#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(flatten)]
    view: &'a ProfileView,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a ProfileState>,
}

/// Writes the profile's snapshot, pointers from `anonymous_ids` and forwarding records for the
/// profiles it `absorbed`.
pub async fn publish(
    env: &Env,
    view: &ProfileView,
    state: Option<&ProfileState>,
    anonymous_ids: &[String],
    absorbed: &[String],
    now_ms: i64,
) {
    let Ok(kv) = env.kv("CACHE") else {
        return;
    };
    // Written straight to text: a `Value` of the state (up to a few hundred facts) cost more to
    // build and free than the KV write itself.
    let mut puts = Vec::new();
    match serde_json::to_string(&Snapshot { view, state }) {
        Ok(snapshot) => puts.push((format!("profile:{}", view.profile_id), snapshot)),
        // A snapshot that cannot be written is left as it was: readers fall back to D1.
        Err(e) => worker::console_error!("snapshot of {} not written: {e}", view.profile_id),
    }
    let pointer = json!({ "profileId": view.profile_id }).to_string();
    for anon in anonymous_ids {
        isolate::remember_profile(anon, &view.profile_id, now_ms);
        puts.push((format!("anon:{anon}"), pointer.clone()));
    }
    for old in absorbed {
        puts.push((
            format!("profile:{old}"),
            json!({ "mergedInto": view.profile_id }).to_string(),
        ));
    }
    // Copies expire with the anonymous-profile retention; active profiles are re-published.
    let ttl = settings::retention(env)
        .map(|r| u64::from(r.anonymous_profile_days) * 86_400)
        .unwrap_or(180 * 86_400);
    for (key, value) in puts {
        let result = match kv.put(&key, value) {
            Ok(put) => put.expiration_ttl(ttl).execute().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            worker::console_error!("kv put {key} failed: {e}");
        }
    }
}

/// The visitor's profile snapshot: KV (`anon:<id>` -> `profile:<id>`, following `mergedInto`),
/// else D1, re-published to KV. `None` for an unknown visitor. User IDs are looked up in D1 (no
/// KV pointer is kept for them).
pub async fn visitor_profile(
    env: &Env,
    db: &Shards,
    rules: &Rules,
    anonymous_id: Option<&str>,
    user_id: Option<&str>,
    now_ms: i64,
) -> Result<Option<Value>, ApiError> {
    let kv = env.kv("CACHE").ok();
    let get = |key: String| {
        let kv = kv.clone();
        async move {
            match kv {
                Some(kv) => kv
                    .get(&key)
                    .text()
                    .await
                    .ok()
                    .flatten()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok()),
                None => None,
            }
        }
    };
    if user_id.is_none() {
        if let Some(anon) = anonymous_id {
            // The pointer rarely changes (a merge leaves a forwarding record on the old profile,
            // which is followed below), so the isolate remembers it: one KV read fewer.
            let mut id = isolate::known_profile(anon, now_ms);
            if id.is_none() {
                id = get(format!("anon:{anon}")).await.and_then(|p| {
                    p.get("profileId")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                if let Some(id) = &id {
                    isolate::remember_profile(anon, id, now_ms);
                }
            }
            for _ in 0..MAX_HOPS {
                let Some(current) = id.take() else { break };
                match get(format!("profile:{current}")).await {
                    Some(p) => match p.get("mergedInto").and_then(Value::as_str) {
                        Some(next) => id = Some(next.to_owned()),
                        None => return Ok(Some(p)),
                    },
                    None => break,
                }
            }
        }
    }
    let identifier = match (user_id, anonymous_id) {
        (Some(u), _) => Identifier::normalized(IdType::UserId, u, rules),
        (None, Some(a)) => Identifier::normalized(IdType::AnonymousId, a, rules),
        (None, None) => None,
    };
    let Some(identifier) = identifier else {
        return Ok(None);
    };
    let mut profile_id = profiles::profile_for(db, &identifier).await?;
    // Events stored before 2026-12-06 linked the `seam_id` cookie as a cookie ID.
    if profile_id.is_none() && user_id.is_none() {
        if let Some(cookie) =
            anonymous_id.and_then(|a| Identifier::normalized(IdType::CookieId, a, rules))
        {
            profile_id = profiles::profile_for(db, &cookie).await?;
        }
    }
    let Some(profile_id) = profile_id else {
        return Ok(None);
    };
    let (mut view, (state, _)) = profiles::view_and_state(db, &profile_id).await?;
    profiles::fill_personalisation(&mut view, &state, now_ms);
    let anonymous: Vec<String> = anonymous_id.map(str::to_owned).into_iter().collect();
    publish(env, &view, Some(&state), &anonymous, &[], now_ms).await;
    snapshot_of(&view, &state).map(Some)
}

/// A stored profile's snapshot as its pages read it (KV, else D1), for someone looking at the
/// profile: a miss is not re-published, so looking writes nothing.
pub async fn profile_snapshot(
    env: &Env,
    db: &Shards,
    profile_id: &str,
    now_ms: i64,
) -> Result<Option<Value>, ApiError> {
    if let Ok(kv) = env.kv("CACHE") {
        let cached = kv
            .get(&format!("profile:{profile_id}"))
            .text()
            .await
            .ok()
            .flatten();
        if let Some(p) = cached.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            if p.get("mergedInto").is_none() {
                return Ok(Some(p));
            }
        }
    }
    let (mut view, (state, _)) = profiles::view_and_state(db, profile_id).await?;
    if view.identifiers.is_empty() {
        return Ok(None);
    }
    profiles::fill_personalisation(&mut view, &state, now_ms);
    snapshot_of(&view, &state).map(Some)
}

fn snapshot_of(view: &ProfileView, state: &ProfileState) -> Result<Value, ApiError> {
    let mut snapshot = serde_json::to_value(view).map_err(|e| ApiError::Storage(e.to_string()))?;
    snapshot["state"] = serde_json::to_value(state).unwrap_or_default();
    Ok(snapshot)
}
