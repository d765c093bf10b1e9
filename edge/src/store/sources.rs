//! Where sources come from: the `SOURCES` setting first, then the D1 `sources` table.

use std::rc::Rc;

use seam_core::collect::auth::AuthError;
use seam_core::collect::source::{parse_source, Source, Sources};
use serde::Deserialize;
use worker::{D1Database, Env};

use crate::error::ApiError;
use crate::isolate;

/// A server key shorter than this is ignored (a guessable key would hand out trust).
const MIN_SERVER_KEY_LEN: usize = 16;

/// The `SOURCES` setting, parsed, plus the `server` source of the `SERVER_WRITE_KEY` secret
/// when one is set. A broken setting is a deployment error, reported as such.
pub fn configured(env: &Env) -> Result<Rc<Sources>, ApiError> {
    let setting = env
        .var("SOURCES")
        .map(|v| v.to_string())
        .unwrap_or_default();
    let server_key = env
        .secret("SERVER_WRITE_KEY")
        .map(|s| s.to_string())
        .ok()
        .filter(|k| k.len() >= MIN_SERVER_KEY_LEN);
    // Parsed once per isolate (`isolate::sources_of`): the key ends the text it is kept by.
    let text = format!("{setting}\n{}", server_key.as_deref().unwrap_or_default());
    isolate::sources_of(text, || {
        let mut sources = Sources::parse(&setting).map_err(ApiError::Config)?;
        if let Some(key) = server_key {
            sources.insert(key, Source::server("server"));
        }
        Ok(sources)
    })
}

#[derive(Deserialize)]
struct Row {
    write_key: String,
    config: String,
}

fn parse_row(row: &Row) -> Result<Source, ApiError> {
    let raw = serde_json::from_str(&row.config).unwrap_or(serde_json::Value::Null);
    parse_source(&row.write_key, &raw).map_err(ApiError::Config)
}

/// The source for a write key: configured ones, then D1.
pub async fn source_for(
    env: &Env,
    configured: &Sources,
    key: Option<&str>,
) -> Result<Source, ApiError> {
    match configured.source_for(key) {
        Ok(source) => return Ok(source.clone()),
        Err(AuthError::MissingWriteKey) => return Err(AuthError::MissingWriteKey.into()),
        Err(AuthError::UnknownWriteKey) => {}
    }
    let db: D1Database = env.d1("DB")?;
    let row = db
        .prepare("SELECT write_key, config FROM sources WHERE write_key = ?")
        .bind(&[key.unwrap_or_default().into()])?
        .first::<Row>(None)
        .await?;
    match row {
        Some(row) => parse_row(&row),
        None => Err(AuthError::UnknownWriteKey.into()),
    }
}

/// Whether any source (configured or in D1) accepts browsers from `origin`.
pub async fn any_allows_origin(
    env: &Env,
    configured: &Sources,
    origin: &str,
) -> Result<bool, ApiError> {
    if configured.any_allows_origin(origin) {
        return Ok(true);
    }
    Ok(stored(env).await?.iter().any(|s| s.allows_origin(origin)))
}

/// The usable sources of the D1 table. A broken row is skipped: it must not hide the others.
async fn stored(env: &Env) -> Result<Vec<Source>, ApiError> {
    let db: D1Database = env.d1("DB")?;
    let rows = db
        .prepare("SELECT write_key, config FROM sources")
        .all()
        .await?
        .results::<Row>()?;
    Ok(rows.iter().filter_map(|r| parse_row(r).ok()).collect())
}

/// The source with this ID: configured ones, then D1 (`None`: removed since).
pub async fn by_id(env: &Env, configured: &Sources, id: &str) -> Result<Option<Source>, ApiError> {
    if let Some(source) = configured.by_id(id) {
        return Ok(Some(source.clone()));
    }
    Ok(stored(env).await?.into_iter().find(|s| s.id == id))
}

/// Every source ID, configured and in D1: the sources events may be stored under.
pub async fn all_ids(env: &Env, configured: &Sources) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = configured.ids().map(str::to_owned).collect();
    ids.extend(stored(env).await?.into_iter().map(|s| s.id));
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Each source's dedup window in days, by source ID, configured and in D1.
pub async fn dedup_windows(
    env: &Env,
    configured: &Sources,
) -> Result<std::collections::HashMap<String, u32>, ApiError> {
    let mut windows: std::collections::HashMap<String, u32> = stored(env)
        .await?
        .into_iter()
        .map(|s| (s.id, s.dedup_window_days))
        .collect();
    for id in configured.ids() {
        if let Some(source) = configured.by_id(id) {
            windows.insert(source.id.clone(), source.dedup_window_days);
        }
    }
    Ok(windows)
}
