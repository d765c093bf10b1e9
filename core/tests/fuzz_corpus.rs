//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/decode`) through the same calls as the
//! `decode` fuzz target, so every seed (and any crash input added to the corpus) is checked by a
//! plain `cargo test`, without libFuzzer or a nightly toolchain.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::PathBuf;

use seam_core::collect::event::EventType;
use seam_core::collect::ingest::{decode, Decoded, RequestError, Status};
use seam_core::plan::{insert_events, Param, MAX_BOUND_PARAMS};

const RECEIVED_AT_MS: i64 = 1_767_225_600_000;
// A one-day dedup window.
const DEDUP_WINDOW_DAYS: u32 = 1;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode")
}

/// Every seed as (file name, bytes), sorted by name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    seeds
}

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(name)).unwrap()
}

fn run(data: &[u8], path_type: Option<EventType>) -> Result<Decoded, RequestError> {
    decode(data, path_type, RECEIVED_AT_MS, || "fuzz-id".to_string())
}

/// The fuzz target's calls and invariants for one input; returns the accepted count, if decoded.
fn check(name: &str, data: &[u8], path_type: Option<EventType>) -> Option<usize> {
    let decoded = run(data, path_type).ok()?;
    let valid: Vec<_> = decoded.valid().collect();
    let inserted: HashSet<String> = valid.iter().map(|e| e.message_id.clone()).collect();

    let results = decoded.results(&inserted);
    assert_eq!(
        results.len(),
        decoded.outcomes.len(),
        "{name}: one result per outcome"
    );
    for result in &results {
        let rejected = result.status == Status::Rejected;
        assert_eq!(
            result.code.is_some() && result.message.is_some(),
            rejected,
            "{name}: {result:?}"
        );
    }
    let nothing_stored = decoded.results(&HashSet::new());
    assert!(
        nothing_stored.iter().all(|r| r.status != Status::Accepted),
        "{name}"
    );

    let plan = insert_events("src", &valid, RECEIVED_AT_MS, DEDUP_WINDOW_DAYS);
    assert_eq!(plan.is_empty(), valid.is_empty(), "{name}");
    for statement in &plan {
        assert!(statement.params.len() <= MAX_BOUND_PARAMS, "{name}");
        assert_eq!(
            statement.sql.matches('?').count(),
            statement.params.len(),
            "{name}"
        );
    }
    let planned: HashSet<&str> = plan
        .iter()
        .flat_map(|s| &s.params)
        .filter_map(|p| match p {
            Param::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    for event in &valid {
        assert!(
            planned.contains(event.message_id.as_str()),
            "{name}: {} not planned",
            event.message_id
        );
    }

    Some(
        results
            .iter()
            .filter(|r| r.status == Status::Accepted)
            .count(),
    )
}

#[test]
fn decoding_the_fuzz_corpus_never_panics() {
    let seeds = corpus();
    assert!(
        seeds.len() >= 12,
        "seed corpus shrank to {} files",
        seeds.len()
    );
    let mut decoded = 0;
    let mut accepted = 0;
    for (name, data) in &seeds {
        for path_type in [None, Some(EventType::Track)] {
            if let Some(n) = check(name, data, path_type) {
                decoded += 1;
                accepted += n;
            }
        }
    }
    assert!(
        decoded >= seeds.len(),
        "only {decoded} of {} decodes succeeded",
        seeds.len() * 2
    );
    assert!(
        accepted >= 6,
        "only {accepted} events accepted across the corpus"
    );
}

#[test]
fn valid_batch_seed_is_accepted_in_full() {
    let data = seed("valid_batch.json");
    assert_eq!(check("valid_batch.json", &data, None), Some(6));
    let decoded = run(&data, None).unwrap();
    assert_eq!(decoded.write_key.as_deref(), Some("seam_dev_write_key"));
}

#[test]
fn single_event_seed_is_accepted_on_the_track_path_only() {
    let data = seed("single_track.json");
    assert_eq!(
        check("single_track.json", &data, Some(EventType::Track)),
        Some(1)
    );
    assert_eq!(run(&data, None).unwrap_err(), RequestError::InvalidBatch);
}

#[test]
fn unreadable_seeds_are_refused_as_a_whole() {
    for name in ["empty", "invalid_utf8.bin", "numbers_out_of_range.json"] {
        let data = seed(name);
        assert_eq!(
            run(&data, None).unwrap_err(),
            RequestError::InvalidJson,
            "{name}"
        );
        assert_eq!(
            run(&data, Some(EventType::Track)).unwrap_err(),
            RequestError::InvalidJson,
            "{name}"
        );
    }
}
