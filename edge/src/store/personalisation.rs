//! Personalisation state on D1: loads a profile's state row, runs `seam_core::personalise` and
//! executes its plan with the version guard (docs/personalisation.md, "Edge integration
//! contract").

use std::cell::RefCell;
use std::sync::Arc;

use seam_core::collect::event::Event;
use seam_core::identity::profile::ProfileView;
use seam_core::personalise::computed::Applied;
use seam_core::personalise::{
    self, PersonalisationConfig, PersonalisationConfigError, ProfileState, Update, LOAD_STATE_SQL,
};
use seam_core::plan::{Param, Statement};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use worker::{D1Database, Env};

use crate::error::ApiError;
use crate::store::d1;

/// Attempts at the version-guarded save before giving up (each loser reloads and re-applies
/// after a short random pause, so a burst of requests for one profile spreads out).
const SAVE_ATTEMPTS: usize = 16;

/// A random pause before retrying a lost save, its bound doubling per attempt up to 320 ms.
async fn back_off(attempt: usize) {
    let [r] = crate::random_bytes::<1>();
    let bound = 10u64 << attempt.min(5);
    let ms = u64::from(r) * bound / 255 + 1;
    worker::Delay::from(std::time::Duration::from_millis(ms)).await;
}

/// How long an isolate uses its configuration before checking KV for an upload (so an upload
/// reaches every isolate within this time; the isolate that took the upload uses it at once).
const CONFIG_TTL_MS: f64 = 30_000.0;
/// KV key and D1 `settings` key of the uploaded configuration.
const CONFIG_KEY: &str = "config:personalisation";
/// The stamp of the committed documents (an upload's stamp is a hash of its documents).
pub const COMMITTED: &str = "committed";

/// The configuration this isolate uses.
struct Active {
    config: Option<Arc<PersonalisationConfig>>,
    stamp: String,
    checked_ms: f64,
}

thread_local! {
    static ACTIVE: RefCell<Active> = RefCell::new(Active {
        config: committed(),
        stamp: COMMITTED.into(),
        checked_ms: f64::NEG_INFINITY,
    });
}

fn committed() -> Option<Arc<PersonalisationConfig>> {
    match PersonalisationConfig::committed() {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            worker::console_error!("personalisation config: {} ({e})", e.code());
            None
        }
    }
}

/// The configuration in force: the uploaded one (`PUT /v1/admin/personalisation`), else the
/// committed `config/*.json`. `None` (logged) when neither is valid: personalisation is derived
/// data and must never block ingestion. [`refresh_config`] keeps it current.
pub fn config() -> Option<Arc<PersonalisationConfig>> {
    ACTIVE.with(|a| a.borrow().config.clone())
}

/// The stamp of the configuration in force.
pub fn config_stamp() -> String {
    ACTIVE.with(|a| a.borrow().stamp.clone())
}

/// The four documents of an uploaded configuration, as stored in D1 (truth) and KV (cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredConfig {
    /// A hash of the documents (or [`COMMITTED`]).
    pub stamp: String,
    /// `computed-traits.json`, `segments.json`, `recommendations.json`, `slots.json`, as JSON
    /// (absent: no upload, the committed ones apply).
    #[serde(default)]
    pub documents: Option<ConfigDocuments>,
}

/// The documents of a configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDocuments {
    /// Computed traits.
    pub computed_traits: Value,
    /// Segments.
    pub segments: Value,
    /// Recommender settings.
    pub recommendations: Value,
    /// Slots.
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

/// Checks KV (D1 on a miss) for an uploaded configuration when this isolate's copy is older
/// than [`CONFIG_TTL_MS`]; a broken upload is logged and the previous configuration kept.
pub async fn refresh_config(env: &Env) {
    let now = worker::Date::now().as_millis() as f64;
    let due = ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let due = now - a.checked_ms >= CONFIG_TTL_MS;
        if due {
            // Marked before the read, so concurrent requests do not all read.
            a.checked_ms = now;
        }
        due
    });
    if !due {
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
pub fn activate(stored: &StoredConfig) -> Result<(), PersonalisationConfigError> {
    if stored.stamp == config_stamp() {
        return Ok(());
    }
    let config = match &stored.documents {
        Some(documents) => Some(Arc::new(documents.validate()?)),
        None => committed(),
    };
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        a.config = config;
        a.stamp = stored.stamp.clone();
    });
    Ok(())
}

