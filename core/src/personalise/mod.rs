//! The per-profile personalisation pipeline the edge runs: load one state row, fold a request's
//! stored events into computed traits, re-evaluate segments, and write back one plan. The
//! contract is in `docs/personalisation.md`. The parts: [`computed`] traits, [`segment`]s,
//! [`recommend`]ations and the per-isolate cache of their shared inputs ([`candidates`]), the
//! [`slot`]s decisions fill, and the per-profile spacing of refreshes ([`coalesce`]).

pub mod candidates;
pub mod coalesce;
pub mod computed;
pub mod decide;
pub mod recommend;
pub mod refresh;
pub mod segment;
pub mod shard;
pub mod slot;
pub mod stored;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::collect::event::Event;
use crate::format::time::DAY_MS;
use crate::plan::{Param, Statement};
use computed::{Applied, ComputedConfig, ComputedConfigError, ComputedState};
use recommend::{RecommendConfigError, RecommendSettings};
use segment::{Membership, MembershipDiff, Memberships, SegmentConfigError, SegmentSet, Subject};
use slot::{SlotConfig, SlotConfigError};

/// The committed default computed-traits configuration.
pub const DEFAULT_COMPUTED_TRAITS: &str = include_str!("../../../config/computed-traits.json");
/// The committed default segments.
pub const DEFAULT_SEGMENTS: &str = include_str!("../../../config/segments.json");
/// The committed default recommender settings.
pub const DEFAULT_RECOMMENDATIONS: &str = include_str!("../../../config/recommendations.json");
/// The committed default slots (templates and banners).
pub const DEFAULT_SLOTS: &str = include_str!("../../../config/slots.json");

/// Loads a profile's state row. Bind `?1` = profile ID; columns `state`, `version`.
pub const LOAD_STATE_SQL: &str =
    "SELECT state, version FROM profile_personalisation WHERE profile_id = ?1";

/// A mistake in any of the four personalisation documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonalisationConfigError {
    /// In `computed-traits.json`.
    #[error(transparent)]
    Computed(#[from] ComputedConfigError),
    /// In `segments.json`.
    #[error(transparent)]
    Segments(#[from] SegmentConfigError),
    /// In `recommendations.json`.
    #[error(transparent)]
    Recommendations(#[from] RecommendConfigError),
    /// In `slots.json`.
    #[error(transparent)]
    Slots(#[from] SlotConfigError),
    /// A document is not JSON.
    #[error("{0} is not valid JSON")]
    NotJson(&'static str),
}

impl PersonalisationConfigError {
    /// Stable machine-readable code (the inner error's).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Computed(e) => e.code(),
            Self::Segments(e) => e.code(),
            Self::Recommendations(e) => e.code(),
            Self::Slots(e) => e.code(),
            Self::NotJson(_) => "invalid_personalisation_config",
        }
    }
}

/// Everything personalisation is configured by, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonalisationConfig {
    /// Computed traits.
    pub computed: ComputedConfig,
    /// Segments (validated against `computed`).
    pub segments: SegmentSet,
    /// Recommender settings and holdout.
    pub recommendations: RecommendSettings,
    /// Slots: templates and banners (validated against `segments`).
    pub slots: SlotConfig,
}

impl PersonalisationConfig {
    /// Parses and validates the four documents (as stored in D1/KV or committed in `config/`).
    pub fn from_json_strs(
        computed: &str,
        segments: &str,
        recommendations: &str,
        slots: &str,
    ) -> Result<Self, PersonalisationConfigError> {
        let parse = |text: &str, what| {
            serde_json::from_str::<Value>(text)
                .map_err(|_| PersonalisationConfigError::NotJson(what))
        };
        Self::from_json(
            &parse(computed, "computed traits")?,
            &parse(segments, "segments")?,
            &parse(recommendations, "recommendations")?,
            &parse(slots, "slots")?,
        )
    }

    /// Validates the four documents, already parsed.
    pub fn from_json(
        computed: &Value,
        segments: &Value,
        recommendations: &Value,
        slots: &Value,
    ) -> Result<Self, PersonalisationConfigError> {
        let computed = ComputedConfig::from_json(computed)?;
        let segments = SegmentSet::from_json(segments, Some(&computed))?;
        let recommendations = RecommendSettings::from_json(recommendations)?;
        let slots = SlotConfig::from_json(slots, &segments)?;
        Ok(Self {
            computed,
            segments,
            recommendations,
            slots,
        })
    }

    /// The committed defaults (`config/*.json`, compiled in).
    pub fn committed() -> Result<Self, PersonalisationConfigError> {
        Self::from_json_strs(
            DEFAULT_COMPUTED_TRAITS,
            DEFAULT_SEGMENTS,
            DEFAULT_RECOMMENDATIONS,
            DEFAULT_SLOTS,
        )
    }
}

/// What the edge stores per profile (`profile_personalisation.state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    /// Computed-trait state.
    #[serde(default)]
    pub computed: ComputedState,
    /// Segment memberships with entered/exited times.
    #[serde(default)]
    pub segments: Memberships,
}

