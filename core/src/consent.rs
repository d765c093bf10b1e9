//! Consent as the collector reads it from `context.consent`, in Google Consent Mode v2 terms.
//!
//! Accepted shapes (both may be present; `gcm` wins per purpose):
//! - Segment's `categoryPreferences: {"<category>": bool}`, where a category is a GCM purpose name
//!   (`analytics_storage`) or a common CMP category (`Analytics`, `Advertising`, ...; see
//!   [`purposes_of_category`]);
//! - `gcm: {"<purpose>": "granted" | "denied"}` (what the Seam SDK sends).
//!
//! Segment's rules: no consent object means no enforcement; a consent object that does not
//! mention a purpose denies it (except `security_storage`, which is strictly necessary).
//! Global Privacy Control (`gpc: true` or the `Sec-GPC: 1` header) denies the advertising
//! purposes whatever else was said.

use alloc::string::String;
use alloc::vec::Vec;

use crate::format::ascii::{split_ascii, trim};
#[cfg(feature = "std")]
use serde_json::{Map, Value};

/// The seven Google Consent Mode v2 purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Cookies/storage for advertising.
    AdStorage,
    /// Cookies/storage for analytics (first-party IDs).
    AnalyticsStorage,
    /// Sending user data to ad platforms.
    AdUserData,
    /// Personalised advertising.
    AdPersonalization,
    /// Storage for site functionality.
    FunctionalityStorage,
    /// Storage for personalisation (recommendations).
    PersonalizationStorage,
    /// Storage for security (always needed).
    SecurityStorage,
}

impl Purpose {
    /// All purposes, in GCM order.
    pub const ALL: [Purpose; 7] = [
        Purpose::AdStorage,
        Purpose::AnalyticsStorage,
        Purpose::AdUserData,
        Purpose::AdPersonalization,
        Purpose::FunctionalityStorage,
        Purpose::PersonalizationStorage,
        Purpose::SecurityStorage,
    ];

    /// The GCM key.
    pub fn key(self) -> &'static str {
        match self {
            Purpose::AdStorage => "ad_storage",
            Purpose::AnalyticsStorage => "analytics_storage",
            Purpose::AdUserData => "ad_user_data",
            Purpose::AdPersonalization => "ad_personalization",
            Purpose::FunctionalityStorage => "functionality_storage",
            Purpose::PersonalizationStorage => "personalization_storage",
            Purpose::SecurityStorage => "security_storage",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Maps a consent category name to the purposes it covers (case-insensitive).
#[cfg(feature = "std")]
pub fn purposes_of_category(category: &str) -> &'static [Purpose] {
    use Purpose::*;
    let lower = category
        .trim()
        .to_ascii_lowercase()
        .replace([' ', '-'], "_");
    if let Some(p) = Purpose::ALL.iter().find(|p| p.key() == lower) {
        return std::slice::from_ref(p);
    }
    match lower.as_str() {
        "analytics" | "statistics" | "performance" | "measurement" => &[AnalyticsStorage],
        "advertising" | "marketing" | "ads" | "targeting" => {
            &[AdStorage, AdUserData, AdPersonalization]
        }
        "functional" | "functionality" | "preferences" => &[FunctionalityStorage],
        "personalization" | "personalisation" => &[PersonalizationStorage],
        "necessary" | "strictly_necessary" | "essential" | "security" => &[SecurityStorage],
        _ => &[],
    }
}

/// What an event's consent allows.
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentState {
    /// `None`: the event carried no consent object, so nothing is enforced.
    purposes: Option<[bool; 7]>,
    /// Global Privacy Control was signalled.
    pub gpc: bool,
}

#[cfg(feature = "std")]
impl ConsentState {
    /// Reads `context.consent` of an event body; `header_gpc` is the request's `Sec-GPC: 1`.
    pub fn from_context(context: Option<&Value>, header_gpc: bool) -> Self {
        let raw = context
            .and_then(|c| c.get("consent"))
            .filter(|v| !v.is_null());
        let consent = raw.and_then(Value::as_object);
        let gpc = header_gpc || consent.is_some_and(|c| c.get("gpc") == Some(&Value::Bool(true)));
        if raw.is_some() && consent.is_none() {
            // Present but unreadable: fail closed rather than enforce nothing.
            let mut allowed = [false; 7];
            allowed[Purpose::SecurityStorage.index()] = true;
            return Self {
                purposes: Some(allowed),
                gpc,
            };
        }
        let purposes = consent.map(|consent| {
            let mut allowed = [false; 7];
            allowed[Purpose::SecurityStorage.index()] = true;
            if let Some(prefs) = consent
                .get("categoryPreferences")
                .and_then(Value::as_object)
            {
                for (category, value) in prefs {
                    if let Some(granted) = value.as_bool() {
                        for p in purposes_of_category(category) {
                            allowed[p.index()] = granted;
                        }
                    }
                }
            }
            if let Some(gcm) = consent.get("gcm").and_then(Value::as_object) {
                for p in Purpose::ALL {
                    match gcm.get(p.key()).and_then(Value::as_str) {
                        Some("granted") => allowed[p.index()] = true,
                        Some("denied") => allowed[p.index()] = false,
                        _ => {}
                    }
                }
            }
            allowed
        });
        Self { purposes, gpc }
    }

