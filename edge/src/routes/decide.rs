//! `POST /v1/decide {anonymousId|userId, slots: [...], context}`: per slot a decision (items,
//! variant, reason) from the profile's KV snapshot (D1 on a miss), honouring consent and the
//! holdout, and a `Decision Exposed` event for lift measurement. Write-key auth and CORS as for
//! ingestion: the SDK calls it from browsers. [`decide`] is shared with edge rendering.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use seam_core::collect::auth::basic_user;
use seam_core::collect::event::Event;
use seam_core::collect::source::Source;
use seam_core::identity::{IdType, Identifier, Rules};
use seam_core::personalise::candidates::{
    CandidateCache, CandidatePlan, CandidateRow, CandidateSet,
};
use seam_core::personalise::recommend::{self, CatalogItem, Changed, Recommendation};
use seam_core::personalise::slot::{self, SlotConfig, SlotKind};
use seam_core::personalise::ProfileState;
use seam_core::personalise::{self, RecommendInputs, LOAD_STATE_SQL};
use seam_core::plan::{Param, Statement};
use serde_json::{json, Map, Value};
use worker::{Context, D1Database, Env, Request, Response};

use super::ingest::{insert_internal, prepare_internal};
use crate::error::ApiError;
use crate::store::personalisation;
use crate::{http, limits, settings, store};

const MAX_SLOTS: usize = 10;
/// Popular items read per decision (defaults and top-ups).
const POPULAR: usize = 50;
/// KV forwarding hops followed (`mergedInto`).
const MAX_HOPS: usize = 4;

/// One slot asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Slot name (`recommended-for-you`, `discount-banner`).
    pub id: String,
    /// How many items, when the caller says (else the slot's configured limit).
    pub limit: Option<usize>,
}

impl Slot {
    /// A slot from `"name"` or `{"id": "name", "limit": n}`.
    fn parse(value: &Value) -> Option<Self> {
        let (id, limit) = match value {
            Value::String(s) => (s.clone(), None),
            Value::Object(o) => (
                o.get("id")?.as_str()?.to_owned(),
                o.get("limit")
                    .and_then(Value::as_u64)
                    .map(|n| (n as usize).clamp(1, slot::MAX_LIMIT)),
            ),
            _ => return None,
        };
        slot::valid_slot_name(&id).then_some(Self { id, limit })
    }
}

/// Why a decision is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// From the profile's behaviour.
    Personalised,
    /// No profile or no behaviour yet: popular items.
    ColdStart,
    /// Personalisation consent denied: non-personal defaults.
    ConsentDenied,
    /// In the control group: defaults, so lift can be measured.
    Holdout,
}

impl Basis {
    /// The variant of a recommendations slot.
    pub fn variant(self) -> &'static str {
        match self {
            Self::Personalised => "personalised",
            Self::Holdout => "control",
            Self::ColdStart | Self::ConsentDenied => "default",
        }
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Personalised => "personalised",
            Self::ColdStart => "cold_start",
            Self::ConsentDenied => "consent_denied",
            Self::Holdout => "holdout",
        }
    }
}

/// A slot's recommendations with their catalogue items (for rendering).
pub type Picks = Vec<(Recommendation, Option<CatalogItem>)>;

/// What one slot shows.
#[derive(Debug, Clone)]
pub struct SlotDecision {
    /// The slot.
    pub slot: Slot,
    /// `personalised`, `default`, `control` (holdout), or a banner variant's name (`none`: no
    /// banner).
    pub variant: String,
    /// Why: the visitor's basis, or for banners `segments` / `no_match`.
    pub reason: &'static str,
    /// Recommended items (empty for banners).
    pub items: Picks,
    /// The slot's markup, rendered from its template (empty: leave the page's own content).
    pub html: String,
}

/// Decisions for one visitor.
#[derive(Debug, Clone)]
pub struct Decisions {
    /// The visitor's profile, when known.
    pub profile_id: Option<String>,
    /// Why.
    pub basis: Basis,
    /// Per slot, in the order asked.
    pub slots: Vec<SlotDecision>,
}

