//! The recommender's settings (`config/recommendations.json`): weights, the co-view window,
//! the holdout and how long shared inputs are cached.

use serde_json::Value;

/// Settings of the recommender (`recommendations` in the personalisation config).
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendSettings {
    /// Views of the same profile this close in time are co-viewed.
    pub co_view_window_ms: i64,
    /// Weight of one co-purchasing profile.
    pub purchase_weight: f64,
    /// Weight of one co-viewing profile.
    pub view_weight: f64,
    /// Weight of the item's category interest (0..1 share of the profile's category views).
    pub category_weight: f64,
    /// Weight of having viewed the item recently (so fresh items rank above seen ones).
    pub recent_weight: f64,
    /// Weight of popularity (scaled 0..1): tie-breaker and cold start.
    pub popularity_weight: f64,
    /// Percentage of profiles (0..100) held out from personalisation.
    pub holdout_percent: f64,
    /// Salt of the holdout hash (change it to draw a new control group).
    pub holdout_salt: String,
    /// How long an isolate reuses shared inputs (co-occurrence, category listings, catalogue,
    /// popularity) between decisions: the freshness traded for speed (0 reads D1 every time).
    pub cache_ms: i64,
}

impl Default for RecommendSettings {
    fn default() -> Self {
        Self {
            co_view_window_ms: 30 * 60_000,
            purchase_weight: 3.0,
            view_weight: 1.0,
            category_weight: 2.0,
            recent_weight: 0.5,
            popularity_weight: 0.25,
            holdout_percent: 0.0,
            holdout_salt: "seam".into(),
            cache_ms: 10_000,
        }
    }
}

/// A mistake in the recommender settings, naming the field. Stable `code()`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recommendations: {field} {problem}")]
pub struct RecommendConfigError {
    pub field: String,
    pub problem: &'static str,
}

impl RecommendConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "invalid_recommendations_config"
    }
}

impl RecommendSettings {
    /// Reads `{"coViewWindowMinutes", "weights": {"purchase", "view", "category", "recent",
    /// "popularity"}, "holdoutPercent", "holdoutSalt"}`; every field optional.
    pub fn from_json(config: &Value) -> Result<Self, RecommendConfigError> {
        let err = |field: &str, problem| RecommendConfigError {
            field: field.to_owned(),
            problem,
        };
        let object = config
            .as_object()
            .ok_or_else(|| err("recommendations", "must be an object"))?;
        let mut s = Self::default();
        let non_negative = |v: &Value, field: &str| {
            v.as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| err(field, "must be a number >= 0"))
        };
        for (key, value) in object {
            match key.as_str() {
                "coViewWindowMinutes" => {
                    let minutes = non_negative(value, key)?;
                    if minutes <= 0.0 || minutes > 1440.0 {
                        return Err(err(key, "must be from 0 to 1440 minutes"));
                    }
                    s.co_view_window_ms = (minutes * 60_000.0).round() as i64;
                }
                "holdoutPercent" => {
                    s.holdout_percent = non_negative(value, key)?;
                    if s.holdout_percent > 100.0 {
                        return Err(err(key, "must be from 0 to 100"));
                    }
                }
                "cacheSeconds" => {
                    let seconds = non_negative(value, key)?;
                    if seconds > 300.0 {
                        return Err(err(key, "must be from 0 to 300 seconds"));
                    }
                    s.cache_ms = (seconds * 1000.0).round() as i64;
                }
                "holdoutSalt" => {
                    s.holdout_salt = value
                        .as_str()
                        .ok_or_else(|| err(key, "must be a string"))?
                        .to_owned();
                }
                "weights" => {
                    let weights = value
                        .as_object()
                        .ok_or_else(|| err(key, "must be an object"))?;
                    for (w, v) in weights {
                        let field = format!("weights.{w}");
                        let x = non_negative(v, &field)?;
                        match w.as_str() {
                            "purchase" => s.purchase_weight = x,
                            "view" => s.view_weight = x,
                            "category" => s.category_weight = x,
                            "recent" => s.recent_weight = x,
                            "popularity" => s.popularity_weight = x,
                            _ => return Err(err(&field, "is not a weight")),
                        }
                    }
                }
                _ => return Err(err(key, "is not a setting")),
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_validate_fields() {
        let s = RecommendSettings::from_json(
            &json!({"holdoutPercent": 10, "weights": {"category": 4}}),
        )
        .unwrap();
        assert_eq!((s.holdout_percent, s.category_weight), (10.0, 4.0));
        let e = RecommendSettings::from_json(&json!({"weights": {"colour": 1}})).unwrap_err();
        assert_eq!(e.field, "weights.colour");
        let e = RecommendSettings::from_json(&json!({"holdoutPercent": 101})).unwrap_err();
        assert_eq!(
            (e.code(), e.field.as_str()),
            ("invalid_recommendations_config", "holdoutPercent")
        );
        assert_eq!(RecommendSettings::default().cache_ms, 10_000);
        let s = RecommendSettings::from_json(&json!({"cacheSeconds": 0.5})).unwrap();
        assert_eq!(s.cache_ms, 500);
        let e = RecommendSettings::from_json(&json!({"cacheSeconds": 301})).unwrap_err();
        assert_eq!(e.field, "cacheSeconds");
    }
}
