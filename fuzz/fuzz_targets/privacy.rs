//! Fuzzes the privacy path of ingestion on arbitrary requests: consent parsing and records,
//! enrichment under every source policy (denylisted properties, IP handling), suppression, the
//! rejection counters, and the erasure plan for whoever the events identify. None of it may
//! panic, and every plan binds exactly the parameters its SQL names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::ingest::decode;
use seam_core::collect::source::parse_source;
use seam_core::identity::{identifiers_of, Rules};
use seam_core::plan::Statement;
use seam_core::privacy::{
    apply_suppressions, consent_records, count_rejections, erase, record_consent, suppress,
    suppression_key, Subject,
};

fn well_formed(s: &Statement) {
    let numbered = s.sql.contains("?1");
    if !numbered {
        assert_eq!(s.sql.matches('?').count(), s.params.len(), "{}", s.sql);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = decode(data, None, 1_767_225_600_000, || "fuzz-id".to_string()) else {
        return;
    };
    let rules = Rules::default();
    let facts = RequestFacts {
        ip: Some("203.0.113.9".into()),
        gpc: data.len() % 2 == 0,
        ..RequestFacts::default()
    };
    let valid: Vec<_> = decoded.valid().collect();
    let records = consent_records(&valid, "src", &rules, facts.gpc, true);
    record_consent(&records).iter().for_each(well_formed);
    let source = parse_source(
        "k",
        &serde_json::json!({"id": "src", "denyProperties": ["email", "password"]}),
    )
    .expect("a valid source");
    let enriched = decoded.enrich(&facts, &source);
    let mut subject = Subject::default();
    for event in enriched.valid() {
        subject.identifiers.extend(
            identifiers_of(event, &rules)
                .iter()
                .map(ToString::to_string),
        );
    }
    let first = subject.identifiers.iter().next().cloned();
    let (suppressed, count) = apply_suppressions(enriched, &rules, |k| {
        first
            .as_deref()
            .and_then(seam_core::identity::Identifier::parse)
            .is_some_and(|i| suppression_key(&i) == k)
    });
    assert!(count <= suppressed.outcomes.len());
    if let Some(s) = count_rejections("src", 1_767_225_600_000, &suppressed) {
        well_formed(&s);
    }
    for (_, statement) in erase(&subject, &["src".to_owned()], 1) {
        assert!(!statement.params.is_empty());
    }
    suppress(&subject.suppression_keys(), "req", 1)
        .iter()
        .for_each(well_formed);
});