impl Decisions {
    /// The variant a recommendations slot shows: `personalised` or `default` (`control` in the
    /// holdout).
    pub fn variant(&self) -> &'static str {
        self.basis.variant()
    }

    /// The JSON answer of `/v1/decide`.
    pub fn to_json(&self) -> Value {
        let slots: Vec<Value> = self
            .slots
            .iter()
            .map(|d| {
                json!({
                    "slot": d.slot.id,
                    "variant": d.variant,
                    "reason": d.reason,
                    "items": d.items.iter().map(|(r, item)| item_json(r, item.as_ref())).collect::<Vec<_>>(),
                    "html": d.html,
                })
            })
            .collect();
        json!({
            "profileId": self.profile_id,
            "personalised": self.basis == Basis::Personalised,
            "reason": self.basis.as_str(),
            "decisions": slots,
        })
    }
}

fn item_json(r: &Recommendation, item: Option<&CatalogItem>) -> Value {
    let mut out = match item.map(serde_json::to_value) {
        Some(Ok(Value::Object(o))) => o,
        _ => Map::new(),
    };
    out.insert("product_id".into(), Value::from(r.product_id.clone()));
    out.insert("reason".into(), Value::from(r.reason.as_str()));
    Value::Object(out)
}

/// Whether the consent state denies personalisation: Consent Mode v2's
/// `personalization_storage` or `ad_personalization` set to `denied` (or `false`), given as GCM
/// values directly or as the SDK's consent state (`{gcm, categoryPreferences}`).
pub fn personalisation_denied(consent: Option<&Value>) -> bool {
    let Some(consent) = consent.and_then(Value::as_object) else {
        return false;
    };
    let denies = |values: &Map<String, Value>| {
        ["personalization_storage", "ad_personalization"]
            .iter()
            .any(|k| match values.get(*k) {
                Some(Value::String(s)) => s.eq_ignore_ascii_case("denied"),
                Some(Value::Bool(b)) => !b,
                _ => false,
            })
    };
    denies(consent)
        || ["gcm", "categoryPreferences"]
            .iter()
            .filter_map(|k| consent.get(*k).and_then(Value::as_object))
            .any(denies)
}

/// Handles `POST /v1/decide`.
pub async fn post(mut req: Request, env: &Env, ctx: &Context) -> Result<Response, ApiError> {
    let facts = http::facts(&req);
    limits::check_ip(env, facts.ip.as_deref()).await?;
    let configured = store::sources::configured(env)?;
    let header_key = http::header(&req, "Authorization").and_then(|h| basic_user(&h));
    let body: Value = req.json().await.map_err(|_| ApiError::InvalidBody)?;
    let body = body.as_object().ok_or(ApiError::InvalidBody)?;
    let key = body
        .get("writeKey")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(header_key);
    let source = store::sources::source_for(env, &configured, key.as_deref()).await?;
    if http::cross_origin(&req).is_some_and(|o| !source.allows_origin(&o)) {
        return Err(ApiError::OriginNotAllowed);
    }
    limits::check_source(env, &source.id).await?;
    let slots: Vec<Slot> = match body.get("slots") {
        Some(Value::Array(slots)) if !slots.is_empty() && slots.len() <= MAX_SLOTS => slots
            .iter()
            .map(Slot::parse)
            .collect::<Option<Vec<_>>>()
            .ok_or(ApiError::InvalidBody)?,
        _ => return Err(ApiError::InvalidBody),
    };
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (anonymous_id, user_id) = (text("anonymousId"), text("userId"));
    if anonymous_id.is_none() && user_id.is_none() {
        return Err(ApiError::InvalidIdentifier);
    }
    let context = body.get("context").cloned().unwrap_or_else(|| json!({}));
    let denied = personalisation_denied(context.get("consent"));
    let rules = settings::identity_rules(env)?;
    let db = env.d1("DB")?;
    let now_ms = worker::Date::now().as_millis() as i64;
    let visitor = Visitor {
        anonymous_id: anonymous_id.as_deref(),
        user_id: user_id.as_deref(),
    };
    let decisions = decide(env, &db, &rules, visitor, &slots, denied).await?;

    let exposure = Exposure {
        decisions: &decisions,
        anonymous_id: anonymous_id.as_deref(),
        user_id: user_id.as_deref(),
        message_id: text("messageId"),
        context: &context,
    };
    let prepared = prepare_internal(&source, Some(&facts), &[exposure.event(now_ms)], now_ms)?;
    let mut out = decisions.to_json();
    if let Some(event) = prepared.first() {
        out["exposureId"] = Value::from(event.message_id.as_str());
    }
    log_soon(env, ctx, &source, prepared)?;
    Ok(Response::from_json(&out)?)
}

