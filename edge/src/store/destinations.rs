//! Destination configuration: the entries stored through the admin API (D1 is the truth, KV
//! the cache; secrets sealed), else the committed `config/destinations.json`. An isolate
//! re-checks every 30 s, like the personalisation configuration.

use seam_core::activate::destination::{Destination, DEFAULT_DESTINATIONS};
use seam_core::activate::sealed;
use seam_core::plan::Statement;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use worker::Env;

use crate::error::ApiError;
use crate::store::documents;
use crate::{isolate, settings};

/// KV key and D1 `settings` key of the stored entries.
const KEY: &str = "config:destinations";
/// The stamp of the committed file.
const COMMITTED: &str = "committed";

/// Destination entries by name, as stored: secrets sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDestinations {
    /// A hash of the entries (or `committed`).
    pub stamp: String,
    /// Name -> entry.
    pub entries: Map<String, Value>,
}

impl StoredDestinations {
    /// The committed file's entries.
    pub fn committed() -> Self {
        let mut entries: Map<String, Value> =
            serde_json::from_str(DEFAULT_DESTINATIONS).unwrap_or_default();
        entries.retain(|name, _| !name.starts_with('_'));
        Self {
            stamp: COMMITTED.into(),
            entries,
        }
    }

    /// `entries` with a stamp of their content.
    pub fn new(entries: Map<String, Value>) -> Self {
        let text = serde_json::to_string(&entries).unwrap_or_default();
        let mut stamp = seam_core::privacy::access::key_hash(&text);
        stamp.truncate(16);
        Self { stamp, entries }
    }
}

/// Re-reads the destinations when this isolate's copy is due. Until a first read succeeds,
/// [`isolate::destinations_loaded`] is false and nothing may be routed.
pub async fn refresh(env: &Env, now_ms: i64) {
    if !isolate::destinations_check_due(now_ms) {
        return;
    }
    match load(env).await {
        Ok(stored) => activate(env, &stored),
        Err(e) => {
            worker::console_error!("destinations read failed: {e}");
            // Never read yet: ingestion refuses events until they are, so try again at once.
            if !isolate::destinations_loaded() {
                isolate::destinations_check_failed();
            }
        }
    }
}

/// Makes `stored` the isolate's destinations. An entry that does not open or parse (a
/// changed `SECRETS_KEY`, a committed file edited by hand) is logged and left out.
fn activate(env: &Env, stored: &StoredDestinations) {
    if stored.stamp == isolate::destinations_stamp() {
        return;
    }
    let key = settings::secrets_key(env);
    let destinations = stored
        .entries
        .iter()
        .filter_map(|(name, entry)| {
            let opened = sealed::open_entry(key.as_ref(), name, entry)
                .map_err(|e| worker::console_error!("destination {name}: {} ({e})", e.code()))
                .ok()?;
            Destination::parse(name, &opened)
                .map_err(|e| worker::console_error!("{} ({e})", e.code()))
                .ok()
        })
        .collect();
    isolate::use_destinations(destinations, &stored.stamp);
}

/// The stored entries, else the committed file.
pub async fn load(env: &Env) -> worker::Result<StoredDestinations> {
    documents::load(env, KEY, StoredDestinations::committed).await
}

/// The stored entries as D1 holds them now (the KV copy may be behind another isolate's
/// change): for read-modify-write in the admin API.
pub async fn load_current(env: &Env) -> worker::Result<StoredDestinations> {
    documents::load_current(env, KEY, StoredDestinations::committed).await
}

/// Makes D1's entries this isolate's destinations now.
pub async fn reload(env: &Env) -> worker::Result<()> {
    let stored = load_current(env).await?;
    activate(env, &stored);
    Ok(())
}

/// Stores `stored` (D1 with `audit` in the same batch, then KV) and makes it this isolate's.
pub async fn save(
    env: &Env,
    stored: &StoredDestinations,
    audit: Statement,
    now_ms: i64,
) -> Result<(), ApiError> {
    documents::save(env, KEY, stored, true, vec![audit], now_ms).await?;
    activate(env, stored);
    Ok(())
}
