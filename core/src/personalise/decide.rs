//! The decision: what each slot of a page shows one visitor, and why.
//!
//! Two steps around one round of reads, so the edge does no thinking of its own:
//! [`plan`] takes the visitor's profile snapshot (or none), the slots asked for and the consent
//! verdict, settles the basis (personalised, cold start, consent denied, holdout) and says what
//! still has to be read (the shared recommendation inputs the isolate's [`CandidateCache`]
//! lacks, and the profile's personalisation state when banners need it and the snapshot has
//! none); [`DecisionPlan::decide`] takes those rows and returns the [`Decisions`]. The
//! `Decision Exposed` event that logs a decision for lift measurement is [`Exposure::event`].

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::personalise::candidates::{CandidateCache, CandidatePlan, CandidateRow, CandidateSet};
use crate::personalise::recommend::{self, CatalogItem, RecommendSettings, Recommendation};
use crate::personalise::slot::{self, SlotConfig, SlotKind};
use crate::personalise::stored::StoredState;
use crate::personalise::{self, PersonalisationConfig, ProfileState, RecommendInputs};
use crate::plan::{Param, Statement};

/// Slots one decision may ask for.
pub const MAX_SLOTS: usize = 10;

/// One slot asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Slot name (`recommended-for-you`, `discount-banner`).
    pub id: String,
    /// How many items, when the caller says (else the slot's configured limit).
    pub limit: Option<usize>,
}

impl Slot {
    /// A slot from `"name"` or `{"id": "name", "limit": n}` (the limit clamped to 1..=20).
    pub fn parse(value: &Value) -> Option<Self> {
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

    /// The slots of a `/v1/decide` body's `slots`: 1 to [`MAX_SLOTS`], every one valid.
    pub fn parse_list(value: Option<&Value>) -> Option<Vec<Self>> {
        match value {
            Some(Value::Array(slots)) if !slots.is_empty() && slots.len() <= MAX_SLOTS => {
                slots.iter().map(Slot::parse).collect()
            }
            _ => None,
        }
    }

    /// A slot a page carries, at its configured limit.
    pub fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            limit: None,
        }
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
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone)]
pub struct SlotDecision {
    pub slot: Slot,
    /// `personalised`, `default`, `control` (holdout), or a banner variant's name (`none`: no
    /// banner).
    pub variant: String,
    /// The visitor's basis, or for banners `segments` / `no_match`.
    pub reason: &'static str,
    /// Empty for banners.
    pub items: Picks,
    /// The slot's markup from its template (empty: leave the page's own content).
    pub html: String,
}

