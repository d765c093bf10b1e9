//! SDK behaviour in a real browser (headless Chromium via wasm-bindgen-test-runner).
//!
//! `window.fetch` is replaced by a recorder so the tests see exactly what the SDK would put on the
//! wire; everything else (localStorage, crypto, JSON, timers) is the browser's own.

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, missing_docs)]

use js_sys::{Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
export function record_fetches(status) {
  window.__seam = { calls: [], status };
  window.fetch = async (input, init) => {
    const req = input instanceof Request ? input : new Request(input, init);
    window.__seam.calls.push({
      url: req.url, method: req.method, keepalive: req.keepalive,
      contentType: req.headers.get("content-type"), body: await req.text(),
    });
    if (window.__seam.status === 0) throw new TypeError("network down");
    return new Response(window.__seam.body ?? "{}", { status: window.__seam.status });
  };
}
export function respond_with(status) { window.__seam.status = status; }
export function reply_body(text) { window.__seam.body = text; }
export function fetches() { return window.__seam.calls; }
export function stored(key) { return localStorage.getItem(key); }
"#)]
extern "C" {
    fn record_fetches(status: u16);
    fn respond_with(status: u16);
    fn reply_body(text: &str);
    fn fetches() -> js_sys::Array;
    fn stored(key: &str) -> Option<String>;
}

fn options(consent: &str) -> JsValue {
    JSON::parse(&format!(
        r#"{{"writeKey":"test_key","endpoint":"https://collector.example/","flushInterval":600000,
            "consent":{{"analytics_storage":"{consent}"}}}}"#
    ))
    .unwrap()
}

fn get(value: &JsValue, path: &str) -> JsValue {
    path.split('.').fold(value.clone(), |v, key| {
        Reflect::get(&v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    })
}

async fn flush() {
    JsFuture::from(seam_sdk::flush()).await.unwrap();
}

fn start(status: u16, consent: &str) {
    record_fetches(status);
    reply_body("{}");
    assert!(seam_sdk::load(options(consent)));
    seam_sdk::reset();
}

#[wasm_bindgen_test]
async fn track_posts_a_text_plain_keepalive_batch() {
    start(200, "granted");
    let props = JSON::parse(r#"{"product_id":"p1","price":12.5}"#).unwrap();
    seam_sdk::track("Product Viewed".into(), props);
    seam_sdk::page(Some("Product".into()), JsValue::UNDEFINED);
    assert_eq!(seam_sdk::pending(), 2);
    flush().await;

    assert_eq!(seam_sdk::pending(), 0);
    let calls = fetches();
    assert_eq!(calls.length(), 1);
    let call = calls.get(0);
    assert_eq!(get(&call, "url"), "https://collector.example/v1/batch");
    assert_eq!(get(&call, "method"), "POST");
    assert_eq!(get(&call, "keepalive"), JsValue::TRUE);
    assert_eq!(get(&call, "contentType"), "text/plain;charset=UTF-8");

    let body = JSON::parse(&get(&call, "body").as_string().unwrap()).unwrap();
    assert_eq!(get(&body, "writeKey"), "test_key");
    assert!(get(&body, "sentAt").as_string().unwrap().ends_with('Z'));
    let track = get(&body, "batch.0");
    assert_eq!(get(&track, "type"), "track");
    assert_eq!(get(&track, "event"), "Product Viewed");
    assert_eq!(get(&track, "properties.price"), 12.5);
    assert_eq!(
        get(&track, "anonymousId"),
        seam_sdk::anonymous_id().as_str()
    );
    assert!(get(&track, "messageId")
        .as_string()
        .unwrap()
        .starts_with("seam-"));
    assert_eq!(get(&track, "context.library.name"), "seam.js");
    assert_eq!(
        get(
            &track,
            "context.consent.categoryPreferences.analytics_storage"
        ),
        JsValue::TRUE
    );
    assert!(get(&track, "context.page.url")
        .as_string()
        .unwrap()
        .starts_with("http"));
    let page = get(&body, "batch.1");
    assert_eq!(get(&page, "type"), "page");
    assert_eq!(get(&page, "name"), "Product");
}

#[wasm_bindgen_test]
async fn keeps_events_when_the_collector_is_down_and_resends_them() {
    start(503, "granted");
    seam_sdk::track("Order Completed".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(seam_sdk::pending(), 1, "a 503 must not lose the event");

    respond_with(0);
    flush().await;
    assert_eq!(
        seam_sdk::pending(),
        1,
        "a network failure must not lose the event"
    );

    respond_with(200);
    flush().await;
    assert_eq!(seam_sdk::pending(), 0);
    let calls = fetches();
    assert_eq!(calls.length(), 3);
    let id = |i: u32| {
        let body = JSON::parse(&get(&calls.get(i), "body").as_string().unwrap()).unwrap();
        get(&body, "batch.0.messageId")
    };
    assert_eq!(
        id(0),
        id(2),
        "the retry resends the same messageId, so the edge can dedup"
    );
}

#[wasm_bindgen_test]
async fn adopts_the_collectors_cookie_id_so_both_agree() {
    start(200, "granted");
    let cookie_id = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    reply_body(&format!(r#"{{"results":[],"anonymousId":"{cookie_id}"}}"#));
    seam_sdk::track("Product Viewed".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(seam_sdk::anonymous_id(), cookie_id);
    assert_eq!(stored("seam_anonymous_id").as_deref(), Some(cookie_id));

    seam_sdk::track("Next".into(), JsValue::UNDEFINED);
    flush().await;
    let body = JSON::parse(&get(&fetches().get(1), "body").as_string().unwrap()).unwrap();
    assert_eq!(get(&body, "batch.0.anonymousId"), cookie_id);
}

#[wasm_bindgen_test]
async fn drops_a_batch_the_collector_refuses() {
    start(400, "granted");
    seam_sdk::track("Bad".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(seam_sdk::pending(), 0);
    assert_eq!(fetches().length(), 1);
}

#[wasm_bindgen_test]
fn anonymous_id_is_persisted_only_with_analytics_consent() {
    start(200, "denied");
    let id = seam_sdk::anonymous_id();
    assert_eq!(id.len(), 36);
    assert_eq!(stored("seam_anonymous_id"), None);

    assert!(seam_sdk::load(options("granted")));
    assert_eq!(
        seam_sdk::anonymous_id(),
        id,
        "granting consent keeps the same ID"
    );
    assert_eq!(stored("seam_anonymous_id"), Some(id.clone()));

    assert!(seam_sdk::load(options("denied")));
    assert_eq!(
        stored("seam_anonymous_id"),
        None,
        "revoking consent deletes the stored ID"
    );

    seam_sdk::reset();
    assert_ne!(seam_sdk::anonymous_id(), id, "reset mints a new ID");
}

#[wasm_bindgen_test]
fn load_without_write_key_is_refused_quietly() {
    assert!(!seam_sdk::load(JSON::parse("{}").unwrap()));
    assert!(!seam_sdk::load(JsValue::UNDEFINED));
}