/// The uploaded configuration: KV, else D1 (then cached in KV); the committed marker when none.
pub async fn load_stored(env: &Env) -> worker::Result<StoredConfig> {
    let kv = env.kv("CACHE").ok();
    if let Some(kv) = &kv {
        if let Ok(Some(stored)) = kv.get(CONFIG_KEY).json::<StoredConfig>().await {
            return Ok(stored);
        }
    }
    let statement = Statement {
        sql: "SELECT value FROM settings WHERE key = ?1".into(),
        params: vec![Param::Text(CONFIG_KEY.into())],
    };
    let row = d1::rows::<SettingRow>(&env.d1("DB")?, &statement)
        .await?
        .into_iter()
        .next();
    let stored = row
        .and_then(|r| serde_json::from_str::<StoredConfig>(&r.value).ok())
        .unwrap_or_else(|| StoredConfig {
            stamp: COMMITTED.into(),
            documents: None,
        });
    cache(env, &stored).await;
    Ok(stored)
}

/// Stores `stored` in D1 and KV and makes it this isolate's configuration.
pub async fn save_stored(env: &Env, stored: &StoredConfig, now_ms: i64) -> Result<(), ApiError> {
    let statement = match &stored.documents {
        Some(_) => Statement {
            sql: "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
                  ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
                .into(),
            params: vec![
                Param::Text(CONFIG_KEY.into()),
                Param::Text(serde_json::to_string(stored).map_err(|e| ApiError::Storage(e.to_string()))?),
                Param::Int(now_ms),
            ],
        },
        None => Statement {
            sql: "DELETE FROM settings WHERE key = ?1".into(),
            params: vec![Param::Text(CONFIG_KEY.into())],
        },
    };
    d1::execute(&env.d1("DB")?, &[statement]).await?;
    cache(env, stored).await;
    activate(stored).map_err(ApiError::Personalisation)
}

async fn cache(env: &Env, stored: &StoredConfig) {
    let Ok(kv) = env.kv("CACHE") else { return };
    let Ok(text) = serde_json::to_string(stored) else {
        return;
    };
    if let Ok(put) = kv.put(CONFIG_KEY, text) {
        if let Err(e) = put.execute().await {
            worker::console_error!("config cache write failed: {e}");
        }
    }
}

#[derive(Deserialize)]
struct SettingRow {
    value: String,
}

/// A stored state row.
#[derive(Deserialize)]
pub struct StateRow {
    state: String,
    version: i64,
}

/// A profile's stored state and its version (`None`: no row yet).
pub async fn load(
    db: &D1Database,
    profile_id: &str,
) -> worker::Result<(ProfileState, Option<i64>)> {
    let statement = Statement {
        sql: LOAD_STATE_SQL.into(),
        params: vec![Param::Text(profile_id.to_owned())],
    };
    let row = d1::rows::<StateRow>(db, &statement)
        .await?
        .into_iter()
        .next();
    Ok(state_of(row))
}

/// The state and version a [`LOAD_STATE_SQL`] row holds (`None`: no row yet).
pub fn state_of(row: Option<StateRow>) -> (ProfileState, Option<i64>) {
    match row {
        Some(r) => (ProfileState::from_json_str(Some(&r.state)), Some(r.version)),
        None => (ProfileState::default(), None),
    }
}

/// Computed traits and current segments of a stored state at `now_ms` (no writes).
pub fn values(
    state: &ProfileState,
    traits: &Map<String, Value>,
    config: &PersonalisationConfig,
    now_ms: i64,
) -> (Map<String, Value>, Vec<String>) {
    let (computed, segments) = personalise::view(state, traits, config, now_ms);
    (computed, segments.into_iter().collect())
}

