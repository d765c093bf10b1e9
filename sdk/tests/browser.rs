//! SDK behaviour in a real browser (headless Chromium via wasm-bindgen-test-runner).
//!
//! `window.fetch` is replaced by a recorder so the tests see exactly what the SDK would put on the
//! wire; everything else (cookies, localStorage, Web Locks, History API, crypto, JSON, timers) is
//! the browser's own. All tests share one page and one SDK instance: each starts from `start()`,
//! which resets identity, queue and consent.

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, missing_docs)]

use js_sys::{Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
export function record_fetches(status) {
  window.__seam = { calls: [], status, headers: {} };
  window.fetch = async (input, init) => {
    const req = input instanceof Request ? input : new Request(input, init);
    const body = await req.text();
    window.__seam.calls.push({
      url: req.url, method: req.method, keepalive: req.keepalive,
      contentType: req.headers.get("content-type"), body, json: JSON.parse(body),
    });
    if (window.__seam.status === 0) throw new TypeError("network down");
    const reply = typeof window.__seam.body === "function" ? window.__seam.body(JSON.parse(body)) : window.__seam.body;
    return new Response(reply ?? "{}", { status: window.__seam.status, headers: window.__seam.headers });
  };
}
export function respond_with(status) { window.__seam.status = status; }
export function reply_header(name, value) { window.__seam.headers = { [name]: value }; }
export function reply_body(text) { window.__seam.body = text; }
export function reject_event(name) {
  window.__seam.body = (req) => JSON.stringify({ results: req.batch.map((e) => ({
    messageId: e.messageId, status: e.event === name ? "rejected" : "accepted" })) });
}
export function fetches() { return window.__seam.calls; }
export function sent_events() { return window.__seam.calls.flatMap((c) => c.json.batch); }
export function stored(key) { return localStorage.getItem(key); }
export function stored_queue() {
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (key.startsWith("seam_queue:")) return localStorage.getItem(key);
  }
  return null;
}
export function store(key, value) { localStorage.setItem(key, value); }
export function cookie(name) {
  const c = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return c ? decodeURIComponent(c.slice(name.length + 1)) : null;
}
export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
export function install_cmp_stub() {
  if (window.__tcfapi) return;
  window.__tcfListeners = [];
  window.__tcfapi = (command, version, callback) => {
    if (command === "addEventListener" && version === 2) window.__tcfListeners.push(callback);
  };
}
export function cmp_decides(consents, tcString) {
  const purpose = { consents: {}, legitimateInterests: {} };
  for (const n of consents) purpose.consents[n] = true;
  for (const f of window.__tcfListeners) f({ eventStatus: "useractioncomplete", gdprApplies: true, tcString, purpose }, true);
}
export function gtag() { (window.dataLayer = window.dataLayer || []).push(arguments); }
export function set_navigator(name, value) {
  Object.defineProperty(navigator, name, { value, configurable: true });
}
export function go_online() { set_navigator("onLine", true); dispatchEvent(new Event("online")); }
export function push_state(path) { history.pushState({}, "", path); }
export function origin() { return location.origin; }
"#)]
extern "C" {
    fn record_fetches(status: u16);
    fn respond_with(status: u16);
    fn reply_header(name: &str, value: &str);
    fn reply_body(text: &str);
    fn reject_event(name: &str);
    fn fetches() -> js_sys::Array;
    fn sent_events() -> js_sys::Array;
    fn stored(key: &str) -> Option<String>;
    fn stored_queue() -> Option<String>;
    fn store(key: &str, value: &str);
    fn cookie(name: &str) -> Option<String>;
    fn sleep(ms: u32) -> js_sys::Promise;
    fn install_cmp_stub();
    fn cmp_decides(consents: Vec<u32>, tc_string: &str);
    #[wasm_bindgen(variadic)]
    fn gtag(args: Vec<JsValue>);
    fn set_navigator(name: &str, value: JsValue);
    fn go_online();
    fn push_state(path: &str);
    fn origin() -> String;
}

const ID_KEY: &str = "seam_anonymous_id";
const ID_COOKIE: &str = "__Host-seam_anonymous_id";

fn json(text: &str) -> JsValue {
    JSON::parse(text).unwrap()
}

