//! Events, configurations and states the computed-trait tests share, and that segment,
//! recommendation and pipeline tests build on.

use serde_json::{json, Value};

use super::{apply, ComputedConfig, ComputedState};
use crate::collect::event::{validate, Envelope, Event};
use crate::format::time::format_iso8601;

/// 2026-01-01T00:00:00Z.
pub(crate) const T0: i64 = 1_767_225_600_000;
pub(crate) const HOUR: i64 = 3_600_000;

pub(crate) fn shipped_config() -> ComputedConfig {
    let text = include_str!("../../../../config/computed-traits.json");
    ComputedConfig::from_json(&serde_json::from_str(text).unwrap()).unwrap()
}

/// A track event `name` at `T0 + at_ms` with `properties`.
pub(crate) fn track(id: &str, name: &str, at_ms: i64, properties: Value) -> Event {
    let raw = json!({"type": "track", "event": name, "anonymousId": "a1", "messageId": id,
        "timestamp": format_iso8601(T0 + at_ms), "properties": properties});
    validate(
        raw,
        10,
        &Envelope {
            received_at_ms: T0,
            ..Envelope::default()
        },
        String::new,
    )
    .unwrap()
}

pub(crate) fn page(id: &str, at_ms: i64) -> Event {
    let raw = json!({"type": "page", "anonymousId": "a1", "messageId": id,
        "timestamp": format_iso8601(T0 + at_ms)});
    validate(raw, 10, &Envelope::default(), String::new).unwrap()
}

pub(crate) fn state_of(events: &[Event], config: &ComputedConfig) -> ComputedState {
    let mut state = ComputedState::default();
    for e in events {
        apply(&mut state, e, config);
    }
    state
}

pub(crate) fn order(id: &str, order_id: &str, at_ms: i64, extra: Value) -> Event {
    let mut props = json!({"order_id": order_id});
    props
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    track(id, "Order Completed", at_ms, props)
}

/// A realistic mixed history, in time order.
pub(crate) fn history(n: i64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let at = i * 7 * 60_000 + (i / 10) * 3 * HOUR;
            let pid = format!("p{}", i % 7);
            match i % 5 {
                0 => track(&format!("m{i}"), "Product Viewed", at, json!({"product_id": pid, "category": format!("c{}", i % 3)})),
                1 => track(&format!("m{i}"), "Product Added", at, json!({"product_id": pid, "price": i})),
                2 => track(&format!("m{i}"), "Product Removed", at, json!({"product_id": format!("p{}", (i + 3) % 7)})),
                3 => order(&format!("m{i}"), &format!("o{}", i / 2), at, json!({"revenue": i as f64 * 1.5, "coupon": if i % 2 == 0 { "X" } else { "" }, "products": [{"product_id": pid}]})),
                _ => page(&format!("m{i}"), at),
            }
        })
        .collect()
}

pub(crate) trait IntoPair {
    fn into_iter_pair(self) -> (Vec<Event>, Vec<Event>);
}
impl IntoPair for (Vec<(usize, Event)>, Vec<(usize, Event)>) {
    fn into_iter_pair(self) -> (Vec<Event>, Vec<Event>) {
        (
            self.0.into_iter().map(|p| p.1).collect(),
            self.1.into_iter().map(|p| p.1).collect(),
        )
    }
}