/// Whether any of `events` feeds computed traits (the cheap pre-check: identify/group/alias and
/// internal events do not).
pub fn reads_any<'a>(events: impl IntoIterator<Item = &'a Event>) -> bool {
    events
        .into_iter()
        .any(|e| seam_core::personalise::computed::fact_name(e).is_some())
}

/// Folds `events` (attributed to the profile) into the profile's state (`loaded`: as the caller
/// read it, with its version; rules over traits see `profile.traits`), first absorbing the
/// states of `absorbed` profiles (identity merges into this one). Writes go in one batch ending
/// with the version-guarded save; a lost race reloads and redoes it (every write is
/// idempotent). Events already held are duplicates to the core, so passing a retried batch's
/// events again is safe and heals a request that failed after its events were stored.
pub async fn update(
    db: &D1Database,
    config: &PersonalisationConfig,
    profile: &ProfileView,
    absorbed: &[String],
    events: &[&Event],
    now_ms: i64,
    loaded: (ProfileState, Option<i64>),
) -> Result<Update, ApiError> {
    let (profile_id, traits) = (profile.profile_id.as_str(), &profile.traits);
    // A merge changes this profile's state: what the caller read before it is stale.
    let mut loaded = absorbed.is_empty().then_some(loaded);
    for from in absorbed {
        merge(db, config, from, profile_id, now_ms).await?;
    }
    for attempt in 0..SAVE_ATTEMPTS {
        if attempt > 0 {
            back_off(attempt).await;
        }
        let (state, version) = match loaded.take() {
            Some(loaded) => loaded,
            None => load(db, profile_id).await?,
        };
        let update =
            personalise::update(state, version, profile_id, traits, events, config, now_ms);
        // A retried batch (every event already held) with no membership change writes nothing.
        let unchanged = !update.applied.contains(&Applied::Added) && update.diff.is_empty();
        if unchanged && version.is_some() {
            return Ok(update);
        }
        let results = d1::execute(db, &update.writes).await?;
        let saved = results
            .last()
            .map(|r| r.results::<Value>().is_ok_and(|rows| !rows.is_empty()))
            .unwrap_or(false);
        if saved {
            // Evidence the profile had given before (a product viewed again) and unchanged
            // catalogue bodies write no row: caches keep what those writes would have dropped.
            let changed = update.changed_by(|i| {
                results
                    .get(i)
                    .and_then(|r| r.meta().ok().flatten())
                    .and_then(|m| m.changes)
                    .is_none_or(|n| n > 0)
            });
            return Ok(Update { changed, ..update });
        }
    }
    Err(ApiError::Storage(format!(
        "personalisation state of {profile_id} kept changing underneath"
    )))
}

/// Moves the state of profile `from` into `into` (an identity merge).
async fn merge(
    db: &D1Database,
    config: &PersonalisationConfig,
    from: &str,
    into: &str,
    now_ms: i64,
) -> Result<(), ApiError> {
    for attempt in 0..SAVE_ATTEMPTS {
        if attempt > 0 {
            back_off(attempt).await;
        }
        let (from_state, from_version) = load(db, from).await?;
        if from_version.is_none() {
            return Ok(());
        }
        let (into_state, into_version) = load(db, into).await?;
        let merged = personalise::merge(&from_state, &into_state, config);
        let writes = personalise::merge_writes(from, into, &merged, into_version, now_ms);
        // The plan's delete of `from` must not run when the guarded save lost a race (in one
        // batch it would), so the save goes first, alone.
        let (save, rest) = writes.split_at(writes.len().min(1));
        let results = d1::execute(db, save).await?;
        if results
            .first()
            .is_some_and(|r| r.results::<Value>().is_ok_and(|rows| !rows.is_empty()))
        {
            d1::execute(db, rest).await?;
            return Ok(());
        }
    }
    Err(ApiError::Storage(format!(
        "personalisation state of {into} kept changing underneath"
    )))
}
