//! Journeys in storage: the uploaded journeys and templates document (D1 the truth, KV the
//! cache, else the committed `config/journeys.json` and `config/templates.json`), and the runs
//! and decisions of core's plans (`seam_core::journey::run`).

use seam_core::journey::run::{self, Claimed};
use seam_core::journey::{Journeys, JourneysError, DEFAULT_JOURNEYS, DEFAULT_TEMPLATES};
use seam_core::plan::Statement;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::{D1Database, Env};

use crate::error::ApiError;
use crate::store::{d1, documents};
use crate::{isolate, settings};

/// KV key and D1 `settings` key of the uploaded document.
const KEY: &str = "config:journeys";
/// The stamp of the committed files.
const COMMITTED: &str = "committed";

/// The journeys and templates as uploaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredJourneys {
    /// A hash of the documents (or `committed`).
    pub stamp: String,
    /// `{"name": journey, ...}`.
    pub journeys: Value,
    /// `{"name": template, ...}`.
    pub templates: Value,
}

impl StoredJourneys {
    /// The committed files.
    pub fn committed() -> Self {
        let parse = |t: &str| serde_json::from_str(t).unwrap_or(Value::Null);
        Self {
            stamp: COMMITTED.into(),
            journeys: parse(DEFAULT_JOURNEYS),
            templates: parse(DEFAULT_TEMPLATES),
        }
    }

    /// The two documents with a stamp of their content.
    pub fn new(journeys: Value, templates: Value) -> Self {
        let text = serde_json::to_string(&(&journeys, &templates)).unwrap_or_default();
        let mut stamp = seam_core::privacy::access::key_hash(&text);
        stamp.truncate(16);
        Self {
            stamp,
            journeys,
            templates,
        }
    }

    /// Validates the documents together (branches' computed traits against the
    /// personalisation configuration in force).
    pub fn parse(&self) -> Result<Journeys, JourneysError> {
        let config = isolate::config();
        Journeys::parse(
            &self.journeys,
            &self.templates,
            config.as_ref().map(|c| &c.computed),
        )
    }
}

/// Re-reads the journeys when this isolate's copy is due; a broken document is logged and the
/// previous one kept.
pub async fn refresh(env: &Env, now_ms: i64) {
    if !isolate::journeys_check_due(now_ms) {
        return;
    }
    match load(env).await {
        Ok(stored) => {
            if let Err(e) = activate(env, &stored) {
                worker::console_error!("journeys: {} ({e})", e.code());
            }
        }
        Err(e) => worker::console_error!("journeys read failed: {e}"),
    }
}

fn activate(env: &Env, stored: &StoredJourneys) -> Result<(), JourneysError> {
    if stored.stamp == isolate::journeys_stamp() {
        return Ok(());
    }
    let scale = settings::journey_time_scale(env);
    isolate::use_journeys(stored.parse()?.scaled(scale), &stored.stamp);
    Ok(())
}

/// The uploaded document, else the committed files.
pub async fn load(env: &Env) -> worker::Result<StoredJourneys> {
    documents::load(env, KEY, StoredJourneys::committed).await
}

/// Stores `stored` (`None`: back to the committed files) with `audit` in the same batch, and
/// makes it this isolate's.
pub async fn save(
    env: &Env,
    stored: Option<&StoredJourneys>,
    audit: Statement,
    now_ms: i64,
) -> Result<StoredJourneys, ApiError> {
    let document = stored.cloned().unwrap_or_else(StoredJourneys::committed);
    documents::save(env, KEY, &document, stored.is_some(), vec![audit], now_ms).await?;
    activate(env, &document).map_err(ApiError::Journeys)?;
    Ok(document)
}

/// Claims the runs due at `now_ms`.
pub async fn claim_due(db: &D1Database, now_ms: i64) -> worker::Result<Vec<Claimed>> {
    d1::rows(db, &run::claim_due(now_ms, run::MAX_CLAIM)).await
}

/// A decision as stored.
#[derive(Debug, Deserialize)]
pub struct DecisionRow {
    /// The send key.
    pub key: String,
    /// `sent` or why not.
    pub outcome: String,
    /// When the send was due.
    pub at: i64,
}

/// Every decision made for `profile_id` (newest first, bounded).
pub async fn decisions_of(db: &D1Database, profile_id: &str) -> worker::Result<Vec<DecisionRow>> {
    d1::rows(db, &run::decisions_of(profile_id)).await
}