impl ProfileState {
    /// Parses a stored row; missing or unreadable starts empty (derived data never blocks
    /// ingestion).
    pub fn from_json_str(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The JSON to store.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Parses a stored column (deflated bytes or, from older rows, JSON text); missing or
    /// unreadable starts empty, as with [`ProfileState::from_json_str`].
    pub fn from_stored(stored: Option<&stored::StoredState>) -> Self {
        Self::from_json_str(stored.and_then(stored::StoredState::json).as_deref())
    }

    /// The bytes to store ([`stored::deflate`] of the JSON).
    pub fn to_stored(&self) -> Vec<u8> {
        stored::deflate(&self.to_json_string())
    }
}

/// The result of [`update`].
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The new state.
    pub state: ProfileState,
    /// What happened to each event, in input order.
    pub applied: Vec<Applied>,
    /// Computed trait values at `now` (for the profile view / KV snapshot).
    pub computed: Map<String, Value>,
    /// Segment memberships now.
    pub segments: Vec<String>,
    /// Entered/exited segments.
    pub diff: MembershipDiff,
    /// Internal `Segment Entered`/`Segment Exited` events to validate and store like any other.
    pub internal_events: Vec<Value>,
    /// The shared recommendation inputs the writes may change (for caches to drop).
    pub changed: recommend::Changed,
    /// What the `i`th of [`Update::writes`] followed by [`Update::evidence_writes`] changes
    /// when it changes any row: a caller that sees which of them changed nothing can narrow
    /// [`Update::changed`] (see [`Update::changed_by`]).
    pub evidence_changes: Vec<recommend::Changed>,
    /// Writes to the shared database: the catalogue. Idempotent, and run before the others.
    pub writes: Vec<Statement>,
    /// Writes to the profile's shard ([`shard::shard_of`]), in the batch of its
    /// [`Update::state_writes`] and before them: its co-occurrence evidence (insert-or-ignore;
    /// the shard's triggers count it). One transaction with the save, so a state never holds
    /// events as applied whose evidence is missing.
    pub evidence_writes: Vec<Statement>,
    /// Writes to the profile's shard ([`shard::shard_of`]): memberships, then the state save.
    /// The save ends in `RETURNING version`: no row returned means another request saved first;
    /// reload and call [`update`] again (every write here is idempotent). With one shard, all
    /// three lists go in one D1 batch.
    pub state_writes: Vec<Statement>,
}

/// Folds a request's stored events for one profile into its state and plans the writes.
///
/// `stored` (taken by value: it becomes the new state)/`version` come from [`LOAD_STATE_SQL`] (`None` when the profile has no row);
/// `traits` are the profile's folded traits (for rules over traits); `now_ms` is the receive
/// time. Pass only events that were stored now (the ingest insert's `RETURNING` rows), already
/// attributed to `profile_id`.
pub fn update(
    stored: ProfileState,
    version: Option<i64>,
    profile_id: &str,
    traits: &Map<String, Value>,
    events: &[&Event],
    config: &PersonalisationConfig,
    now_ms: i64,
) -> Update {
    let mut state = stored;
    let mut applied = Vec::with_capacity(events.len());
    let mut evidence = recommend::Evidence::default();
    let window = config.recommendations.co_view_window_ms;
    for event in events {
        let outcome = computed::apply(&mut state.computed, event, &config.computed);
        if outcome == Applied::Added {
            let since = event.timestamp_ms.saturating_sub(window);
            let recent = state
                .computed
                .recent_values("Product Viewed", "product_id", since);
            evidence.add(profile_id, event, &recent, &config.recommendations);
        }
        applied.push(outcome);
    }
    let changed = evidence.changed();
    let (catalog, own) = evidence.writes_and_changes();
    let evidence_changes = catalog.iter().chain(&own).map(|(_, c)| c.clone()).collect();
    let (writes, evidence_writes) = (
        catalog.into_iter().map(|(w, _)| w).collect(),
        own.into_iter().map(|(w, _)| w).collect(),
    );
    let (computed, evaluated) = view(&state, traits, config, now_ms);
    let diff = segment::diff(&state.segments, &evaluated, now_ms);
    state.segments = diff.memberships.clone();
    let internal_events = match events.last() {
        Some(cause) => segment::transition_events(&diff, profile_id, cause),
        None => Vec::new(),
    };
    let mut state_writes = segment::membership_writes(profile_id, &diff);
    let check_at = next_check(&state, traits, config, &evaluated, now_ms);
    state_writes.push(save_state(profile_id, &state, version, now_ms, check_at));
    Update {
        segments: evaluated.into_iter().collect(),
        state,
        applied,
        computed,
        diff,
        internal_events,
        changed,
        evidence_changes,
        writes,
        evidence_writes,
        state_writes,
    }
}

