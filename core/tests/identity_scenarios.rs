//! Table-driven identity scenarios: every `tests/fixtures/identity/*.json` (format in that
//! folder's README) is turned into links exactly as the collector does it
//! (`event::validate` + `identity::Link::from_event`), resolved with `identity::partition`, and
//! compared with the file's `expect`. Each scenario is also replayed in reversed and shuffled
//! order, with every event stored twice, and folded in one event at a time through
//! `component_links` + `stitch`: all of these must give the same partition and profile IDs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use seam_core::collect::event::{validate, Envelope};
use seam_core::format::time::format_iso8601;
use seam_core::identity::{
    component_links, partition, stitch, Identifier, Link, Partition, ProfileId, Rules,
    PROFILE_ID_PREFIX,
};
use serde::Deserialize;
use serde_json::Value;

/// When the collector received every event (2026-01-02T00:00:00Z).
const RECEIVED_AT_MS: i64 = 1_767_312_000_000;
/// Time of the first event that has no `timestamp` (2026-01-01T00:00:00Z); the next is 1 s later.
const DEFAULT_TIMESTAMP_MS: i64 = 1_767_225_600_000;
/// Seeds of the deterministic shuffles each scenario is replayed in.
const SHUFFLE_SEEDS: [u64; 4] = [1, 7, 42, 2026];
/// Fewest scenario files the folder may hold.
const MIN_SCENARIOS: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Scenario {
    description: String,
    #[serde(default)]
    rules: Option<Value>,
    #[serde(default)]
    known_bug: bool,
    events: Vec<Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    profiles: Vec<Vec<String>>,
    #[serde(default)]
    conflicts: Vec<ExpectedConflict>,
    #[serde(default)]
    profile_id_of: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectedConflict {
    refused: String,
    reason: String,
    #[serde(default)]
    message_id: Option<String>,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/identity")
}

/// Every scenario file as (file name, contents), sorted by name.
fn scenario_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/identity exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Fills the defaults the README documents: `messageId` `m01`, `m02`, ... and `timestamp` one
/// second apart from [`DEFAULT_TIMESTAMP_MS`], both by position in the file.
fn with_defaults(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut event = event.clone();
            if let Some(fields) = event.as_object_mut() {
                fields
                    .entry("messageId")
                    .or_insert_with(|| Value::from(format!("m{:02}", i + 1)));
                let offset = i64::try_from(i).unwrap() * 1000;
                fields
                    .entry("timestamp")
                    .or_insert_with(|| Value::from(format_iso8601(DEFAULT_TIMESTAMP_MS + offset)));
            }
            event
        })
        .collect()
}

/// The links the collector would store for `events`, in the same order.
fn links_of(events: &[Value], rules: &Rules) -> Result<Vec<Link>, String> {
    let envelope = Envelope {
        received_at_ms: RECEIVED_AT_MS,
        ..Envelope::default()
    };
    events
        .iter()
        .map(|raw| {
            let len = raw.to_string().len();
            let event = validate(raw.clone(), len, &envelope, || "no-message-id".into())
                .map_err(|e| format!("event {raw} is rejected: {} ({e})", e.code()))?;
            Ok(Link::from_event(&event, rules))
        })
        .collect()
}

/// Fisher-Yates driven by a fixed xorshift generator: the same order on every run.
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap();
        out.swap(i, j);
    }
    out
}

fn profile_sets(p: &Partition) -> BTreeSet<BTreeSet<String>> {
    p.profiles
        .iter()
        .map(|prof| prof.identifiers.iter().map(ToString::to_string).collect())
        .collect()
}

fn show_profiles(sets: &BTreeSet<BTreeSet<String>>) -> String {
    let mut out = String::new();
    for set in sets {
        let ids: Vec<&str> = set.iter().map(String::as_str).collect();
        let _ = write!(out, "\n      [{}]", ids.join(", "));
    }
    out
}

fn show_conflicts(p: &Partition) -> String {
    let mut out = String::new();
    for c in &p.conflicts {
        let _ = write!(
            out,
            "\n      {} refused {} ({})",
            c.message_id,
            c.refused,
            c.reason.code()
        );
    }
    out
}

