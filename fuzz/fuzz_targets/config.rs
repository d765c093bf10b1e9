//! Fuzzes every configuration parser an operator or admin request feeds the collector: sources
//! (`SOURCES` and D1 rows), identity rules, admin key requests, stored key scopes and retention
//! settings, computed-trait declarations, segment rules, recommender settings and catalogue
//! uploads. Bad input must come back as an error naming the problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seam_core::collect::source::{parse_source, Sources};
use seam_core::identity::Rules;
use seam_core::personalise::computed::ComputedConfig;
use seam_core::personalise::recommend::{catalog_from_json, RecommendSettings};
use seam_core::personalise::segment::SegmentSet;
use seam_core::privacy::access::{parse_key_request, parse_scopes};
use seam_core::privacy::retention::Retention;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Sources::parse(text) {
        assert!(!e.to_string().is_empty());
    }
    let _ = parse_scopes(text);
    let mut lines = text.lines();
    let settings: Vec<(String, String)> = [
        "RETENTION_EVENT_DAYS",
        "RETENTION_ANONYMOUS_PROFILE_DAYS",
        "RETENTION_CHUNK",
        "RETENTION_MAX_CHUNKS",
    ]
    .iter()
    .filter_map(|k| lines.next().map(|v| ((*k).to_owned(), v.to_owned())))
    .collect();
    if let Ok(r) = Retention::from_settings(|k| {
        settings
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    }) {
        assert!(r.event_days >= 1 && r.chunk >= 1 && r.max_chunks >= 1);
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    if let Ok(source) = parse_source("fuzz-key", &value) {
        assert!(!source.id.trim().is_empty());
    }
    if let Err(e) = Rules::from_json(&value) {
        assert!(!e.code().is_empty());
    }
    if let Ok(request) = parse_key_request(&value) {
        assert!(!request.scopes.is_empty() && request.label != "root");
    }
    let computed = ComputedConfig::from_json(&value).ok();
    let _ = SegmentSet::from_json(&value, None);
    let _ = SegmentSet::from_json(&value, computed.as_ref());
    let _ = RecommendSettings::from_json(&value);
    let _ = catalog_from_json(&value);
});