/// Logs server-made events (decision exposures) of `source`: they gather per isolate and are
/// written together shortly after the first one's response, one D1 batch instead of a write per
/// decision or page view. Deduplicated by `messageId` like any event.
pub fn log_soon(
    env: &Env,
    ctx: &Context,
    source: &Source,
    events: Vec<Event>,
) -> Result<(), ApiError> {
    if events.is_empty() {
        return Ok(());
    }
    let first = EXPOSURES.with(|pending| {
        let mut pending = pending.borrow_mut();
        let first = pending.is_none();
        let list = pending.get_or_insert_with(Vec::new);
        list.extend(events.into_iter().map(|e| (source.clone(), e)));
        first
    });
    if first {
        let db = env.d1("DB")?;
        crate::after_response(ctx, async move {
            worker::Delay::from(EXPOSURE_GATHER).await;
            let pending = EXPOSURES
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            let mut by_source: Vec<(Source, Vec<Event>)> = Vec::new();
            for (source, event) in pending {
                match by_source.iter_mut().find(|(s, _)| s.id == source.id) {
                    Some((_, events)) => events.push(event),
                    None => by_source.push((source, vec![event])),
                }
            }
            let now_ms = worker::Date::now().as_millis() as i64;
            for (source, events) in by_source {
                if let Err(e) = insert_internal(&db, &source, &events, now_ms).await {
                    worker::console_error!("exposure log failed: {}", e.code());
                }
            }
        });
    }
    Ok(())
}

/// How long exposures gather before they are written.
const EXPOSURE_GATHER: std::time::Duration = std::time::Duration::from_millis(200);

thread_local! {
    /// Exposures waiting to be written (`Some` while a write is scheduled).
    static EXPOSURES: RefCell<Option<Vec<(Source, Event)>>> = const { RefCell::new(None) };
}

/// A decision as shown to a visitor: logged as a `Decision Exposed` event so lift can be
/// measured (holdout vs personalised).
pub struct Exposure<'a> {
    /// What was decided.
    pub decisions: &'a Decisions,
    /// The visitor's anonymous ID.
    pub anonymous_id: Option<&'a str>,
    /// The visitor's user ID.
    pub user_id: Option<&'a str>,
    /// The caller's `messageId`, if it sent one.
    pub message_id: Option<String>,
    /// The event's `context`.
    pub context: &'a Value,
}