    /// True when the event said anything about consent.
    pub fn is_known(&self) -> bool {
        self.purposes.is_some()
    }

    /// Whether `purpose` is allowed. GPC denies the advertising purposes.
    pub fn allows(&self, purpose: Purpose) -> bool {
        let advertising = matches!(
            purpose,
            Purpose::AdStorage | Purpose::AdUserData | Purpose::AdPersonalization
        );
        if self.gpc && advertising {
            return false;
        }
        self.purposes.is_none_or(|p| p[purpose.index()])
    }

    /// The effective state as GCM values, recorded on the stored event.
    pub fn to_gcm(&self) -> Map<String, Value> {
        Purpose::ALL
            .iter()
            .map(|p| {
                let v = if self.allows(*p) { "granted" } else { "denied" };
                (p.key().to_owned(), Value::from(v))
            })
            .collect()
    }
}

/// A purpose's value as one consent input states it: `Some(true)` granted, `Some(false)` denied,
/// `None` not said. Indexed like [`Purpose::ALL`].
pub type Choices = [Option<bool>; 7];

/// Reads a GCM value: `"granted"`/`"denied"` (any case) or a boolean.
pub fn parse_choice(value: &str) -> Option<bool> {
    match trim(value).to_ascii_lowercase().as_str() {
        "granted" | "true" => Some(true),
        "denied" | "false" => Some(false),
        _ => None,
    }
}

/// One `gtag('consent', 'default', {...})` command (or the SDK's `load({ consent })`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionDefault {
    /// ISO 3166-1 / 3166-2 codes (`NL`, `US-CA`); empty means everywhere.
    pub regions: Vec<String>,
    /// The values this default sets.
    pub choices: Choices,
    /// How long to hold events for an update (ms), `wait_for_update`.
    pub wait_for_update_ms: u32,
}

impl RegionDefault {
    /// How well this default matches `region` (`US-CA`, `NL`, or empty when unknown): 0 for a
    /// global default, 1 for a country match, 2 for a country-and-subdivision match, `None` for
    /// no match.
    fn specificity(&self, region: &str) -> Option<u8> {
        if self.regions.is_empty() {
            return Some(0);
        }
        let region = trim(region);
        let country = split_ascii(region, b'-').next().unwrap_or_default();
        let has_dash = |r: &str| r.bytes().any(|b| b == b'-');
        // An unknown region matches no regional default.
        if region.is_empty() {
            return None;
        }
        let mut best = None;
        for r in &self.regions {
            let r = trim(r);
            let found = if r.is_empty() {
                None
            } else if r.eq_ignore_ascii_case(region) {
                Some(if has_dash(r) { 2 } else { 1 })
            } else if !has_dash(r) && r.eq_ignore_ascii_case(country) {
                Some(1)
            } else {
                None
            };
            best = best.max(found);
        }
        best
    }
}