/// `prof_...` as written, or the ID of a profile whose best identifier is the given one.
fn expected_profile_id(text: &str) -> Result<String, String> {
    if text.starts_with(PROFILE_ID_PREFIX) {
        return Ok(text.to_owned());
    }
    Identifier::parse(text)
        .map(|id| ProfileId::for_identifier(&id).to_string())
        .ok_or_else(|| format!("profileIdOf value {text:?} is neither prof_... nor an identifier"))
}

fn check_profile_ids(expect: &Expect, p: &Partition, problems: &mut Vec<String>) {
    for (member, want) in &expect.profile_id_of {
        let Some(id) = Identifier::parse(member) else {
            problems.push(format!("profileIdOf key {member:?} is not an identifier"));
            continue;
        };
        let Some(profile) = p.profile_of(&id) else {
            problems.push(format!("profileIdOf: {member} is in no profile"));
            continue;
        };
        let want_text = match expected_profile_id(want) {
            Ok(text) => text,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if profile.id.as_str() != want_text {
            problems.push(format!(
                "profile ID of {member}: expected {want_text} ({want}), got {} (best identifier {})",
                profile.id,
                profile
                    .identifiers
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ));
        }
    }
}

fn check_conflicts(expect: &Expect, p: &Partition, problems: &mut Vec<String>) {
    let mut unmatched: Vec<bool> = vec![true; p.conflicts.len()];
    // Entries naming a messageId first, so a looser entry cannot take their match.
    let mut wanted: Vec<&ExpectedConflict> = expect.conflicts.iter().collect();
    wanted.sort_by_key(|w| w.message_id.is_none());
    let mut missing = Vec::new();
    for want in wanted {
        let found = p.conflicts.iter().enumerate().position(|(i, c)| {
            unmatched[i]
                && c.refused.to_string() == want.refused
                && c.reason.code() == want.reason
                && want.message_id.as_ref().is_none_or(|m| *m == c.message_id)
        });
        match found {
            Some(i) => unmatched[i] = false,
            None => missing.push(format!(
                "{} refused {} ({})",
                want.message_id.as_deref().unwrap_or("*"),
                want.refused,
                want.reason
            )),
        }
    }
    let extra = unmatched.iter().filter(|u| **u).count();
    if !missing.is_empty() || extra > 0 {
        let missing = if missing.is_empty() {
            "none".to_owned()
        } else {
            missing.join("; ")
        };
        problems.push(format!(
            "conflicts differ: expected but missing: {missing}; unexpected: {extra}; actual:{}",
            show_conflicts(p)
        ));
    }
}

/// Replays `events` in other orders, twice over, and one at a time through `stitch`; each must
/// reproduce `reference` exactly.
fn check_order_independence(
    events: &[Value],
    rules: &Rules,
    reference: &Partition,
    problems: &mut Vec<String>,
) {
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    let mut reversed = events.to_vec();
    reversed.reverse();
    orders.push(("reversed".into(), reversed));
    for seed in SHUFFLE_SEEDS {
        orders.push((format!("shuffle seed {seed}"), shuffled(events, seed)));
    }
    let mut doubled = events.to_vec();
    doubled.extend(shuffled(events, 99));
    orders.push(("every event twice".into(), doubled));

    for (label, order) in &orders {
        match links_of(order, rules) {
            Ok(links) => {
                let p = partition(&links, rules);
                if p != *reference {
                    problems.push(format!(
                        "{label}: partition differs from file order; profiles:{}\n    conflicts:{}",
                        show_profiles(&profile_sets(&p)),
                        show_conflicts(&p)
                    ));
                }
            }
            Err(e) => problems.push(format!("{label}: {e}")),
        }
    }

    let want: BTreeMap<String, String> = reference
        .profiles
        .iter()
        .flat_map(|prof| {
            prof.identifiers
                .iter()
                .map(|id| (id.to_string(), prof.id.to_string()))
        })
        .collect();
    let arrivals = [
        ("stitch in file order", events.to_vec()),
        ("stitch in shuffled order", shuffled(events, 3)),
    ];
    for (label, arrival) in arrivals {
        let Ok(links) = links_of(&arrival, rules) else {
            continue; // already reported above
        };
        let mut store: Vec<Link> = Vec::new();
        let mut assigned: BTreeMap<String, String> = BTreeMap::new();
        for new in links {
            let fragment = component_links(&store, &new.identifiers, rules);
            let plan = stitch(&fragment, new.clone(), rules);
            assigned.extend(
                plan.assignments
                    .iter()
                    .map(|(id, p)| (id.to_string(), p.to_string())),
            );
            store.push(new);
        }
        if assigned != want {
            let wrong: Vec<String> = want
                .iter()
                .filter(|(id, p)| assigned.get(*id) != Some(*p))
                .map(|(id, p)| {
                    format!(
                        "{id}: {} instead of {p}",
                        assigned.get(id).map_or("nothing", String::as_str)
                    )
                })
                .collect();
            problems.push(format!(
                "{label}: assignments differ from the batch partition: {}",
                wrong.join("; ")
            ));
        }
    }
}

/// All problems with one scenario; empty when it behaves as expected.
fn check(scenario: &Scenario) -> Vec<String> {
    let mut problems = Vec::new();
    if scenario.description.trim().is_empty() {
        problems.push("description is empty".into());
    }
    let rules = match &scenario.rules {
        None => Rules::default(),
        Some(config) => match Rules::from_json(config) {
            Ok(rules) => rules,
            Err(e) => return vec![format!("rules are invalid: {e}")],
        },
    };
    let events = with_defaults(&scenario.events);
    let links = match links_of(&events, &rules) {
        Ok(links) => links,
        Err(e) => return vec![e],
    };
    let p = partition(&links, &rules);

    let mut expected: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for profile in &scenario.expect.profiles {
        let set: BTreeSet<String> = profile.iter().cloned().collect();
        if set.len() != profile.len() || set.is_empty() {
            problems.push(format!(
                "expected profile {profile:?} is empty or repeats an identifier"
            ));
        }
        for text in profile {
            if Identifier::parse(text).is_none_or(|id| id.to_string() != *text) {
                problems.push(format!("{text:?} is not an identifier's text form"));
            }
        }
        expected.insert(set);
    }
    let actual = profile_sets(&p);
    if actual != expected {
        problems.push(format!(
            "profiles differ\n    expected:{}\n    actual:{}",
            show_profiles(&expected),
            show_profiles(&actual)
        ));
    }
    check_conflicts(&scenario.expect, &p, &mut problems);
    check_profile_ids(&scenario.expect, &p, &mut problems);
    check_order_independence(&events, &rules, &p, &mut problems);
    problems
}

fn name_of(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn identity_scenarios_match_their_expectations() {
    let files = scenario_files();
    assert!(
        files.len() >= MIN_SCENARIOS,
        "only {} scenarios in {}",
        files.len(),
        name_of(&fixtures_dir())
    );
    let mut failures = Vec::new();
    for (name, text) in &files {
        let scenario: Scenario = match serde_json::from_str(text) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: not a scenario: {e}"));
                continue;
            }
        };
        let problems = check(&scenario);
        if scenario.known_bug {
            if problems.is_empty() {
                println!("{name}: marked knownBug but now passes: remove the flag");
            } else {
                println!(
                    "{name}: SKIPPED (knownBug): {}\n  {}",
                    scenario.description,
                    problems.join("\n  ")
                );
            }
            continue;
        }
        if !problems.is_empty() {
            failures.push(format!("{name}:\n  {}", problems.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} identity scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn shuffles_are_deterministic_permutations() {
    let items: Vec<u32> = (0..20).collect();
    for seed in SHUFFLE_SEEDS {
        let a = shuffled(&items, seed);
        assert_eq!(a, shuffled(&items, seed));
        assert_ne!(a, items, "seed {seed} left the order unchanged");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, items);
    }
}