impl Update {
    /// What the writes changed, given whether the `i`th of [`Update::writes`] followed by
    /// [`Update::evidence_writes`] changed any row (`wrote(i)`; unknown counts as changed).
    pub fn changed_by(&self, wrote: impl Fn(usize) -> bool) -> recommend::Changed {
        let mut changed = recommend::Changed::default();
        for (i, c) in self.evidence_changes.iter().enumerate() {
            if wrote(i) {
                changed.extend(c);
            }
        }
        changed
    }
}

/// Computed traits and memberships at `now_ms` without writing anything: for the decision path,
/// where time-driven segments (`cart_abandoners`, `churn_risk`) may have changed since the last
/// event.
pub fn view(
    state: &ProfileState,
    traits: &Map<String, Value>,
    config: &PersonalisationConfig,
    now_ms: i64,
) -> (Map<String, Value>, BTreeSet<String>) {
    let computed = computed::values(&state.computed, &config.computed, now_ms);
    let segments = memberships(state, traits, config, &computed, now_ms);
    (computed, segments)
}

/// Memberships at `now_ms` as [`view`] evaluates them, from only the computed traits the rules
/// read (`reads`, from the segments' clock): a probe of
/// [`next_check`] compares memberships alone, and most traits (lists of products) feed no rule.
fn memberships_at(
    state: &ProfileState,
    traits: &Map<String, Value>,
    config: &PersonalisationConfig,
    reads: &BTreeSet<String>,
    now_ms: i64,
) -> BTreeSet<String> {
    let computed = computed::values_of(&state.computed, &config.computed, now_ms, |name| {
        reads.contains(name)
    });
    memberships(state, traits, config, &computed, now_ms)
}

/// The segments `state` and `traits` belong to at `now_ms`, given its `computed` traits.
fn memberships(
    state: &ProfileState,
    traits: &Map<String, Value>,
    config: &PersonalisationConfig,
    computed: &Map<String, Value>,
    now_ms: i64,
) -> BTreeSet<String> {
    let subject = Subject {
        traits,
        computed,
        state: &state.computed,
    };
    segment::evaluate(&config.segments, &subject, now_ms)
}

/// The sweep's step for one profile whose `check_at` came (no new event): memberships
/// re-evaluated at `now_ms`, transitions recorded with their internal events (for the profile's
/// `user_id`/`anonymous_id`, caused by time), and the state saved with its next check. The save
/// is version-guarded like [`update`]'s: no row returned means an ingest got there first (and
/// set the next check itself).
pub fn advance(
    stored: ProfileState,
    version: i64,
    profile_id: &str,
    traits: &Map<String, Value>,
    (user_id, anonymous_id): (Option<&str>, Option<&str>),
    config: &PersonalisationConfig,
    now_ms: i64,
) -> Update {
    let mut state = stored;
    let (computed, evaluated) = view(&state, traits, config, now_ms);
    let diff = segment::diff(&state.segments, &evaluated, now_ms);
    state.segments = diff.memberships.clone();
    let internal_events =
        segment::timed_transition_events(&diff, profile_id, user_id, anonymous_id);
    let mut state_writes = segment::membership_writes(profile_id, &diff);
    let check_at = next_check(&state, traits, config, &evaluated, now_ms);
    state_writes.push(save_state(
        profile_id,
        &state,
        Some(version),
        now_ms,
        check_at,
    ));
    Update {
        segments: evaluated.into_iter().collect(),
        state,
        applied: Vec::new(),
        computed,
        diff,
        internal_events,
        changed: recommend::Changed::default(),
        evidence_changes: Vec::new(),
        writes: Vec::new(),
        evidence_writes: Vec::new(),
        state_writes,
    }
}

/// Candidate instants [`next_check`] evaluates before it settles for the next one unprobed.
pub const MAX_PROBES: usize = 8;

