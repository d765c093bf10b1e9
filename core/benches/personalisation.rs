//! Native cost of personalising one event for a returning shopper in seam-core:
//! parsing the stored row, `personalise::update` (apply to computed traits, values, segment evaluation, membership diff,
//! co-occurrence writes, the new row serialised) for a `Product Viewed` on a profile whose state holds a full
//! horizon of 128 facts plus archives, with the committed configuration.
//! `cargo bench -p seam-core --bench personalisation`; `bench/run.mjs` reports the median
//! against a 100 µs target.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use seam_core::collect::event::{validate, Envelope, Event};
use seam_core::format::time::format_iso8601;
use seam_core::personalise::{update, view, PersonalisationConfig, ProfileState};
use serde_json::{json, Map, Value};

/// 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;
const CATEGORIES: [&str; 3] = ["Running Shoes", "Trail", "Accessories"];

fn event(n: i64, name: &str, properties: Value) -> Event {
    let raw = json!({"type": "track", "event": name, "anonymousId": "3f1c2a9e-8d4b-4c7a-9e21-5eed00000001",
        "messageId": format!("ajs-next-{}-{n:08}", START_MS + n), "timestamp": format_iso8601(START_MS + n * 240_000),
        "properties": properties});
    validate(
        raw,
        300,
        &Envelope {
            received_at_ms: START_MS,
            ..Envelope::default()
        },
        String::new,
    )
    .unwrap()
}

/// 300 events of browsing, carts and orders over ~50 days: more than the horizon holds.
fn history() -> Vec<Event> {
    (0..300)
        .map(|n| {
            let product = format!("p{}", n % 12);
            let category = CATEGORIES[(n % 12 / 4) as usize];
            match n % 10 {
                0..=6 => event(n, "Product Viewed", json!({"product_id": product, "category": category, "price": 99, "name": "Shoe"})),
                7 | 8 => event(n, "Product Added", json!({"product_id": product, "price": 99, "quantity": 1})),
                _ => event(n, "Order Completed", json!({"order_id": format!("o{n}"), "revenue": 120.5, "coupon": if n % 20 == 9 { "SAVE10" } else { "" },
                    "products": [{"product_id": product}, {"product_id": format!("p{}", (n + 1) % 12)}]})),
            }
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let config = PersonalisationConfig::committed().unwrap();
    let traits = Map::new();
    let mut state = ProfileState::default();
    for e in history() {
        state = update(
            state,
            Some(1),
            "prof_bench",
            &traits,
            &[&e],
            &config,
            START_MS + 300 * 240_000,
        )
        .state;
    }
    // Guard against benchmarking a different shape: a full horizon with archives and segments.
    assert_eq!(state.computed.facts.len(), 128);
    assert!(!state.computed.archive.is_empty());
    let now = START_MS + 301 * 240_000;
    let next = event(
        301,
        "Product Viewed",
        json!({"product_id": "p3", "category": "Running Shoes", "price": 99}),
    );
    let run = |stored| {
        update(
            stored,
            Some(1),
            "prof_bench",
            &traits,
            &[&next],
            &config,
            now,
        )
    };
    let up = run(state.clone());
    assert!(!up.segments.is_empty());
    assert!(up.writes.len() + up.evidence_writes.len() >= 3);

    // What the edge does per event: parse the stored row, update, serialise the new row.
    let row = state.to_json_string();
    let mut group = c.benchmark_group("personalisation");
    group.bench_function("update_one_event_full_horizon", |b| {
        b.iter(|| run(ProfileState::from_json_str(Some(black_box(&row)))))
    });
    group.bench_function("view_for_decision", |b| {
        b.iter(|| view(black_box(&state), &traits, &config, now))
    });
    group.finish();
}

criterion_group!(personalisation_benches, benches);
criterion_main!(personalisation_benches);