impl Exposure<'_> {
    /// The `Decision Exposed` event. Its `messageId` is the caller's, or derived from the
    /// visitor, the decision and the minute, so a retried call logs one exposure.
    pub fn event(self, now_ms: i64) -> Value {
        let decisions = self.decisions;
        let slots: Vec<Value> = decisions
            .slots
            .iter()
            .map(|d| {
                json!({
                    "slot": d.slot.id,
                    "variant": d.variant,
                    "items": d.items.iter().map(|(r, _)| r.product_id.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let properties = json!({
            "profile_id": decisions.profile_id,
            "reason": decisions.basis.as_str(),
            "variant": decisions.variant(),
            "slots": slots,
        });
        let message_id = self.message_id.unwrap_or_else(|| {
            let source = format!(
                "{}\n{}\n{}\n{}",
                self.anonymous_id.unwrap_or_default(),
                self.user_id.unwrap_or_default(),
                properties,
                now_ms / 60_000
            );
            // SHA-256 hex (the admin-key hash function is the public one core exposes).
            let mut hex = seam_core::privacy::access::key_hash(&source);
            hex.truncate(32);
            format!("seam-exp-{hex}")
        });
        let mut event = json!({
            "type": "track",
            "event": "Decision Exposed",
            "messageId": message_id,
            "properties": properties,
            "context": self.context,
        });
        if let Some(a) = self.anonymous_id {
            event["anonymousId"] = Value::from(a);
        }
        if let Some(u) = self.user_id {
            event["userId"] = Value::from(u);
        }
        event
    }
}

/// The decisions for a visitor: profile from KV (D1 on a miss, then re-published), then
/// consent, holdout and per slot its recommendations or banner. Banners read the profile's
/// state row in the same round trip and evaluate segments at `now`, so time-driven ones
/// (`cart_abandoners`) are current without an event.
pub async fn decide(
    env: &Env,
    db: &D1Database,
    rules: &Rules,
    visitor: Visitor<'_>,
    slots: &[Slot],
    consent_denied: bool,
) -> Result<Decisions, ApiError> {
    let config = personalisation::config();
    let fallback;
    let slot_config = match &config {
        Some(c) => &c.slots,
        None => {
            fallback = SlotConfig::default();
            &fallback
        }
    };
    let profile = if consent_denied {
        None
    } else {
        load_profile(env, db, rules, visitor.anonymous_id, visitor.user_id).await?
    };
    let profile_id = profile
        .as_ref()
        .and_then(|p| p.get("profileId"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let object = |key: &str| {
        profile
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let computed = object("computedTraits");
    let inputs = RecommendInputs::from_computed(&computed);
    let default_settings;
    let settings = match &config {
        Some(c) => &c.recommendations,
        None => {
            default_settings = recommend::RecommendSettings::from_json(&json!({}))
                .map_err(|e| ApiError::Storage(e.to_string()))?;
            &default_settings
        }
    };
    let held_out = profile_id.as_deref().is_some_and(|id| {
        recommend::in_holdout(id, &settings.holdout_salt, settings.holdout_percent)
    });
    let has_signal = !inputs.viewed.is_empty() || !inputs.categories.is_empty();
    let basis = if consent_denied {
        Basis::ConsentDenied
    } else if held_out {
        Basis::Holdout
    } else if has_signal {
        Basis::Personalised
    } else {
        Basis::ColdStart
    };
    let personal = basis == Basis::Personalised;
    let empty = RecommendInputs::default();
    let used = if personal { &inputs } else { &empty };
    let signals = used.signals();
    let kinds: Vec<&SlotKind> = slots.iter().map(|s| slot_config.get(&s.id)).collect();
    let wants_items = kinds
        .iter()
        .any(|k| matches!(k, SlotKind::Recommendations { .. }));
    // Banners are personal: only for a known profile that consent allows and the holdout spares.
    let banner_profile = profile_id
        .as_deref()
        .filter(|_| matches!(basis, Basis::Personalised | Basis::ColdStart))
        .filter(|_| kinds.iter().any(|k| matches!(k, SlotKind::Banner { .. })));
    let now_ms = worker::Date::now().as_millis() as i64;
    // Shared inputs come from the isolate's cache; D1 is read only for what it lacks.
    let plan = wants_items.then(|| {
        CANDIDATES.with(|c| {
            let mut cache = c.borrow_mut();
            cache.set_ttl(settings.cache_ms);
            cache.plan(&signals, true, now_ms)
        })
    });
    let mut reads = plan
        .as_ref()
        .map(CandidatePlan::statements)
        .unwrap_or_default();
    let state_at = reads.len();
    // Banners evaluate segments from the state the KV snapshot carries (D1 for an older one).
    let snapshot_state = profile
        .as_ref()
        .and_then(|p| p.get("state"))
        .and_then(|s| serde_json::from_value::<ProfileState>(s.clone()).ok());
    if let (Some(id), None) = (banner_profile, &snapshot_state) {
        reads.push(Statement {
            sql: LOAD_STATE_SQL.into(),
            params: vec![Param::Text(id.to_owned())],
        });
    }
    let mut results = store::d1::execute(db, &reads).await?;
    let segments: BTreeSet<String> = match (&config, banner_profile) {
        (Some(config), Some(_)) => {
            let state = match snapshot_state {
                Some(state) => state,
                None => {
                    let row = results
                        .get(state_at)
                        .and_then(|r| r.results::<personalisation::StateRow>().ok())
                        .and_then(|rows| rows.into_iter().next());
                    personalisation::state_of(row).0
                }
            };
            personalise::view(&state, &object("traits"), config, now_ms).1
        }
        _ => BTreeSet::new(),
    };
    results.truncate(state_at);
    let set = match plan {
        Some(plan) => {
            let rows = results
                .iter()
                .map(|r| r.results::<CandidateRow>().unwrap_or_default())
                .collect();
            CANDIDATES.with(|c| c.borrow_mut().absorb(plan, rows, now_ms))
        }
        None => CandidateSet::default(),
    };
    let catalog = &set.catalog;
    let candidates = set.candidates();
    // Purchased items stay out of every list, personal or not, as long as consent allows using
    // the profile at all.
    let exclude: BTreeSet<String> = if consent_denied {
        BTreeSet::new()
    } else {
        inputs.exclude.clone()
    };
    let slots = slots
        .iter()
        .zip(kinds)
        .map(|(slot, kind)| match kind {
            SlotKind::Recommendations { limit, .. } => {
                let limit = slot.limit.unwrap_or(*limit);
                let picked = if personal {
                    recommend::recommend(&signals, &candidates, settings, limit)
                } else {
                    recommend::defaults(&candidates, &exclude, settings, limit)
                };
                let items: Picks = picked
                    .into_iter()
                    .map(|r| {
                        let item = catalog.get(&r.product_id).cloned();
                        (r, item)
                    })
                    .collect();
                let shown: Vec<(&str, &str, Option<&CatalogItem>)> = items
                    .iter()
                    .map(|(r, item)| (r.product_id.as_str(), r.reason.as_str(), item.as_ref()))
                    .collect();
                SlotDecision {
                    slot: slot.clone(),
                    variant: basis.variant().into(),
                    reason: basis.as_str(),
                    html: slot::render_items(&slot.id, kind, &shown),
                    items,
                }
            }
            SlotKind::Banner { variants } => {
                let chosen =
                    banner_profile.and_then(|_| variants.iter().find(|v| v.matches(&segments)));
                let reason = match (basis, chosen) {
                    (Basis::ConsentDenied | Basis::Holdout, _) => basis.as_str(),
                    _ if banner_profile.is_none() => Basis::ColdStart.as_str(),
                    (_, Some(_)) => "segments",
                    (_, None) => "no_match",
                };
                SlotDecision {
                    slot: slot.clone(),
                    variant: match (basis, chosen) {
                        (Basis::Holdout, _) => "control".into(),
                        (_, Some(v)) => v.name.clone(),
                        (_, None) => "none".into(),
                    },
                    reason,
                    items: Vec::new(),
                    html: chosen.map(|v| v.html.clone()).unwrap_or_default(),
                }
            }
        })
        .collect();
    Ok(Decisions {
        profile_id,
        basis,
        slots,
    })
}

/// Who a decision is for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Visitor<'a> {
    /// Anonymous ID (or the `seam_id` cookie).
    pub anonymous_id: Option<&'a str>,
    /// User ID.
    pub user_id: Option<&'a str>,
}

/// Anonymous ID -> profile ID pointers an isolate remembers (cleared when full), for at most
/// [`POINTER_TTL_MS`]; this isolate's own KV publishes update them at once.
const KNOWN_PROFILES: usize = 10_000;
const POINTER_TTL_MS: f64 = 60_000.0;

thread_local! {
    static PROFILE_OF: RefCell<HashMap<String, (String, f64)>> = RefCell::new(HashMap::new());
}

fn known_profile(anonymous_id: &str) -> Option<String> {
    let now = worker::Date::now().as_millis() as f64;
    PROFILE_OF.with(|p| {
        p.borrow()
            .get(anonymous_id)
            .filter(|(_, at)| now - at < POINTER_TTL_MS)
            .map(|(id, _)| id.clone())
    })
}

/// Remembers that `anonymous_id` belongs to `profile_id` (as the KV pointer says).
pub fn remember_profile(anonymous_id: &str, profile_id: &str) {
    let now = worker::Date::now().as_millis() as f64;
    PROFILE_OF.with(|p| {
        let mut known = p.borrow_mut();
        if known.len() >= KNOWN_PROFILES {
            known.clear();
        }
        known.insert(anonymous_id.to_owned(), (profile_id.to_owned(), now));
    });
}

/// Entries kept per kind (products' partner lists, listings, items).
const CANDIDATE_CAPACITY: usize = 5_000;

thread_local! {
    /// The isolate's shared recommendation inputs; each decision sets the lifetime from the
    /// configured `cacheSeconds`.
    static CANDIDATES: RefCell<CandidateCache> =
        RefCell::new(CandidateCache::new(0, CANDIDATE_CAPACITY, POPULAR));
}

/// Drops the cached recommendation inputs that writes changed (`None`: all of them, for a
/// catalogue upload, an erasure or a merge).
pub fn forget_candidates(changed: Option<&Changed>) {
    CANDIDATES.with(|c| match changed {
        Some(changed) => c.borrow_mut().forget(changed),
        None => c.borrow_mut().clear(),
    });
}

/// The visitor's profile snapshot: KV (`anon:<id>` -> `profile:<id>`, following `mergedInto`),
/// else D1, re-published to KV. `None` for an unknown visitor.
async fn load_profile(
    env: &Env,
    db: &D1Database,
    rules: &Rules,
    anonymous_id: Option<&str>,
    user_id: Option<&str>,
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
    // Users are looked up in D1 (no KV pointer is kept for user IDs).
    if user_id.is_none() {
        if let Some(anon) = anonymous_id {
            // The pointer rarely changes (a merge leaves a forwarding record on the old profile,
            // which is followed below), so the isolate remembers it: one KV read fewer.
            let mut id = known_profile(anon);
            if id.is_none() {
                id = get(format!("anon:{anon}")).await.and_then(|p| {
                    p.get("profileId")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                if let Some(id) = &id {
                    remember_profile(anon, id);
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
    let mut profile_id = store::profiles::profile_for(db, &identifier).await?;
    // The `seam_id` cookie is also linked as a cookie ID (events carry it in `context.seam`).
    if profile_id.is_none() && user_id.is_none() {
        if let Some(cookie) =
            anonymous_id.and_then(|a| Identifier::normalized(IdType::CookieId, a, rules))
        {
            profile_id = store::profiles::profile_for(db, &cookie).await?;
        }
    }
    let Some(profile_id) = profile_id else {
        return Ok(None);
    };
    let (mut view, (state, _)) = store::profiles::view_and_state(db, &profile_id).await?;
    let now_ms = worker::Date::now().as_millis() as i64;
    store::profiles::fill_personalisation(&mut view, &state, now_ms);
    let anonymous: Vec<String> = anonymous_id.map(str::to_owned).into_iter().collect();
    store::profiles::publish(env, &view, Some(&state), &anonymous, &[]).await;
    let mut snapshot = serde_json::to_value(&view).map_err(|e| ApiError::Storage(e.to_string()))?;
    snapshot["state"] = serde_json::to_value(&state).unwrap_or_default();
    Ok(Some(snapshot))
}