/// The SDK's consent state in Google Consent Mode v2 terms, fed by every input in arrival order.
///
/// Merge rules:
/// - defaults: per purpose, the most specific region match wins (`US-CA` over `US` over global);
///   between equally specific defaults the later one wins;
/// - updates (`consent.update`, `gtag('consent','update')`, TCF signals) are global and override
///   defaults; the latest update wins per purpose;
/// - a purpose nobody mentioned is denied, except `security_storage` (strictly necessary);
/// - Global Privacy Control denies `ad_storage`, `ad_user_data` and `ad_personalization`
///   whatever else was said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentModel {
    defaults: Vec<RegionDefault>,
    updates: Choices,
    /// `navigator.globalPrivacyControl` was true.
    pub gpc: bool,
    /// The latest TCF consent string, when a CMP answered.
    pub tc_string: Option<String>,
    /// Whether any update (not only defaults) has arrived; ends `wait_for_update`.
    pub updated: bool,
}

impl ConsentModel {
    /// Records a default command.
    pub fn add_default(&mut self, default: RegionDefault) {
        self.defaults.push(default);
    }

    /// Records an update: every purpose it mentions takes the new value.
    pub fn update(&mut self, choices: &Choices) {
        for (slot, choice) in self.updates.iter_mut().zip(choices) {
            if choice.is_some() {
                *slot = *choice;
            }
        }
        self.updated = true;
    }

    /// Records a TCF v2.2 signal; returns whether it changed anything (a CMP whose
    /// `gdprApplies` is false says nothing about these purposes).
    pub fn apply_tcf(&mut self, signal: &TcfSignal) -> bool {
        match signal.choices() {
            Some(choices) => {
                self.update(&choices);
                self.tc_string = signal.tc_string.clone().filter(|s| !s.is_empty());
                true
            }
            None => false,
        }
    }

    /// The effective value of every purpose for a visitor in `region` (may be empty).
    pub fn effective(&self, region: &str) -> [bool; 7] {
        // Per purpose, the most specific default that sets it (the later one wins a tie), each
        // default's match computed once.
        let mut defaults: [Option<(u8, bool)>; 7] = [None; 7];
        for d in &self.defaults {
            let Some(specificity) = d.specificity(region) else {
                continue;
            };
            for (best, choice) in defaults.iter_mut().zip(d.choices) {
                if let Some(value) = choice {
                    if best.is_none_or(|(s, _)| specificity >= s) {
                        *best = Some((specificity, value));
                    }
                }
            }
        }
        let mut out = [false; 7];
        for purpose in Purpose::ALL {
            let i = purpose.index();
            let default = defaults[i].map(|(_, value)| value);
            let advertising = matches!(
                purpose,
                Purpose::AdStorage | Purpose::AdUserData | Purpose::AdPersonalization
            );
            out[i] = !(self.gpc && advertising)
                && self.updates[i]
                    .or(default)
                    .unwrap_or(purpose == Purpose::SecurityStorage);
        }
        out
    }

    /// Whether `purpose` is granted for a visitor in `region`.
    pub fn allows(&self, purpose: Purpose, region: &str) -> bool {
        self.effective(region)[purpose.index()]
    }

    /// How long events wait for an update before the defaults decide: the longest
    /// `wait_for_update` of the defaults matching `region`, or 0 once an update arrived.
    pub fn wait_for_update_ms(&self, region: &str) -> u32 {
        if self.updated {
            return 0;
        }
        self.defaults
            .iter()
            .filter(|d| d.specificity(region).is_some())
            .map(|d| d.wait_for_update_ms)
            .max()
            .unwrap_or(0)
    }