/// When to look at a profile again with no new event: the first instant after `now_ms` at which
/// its memberships (`current`, as evaluated at `now_ms`) change by time alone. Time changes
/// verdicts only where a fact or trait time plus a window the rules measure passes (`within_*`,
/// windowed counts, windowed computed traits) or a day count moves; those instants are probed in
/// order (`memberships_at`). After [`MAX_PROBES`] quiet ones the next candidate is returned and the
/// sweep probes again from there. `None`: time alone changes nothing.
pub fn next_check(
    state: &ProfileState,
    traits: &Map<String, Value>,
    config: &PersonalisationConfig,
    current: &BTreeSet<String>,
    now_ms: i64,
) -> Option<i64> {
    let clock = config.segments.clock();
    let (trait_windows, daily) = config.computed.clock_of(&clock.computed);
    let windows: BTreeSet<i64> = clock.windows_ms.union(&trait_windows).copied().collect();
    let mut candidates = BTreeSet::new();
    // A window holds while `now <= t + w`: the verdict can change one millisecond later.
    let mut passes = |t: i64, w: i64| {
        candidates.insert(t.saturating_add(w).saturating_add(1));
    };
    for t in state.computed.times() {
        windows.iter().for_each(|w| passes(t, *w));
        if daily && t <= now_ms {
            // The next few day boundaries: a threshold days away is found by the probes.
            let next = (now_ms - t).div_euclid(DAY_MS) + 1;
            for days in next..=next + MAX_PROBES as i64 {
                passes(t, days.saturating_mul(DAY_MS) - 1);
            }
        }
    }
    for (path, w) in &clock.trait_windows {
        let value = path
            .split_first()
            .and_then(|(first, rest)| rest.iter().try_fold(traits.get(first)?, |v, k| v.get(k)));
        if let Some(t) = value.and_then(segment::time_of) {
            passes(t, *w);
        }
    }
    let mut later = candidates.range(now_ms.saturating_add(1)..).copied();
    for _ in 0..MAX_PROBES {
        let at = later.next()?;
        if &memberships_at(state, traits, config, &clock.computed, at) != current {
            return Some(at);
        }
    }
    later.next()
}

/// The version-guarded upsert of a state row, with the time the sweep should look at it again
/// (`check_at`, see [`next_check`]).
pub fn save_state(
    profile_id: &str,
    state: &ProfileState,
    version: Option<i64>,
    now_ms: i64,
    check_at: Option<i64>,
) -> Statement {
    let expected = version.unwrap_or(0);
    Statement {
        sql: "INSERT INTO profile_personalisation (profile_id, state, version, updated_at, check_at) \
              VALUES (?1, ?2, ?3, ?4, ?6) ON CONFLICT (profile_id) DO UPDATE SET \
              state = excluded.state, version = excluded.version, updated_at = excluded.updated_at, \
              check_at = excluded.check_at \
              WHERE profile_personalisation.version = ?5 RETURNING version"
            .into(),
        params: vec![
            Param::Text(profile_id.to_owned()),
            Param::Blob(state.to_stored()),
            Param::Int(expected + 1),
            Param::Int(now_ms),
            Param::Int(expected),
            check_at.map_or(Param::Null, Param::Int),
        ],
    }
}

/// Profiles due for the sweep at `now`. Bind `?1` = now, `?2` = how many.
pub const DUE_SQL: &str = "SELECT profile_id FROM profile_personalisation \
    WHERE check_at <= ?1 ORDER BY check_at LIMIT ?2";

/// Combines the states of profile `from` absorbed into `into` (identity merge): computed states
/// merge ([`computed::merge`]); a segment current on either side stays current with the earlier
/// entry time. Re-run [`update`] (or [`view`]) afterwards to settle memberships.
pub fn merge(
    from: &ProfileState,
    into: &ProfileState,
    config: &PersonalisationConfig,
) -> ProfileState {
    let mut segments: Memberships = into.segments.clone();
    for (name, m) in &from.segments {
        let merged = match segments.get(name) {
            None => m.clone(),
            Some(cur) => match (cur.exited_at, m.exited_at) {
                (None, None) => Membership {
                    entered_at: cur.entered_at.min(m.entered_at),
                    exited_at: None,
                },
                (None, Some(_)) => cur.clone(),
                (Some(_), None) => m.clone(),
                (Some(a), Some(b)) => {
                    if b > a {
                        m.clone()
                    } else {
                        cur.clone()
                    }
                }
            },
        };
        segments.insert(name.clone(), merged);
    }
    ProfileState {
        computed: computed::merge(&from.computed, &into.computed, &config.computed),
        segments,
    }
}

/// Writes after a merge, in order: the merged state onto `into` with its memberships as rows
/// (one batch in `into`'s shard), then in `from`'s shard the absorbed row deleted and its
/// memberships closed.
pub struct MergeWrites {
    /// `into`'s membership rows as the merged state records them (a segment the absorbed
    /// profile was in is current on `into` without a transition, so nothing else would write
    /// its row), then the version-guarded save (last: no row returned means `into` changed
    /// since it was read). Both hold only while `into` is at the version read, so in one batch
    /// they land together or not at all. (While the shard count changes, a survivor whose state
    /// is still in its previous shard gets the save without the rows; the move that follows
    /// the save writes them.)
    pub save: Vec<Statement>,
    /// The absorbed profile's rows, once the save landed.
    pub absorbed: Vec<Statement>,
}