fn get(value: &JsValue, path: &str) -> JsValue {
    path.split('.').fold(value.clone(), |v, key| {
        Reflect::get(&v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    })
}

fn text(value: &JsValue, path: &str) -> String {
    get(value, path).as_string().unwrap_or_default()
}

async fn flush() {
    JsFuture::from(seam_sdk::flush().unchecked_into::<js_sys::Promise>())
        .await
        .unwrap();
}

async fn wait(ms: u32) {
    JsFuture::from(sleep(ms)).await.unwrap();
}

/// A fresh start: recorded fetches answering `status`, the given `preConsent` mode and
/// `analytics_storage`, nothing queued, a new identity.
async fn start(status: u16, analytics: &str, mode: &str) {
    install_cmp_stub();
    set_navigator("globalPrivacyControl", JsValue::FALSE);
    set_navigator("onLine", JsValue::TRUE);
    record_fetches(status);
    reply_body("{}");
    seam_sdk::consent_update(json(
        r#"{"ad_storage":"denied","ad_user_data":"denied","ad_personalization":"denied",
            "functionality_storage":"denied","personalization_storage":"denied"}"#,
    ));
    let options = format!(
        r#"{{"writeKey":"test_key","endpoint":"https://collector.example/","flushInterval":600000,
            "preConsent":"{mode}","consent":{{"analytics_storage":"{analytics}"}}}}"#
    );
    assert!(seam_sdk::load(json(&options)));
    seam_sdk::reset();
    // Let deferred storage work from earlier tests settle.
    wait(20).await;
    if analytics == "granted" {
        // A reset asks the collector for a new cookie ID until an answer brings one.
        record_fetches(200);
        let renewed = format!("renewed-{}", js_sys::Math::random().to_bits());
        reply_body(&format!(r#"{{"anonymousId":"{renewed}"}}"#));
        seam_sdk::track("Reset".into(), JsValue::UNDEFINED);
        flush().await;
        assert_eq!(seam_sdk::anonymous_id().as_string(), Some(renewed));
    }
    record_fetches(status);
    reply_body("{}");
}

#[wasm_bindgen_test]
async fn track_posts_a_text_plain_keepalive_batch_with_consent() {
    start(200, "granted", "buffer").await;
    let props = json(r#"{"product_id":"p1","price":12.5}"#);
    seam_sdk::track("Product Viewed".into(), props);
    seam_sdk::page("Product".into(), JsValue::UNDEFINED);
    flush().await;

    assert_eq!(seam_sdk::pending(), 0);
    let calls = fetches();
    assert_eq!(calls.length(), 1);
    let call = calls.get(0);
    assert_eq!(text(&call, "url"), "https://collector.example/v1/batch");
    assert_eq!(text(&call, "method"), "POST");
    assert_eq!(get(&call, "keepalive"), JsValue::TRUE);
    assert_eq!(text(&call, "contentType"), "text/plain;charset=UTF-8");

    let body = get(&call, "json");
    assert_eq!(text(&body, "writeKey"), "test_key");
    assert!(text(&body, "sentAt").ends_with('Z'));
    let track = get(&body, "batch.0");
    assert_eq!(text(&track, "type"), "track");
    assert_eq!(text(&track, "event"), "Product Viewed");
    assert_eq!(get(&track, "properties.price"), 12.5);
    assert_eq!(
        text(&track, "anonymousId"),
        seam_sdk::anonymous_id().as_string().unwrap()
    );
    assert!(text(&track, "messageId").starts_with("seam-"));
    assert_eq!(text(&track, "context.library.name"), "seam.js");
    assert_eq!(
        get(
            &track,
            "context.consent.categoryPreferences.analytics_storage"
        ),
        JsValue::TRUE
    );
    assert_eq!(
        text(&track, "context.consent.gcm.analytics_storage"),
        "granted"
    );
    assert_eq!(text(&track, "context.consent.gcm.ad_storage"), "denied");
    assert!(text(&track, "context.page.url").starts_with("http"));
    let page = get(&body, "batch.1");
    assert_eq!(text(&page, "type"), "page");
    assert_eq!(text(&page, "name"), "Product");
}

#[wasm_bindgen_test]
async fn identify_group_alias_carry_ids_and_traits_and_reset_forgets_them() {
    start(200, "granted", "buffer").await;
    seam_sdk::identify("user-1".into(), json(r#"{"email":"a@example.com"}"#));
    seam_sdk::identify(JsValue::UNDEFINED, json(r#"{"plan":"pro"}"#));
    seam_sdk::group("acme".into(), json(r#"{"seats":5}"#));
    seam_sdk::track("Clicked".into(), JsValue::UNDEFINED);
    seam_sdk::alias("user-2".into(), JsValue::UNDEFINED);
    flush().await;
    let events = sent_events();
    assert_eq!(events.length(), 5);
    let second = events.get(1);
    assert_eq!(text(&second, "userId"), "user-1");
    assert_eq!(
        text(&second, "traits.email"),
        "a@example.com",
        "traits merge"
    );
    assert_eq!(text(&second, "traits.plan"), "pro");
    assert_eq!(text(&events.get(2), "groupId"), "acme");
    assert_eq!(get(&events.get(2), "traits.seats"), 5);
    assert_eq!(text(&events.get(3), "userId"), "user-1");
    let alias = events.get(4);
    assert_eq!(text(&alias, "userId"), "user-2");
    assert_eq!(text(&alias, "previousId"), "user-1");
    assert_eq!(stored("seam_user_id").as_deref(), Some("user-1"));
    assert!(stored("seam_user_traits").unwrap().contains("pro"));
    assert_eq!(get(&fetches().get(0), "json.context"), JsValue::UNDEFINED);

    // The site's identity token (kept by the JS entry's identify) rides with every batch.
    let token = "v1.1893456000.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    store("seam_identity_token", token);
    seam_sdk::track("Signed in".into(), JsValue::UNDEFINED);
    flush().await;
    let signed = fetches().get(1);
    assert_eq!(text(&signed, "json.context.seam.identityToken"), token);
    assert_eq!(text(&signed, "json.batch.0.userId"), "user-1");
    store("seam_identity_token", "");

    let before = seam_sdk::anonymous_id().as_string().unwrap();
    seam_sdk::reset();
    assert_ne!(
        seam_sdk::anonymous_id().as_string().unwrap(),
        before,
        "reset mints a new ID"
    );
    assert_eq!(stored("seam_user_id"), None);
    assert_eq!(stored("seam_user_traits"), None);
    assert_eq!(stored("seam_retired_id").as_deref(), Some(before.as_str()));
    seam_sdk::track("After".into(), JsValue::UNDEFINED);
    flush().await;
    let last = sent_events().get(6);
    assert_eq!(get(&last, "userId"), JsValue::UNDEFINED);
    assert_eq!(
        text(&last, "anonymousId"),
        seam_sdk::anonymous_id().as_string().unwrap()
    );
    // The collector's cookie (HttpOnly) is renewed by the collector: every batch asks for it
    // until an answer brings another ID than the retired one.
    let asks = |i: u32| get(&fetches().get(i), "json.context.seam.newId");
    assert_eq!(asks(2), JsValue::TRUE);
    reply_body(&format!(r#"{{"anonymousId":"{before}"}}"#));
    seam_sdk::track("Still".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(asks(3), JsValue::TRUE);
    assert_ne!(
        seam_sdk::anonymous_id().as_string(),
        Some(before.clone()),
        "the retired ID is not taken back"
    );
    reply_body(r#"{"anonymousId":"collector-renewed-1"}"#);
    seam_sdk::track("Renewed".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(
        seam_sdk::anonymous_id().as_string().as_deref(),
        Some("collector-renewed-1")
    );
    assert_eq!(stored("seam_retired_id"), None);
    seam_sdk::track("Settled".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(asks(5), JsValue::UNDEFINED, "asked no more");
    reply_body("{}");
}

#[wasm_bindgen_test]
async fn before_consent_nothing_is_stored_and_buffered_events_leave_with_the_id_on_grant() {
    start(200, "denied", "buffer").await;
    seam_sdk::track("Early".into(), JsValue::UNDEFINED);
    seam_sdk::page(JsValue::UNDEFINED, JsValue::UNDEFINED);
    flush().await;
    assert_eq!(fetches().length(), 0, "buffered, not sent");
    assert_eq!(seam_sdk::pending(), 2);
    assert_eq!(stored(ID_KEY), None);
    assert_eq!(cookie(ID_COOKIE), None);
    assert_eq!(stored_queue(), None, "no durable queue without consent");

    seam_sdk::consent_update(json(r#"{"analytics_storage":"granted"}"#));
    let id = seam_sdk::anonymous_id().as_string().unwrap();
    assert_eq!(stored(ID_KEY), Some(id.clone()));
    assert_eq!(cookie(ID_COOKIE), Some(id.clone()));
    assert_eq!(
        cookie(ID_KEY),
        None,
        "no cookie of the plain name, which subdomains can set"
    );
    flush().await;
    let events = sent_events();
    assert_eq!(events.length(), 2, "buffered events arrive once");
    assert_eq!(text(&events.get(0), "anonymousId"), id);
    assert_eq!(
        text(&events.get(0), "context.consent.gcm.analytics_storage"),
        "granted"
    );

    seam_sdk::consent_update(json(r#"{"analytics_storage":"denied"}"#));
    assert_eq!(stored(ID_KEY), None, "revoking deletes the stored ID");
    assert_eq!(cookie(ID_COOKIE), None, "and the cookie");
    seam_sdk::track("After revoke".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(sent_events().length(), 2);
    assert_eq!(seam_sdk::pending(), 1);
}

#[wasm_bindgen_test]
async fn cookieless_mode_sends_with_a_page_only_id_and_drop_mode_sends_nothing() {
    start(200, "denied", "cookieless").await;
    seam_sdk::track("Anonymous".into(), JsValue::UNDEFINED);
    flush().await;
    let events = sent_events();
    assert_eq!(events.length(), 1);
    let sent_id = text(&events.get(0), "anonymousId");
    assert_eq!(sent_id.len(), 36);
    assert_ne!(
        sent_id,
        seam_sdk::anonymous_id().as_string().unwrap(),
        "not the persistent ID"
    );
    assert_eq!(stored(ID_KEY), None);

    start(200, "denied", "drop").await;
    seam_sdk::track("Gone".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(fetches().length(), 0);
    assert_eq!(seam_sdk::pending(), 0);
}

#[wasm_bindgen_test]
async fn gtag_commands_tcf_and_gpc_drive_the_consent_state() {
    start(200, "denied", "buffer").await;
    gtag(vec![
        "consent".into(),
        "update".into(),
        json(r#"{"analytics_storage":"granted","ad_storage":"granted"}"#),
    ]);
    let state = seam_sdk::consent_get();
    assert_eq!(text(&state, "gcm.analytics_storage"), "granted");
    assert_eq!(text(&state, "gcm.ad_storage"), "granted");
    assert_eq!(
        stored(ID_KEY),
        Some(seam_sdk::anonymous_id().as_string().unwrap())
    );

    // A CMP: storage (1) and content measurement (8), no ad profile (3, 4).
    cmp_decides(vec![1, 7, 8], "CPtcf");
    let state = seam_sdk::consent_get();
    assert_eq!(text(&state, "tcString"), "CPtcf");
    assert_eq!(text(&state, "gcm.analytics_storage"), "granted");
    assert_eq!(text(&state, "gcm.ad_user_data"), "granted");
    assert_eq!(text(&state, "gcm.ad_personalization"), "denied");
    cmp_decides(vec![3, 4], "CPnone");
    assert_eq!(
        text(&seam_sdk::consent_get(), "gcm.analytics_storage"),
        "denied"
    );
    assert_eq!(stored(ID_KEY), None, "the CMP's refusal deletes the ID");

    set_navigator("globalPrivacyControl", JsValue::TRUE);
    seam_sdk::consent_update(json(
        r#"{"ad_storage":"granted","analytics_storage":"granted"}"#,
    ));
    let state = seam_sdk::consent_get();
    assert_eq!(get(&state, "gpc"), JsValue::TRUE);
    assert_eq!(text(&state, "gcm.ad_storage"), "denied", "GPC wins");
    assert_eq!(text(&state, "gcm.analytics_storage"), "granted");
    set_navigator("globalPrivacyControl", JsValue::FALSE);
}

#[wasm_bindgen_test]
async fn keeps_events_through_outages_and_resends_the_same_message_id_after_backoff() {
    start(503, "granted", "buffer").await;
    reply_header("Retry-After", "1");
    seam_sdk::track("Order Completed".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(fetches().length(), 1);
    assert_eq!(seam_sdk::pending(), 1, "a 503 must not lose the event");

    respond_with(200);
    flush().await;
    assert_eq!(fetches().length(), 1, "not before Retry-After");
    wait(1200).await;
    flush().await;
    let calls = fetches();
    assert_eq!(calls.length(), 2, "sent again once due");
    assert_eq!(seam_sdk::pending(), 0);
    let id = |i: u32| text(&get(&calls.get(i), "json"), "batch.0.messageId");
    assert_eq!(id(0), id(1), "the retry resends the same messageId");

    // A network error backs off too (500 ms for the first retry, with jitter: 250..500 ms).
    respond_with(0);
    reply_header("X-None", "");
    seam_sdk::track("Offline-ish".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(
        seam_sdk::pending(),
        1,
        "a network failure must not lose the event"
    );
    respond_with(200);
    flush().await;
    assert_eq!(fetches().length(), 3, "backing off");
    wait(600).await;
    flush().await;
    assert_eq!(fetches().length(), 4);
    assert_eq!(seam_sdk::pending(), 0);
}

#[wasm_bindgen_test]
async fn drops_refused_events_per_event_and_refused_batches_whole() {
    start(200, "granted", "buffer").await;
    reject_event("Bad");
    seam_sdk::track("Good".into(), JsValue::UNDEFINED);
    seam_sdk::track("Bad".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(seam_sdk::pending(), 0, "the rejected event is not retried");
    assert_eq!(fetches().length(), 1);

    respond_with(400);
    seam_sdk::track("Refused".into(), JsValue::UNDEFINED);
    flush().await;
    assert_eq!(seam_sdk::pending(), 0);
    assert_eq!(fetches().length(), 2);
}

#[wasm_bindgen_test]
async fn the_queue_is_stored_and_events_left_by_another_page_are_sent() {
    start(200, "granted", "buffer").await;
    set_navigator("onLine", JsValue::FALSE);
    seam_sdk::track("Kept".into(), JsValue::UNDEFINED);
    wait(50).await;
    let queue = stored_queue().unwrap();
    assert!(
        queue.contains("\"Kept\""),
        "the queue is in localStorage: {queue}"
    );
    flush().await;
    assert_eq!(fetches().length(), 0, "offline: nothing tried");

    // A closed tab or an earlier page left an event in its queue; nobody holds its lock.
    let earlier =
        r#"{"type":"track","event":"From earlier","messageId":"m-earlier","anonymousId":"a"}"#;
    store(
        "seam_queue:closed-tab",
        &format!("0\n0\t0\tm-earlier\t{earlier}"),
    );
    go_online();
    wait(100).await;
    flush().await;
    let names: Vec<String> = sent_events().iter().map(|e| text(&e, "event")).collect();
    assert_eq!(names, ["Kept", "From earlier"]);
    assert_eq!(seam_sdk::pending(), 0);
}

#[wasm_bindgen_test]
async fn evicts_the_oldest_over_the_byte_budget_and_reports_it() {
    start(503, "granted", "buffer").await;
    let options = r#"{"writeKey":"test_key","endpoint":"https://collector.example","flushInterval":600000,"flushAt":1000,"queueBytes":4096}"#;
    assert!(seam_sdk::load(json(options)));
    for i in 0..20 {
        seam_sdk::track(format!("Event {i}").into(), JsValue::UNDEFINED);
    }
    wait(50).await;
    let pending = seam_sdk::pending();
    assert!(pending < 20 && pending > 0, "{pending} kept");
    respond_with(200);
    wait(20).await;
    flush().await;
    let calls = fetches();
    let body = get(&calls.get(calls.length() - 1), "json");
    let evicted = get(&body, "context.seam.evicted").as_f64().unwrap();
    assert_eq!(
        evicted as usize + pending,
        20,
        "every event is sent or counted"
    );
    let last = sent_events();
    assert_eq!(
        text(&last.get(last.length() - 1), "event"),
        "Event 19",
        "newest kept"
    );
}

#[wasm_bindgen_test]
async fn history_navigation_sends_pages_with_a_referrer_chain() {
    start(200, "granted", "buffer").await;
    let origin = origin();
    push_state("/spa/one");
    push_state("/spa/one#section");
    push_state("/spa/two");
    flush().await;
    let events = sent_events();
    assert_eq!(events.length(), 2, "hash-only changes are not page views");
    assert_eq!(text(&events.get(0), "type"), "page");
    assert_eq!(text(&events.get(0), "context.page.path"), "/spa/one");
    assert_eq!(
        text(&events.get(1), "context.page.referrer"),
        format!("{origin}/spa/one")
    );
}

#[wasm_bindgen_test]
fn load_without_write_key_is_refused_quietly() {
    assert!(!seam_sdk::load(json("{}")));
    assert!(!seam_sdk::load(JsValue::UNDEFINED));
}