    /// `context.consent` for an event, as JSON text:
    /// `{"categoryPreferences":{..bools..},"gcm":{..granted/denied..},"tcString"?,"gpc"?}`.
    pub fn context_json(&self, region: &str) -> String {
        let effective = self.effective(region);
        // One string, written in two passes over the purposes (booleans, then GCM values).
        let mut prefs = String::from("{\"categoryPreferences\":{");
        for gcm in [false, true] {
            if gcm {
                prefs.push_str("},\"gcm\":{");
            }
            for (n, purpose) in Purpose::ALL.iter().enumerate() {
                if n > 0 {
                    prefs.push(',');
                }
                prefs.push('"');
                prefs.push_str(purpose.key());
                prefs.push_str("\":");
                prefs.push_str(match (gcm, effective[purpose.index()]) {
                    (false, true) => "true",
                    (false, false) => "false",
                    (true, true) => "\"granted\"",
                    (true, false) => "\"denied\"",
                });
            }
        }
        prefs.push('}');
        if let Some(tc) = &self.tc_string {
            prefs.push_str(",\"tcString\":");
            crate::format::jsontext::push_json_string(&mut prefs, tc);
        }
        if self.gpc {
            prefs.push_str(",\"gpc\":true");
        }
        prefs.push('}');
        prefs
    }
}

/// What an IAB TCF v2.2 CMP reported through `__tcfapi('addEventListener', 2, ...)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcfSignal {
    /// `tcData.gdprApplies`.
    pub gdpr_applies: bool,
    /// Bit `n` set: `tcData.purpose.consents[n]` is true (purposes 1..=11).
    pub consents: u16,
    /// Bit `n` set: `tcData.purpose.legitimateInterests[n]` is true.
    pub legitimate_interests: u16,
    /// `tcData.tcString`.
    pub tc_string: Option<String>,
}

impl TcfSignal {
    /// The GCM values this signal implies; `None` when GDPR does not apply (the CMP then says
    /// nothing about consent and the other inputs decide).
    ///
    /// | GCM purpose | TCF purposes |
    /// |---|---|
    /// | `ad_storage` | 1 |
    /// | `analytics_storage` | 1 and 8 (consent or legitimate interest) |
    /// | `ad_user_data` | 1 and 7 (consent or legitimate interest) |
    /// | `ad_personalization` | 3 and 4 |
    /// | `functionality_storage` | 1 |
    /// | `personalization_storage` | 1, 5 and 6 |
    /// | `security_storage` | always granted (strictly necessary) |
    pub fn choices(&self) -> Option<Choices> {
        if !self.gdpr_applies {
            return None;
        }
        let consent = |n: u8| self.consents & (1 << n) != 0;
        let basis = |n: u8| consent(n) || self.legitimate_interests & (1 << n) != 0;
        let store = consent(1);
        Some([
            Some(store),
            Some(store && basis(8)),
            Some(store && basis(7)),
            Some(consent(3) && consent(4)),
            Some(store),
            Some(store && consent(5) && consent(6)),
            Some(true),
        ])
    }
}

