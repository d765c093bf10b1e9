//! Native cost of one collector request in seam-core: decode the body, validate every event and
//! build the D1 write plan. `cargo bench -p seam-core --bench ingest`; `bench/run.mjs` reports the
//! batch median against a 200 µs target.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use seam_core::collect::event::EventType;
use seam_core::collect::ingest::decode;
use seam_core::plan::insert_events;
use serde_json::{json, Value};

const RECEIVED_AT_MS: i64 = 1_767_225_605_000;
// A one-day dedup window.
const DEDUP_WINDOW_DAYS: u32 = 1;
const WRITE_KEY: &str = "seam_dev_write_key";

/// One "Product Viewed" event as the browser SDK sends it.
fn product_viewed(i: usize) -> Value {
    json!({
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": format!("3f1c2a9e-8d4b-4c7a-9e21-{:012x}", 0x5eed_0000 + i % 5),
        "messageId": format!("seam-1767225600000-{i:04}-b7e4c2d1a9f0"),
        "timestamp": format!("2026-01-01T00:00:{:02}.{:03}Z", i % 60, (i * 37) % 1000),
        "properties": {
            "product_id": format!("prod_{:05}", 10_000 + i),
            "sku": format!("TR-{:04}-BLK-42", 1000 + i),
            "category": "Running Shoes",
            "price": 129.99 + i as f64,
            "name": format!("Trail Runner {i}"),
            "currency": "EUR"
        },
        "context": {
            "page": {
                "path": format!("/product/prod_{:05}", 10_000 + i),
                "referrer": "https://shop.example.com/category/running",
                "title": "Trail Runner | Example Shop",
                "url": format!("https://shop.example.com/product/prod_{:05}", 10_000 + i)
            },
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "library": {"name": "seam.js", "version": "0.1.0"},
            "locale": "en-GB"
        }
    })
}

fn batch_body(events: usize) -> Vec<u8> {
    let batch: Vec<Value> = (0..events).map(product_viewed).collect();
    serde_json::to_vec(&json!({
        "batch": batch,
        "sentAt": "2026-01-01T00:00:59.500Z",
        "writeKey": WRITE_KEY
    }))
    .unwrap()
}

fn single_body() -> Vec<u8> {
    let mut event = product_viewed(0);
    let fields = event.as_object_mut().unwrap();
    fields.remove("type");
    fields.insert("writeKey".into(), WRITE_KEY.into());
    fields.insert("sentAt".into(), "2026-01-01T00:00:00.500Z".into());
    serde_json::to_vec(&event).unwrap()
}

/// The work of one request: decode + validate, then plan the inserts. Returns the statement count.
fn ingest(body: &[u8], path_type: Option<EventType>) -> usize {
    let decoded = decode(body, path_type, RECEIVED_AT_MS, || "generated".to_string()).unwrap();
    let events: Vec<_> = decoded.valid().collect();
    insert_events("src", &events, RECEIVED_AT_MS, DEDUP_WINDOW_DAYS).len()
}

fn benches(c: &mut Criterion) {
    let batch = batch_body(20);
    let single = single_body();
    // Guard against benchmarking the rejection path.
    let decoded = decode(&batch, None, RECEIVED_AT_MS, String::new).unwrap();
    assert_eq!(
        decoded.valid().count(),
        20,
        "every batch event must be valid"
    );
    let decoded = decode(&single, Some(EventType::Track), RECEIVED_AT_MS, String::new).unwrap();
    assert_eq!(decoded.valid().count(), 1, "the single event must be valid");

    let mut group = c.benchmark_group("ingest");
    group.bench_function("batch_20_events", |b| {
        b.iter(|| ingest(black_box(&batch), None))
    });
    group.bench_function("single_track", |b| {
        b.iter(|| ingest(black_box(&single), Some(EventType::Track)))
    });
    group.finish();
}

criterion_group!(ingest_benches, benches);
criterion_main!(ingest_benches);
