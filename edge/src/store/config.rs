//! The personalisation configuration: the four documents uploaded with
//! `PUT /v1/admin/personalisation` (D1 is the truth, KV the cache), else the committed
//! `config/*.json`; an isolate re-checks every 30 s (`isolate`).

use std::sync::Arc;

use seam_core::personalise::{self, PersonalisationConfig, PersonalisationConfigError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::Env;

use crate::error::ApiError;
use crate::isolate::{self, COMMITTED};
use crate::store::documents;

/// KV key and D1 `settings` key of the uploaded configuration.
const CONFIG_KEY: &str = "config:personalisation";

/// The four documents of an uploaded configuration, as stored in D1 (truth) and KV (cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredConfig {
    /// A hash of the documents (or [`COMMITTED`]).
    pub stamp: String,
    /// Absent: no upload, the committed documents apply.
    #[serde(default)]
    pub documents: Option<ConfigDocuments>,
}

impl StoredConfig {
    /// No upload: the committed documents.
    pub fn committed() -> Self {
        Self {
            stamp: COMMITTED.into(),
            documents: None,
        }
    }
}

/// `computed-traits.json`, `segments.json`, `recommendations.json`, `slots.json`, as JSON.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDocuments {
    pub computed_traits: Value,
    pub segments: Value,
    pub recommendations: Value,
    pub slots: Value,
}

impl ConfigDocuments {
    /// The committed documents.
    pub fn committed() -> Self {
        let parse = |t: &str| serde_json::from_str(t).unwrap_or(Value::Null);
        Self {
            computed_traits: parse(personalise::DEFAULT_COMPUTED_TRAITS),
            segments: parse(personalise::DEFAULT_SEGMENTS),
            recommendations: parse(personalise::DEFAULT_RECOMMENDATIONS),
            slots: parse(personalise::DEFAULT_SLOTS),
        }
    }

    /// Validates the documents together.
    pub fn validate(&self) -> Result<PersonalisationConfig, PersonalisationConfigError> {
        PersonalisationConfig::from_json(
            &self.computed_traits,
            &self.segments,
            &self.recommendations,
            &self.slots,
        )
    }

    /// A stable hash of the documents.
    pub fn stamp(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let mut hash = seam_core::privacy::access::key_hash(&text);
        hash.truncate(16);
        hash
    }
}

/// Checks KV (D1 on a miss) for an uploaded configuration when this isolate's copy is due;
/// a broken upload is logged and the previous configuration kept.
pub async fn refresh(env: &Env, now_ms: i64) {
    if !isolate::config_check_due(now_ms) {
        return;
    }
    match load_stored(env).await {
        Ok(stored) => {
            if let Err(e) = activate(&stored) {
                worker::console_error!("uploaded personalisation config: {} ({e})", e.code());
            }
        }
        Err(e) => worker::console_error!("personalisation config read failed: {e}"),
    }
}

/// Makes `stored` the isolate's configuration (unchanged when its stamp is the one in force).
fn activate(stored: &StoredConfig) -> Result<(), PersonalisationConfigError> {
    if stored.stamp == isolate::config_stamp() {
        return Ok(());
    }
    let config = match &stored.documents {
        Some(documents) => Some(Arc::new(documents.validate()?)),
        None => isolate::committed_config(),
    };
    isolate::use_config(config, &stored.stamp);
    Ok(())
}

/// The uploaded configuration, or the committed marker when none.
pub async fn load_stored(env: &Env) -> worker::Result<StoredConfig> {
    documents::load(env, CONFIG_KEY, StoredConfig::committed).await
}

/// Stores `stored` in D1 and KV and makes it this isolate's configuration.
pub async fn save_stored(env: &Env, stored: &StoredConfig, now_ms: i64) -> Result<(), ApiError> {
    let keep = stored.documents.is_some();
    documents::save(env, CONFIG_KEY, stored, keep, Vec::new(), now_ms).await?;
    activate(stored).map_err(ApiError::Personalisation)
}
