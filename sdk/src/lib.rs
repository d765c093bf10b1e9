//! # seam-sdk
//!
//! Seam's browser SDK, compiled to WebAssembly and shipped as an npm package. It keeps a
//! first-party anonymous ID (persisted only with analytics consent), builds Segment-compatible
//! events, batches them and sends them to the Seam edge collector with `fetch(keepalive)` and a
//! `text/plain` body, so no CORS preflight is needed.
//!
//! This file holds every `#[wasm_bindgen]` export; browser APIs live in [`platform`]. No export
//! throws into the host page: bad input is logged in debug mode and ignored.

pub mod client;
pub mod platform;

use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use client::{flush as flush_outbox, install, with_client, Config};

/// Starts the SDK: `load({ writeKey, endpoint?, flushAt?, flushInterval?, debug?, consent? })`.
/// Returns false (and logs) when the options are unusable.
#[wasm_bindgen]
pub fn load(options: JsValue) -> bool {
    let config = match Config::from_js(&options) {
        Ok(config) => config,
        Err(reason) => {
            platform::log(&format!("seam: {reason}"));
            return false;
        }
    };
    let interval = config.flush_interval_ms;
    if install(config) {
        platform::every(interval, spawn_flush);
        platform::on_page_hide(spawn_flush);
    }
    true
}

/// Records a user action: `track("Product Viewed", { product_id: "p1" })`.
#[wasm_bindgen]
pub fn track(event: String, properties: JsValue) {
    if event.trim().is_empty() {
        return;
    }
    enqueue(
        "track",
        &[
            ("event", event.into()),
            ("properties", object_or_empty(properties)),
        ],
    );
}

/// Records a page view: `page()`, `page("Product")`, `page("Product", { sku })`.
#[wasm_bindgen]
pub fn page(name: Option<String>, properties: JsValue) {
    let name = name.map_or(JsValue::UNDEFINED, JsValue::from);
    enqueue(
        "page",
        &[("name", name), ("properties", object_or_empty(properties))],
    );
}

/// Sends everything queued now. Resolves when the queue is empty or the collector is unreachable.
#[wasm_bindgen]
pub fn flush() -> Promise {
    future_to_promise(async {
        flush_outbox().await;
        Ok(JsValue::UNDEFINED)
    })
}

/// The current anonymous ID (empty before `load()`).
#[wasm_bindgen(js_name = anonymousId)]
pub fn anonymous_id() -> String {
    with_client(|c| c.anonymous_id().to_owned()).unwrap_or_default()
}

/// Forgets the anonymous ID and drops queued events.
#[wasm_bindgen]
pub fn reset() {
    with_client(|c| c.reset());
}

/// Number of events waiting to be sent (for diagnostics and tests).
#[wasm_bindgen]
pub fn pending() -> usize {
    with_client(|c| c.pending()).unwrap_or(0)
}

fn enqueue(kind: &str, fields: &[(&str, JsValue)]) {
    if with_client(|c| c.enqueue(kind, fields)) == Some(true) {
        spawn_flush();
    }
}

fn spawn_flush() {
    wasm_bindgen_futures::spawn_local(flush_outbox());
}

fn object_or_empty(value: JsValue) -> JsValue {
    if value.is_object() {
        value
    } else {
        js_sys::Object::new().into()
    }
}
