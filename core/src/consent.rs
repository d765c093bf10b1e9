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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentState {
    /// `None`: the event carried no consent object, so nothing is enforced.
    purposes: Option<[bool; 7]>,
    /// Global Privacy Control was signalled.
    pub gpc: bool,
}

impl ConsentState {
    /// Reads `context.consent` of an event body; `header_gpc` is the request's `Sec-GPC: 1`.
    pub fn from_context(context: Option<&Value>, header_gpc: bool) -> Self {
        let consent = context
            .and_then(|c| c.get("consent"))
            .and_then(Value::as_object);
        let gpc = header_gpc || consent.is_some_and(|c| c.get("gpc") == Some(&Value::Bool(true)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