/// Decisions for one visitor, per slot in the order asked.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone)]
pub struct Decisions {
    pub profile_id: Option<String>,
    pub basis: Basis,
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

/// A decision made up to its reads: the basis is settled; [`DecisionPlan::reads`] says what D1
/// must still answer.
pub struct DecisionPlan {
    slots: Vec<(Slot, SlotKind)>,
    settings: RecommendSettings,
    profile_id: Option<String>,
    traits: Map<String, Value>,
    inputs: RecommendInputs,
    basis: Basis,
    /// The profile banners are decided for, when any slot is a banner and the basis allows one.
    banner_profile: Option<String>,
    /// The personalisation state the snapshot carried.
    snapshot_state: Option<ProfileState>,
    candidates: Option<CandidatePlan>,
}

/// Settles the basis of a decision for the visitor whose KV `profile` snapshot is given (`None`:
/// unknown, or consent denied so it was not read) and plans its reads. `cache` lends the shared
/// inputs it holds (its lifetime is set from the configuration's `cacheSeconds`).
pub fn plan(
    profile: Option<&Value>,
    slots: &[Slot],
    consent_denied: bool,
    config: Option<&PersonalisationConfig>,
    cache: &mut CandidateCache,
    now_ms: i64,
) -> DecisionPlan {
    let fallback = SlotConfig::default();
    let slot_config = config.map_or(&fallback, |c| &c.slots);
    let settings = match config {
        Some(c) => c.recommendations.clone(),
        None => RecommendSettings::default(),
    };
    let profile = profile.filter(|_| !consent_denied);
    let profile_id = profile
        .and_then(|p| p.get("profileId"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let object = |key: &str| {
        profile
            .and_then(|p| p.get(key))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let inputs = RecommendInputs::from_computed(&object("computedTraits"));
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
    let slots: Vec<(Slot, SlotKind)> = slots
        .iter()
        .map(|s| (s.clone(), slot_config.get(&s.id).clone()))
        .collect();
    let wants_items = slots
        .iter()
        .any(|(_, k)| matches!(k, SlotKind::Recommendations { .. }));
    // Banners are personal: only for a known profile that consent allows and the holdout spares.
    let banner_profile = profile_id
        .clone()
        .filter(|_| matches!(basis, Basis::Personalised | Basis::ColdStart))
        .filter(|_| {
            slots
                .iter()
                .any(|(_, k)| matches!(k, SlotKind::Banner { .. }))
        });
    let empty = RecommendInputs::default();
    let used = if basis == Basis::Personalised {
        &inputs
    } else {
        &empty
    };
    // Shared inputs come from the isolate's cache; D1 is read only for what it lacks.
    let candidates = wants_items.then(|| {
        cache.set_ttl(settings.cache_ms);
        cache.plan(&used.signals(), true, now_ms)
    });
    let snapshot_state = profile
        .and_then(|p| p.get("state"))
        .and_then(|s| serde_json::from_value::<ProfileState>(s.clone()).ok());
    DecisionPlan {
        slots,
        settings,
        profile_id,
        traits: object("traits"),
        inputs,
        basis,
        banner_profile,
        snapshot_state,
        candidates,
    }
}

/// The rows [`DecisionPlan::reads`] returned: one list per candidate read, in order, and the
/// profile's state row (JSON text and version) when it was read.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Default)]
pub struct DecisionRows {
    pub candidates: Vec<Vec<CandidateRow>>,
    pub state: Option<StoredState>,
}

impl DecisionPlan {
    /// The basis, settled before any read.
    pub fn basis(&self) -> Basis {
        self.basis
    }

    /// D1 reads still needed, in order: the candidate reads, then the state row (banners, when
    /// the snapshot carried no state).
    pub fn reads(&self) -> Vec<Statement> {
        let mut reads = self
            .candidates
            .as_ref()
            .map(CandidatePlan::statements)
            .unwrap_or_default();
        if let (Some(id), None) = (&self.banner_profile, &self.snapshot_state) {
            reads.push(Statement {
                sql: personalise::LOAD_STATE_SQL.into(),
                params: vec![Param::Text(id.clone())],
            });
        }
        reads
    }

    /// The profile whose state row [`DecisionPlan::reads`] ends with, when it reads one (its
    /// shard holds the row: `personalise::shard`).
    pub fn state_of(&self) -> Option<&str> {
        self.banner_profile
            .as_deref()
            .filter(|_| self.snapshot_state.is_none())
    }

    /// The candidate reads' plan, when the decision reads candidates (profile shards add their
    /// counts to its rows: [`CandidatePlan::add_shards`]).
    pub fn candidates(&self) -> Option<&CandidatePlan> {
        self.candidates.as_ref()
    }

    /// How many of [`DecisionPlan::reads`] are candidate reads (the rest is the state row).
    pub fn candidate_reads(&self) -> usize {
        self.candidates
            .as_ref()
            .map_or(0, CandidatePlan::read_count)
    }

    /// The decisions, given the rows the reads returned. `cache` keeps the new rows; banners
    /// evaluate segments at `now_ms`, so time-driven ones (`cart_abandoners`) are current
    /// without an event.
    pub fn decide(
        self,
        rows: DecisionRows,
        config: Option<&PersonalisationConfig>,
        cache: &mut CandidateCache,
        now_ms: i64,
    ) -> Decisions {
        let segments: BTreeSet<String> = match (config, &self.banner_profile) {
            (Some(config), Some(_)) => {
                let state = self
                    .snapshot_state
                    .unwrap_or_else(|| ProfileState::from_stored(rows.state.as_ref()));
                personalise::view(&state, &self.traits, config, now_ms).1
            }
            _ => BTreeSet::new(),
        };
        let set = match self.candidates {
            Some(plan) => cache.absorb(plan, rows.candidates, now_ms),
            None => CandidateSet::default(),
        };
        let basis = self.basis;
        let personal = basis == Basis::Personalised;
        let empty = RecommendInputs::default();
        let signals = if personal { &self.inputs } else { &empty }.signals();
        let candidates = set.candidates();
        // Purchased items stay out of every list, personal or not, as long as consent allows
        // using the profile at all.
        let exclude: BTreeSet<String> = if basis == Basis::ConsentDenied {
            BTreeSet::new()
        } else {
            self.inputs.exclude.clone()
        };
        let banner_profile = self.banner_profile.as_deref();
        let slots = self
            .slots
            .into_iter()
            .map(|(slot, kind)| match &kind {
                SlotKind::Recommendations { limit, .. } => {
                    let limit = slot.limit.unwrap_or(*limit);
                    let picked = if personal {
                        recommend::recommend(&signals, &candidates, &self.settings, limit)
                    } else {
                        recommend::defaults(&candidates, &exclude, &self.settings, limit)
                    };
                    let items: Picks = picked
                        .into_iter()
                        .map(|r| {
                            let item = set.catalog.get(&r.product_id).cloned();
                            (r, item)
                        })
                        .collect();
                    let shown: Vec<(&str, &str, Option<&CatalogItem>)> = items
                        .iter()
                        .map(|(r, item)| (r.product_id.as_str(), r.reason.as_str(), item.as_ref()))
                        .collect();
                    SlotDecision {
                        html: slot::render_items(&slot.id, &kind, &shown),
                        slot,
                        variant: basis.variant().into(),
                        reason: basis.as_str(),
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
                        slot,
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
        Decisions {
            profile_id: self.profile_id,
            basis,
            slots,
        }
    }
}

/// A decision as shown to a visitor: logged as a `Decision Exposed` event so lift can be
/// measured (holdout vs personalised).
#[allow(missing_docs)] // the fields say what they hold
pub struct Exposure<'a> {
    pub decisions: &'a Decisions,
    pub anonymous_id: Option<&'a str>,
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
            let mut hex = crate::privacy::access::key_hash(&source);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalise::candidates::LOAD_PAIRS_SQL;
    use crate::personalise::{DEFAULT_COMPUTED_TRAITS, LOAD_STATE_SQL};

    const NOW: i64 = 1_800_000_000_000;

    /// The committed documents, with a `gold` segment on the `plan` trait and a banner for it,
    /// so banner choices need no event history.
    fn config(holdout_percent: u32) -> PersonalisationConfig {
        let computed: Value = serde_json::from_str(DEFAULT_COMPUTED_TRAITS).unwrap();
        PersonalisationConfig::from_json(
            &computed,
            &json!({"segments": [{"name": "gold", "rule": {"eq": [{"trait": "plan"}, "gold"]}}]}),
            &json!({"holdoutPercent": holdout_percent, "holdoutSalt": "test"}),
            &json!({"slots": {
                "recommended-for-you": {"type": "recommendations", "limit": 2},
                "gold-banner": {"type": "banner", "variants": [
                    {"name": "gold_offer", "when": {"all": ["gold"]}, "html": "<p>gold</p>"}]}
            }}),
        )
        .unwrap()
    }

    fn snapshot(id: &str, viewed: &[&str], plan: &str, state: bool) -> Value {
        let mut p = json!({
            "profileId": id,
            "computedTraits": {"viewed_products": viewed},
            "traits": {"plan": plan},
        });
        if state {
            p["state"] = serde_json::to_value(ProfileState::default()).unwrap();
        }
        p
    }

    fn slots() -> Vec<Slot> {
        vec![
            Slot::named("recommended-for-you"),
            Slot::named("gold-banner"),
        ]
    }

    fn cache() -> CandidateCache {
        CandidateCache::new(0, 100, 50)
    }

    fn row(item_a: &str, item_b: &str, name: &str) -> CandidateRow {
        CandidateRow {
            item_a: Some(item_a.into()),
            item_b: Some(item_b.into()),
            co_views: Some(5),
            body: Some(json!({"product_id": item_b, "name": name, "url": "/p"}).to_string()),
            ..CandidateRow::default()
        }
    }

    fn popular(id: &str) -> CandidateRow {
        CandidateRow {
            product_id: Some(id.into()),
            views: Some(9),
            body: Some(json!({"product_id": id, "name": id}).to_string()),
            ..CandidateRow::default()
        }
    }

    #[test]
    fn basis_follows_consent_then_holdout_then_behaviour() {
        let none = config(0);
        let all = config(100);
        let cases: [(&str, Option<Value>, bool, &PersonalisationConfig, Basis); 5] = [
            ("unknown visitor", None, false, &none, Basis::ColdStart),
            (
                "no behaviour yet",
                Some(snapshot("p1", &[], "free", true)),
                false,
                &none,
                Basis::ColdStart,
            ),
            (
                "viewed products",
                Some(snapshot("p1", &["a"], "free", true)),
                false,
                &none,
                Basis::Personalised,
            ),
            (
                "consent denied wins",
                Some(snapshot("p1", &["a"], "gold", true)),
                true,
                &all,
                Basis::ConsentDenied,
            ),
            (
                "holdout wins over behaviour",
                Some(snapshot("p1", &["a"], "gold", true)),
                false,
                &all,
                Basis::Holdout,
            ),
        ];
        for (name, profile, denied, config, basis) in cases {
            let plan = plan(
                profile.as_ref(),
                &slots(),
                denied,
                Some(config),
                &mut cache(),
                NOW,
            );
            assert_eq!(plan.basis(), basis, "{name}");
        }
    }

    #[test]
    fn personalised_slot_shows_partners_of_viewed_items() {
        let config = config(0);
        let profile = snapshot("p1", &["a"], "free", true);
        let mut cache = cache();
        let plan = plan(
            Some(&profile),
            &slots(),
            false,
            Some(&config),
            &mut cache,
            NOW,
        );
        let reads = plan.reads();
        assert_eq!(
            reads[0].sql, LOAD_PAIRS_SQL,
            "partners of the viewed item first"
        );
        assert_eq!(
            plan.candidate_reads(),
            reads.len(),
            "the snapshot carried the state"
        );
        let mut candidates = vec![Vec::new(); reads.len()];
        candidates[0] = vec![row("a", "b", "Bee")];
        candidates[1] = vec![popular("z")];
        let rows = DecisionRows {
            candidates,
            state: None,
        };
        let decisions = plan.decide(rows, Some(&config), &mut cache, NOW);
        assert_eq!(decisions.basis, Basis::Personalised);
        assert_eq!(decisions.profile_id.as_deref(), Some("p1"));
        let recs = &decisions.slots[0];
        assert_eq!(recs.variant, "personalised");
        assert_eq!(recs.items[0].0.product_id, "b");
        assert_eq!(
            recs.items[0].1.as_ref().and_then(|i| i.name.as_deref()),
            Some("Bee")
        );
        assert!(recs.html.contains("Bee"), "{}", recs.html);
        let json = decisions.to_json();
        assert_eq!(json["personalised"], true);
        assert_eq!(json["decisions"][0]["items"][0]["product_id"], "b");
        assert_eq!(json["decisions"][0]["items"][0]["name"], "Bee");
    }

    #[test]
    fn banner_variant_follows_segments_and_basis() {
        let cases = [
            (
                "member of the segment",
                "gold",
                false,
                0,
                "gold_offer",
                "segments",
                "<p>gold</p>",
            ),
            ("not a member", "free", false, 0, "none", "no_match", ""),
            (
                "consent denied",
                "gold",
                true,
                0,
                "none",
                "consent_denied",
                "",
            ),
            ("holdout", "gold", false, 100, "control", "holdout", ""),
        ];
        for (name, plan_trait, denied, holdout, variant, reason, html) in cases {
            let config = config(holdout);
            let profile = snapshot("p1", &[], plan_trait, true);
            let mut cache = cache();
            let planned = plan(
                Some(&profile),
                &slots(),
                denied,
                Some(&config),
                &mut cache,
                NOW,
            );
            let n = planned.reads().len();
            let rows = DecisionRows {
                candidates: vec![Vec::new(); n],
                state: None,
            };
            let decisions = planned.decide(rows, Some(&config), &mut cache, NOW);
            let banner = &decisions.slots[1];
            assert_eq!(
                (banner.variant.as_str(), banner.reason, banner.html.as_str()),
                (variant, reason, html),
                "{name}"
            );
        }
    }

    #[test]
    fn banner_reads_the_state_only_when_the_snapshot_has_none() {
        let config = config(0);
        for (state, reads_state) in [(true, false), (false, true)] {
            let profile = snapshot("p1", &[], "gold", state);
            let plan = plan(
                Some(&profile),
                &slots(),
                false,
                Some(&config),
                &mut cache(),
                NOW,
            );
            let reads = plan.reads();
            assert_eq!(
                reads.last().map(|r| r.sql == LOAD_STATE_SQL),
                Some(reads_state)
            );
            assert_eq!(
                plan.candidate_reads() + usize::from(reads_state),
                reads.len()
            );
            assert_eq!(plan.state_of(), reads_state.then_some("p1"));
        }
        let unknown = plan(None, &slots(), false, Some(&config), &mut cache(), NOW);
        assert!(unknown.reads().iter().all(|r| r.sql != LOAD_STATE_SQL));
        assert_eq!(unknown.state_of(), None);
    }

    #[test]
    fn warm_cache_needs_no_reads() {
        let config = config(0);
        let mut cache = CandidateCache::new(10_000, 100, 50);
        let first = plan(None, &slots(), false, Some(&config), &mut cache, NOW);
        let n = first.reads().len();
        assert!(n > 0);
        let rows = DecisionRows {
            candidates: vec![vec![popular("z")]; n],
            state: None,
        };
        first.decide(rows, Some(&config), &mut cache, NOW);
        let second = plan(None, &slots(), false, Some(&config), &mut cache, NOW + 1);
        assert!(second.reads().is_empty());
    }

    #[test]
    fn slots_parse_names_objects_and_clamped_limits() {
        let cases = [
            (
                json!("recommended-for-you"),
                Some(("recommended-for-you", None)),
            ),
            (json!({"id": "x", "limit": 3}), Some(("x", Some(3)))),
            (json!({"id": "x", "limit": 0}), Some(("x", Some(1)))),
            (
                json!({"id": "x", "limit": 999}),
                Some(("x", Some(slot::MAX_LIMIT))),
            ),
            (json!({"limit": 3}), None),
            (json!("bad name!"), None),
            (json!(7), None),
        ];
        for (value, expected) in cases {
            let parsed = Slot::parse(&value);
            assert_eq!(
                parsed.as_ref().map(|s| (s.id.as_str(), s.limit)),
                expected,
                "{value}"
            );
        }
        assert!(Slot::parse_list(Some(&json!([]))).is_none());
        assert!(Slot::parse_list(Some(&json!(["a", 7]))).is_none());
        assert!(Slot::parse_list(Some(&json!(vec!["a"; MAX_SLOTS + 1]))).is_none());
        assert_eq!(
            Slot::parse_list(Some(&json!(["a", "b"]))).map(|s| s.len()),
            Some(2)
        );
    }

    #[test]
    fn exposure_id_is_stable_within_a_minute_and_the_callers_when_given() {
        let decisions = Decisions {
            profile_id: Some("p1".into()),
            basis: Basis::Holdout,
            slots: Vec::new(),
        };
        let context = json!({});
        let event = |message_id: Option<&str>, at: i64| {
            Exposure {
                decisions: &decisions,
                anonymous_id: Some("a1"),
                user_id: None,
                message_id: message_id.map(str::to_owned),
                context: &context,
            }
            .event(at)
        };
        let minute = NOW - NOW % 60_000;
        let first = event(None, minute);
        assert_eq!(
            first["messageId"],
            event(None, minute + 59_999)["messageId"]
        );
        assert_ne!(
            first["messageId"],
            event(None, minute + 60_000)["messageId"]
        );
        assert!(first["messageId"]
            .as_str()
            .unwrap()
            .starts_with("seam-exp-"));
        assert_eq!(first["properties"]["variant"], "control");
        assert_eq!(first["properties"]["reason"], "holdout");
        assert_eq!(first["anonymousId"], "a1");
        assert!(first.get("userId").is_none());
        assert_eq!(event(Some("mine"), minute)["messageId"], "mine");
    }
}