/// Whether a decision request's consent denies personalisation: `personalization_storage` or
/// `ad_personalization` set to `denied` (any case) or `false`, given as GCM values directly or
/// inside the SDK's consent state (`gcm`, `categoryPreferences`). Unlike
/// [`ConsentState::allows`], a purpose left unsaid does not deny: a page that asks for a decision
/// shows something either way, and only an explicit refusal makes it non-personal. A consent
/// that is present but not an object denies (fail closed).
#[cfg(feature = "std")]
pub fn personalisation_denied(consent: Option<&Value>) -> bool {
    let Some(consent) = consent.filter(|c| !c.is_null()) else {
        return false;
    };
    // Present but unreadable: fail closed.
    let Some(consent) = consent.as_object() else {
        return true;
    };
    let denies = |values: &Map<String, Value>| {
        [Purpose::PersonalizationStorage, Purpose::AdPersonalization]
            .iter()
            .any(|p| match values.get(p.key()) {
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

/// Whether a person's last recorded consent state (as `consent_history` stores it: `gcm`,
/// `categoryPreferences`, `gpc`) refuses personalisation, as the same choice would on a page.
#[cfg(feature = "std")]
pub fn recorded_personalisation_denied(state: &Value) -> bool {
    state.get("gpc") == Some(&Value::Bool(true)) || personalisation_denied(Some(state))
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personalisation_is_denied_only_when_refused() {
        let cases = [
            (None, false),
            (Some(json!({})), false),
            (
                Some(json!({"gcm": {"analytics_storage": "granted"}})),
                false,
            ),
            (Some(json!({"personalization_storage": "denied"})), true),
            (Some(json!({"ad_personalization": "DENIED"})), true),
            (Some(json!({"ad_personalization": false})), true),
            (Some(json!({"ad_personalization": true})), false),
            (
                Some(json!({"gcm": {"personalization_storage": "denied"}})),
                true,
            ),
            (
                Some(json!({"categoryPreferences": {"ad_personalization": false}})),
                true,
            ),
            (
                Some(json!({"gcm": {"personalization_storage": "granted"}})),
                false,
            ),
            (Some(json!(null)), false),
            (Some(json!("denied")), true),
            (Some(json!(["granted"])), true),
        ];
        for (consent, denied) in cases {
            assert_eq!(
                personalisation_denied(consent.as_ref()),
                denied,
                "{consent:?}"
            );
        }
    }

    #[test]
    fn a_recorded_refusal_or_gpc_denies_personalisation() {
        for (state, denied) in [
            (json!({"gcm": {"ad_personalization": "denied"}}), true),
            (json!({"gcm": {"analytics_storage": "denied"}}), false),
            (
                json!({"categoryPreferences": {"personalization_storage": false}}),
                true,
            ),
            (json!({"gpc": true}), true),
            (json!({"gpc": false}), false),
            (json!({}), false),
        ] {
            assert_eq!(recorded_personalisation_denied(&state), denied, "{state}");
        }
    }

    #[test]
    fn unreadable_consent_denies_everything_but_security() {
        for consent in [
            json!("granted"),
            json!(true),
            json!(["analytics_storage"]),
            json!(1),
        ] {
            let state = ConsentState::from_context(Some(&json!({ "consent": consent })), false);
            assert!(state.is_known(), "{consent}");
            for p in Purpose::ALL {
                assert_eq!(
                    state.allows(p),
                    p == Purpose::SecurityStorage,
                    "{consent} {p:?}"
                );
            }
        }
        let null = ConsentState::from_context(Some(&json!({ "consent": null })), false);
        assert!(
            !null.is_known(),
            "null is no consent object: nothing enforced"
        );
    }

    fn state(context: Value, gpc: bool) -> ConsentState {
        ConsentState::from_context(Some(&context), gpc)
    }

    #[test]
    fn no_consent_object_enforces_nothing() {
        let s = state(json!({"page": {}}), false);
        assert!(!s.is_known());
        assert!(Purpose::ALL.iter().all(|p| s.allows(*p)));
    }

    #[test]
    fn empty_preferences_deny_everything_but_security() {
        let s = state(json!({"consent": {"categoryPreferences": {}}}), false);
        assert!(s.is_known());
        assert!(!s.allows(Purpose::AnalyticsStorage));
        assert!(!s.allows(Purpose::AdStorage));
        assert!(s.allows(Purpose::SecurityStorage));
    }

    #[test]
    fn reads_segment_categories_and_gcm_keys() {
        let s = state(
            json!({"consent": {"categoryPreferences": {"Analytics": true, "Advertising": true},
                               "gcm": {"ad_personalization": "denied"}}}),
            false,
        );
        assert!(s.allows(Purpose::AnalyticsStorage));
        assert!(s.allows(Purpose::AdStorage));
        assert!(
            !s.allows(Purpose::AdPersonalization),
            "gcm wins over categories"
        );
        assert!(!s.allows(Purpose::PersonalizationStorage));
    }

    #[test]
    fn gpc_denies_advertising_only() {
        let s = state(
            json!({"consent": {"gcm": {"ad_storage": "granted", "analytics_storage": "granted"}}}),
            true,
        );
        assert!(!s.allows(Purpose::AdStorage));
        assert!(s.allows(Purpose::AnalyticsStorage));
        let body_gpc = state(json!({"consent": {"gpc": true}}), false);
        assert!(body_gpc.gpc);
        let no_object = ConsentState::from_context(None, true);
        assert!(!no_object.allows(Purpose::AdUserData));
        assert!(no_object.allows(Purpose::AnalyticsStorage));
        assert_eq!(no_object.to_gcm()["ad_user_data"], json!("denied"));
    }

    #[test]
    fn ignores_non_boolean_preferences_and_unknown_categories() {
        let s = state(
            json!({"consent": {"categoryPreferences": {"analytics_storage": "yes", "C0004": true}}}),
            false,
        );
        assert!(!s.allows(Purpose::AnalyticsStorage));
        assert!(purposes_of_category("C0004").is_empty());
    }

    fn choices(pairs: &[(Purpose, bool)]) -> Choices {
        let mut c = [None; 7];
        for (p, v) in pairs {
            c[p.index()] = Some(*v);
        }
        c
    }

    fn default(regions: &[&str], pairs: &[(Purpose, bool)], wait: u32) -> RegionDefault {
        RegionDefault {
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            choices: choices(pairs),
            wait_for_update_ms: wait,
        }
    }

    #[test]
    fn nothing_said_denies_all_but_security() {
        let m = ConsentModel::default();
        assert_eq!(
            m.effective(""),
            [false, false, false, false, false, false, true]
        );
    }

    #[test]
    fn most_specific_region_default_wins_per_purpose() {
        use Purpose::*;
        let mut m = ConsentModel::default();
        m.add_default(default(
            &[],
            &[(AnalyticsStorage, true), (AdStorage, true)],
            0,
        ));
        m.add_default(default(&["US"], &[(AnalyticsStorage, false)], 0));
        m.add_default(default(&["US-CA"], &[(AnalyticsStorage, true)], 500));
        assert!(m.allows(AnalyticsStorage, "NL"), "global default");
        assert!(!m.allows(AnalyticsStorage, "US-NY"), "country default");
        assert!(m.allows(AnalyticsStorage, "US-CA"), "subdivision default");
        assert!(
            m.allows(AdStorage, "US-CA"),
            "other purposes fall back per purpose"
        );
        assert!(!m.allows(AnalyticsStorage, "US"));
        assert_eq!(m.wait_for_update_ms("US-CA"), 500);
        assert_eq!(m.wait_for_update_ms("NL"), 0);
        // An unknown region only matches global defaults.
        assert!(m.allows(AnalyticsStorage, ""));
    }

    #[test]
    fn later_default_wins_a_tie_and_updates_override_defaults() {
        use Purpose::*;
        let mut m = ConsentModel::default();
        m.add_default(default(&[], &[(AnalyticsStorage, true)], 300));
        m.add_default(default(&[], &[(AnalyticsStorage, false)], 0));
        assert!(!m.allows(AnalyticsStorage, ""));
        assert_eq!(m.wait_for_update_ms(""), 300);
        m.update(&choices(&[(AnalyticsStorage, true)]));
        assert!(m.allows(AnalyticsStorage, ""));
        assert_eq!(m.wait_for_update_ms(""), 0, "an update ends the wait");
        m.update(&choices(&[(AdStorage, true)]));
        assert!(m.allows(AnalyticsStorage, ""), "updates merge per purpose");
        m.add_default(default(&[], &[(AnalyticsStorage, false)], 0));
        assert!(
            m.allows(AnalyticsStorage, ""),
            "a later default does not undo an update"
        );
        m.update(&choices(&[(AnalyticsStorage, false)]));
        assert!(!m.allows(AnalyticsStorage, ""), "revoke");
    }

    #[test]
    fn gpc_denies_advertising_even_when_granted() {
        use Purpose::*;
        let mut m = ConsentModel {
            gpc: true,
            ..ConsentModel::default()
        };
        m.update(&[Some(true); 7]);
        let e = m.effective("");
        assert!(!e[AdStorage.index()] && !e[AdUserData.index()] && !e[AdPersonalization.index()]);
        assert!(e[AnalyticsStorage.index()] && e[PersonalizationStorage.index()]);
    }

    #[test]
    fn maps_tcf_purposes_to_gcm() {
        use Purpose::*;
        let bits = |ns: &[u8]| ns.iter().fold(0u16, |b, n| b | 1 << n);
        let all = TcfSignal {
            gdpr_applies: true,
            consents: bits(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
            legitimate_interests: 0,
            tc_string: Some("CP-all".into()),
        };
        assert_eq!(all.choices(), Some([Some(true); 7]));
        let measure_only = TcfSignal {
            consents: bits(&[1]),
            legitimate_interests: bits(&[7, 8]),
            ..all.clone()
        };
        let c = measure_only.choices().unwrap();
        assert_eq!(
            c[AnalyticsStorage.index()],
            Some(true),
            "P1 + P8 by legitimate interest"
        );
        assert_eq!(c[AdUserData.index()], Some(true));
        assert_eq!(c[AdPersonalization.index()], Some(false));
        assert_eq!(c[PersonalizationStorage.index()], Some(false));
        let no_storage = TcfSignal {
            consents: bits(&[3, 4, 5, 6, 7, 8]),
            ..all.clone()
        };
        let c = no_storage.choices().unwrap();
        assert_eq!(c[AdStorage.index()], Some(false));
        assert_eq!(
            c[AnalyticsStorage.index()],
            Some(false),
            "no P1, no storage"
        );
        assert_eq!(c[AdPersonalization.index()], Some(true));
        assert_eq!(c[SecurityStorage.index()], Some(true));
        let outside_gdpr = TcfSignal {
            gdpr_applies: false,
            ..all.clone()
        };
        assert_eq!(outside_gdpr.choices(), None);

        let mut m = ConsentModel::default();
        assert!(m.apply_tcf(&all));
        assert!(m.allows(AnalyticsStorage, ""));
        assert_eq!(m.tc_string.as_deref(), Some("CP-all"));
        assert!(!m.apply_tcf(&outside_gdpr));
    }

    #[test]
    fn context_json_is_what_the_collector_reads() {
        let mut m = ConsentModel {
            gpc: true,
            tc_string: Some("CP\"x".into()),
            ..ConsentModel::default()
        };
        m.update(&choices(&[
            (Purpose::AnalyticsStorage, true),
            (Purpose::AdStorage, true),
        ]));
        let json: Value = serde_json::from_str(&m.context_json("")).unwrap();
        assert_eq!(
            json["categoryPreferences"]["analytics_storage"],
            json!(true)
        );
        assert_eq!(json["gcm"]["ad_storage"], json!("denied"), "GPC");
        assert_eq!(json["gcm"]["security_storage"], json!("granted"));
        assert_eq!(json["tcString"], json!("CP\"x"));
        assert_eq!(json["gpc"], json!(true));
        // The collector reads the same state back.
        let state = ConsentState::from_context(Some(&json!({ "consent": json })), false);
        assert!(state.allows(Purpose::AnalyticsStorage));
        assert!(!state.allows(Purpose::AdStorage));
        assert!(!state.allows(Purpose::FunctionalityStorage));
    }

    #[test]
    fn parses_choice_words() {
        assert_eq!(parse_choice("granted"), Some(true));
        assert_eq!(parse_choice(" DENIED "), Some(false));
        assert_eq!(parse_choice("true"), Some(true));
        assert_eq!(parse_choice("maybe"), None);
    }

    /// `effective` as it was written before (per purpose, a search of every default).
    fn effective_by_purpose(m: &ConsentModel, region: &str) -> [bool; 7] {
        let mut out = [false; 7];
        for purpose in Purpose::ALL {
            let i = purpose.index();
            let default = m
                .defaults
                .iter()
                .filter_map(|d| Some((d.specificity(region)?, d.choices[i]?)))
                .max_by_key(|(specificity, _)| *specificity)
                .map(|(_, value)| value);
            let advertising = matches!(
                purpose,
                Purpose::AdStorage | Purpose::AdUserData | Purpose::AdPersonalization
            );
            out[i] = !(m.gpc && advertising)
                && m.updates[i]
                    .or(default)
                    .unwrap_or(purpose == Purpose::SecurityStorage);
        }
        out
    }

    /// `specificity` as it was written before (filter_map + max over the regions).
    fn specificity_by_filter(d: &RegionDefault, region: &str) -> Option<u8> {
        if d.regions.is_empty() {
            return Some(0);
        }
        let region = region.trim();
        let country = region.split('-').next().unwrap_or_default();
        let has_dash = |r: &str| r.contains('-');
        d.regions
            .iter()
            .filter_map(|r| {
                let r = r.trim();
                if region.is_empty() || r.is_empty() {
                    None
                } else if r.eq_ignore_ascii_case(region) {
                    Some(if has_dash(r) { 2 } else { 1 })
                } else if !has_dash(r) && r.eq_ignore_ascii_case(country) {
                    Some(1)
                } else {
                    None
                }
            })
            .max()
    }

    /// `context_json` as it was written before (two strings, joined).
    fn context_json_two_strings(m: &ConsentModel, region: &str) -> String {
        let effective = m.effective(region);
        let mut prefs = String::from("{\"categoryPreferences\":{");
        let mut gcm = String::from("\"gcm\":{");
        for (n, purpose) in Purpose::ALL.iter().enumerate() {
            if n > 0 {
                prefs.push(',');
                gcm.push(',');
            }
            let granted = effective[purpose.index()];
            for out in [&mut prefs, &mut gcm] {
                out.push('"');
                out.push_str(purpose.key());
                out.push_str("\":");
            }
            prefs.push_str(if granted { "true" } else { "false" });
            gcm.push_str(if granted { "\"granted\"" } else { "\"denied\"" });
        }
        prefs.push_str("},");
        prefs.push_str(&gcm);
        prefs.push('}');
        if let Some(tc) = &m.tc_string {
            prefs.push_str(",\"tcString\":");
            crate::format::jsontext::push_json_string(&mut prefs, tc);
        }
        if m.gpc {
            prefs.push_str(",\"gpc\":true");
        }
        prefs.push('}');
        prefs
    }

    proptest::proptest! {
        #[test]
        fn context_json_matches_two_strings(
            updates in proptest::array::uniform7(proptest::option::of(proptest::bool::ANY)),
            gpc in proptest::bool::ANY,
            tc_string in proptest::option::of("[a-zA-Z\"]{0,5}"),
        ) {
            let m = ConsentModel { updates, gpc, tc_string, ..ConsentModel::default() };
            proptest::prop_assert_eq!(m.context_json(""), context_json_two_strings(&m, ""));
        }

        #[test]
        fn specificity_matches_filter_max(
            regions in proptest::collection::vec("[ A-Za-z-]{0,6}|US|US-CA|us|Us-Ca| GB ", 0..4),
            region in "[ A-Za-z-]{0,6}|US|US-CA|us-ca|GB|gb-x",
        ) {
            let d = RegionDefault { regions, ..RegionDefault::default() };
            proptest::prop_assert_eq!(d.specificity(&region), specificity_by_filter(&d, &region));
        }

        #[test]
        fn effective_matches_the_per_purpose_search(
            defaults in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::sample::select(vec!["US", "US-CA", "us-ca", "GB", " gb ", "", "US-NY"]), 0..3),
                    proptest::array::uniform7(proptest::option::of(proptest::bool::ANY)),
                ),
                0..6,
            ),
            updates in proptest::array::uniform7(proptest::option::of(proptest::bool::ANY)),
            gpc in proptest::bool::ANY,
            region in proptest::sample::select(vec!["", "US", "US-CA", "us-ca", "GB", "FR", " US-NY "]),
        ) {
            let mut m = ConsentModel { gpc, ..ConsentModel::default() };
            for (regions, choices) in defaults {
                m.add_default(RegionDefault {
                    regions: regions.into_iter().map(String::from).collect(),
                    choices,
                    wait_for_update_ms: 0,
                });
            }
            m.updates = updates;
            proptest::prop_assert_eq!(m.effective(region), effective_by_purpose(&m, region));
        }
    }
}