/// Plans [`MergeWrites`].
pub fn merge_writes(
    from: &str,
    into: &str,
    merged: &ProfileState,
    into_version: Option<i64>,
    now_ms: i64,
) -> MergeWrites {
    MergeWrites {
        save: segment::recorded_writes(into, &merged.segments, into_version)
            .into_iter()
            .chain([save_state(into, merged, into_version, now_ms, None)])
            .collect(),
        absorbed: vec![
            Statement {
                sql: "DELETE FROM profile_personalisation WHERE profile_id = ?1".into(),
                params: vec![Param::Text(from.to_owned())],
            },
            Statement {
                sql: "UPDATE segment_memberships SET exited_at = ?2 WHERE profile_id = ?1 AND exited_at IS NULL"
                    .into(),
                params: vec![Param::Text(from.to_owned()), Param::Int(now_ms)],
            },
        ],
    }
}

/// Recommendation signals from computed trait values (the shipped trait names:
/// `viewed_products`, `category_views`, `purchased_products`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecommendInputs {
    /// Recently viewed products, newest first.
    pub viewed: Vec<String>,
    /// Category -> views.
    pub categories: BTreeMap<String, u64>,
    /// Purchased products (and anything else to exclude).
    pub exclude: BTreeSet<String>,
}

impl RecommendInputs {
    /// Reads the inputs from computed values; absent or odd values read as empty.
    pub fn from_computed(computed: &Map<String, Value>) -> Self {
        let list = |name: &str| -> Vec<String> {
            computed
                .get(name)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(computed::scalar_text)
                .collect()
        };
        let categories = computed
            .get("category_views")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
            .collect();
        Self {
            viewed: list("viewed_products"),
            categories,
            exclude: list("purchased_products").into_iter().collect(),
        }
    }

