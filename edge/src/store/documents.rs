//! Configuration documents uploaded through the admin API, in the D1 `settings` table (the
//! truth) with a KV copy (the cache every isolate reads): the personalisation documents and the
//! destinations.

use seam_core::plan::{Param, Statement};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::Env;

use crate::error::ApiError;
use crate::store::d1;

#[derive(Deserialize)]
struct SettingRow {
    value: String,
}

/// The document stored under `key`: KV, else D1 (then cached in KV), else `default()`.
pub async fn load<T: Serialize + DeserializeOwned>(
    env: &Env,
    key: &str,
    default: impl FnOnce() -> T,
) -> worker::Result<T> {
    if let Ok(kv) = env.kv("CACHE") {
        if let Ok(Some(stored)) = kv.get(key).json::<T>().await {
            return Ok(stored);
        }
    }
    let stored = load_current(env, key, default).await?;
    cache(env, key, &stored).await;
    Ok(stored)
}

/// The document stored under `key` as D1 holds it, else `default()`.
pub async fn load_current<T: DeserializeOwned>(
    env: &Env,
    key: &str,
    default: impl FnOnce() -> T,
) -> worker::Result<T> {
    let statement = Statement {
        sql: "SELECT value FROM settings WHERE key = ?1".into(),
        params: vec![Param::Text(key.into())],
    };
    let row = d1::rows::<SettingRow>(&env.d1("DB")?, &statement)
        .await?
        .into_iter()
        .next();
    Ok(row
        .and_then(|r| serde_json::from_str::<T>(&r.value).ok())
        .unwrap_or_else(default))
}

/// Stores `document` under `key` (`None`: removes the upload), in one D1 batch with `also`
/// (the audit entry), then in KV.
pub async fn save<T: Serialize>(
    env: &Env,
    key: &str,
    document: &T,
    keep: bool,
    also: Vec<Statement>,
    now_ms: i64,
) -> Result<(), ApiError> {
    let statement = if keep {
        let text = serde_json::to_string(document).map_err(|e| ApiError::Storage(e.to_string()))?;
        Statement {
            sql: "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
                  ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                  updated_at = excluded.updated_at"
                .into(),
            params: vec![
                Param::Text(key.into()),
                Param::Text(text),
                Param::Int(now_ms),
            ],
        }
    } else {
        Statement {
            sql: "DELETE FROM settings WHERE key = ?1".into(),
            params: vec![Param::Text(key.into())],
        }
    };
    let mut plan = vec![statement];
    plan.extend(also);
    d1::execute(&env.d1("DB")?, &plan).await?;
    cache(env, key, document).await;
    Ok(())
}

async fn cache<T: Serialize>(env: &Env, key: &str, document: &T) {
    let Ok(kv) = env.kv("CACHE") else { return };
    let Ok(text) = serde_json::to_string(document) else {
        return;
    };
    if let Ok(put) = kv.put(key, text) {
        if let Err(e) = put.execute().await {
            worker::console_error!("{key} cache write failed: {e}");
        }
    }
}
