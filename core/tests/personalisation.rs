//! Table-driven computed-trait and segment cases: every `tests/fixtures/personalisation/*.json`
//! (format in that folder's README) runs through `personalise::update` with the committed
//! configuration (`config/`), exactly as the edge calls it, and is replayed reversed with every
//! event delivered twice: values and memberships must not change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use seam_core::collect::event::{validate, Envelope, Event};
use seam_core::format::time::parse_iso8601;
use seam_core::personalise::{update, view, PersonalisationConfig, ProfileState};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    now: String,
    #[serde(default)]
    traits: Map<String, Value>,
    events: Vec<Value>,
    #[serde(default)]
    expect: Map<String, Value>,
    #[serde(default)]
    segments: Memberships,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Memberships {
    #[serde(default, rename = "in")]
    inside: Vec<String>,
    #[serde(default)]
    out: Vec<String>,
}

fn cases() -> Vec<(String, Case)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/personalisation");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let list: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        out.extend(list.into_iter().map(|c| (name.clone(), c)));
    }
    out
}

fn events(case: &Case, now: i64) -> Vec<Event> {
    case.events
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let mut raw = raw.clone();
            let object = raw.as_object_mut().unwrap();
            object
                .entry("anonymousId")
                .or_insert_with(|| "fixture-anon".into());
            object
                .entry("messageId")
                .or_insert_with(|| format!("fixture-{i}").into());
            let envelope = Envelope {
                received_at_ms: now,
                ..Envelope::default()
            };
            validate(raw, 10, &envelope, String::new)
                .unwrap_or_else(|e| panic!("{}: event {i}: {e}", case.description))
        })
        .collect()
}

/// Computed values and memberships after the events arrive one request each, in `order`.
fn run(
    config: &PersonalisationConfig,
    case: &Case,
    order: &[&Event],
    now: i64,
) -> (Map<String, Value>, Vec<String>) {
    let mut state = ProfileState::default();
    let mut version = None;
    for event in order {
        let up = update(
            state,
            version,
            "prof_fixture",
            &case.traits,
            &[event],
            config,
            now,
        );
        assert!(up
            .state_writes
            .last()
            .unwrap()
            .sql
            .contains("RETURNING version"));
        state = up.state;
        version = Some(version.unwrap_or(0) + 1);
    }
    let (computed, segments) = view(&state, &case.traits, config, now);
    (computed, segments.into_iter().collect())
}

#[test]
fn fixture_tables_hold_in_any_order_with_retries() {
    let config = PersonalisationConfig::committed().unwrap();
    let all = cases();
    assert!(all.len() >= 12, "fixture tables went missing");
    let mut failures = Vec::new();
    for (file, case) in &all {
        let now = parse_iso8601(&case.now).unwrap();
        let events = events(case, now);
        let forward: Vec<&Event> = events.iter().collect();
        let (computed, segments) = run(&config, case, &forward, now);
        for (name, want) in &case.expect {
            match computed.get(name) {
                Some(got) if got == want => {}
                got => failures.push(format!(
                    "{file}: {}: {name} = {got:?}, want {want}",
                    case.description
                )),
            }
        }
        for s in &case.segments.inside {
            if !segments.contains(s) {
                failures.push(format!(
                    "{file}: {}: not in {s} (in {segments:?})",
                    case.description
                ));
            }
        }
        for s in &case.segments.out {
            if segments.contains(s) {
                failures.push(format!("{file}: {}: in {s}", case.description));
            }
        }
        let replay: Vec<&Event> = events.iter().rev().flat_map(|e| [e, e]).collect();
        if run(&config, case, &replay, now) != (computed, segments) {
            failures.push(format!(
                "{file}: {}: reversed replay with retries differs",
                case.description
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