    /// Borrowed as [`recommend::Signals`].
    pub fn signals(&self) -> recommend::Signals<'_> {
        recommend::Signals {
            viewed: &self.viewed,
            categories: &self.categories,
            exclude: &self.exclude,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::time::format_iso8601;
    use crate::personalise::computed::test_support::{track, T0};
    use serde_json::json;

    const HOUR: i64 = 3_600_000;

    fn config() -> PersonalisationConfig {
        PersonalisationConfig::committed().unwrap()
    }

    #[test]
    fn a_probe_decides_memberships_as_the_full_view_does() {
        let c = config();
        let reads = c.segments.clock().computed;
        assert!(
            reads.len() < c.computed.traits.len(),
            "the probe skips traits"
        );
        let day = 24 * HOUR;
        let events = [
            track(
                "v1",
                "Product Viewed",
                -3 * day,
                json!({"product_id": "s1", "category": "Running Shoes", "price": 120}),
            ),
            track(
                "v2",
                "Product Viewed",
                -2 * day,
                json!({"product_id": "s2", "category": "Running Shoes", "price": 90}),
            ),
            track(
                "o1",
                "Order Completed",
                -2 * day + HOUR,
                json!({"order_id": "o1", "revenue": 700, "coupon": "WELCOME5", "products": [{"product_id": "s1"}]}),
            ),
            track(
                "o2",
                "Order Completed",
                -day,
                json!({"order_id": "o2", "revenue": 30, "coupon": "WELCOME5"}),
            ),
            track(
                "a1",
                "Product Added",
                -HOUR,
                json!({"product_id": "s2", "price": 90, "quantity": 1}),
            ),
        ];
        let events: Vec<&Event> = events.iter().collect();
        let traits = json!({"email": "a@example.com"});
        let traits = traits.as_object().unwrap();
        let up = update(ProfileState::default(), None, "p", traits, &events, &c, T0);
        let mut changes = 0;
        let mut last = BTreeSet::new();
        for at in (0..24 * 200).map(|h| T0 + h * HOUR / 2) {
            let full = view(&up.state, traits, &c, at).1;
            assert_eq!(
                memberships_at(&up.state, traits, &c, &reads, at),
                full,
                "at {at}"
            );
            changes += usize::from(full != last);
            last = full;
        }
        assert!(changes > 2, "time moved some memberships: {changes}");
    }

    #[test]
    fn committed_configuration_loads() {
        let c = config();
        assert!(c.computed.get("lifetime_value").is_some());
        assert_eq!(c.segments.segments.len(), 5);
        assert_eq!(c.recommendations.holdout_percent, 10.0);
    }

    #[test]
    fn a_bad_document_is_reported_with_its_code() {
        let e = PersonalisationConfig::from_json_strs(
            DEFAULT_COMPUTED_TRAITS,
            r#"{"segments": [{"name": "vip", "rule": {"gt": [{"computed": "ltv"}, 1]}}]}"#,
            "{}",
            "{}",
        )
        .unwrap_err();
        assert_eq!(e.code(), "invalid_segment_rule");
        assert!(
            e.to_string().contains("segment vip: rule.gt[0].computed"),
            "{e}"
        );
        let e =
            PersonalisationConfig::from_json_strs("{", DEFAULT_SEGMENTS, "{}", "{}").unwrap_err();
        assert_eq!(e.code(), "invalid_personalisation_config");
        // Slots are checked against the segments of the same load.
        let e = PersonalisationConfig::from_json_strs(
            DEFAULT_COMPUTED_TRAITS,
            r#"{"segments": []}"#,
            "{}",
            DEFAULT_SLOTS,
        )
        .unwrap_err();
        assert_eq!(e.code(), "invalid_slot_config");
        assert!(
            e.to_string()
                .starts_with("slot discount-banner: variants[0].when.all[0]"),
            "{e}"
        );
    }

    #[test]
    fn entering_a_segment_emits_an_event_and_plans_every_write() {
        let c = config();
        let order = track(
            "m1",
            "Order Completed",
            0,
            json!({"order_id": "o1", "revenue": 900,
            "products": [{"product_id": "a"}, {"product_id": "b"}]}),
        );
        let up = update(
            ProfileState::default(),
            None,
            "prof_1",
            &Map::new(),
            &[&order],
            &c,
            T0,
        );
        assert_eq!(up.applied, vec![Applied::Added]);
        assert_eq!(up.segments, vec!["high_value".to_owned()]);
        assert_eq!(up.computed["lifetime_value"], json!(900.0));
        assert_eq!(up.internal_events.len(), 1);
        assert_eq!(up.internal_events[0]["event"], json!("Segment Entered"));
        assert!(up.writes.is_empty(), "nothing catalogued: nothing shared");
        let own: Vec<&str> = up.evidence_writes.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(own.len(), 2, "the evidence goes with the profile's state");
        assert!(own[0].starts_with("INSERT OR IGNORE INTO item_interactions"));
        assert!(own[1].starts_with("INSERT OR IGNORE INTO item_pair_evidence"));
        let sql: Vec<&str> = up.state_writes.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(sql.len(), 2, "the profile's shard gets only its own rows");
        assert!(sql[0].starts_with("INSERT INTO segment_memberships"));
        assert!(sql[1].starts_with("INSERT INTO profile_personalisation"));
        assert_eq!(up.state_writes[1].params[2], Param::Int(1));
        assert_eq!(up.state_writes[1].params[4], Param::Int(0));
        let saved = match &up.state_writes[1].params[1] {
            Param::Blob(b) => {
                ProfileState::from_stored(Some(&stored::StoredState::Bytes(b.clone())))
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(saved, up.state);

        // Writes that change no row (evidence given before) drop nothing from caches.
        assert_eq!(up.changed_by(|_| true), up.changed);
        assert_eq!(up.evidence_changes.len(), 2, "interactions, pair evidence");
        let only_interactions = up.changed_by(|i| i == 0);
        assert_eq!(
            only_interactions.products.iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(up.changed_by(|_| false).is_empty());

        // The same event again (a retry): nothing new, no transitions, only the state save.
        let again = update(
            up.state.clone(),
            Some(1),
            "prof_1",
            &Map::new(),
            &[&order],
            &c,
            T0 + 1,
        );
        assert_eq!(again.applied, vec![Applied::Duplicate]);
        assert!(again.diff.is_empty() && again.internal_events.is_empty());
        assert!(again.writes.is_empty() && again.evidence_writes.is_empty());
        assert_eq!(again.state_writes.len(), 1);
        assert_eq!(again.state, up.state);
    }

    /// The `check_at` a planned state save carries.
    fn check_at_of(writes: &[Statement]) -> Option<i64> {
        let save = writes.last().expect("a state save");
        assert!(save.sql.starts_with("INSERT INTO profile_personalisation"));
        match save.params[5] {
            Param::Int(t) => Some(t),
            Param::Null => None,
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_left_cart_is_due_for_the_sweep_the_moment_the_abandon_window_passes() {
        let c = config();
        let added = track(
            "add1",
            "Product Added",
            0,
            json!({"product_id": "sock-1", "price": 12, "quantity": 1}),
        );
        let up = update(
            ProfileState::default(),
            None,
            "prof_1",
            &Map::new(),
            &[&added],
            &c,
            T0 + 60_000,
        );
        assert!(up.segments.is_empty(), "{:?}", up.segments);
        let due = T0 + HOUR + 1;
        assert_eq!(
            check_at_of(&up.state_writes),
            Some(due),
            "one hour after the add"
        );

        // The sweep at that time: enters cart_abandoners, caused by time, and needs no next check.
        let swept = advance(
            up.state.clone(),
            1,
            "prof_1",
            &Map::new(),
            (Some("user-1"), Some("anon-1")),
            &c,
            due,
        );
        assert_eq!(swept.segments, vec!["cart_abandoners".to_owned()]);
        assert_eq!(swept.internal_events.len(), 1);
        let event = &swept.internal_events[0];
        assert_eq!(event["event"], json!("Segment Entered"));
        assert_eq!(event["properties"]["cause"], json!("time"));
        assert_eq!(
            (&event["userId"], &event["anonymousId"]),
            (&json!("user-1"), &json!("anon-1"))
        );
        assert_eq!(event["timestamp"], json!(format_iso8601(due)));
        let again = advance(
            up.state.clone(),
            1,
            "prof_1",
            &Map::new(),
            (None, Some("anon-1")),
            &c,
            due,
        );
        assert_eq!(
            again.internal_events[0]["messageId"], event["messageId"],
            "a re-run dedups"
        );
        assert!(swept.writes.is_empty() && swept.evidence_writes.is_empty());
        let sql: Vec<&str> = swept.state_writes.iter().map(|s| s.sql.as_str()).collect();
        assert!(sql[0].starts_with("INSERT INTO segment_memberships"));
        assert_eq!(
            swept.state_writes.last().unwrap().params[4],
            Param::Int(1),
            "version-guarded"
        );
        assert_eq!(
            check_at_of(&swept.state_writes),
            None,
            "nothing else moves with time"
        );

        // An order before the window passes empties the cart: no check is needed any more.
        let order = track(
            "o1",
            "Order Completed",
            120_000,
            json!({"order_id": "o1", "revenue": 12}),
        );
        let bought = update(
            up.state,
            Some(1),
            "prof_1",
            &Map::new(),
            &[&order],
            &c,
            T0 + 180_000,
        );
        assert_eq!(check_at_of(&bought.state_writes), None);
    }

    #[test]
    fn day_counts_and_trait_times_are_checked_when_they_cross_a_threshold() {
        let segments = json!({"segments": [
            {"name": "lapsed", "rule": {"gte": [{"computed": "days_since_last_order"}, 7]}},
            {"name": "trial_over", "rule": {"not": {"within_days": [{"trait": "trial.started_at"}, 14]}}},
        ]});
        let c = PersonalisationConfig::from_json(
            &serde_json::from_str(DEFAULT_COMPUTED_TRAITS).unwrap(),
            &segments,
            &json!({}),
            &json!({}),
        )
        .unwrap();
        let order = track(
            "o1",
            "Order Completed",
            0,
            json!({"order_id": "o1", "revenue": 5}),
        );
        let day = 86_400_000;
        let up = update(
            ProfileState::default(),
            None,
            "p",
            &Map::new(),
            &[&order],
            &c,
            T0,
        );
        assert_eq!(
            check_at_of(&up.state_writes),
            Some(T0 + 7 * day),
            "when the count reaches 7 days"
        );

        let trial = json!({"trial": {"started_at": format_iso8601(T0 - 10 * day)}});
        let traits = trial.as_object().unwrap();
        let (_, now_in) = view(&up.state, traits, &c, T0);
        assert_eq!(
            next_check(&up.state, traits, &c, &now_in, T0),
            Some(T0 + 4 * day + 1),
            "the trial's 14 days end first"
        );
        let quiet = PersonalisationConfig::from_json(
            &serde_json::from_str(DEFAULT_COMPUTED_TRAITS).unwrap(),
            &json!({"segments": [{"name": "big", "rule": {"gt": [{"computed": "lifetime_value"}, 1]}}]}),
            &json!({}),
            &json!({}),
        )
        .unwrap();
        let up = update(
            ProfileState::default(),
            None,
            "p",
            &Map::new(),
            &[&order],
            &quiet,
            T0,
        );
        assert_eq!(check_at_of(&up.state_writes), None, "no rule measures time");
    }

    #[test]
    fn views_pair_with_recent_views_of_the_same_profile() {
        let c = config();
        let v1 = track(
            "v1",
            "Product Viewed",
            0,
            json!({"product_id": "run-1", "category": "Running"}),
        );
        let v2 = track(
            "v2",
            "Product Viewed",
            60_000,
            json!({"product_id": "run-2", "category": "Running"}),
        );
        let up = update(
            ProfileState::default(),
            None,
            "prof_1",
            &Map::new(),
            &[&v1, &v2],
            &c,
            T0 + HOUR,
        );
        let evidence: Vec<&Statement> = up
            .evidence_writes
            .iter()
            .filter(|s| s.sql.contains("item_pair_evidence"))
            .collect();
        assert_eq!(evidence.len(), 1);
        let rows: Value = match evidence[0].params.as_slice() {
            [Param::Text(rows)] => serde_json::from_str(rows).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rows.as_array().map(Vec::len), Some(1));
        assert_eq!(
            (&rows[0][1], &rows[0][2]),
            (&json!("run-1"), &json!("run-2"))
        );
        let inputs = RecommendInputs::from_computed(&up.computed);
        assert_eq!(inputs.viewed, vec!["run-2".to_owned(), "run-1".to_owned()]);
        assert_eq!(inputs.categories.get("Running"), Some(&2));
    }

    #[test]
    fn time_alone_moves_a_profile_into_cart_abandoners_at_decision_time() {
        let c = config();
        let add = track("a1", "Product Added", 0, json!({"product_id": "run-1"}));
        let up = update(
            ProfileState::default(),
            None,
            "prof_1",
            &Map::new(),
            &[&add],
            &c,
            T0,
        );
        assert!(!up.segments.contains(&"cart_abandoners".to_owned()));
        let (_, later) = view(&up.state, &Map::new(), &c, T0 + 2 * HOUR);
        assert!(later.contains("cart_abandoners"));
    }

    #[test]
    fn merging_profiles_keeps_current_memberships_and_combines_traits() {
        let c = config();
        let o1 = track(
            "o1",
            "Order Completed",
            0,
            json!({"order_id": "o1", "revenue": 300, "coupon": "X"}),
        );
        let o2 = track(
            "o2",
            "Order Completed",
            HOUR,
            json!({"order_id": "o2", "revenue": 300, "coupon": "Y"}),
        );
        let a = update(
            ProfileState::default(),
            None,
            "prof_a",
            &Map::new(),
            &[&o1],
            &c,
            T0,
        )
        .state;
        let b = update(
            ProfileState::default(),
            None,
            "prof_b",
            &Map::new(),
            &[&o2],
            &c,
            T0 + HOUR,
        )
        .state;
        let merged = merge(&a, &b, &c);
        assert_eq!(merged, merge(&b, &a, &c));
        let up = update(
            merged.clone(),
            Some(3),
            "prof_b",
            &Map::new(),
            &[],
            &c,
            T0 + 2 * HOUR,
        );
        assert_eq!(up.computed["orders_count"], json!(2));
        assert!(up.segments.contains(&"high_value".to_owned()));
        assert!(up.segments.contains(&"high_discount_affinity".to_owned()));
        assert_eq!(
            up.diff.transitions.len(),
            2,
            "entered the two segments only the union qualifies for"
        );
        let writes = merge_writes("prof_a", "prof_b", &merged, Some(3), T0);
        assert_eq!(writes.save[0].params[0], Param::Text("prof_b".into()));
        assert_eq!(writes.save[0].params[4], Param::Int(3));
        assert_eq!(
            writes.save.len(),
            1,
            "neither side was in a segment: no rows to write"
        );

        // A segment the absorbed profile was in is current on the survivor with no transition:
        // the merge writes its row, before the save and only while the survivor is at the
        // version read (3), so both land or neither.
        let big = track(
            "o3",
            "Order Completed",
            0,
            json!({"order_id": "o3", "revenue": 900}),
        );
        let rich = update(
            ProfileState::default(),
            None,
            "prof_a",
            &Map::new(),
            &[&big],
            &c,
            T0,
        )
        .state;
        let merged = merge(&rich, &b, &c);
        let writes = merge_writes("prof_a", "prof_b", &merged, Some(3), T0);
        let rows = &writes.save[0];
        assert!(rows.sql.starts_with("INSERT INTO segment_memberships"));
        assert_eq!(rows.params[0], Param::Text("prof_b".into()));
        assert!(matches!(&rows.params[1], Param::Text(t) if t.contains("high_value")));
        assert_eq!(rows.params[2], Param::Int(3));
        assert!(writes.save[1]
            .sql
            .starts_with("INSERT INTO profile_personalisation"));
        let first = merge_writes("prof_a", "prof_new", &merged, None, T0);
        assert!(
            first.save[0].sql.contains("NOT EXISTS"),
            "a survivor with no state yet"
        );
        assert_eq!(first.save[0].params.len(), 2);
        assert!(writes.absorbed[0]
            .sql
            .starts_with("DELETE FROM profile_personalisation"));
        assert!(writes
            .absorbed
            .iter()
            .all(|w| w.params[0] == Param::Text("prof_a".into())));
    }
}
