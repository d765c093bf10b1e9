//! Everything that touches the browser. The rest of the SDK sees plain Rust values.
//!
//! Most calls go through `browser.js` (a few lines of JS each, far smaller in the shipped
//! package than the same calls through web-sys). Every function here swallows browser errors
//! (private-mode storage, blocked fetch, missing `window` in a worker) and reports them as
//! `None`/`false`: the SDK must never throw into the host page. Nothing here is `async`: results
//! come back through callbacks, which keeps the wasm free of future executors.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use wasm_bindgen::prelude::*;

// Globals bound directly: no wrapper function to ship.
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console)]
    fn warn(message: &str);
    #[wasm_bindgen(js_name = setTimeout)]
    fn after_js(f: &JsValue, ms: f64);
    /// Calls `f` every `ms` milliseconds for the life of the page.
    #[wasm_bindgen(js_name = setInterval)]
    pub fn every(f: &JsValue, ms: i32);
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn date_now() -> f64;
    /// `Math.random()`: a number in `[0, 1)`.
    #[wasm_bindgen(js_namespace = Math, js_name = random)]
    pub fn random_unit() -> f64;
}

#[wasm_bindgen(module = "/src/platform/browser.js")]
extern "C" {
    /// A cookie's value (see `cookie_get`).
    #[wasm_bindgen(js_name = cookieGet)]
    fn cookie_get_js(name: &str, domain: &str) -> JsValue;
    /// Sets (or with `max_age` 0 deletes) a `Secure; SameSite=Lax` cookie, `__Host-`-named
    /// without a `domain` (see `cookie_get`).
    #[wasm_bindgen(js_name = cookieSet)]
    pub fn cookie_set(name: &str, value: &str, domain: &str, max_age: u32);
    /// `navigator.globalPrivacyControl === true`.
    pub fn gpc() -> bool;
    /// `navigator.onLine` (true when unknown).
    pub fn online() -> bool;
    /// Calls `f` on the `online` event.
    #[wasm_bindgen(js_name = onOnline)]
    pub fn on_online(f: &JsValue);
    /// Holds the Web Lock `name` for the life of the page.
    #[wasm_bindgen(js_name = holdLock)]
    pub fn hold_lock(name: &str);
    /// Calls `f(key)` for every localStorage key starting with `prefix` (other than `own`)
    /// whose owner tab is gone, then keeps its lock (see `browser.js`).
    pub fn orphans(prefix: &str, own: &str, f: &JsValue);
    /// Calls `f` after `history.pushState`/`replaceState` and on `popstate`.
    #[wasm_bindgen(js_name = watchHistory)]
    pub fn watch_history(f: &JsValue);
    /// Calls `f([command, params])` for every `gtag('consent', ...)` in `window.dataLayer`,
    /// past and future.
    #[wasm_bindgen(js_name = watchDataLayer)]
    pub fn watch_data_layer(f: &JsValue);
    /// Listens to an IAB TCF v2.2 CMP: `f([gdprApplies, consents, legitimateInterests,
    /// tcString])` with purposes as bit masks. False when there is no `__tcfapi`.
    #[wasm_bindgen(js_name = listenTcf)]
    pub fn listen_tcf(f: &JsValue) -> bool;
    /// Reads a localStorage entry.
    #[wasm_bindgen(js_name = storageGet)]
    fn storage_get_js(key: &str) -> JsValue;
    /// Writes a localStorage entry; false when storage is unavailable or full.
    #[wasm_bindgen(js_name = storageSet)]
    pub fn storage_set(key: &str, value: &str) -> bool;
    /// Removes a localStorage entry.
    #[wasm_bindgen(js_name = storageRemove)]
    pub fn storage_remove(key: &str);
    /// Epoch ms as ISO-8601 (`Date.toISOString`).
    #[wasm_bindgen(js_name = isoTime)]
    fn iso_time_js(ms: f64) -> JsValue;
    /// `location.href`.
    #[wasm_bindgen(js_name = pageUrl)]
    fn page_url_js() -> JsValue;
    /// `context.page` as JSON text, with `referrer`.
    #[wasm_bindgen(js_name = pageJson)]
    fn page_json_js(referrer: &str) -> JsValue;
    /// `"userAgent":"..","locale":".."` (JSON members) from the navigator.
    #[wasm_bindgen(js_name = navigatorContext)]
    fn navigator_context_js() -> JsValue;
    /// Merges `traits` into the JSON object `json`; `None` when not serialisable.
    #[wasm_bindgen(js_name = mergeTraits)]
    fn merge_traits_js(json: &str, traits: &JsValue) -> JsValue;
    /// A promise that resolves at the next [`flushed`].
    #[wasm_bindgen(js_name = flushWaiter)]
    pub fn flush_waiter() -> JsValue;
    /// Resolves every [`flush_waiter`] promise.
    pub fn flushed();
    /// `document.referrer`.
    #[wasm_bindgen(js_name = documentReferrer)]
    fn document_referrer_js() -> JsValue;
    #[wasm_bindgen(js_name = consentParams)]
    fn consent_params(params: &JsValue, keys: &str) -> JsValue;
    /// Fills `bytes` from `crypto.getRandomValues`, or `Math.random` without Web Crypto (very old
    /// or locked-down runtimes: fall back rather than fail).
    #[wasm_bindgen(js_name = fillRandom)]
    fn fill_random(bytes: &mut [u8]);
    /// `value[key]` (`undefined` when `value` is not an object or the getter throws).
    pub fn prop(value: &JsValue, key: &str) -> JsValue;
    /// `value[i]`, like [`prop`].
    #[wasm_bindgen(js_name = prop)]
    pub fn item(value: &JsValue, i: u32) -> JsValue;
    /// `value[key]` when it is a string, else empty (`key` "0" for an array's first item).
    #[wasm_bindgen(js_name = textProp)]
    fn text_prop_js(value: &JsValue, key: &str) -> JsValue;

    /// `JSON.stringify` of `value` when it is an object, else of `{}`; `None` when not
    /// serialisable (cyclic, BigInt, a throwing `toJSON`).
    #[wasm_bindgen(js_name = stringifyObject)]
    fn stringify_object_js(value: &JsValue) -> JsValue;
    /// `JSON.parse(text)` (`undefined` when it does not parse).
    #[wasm_bindgen(js_name = parseJson)]
    pub fn parse_json(text: &str) -> JsValue;
    #[wasm_bindgen(js_name = post)]
    fn post_js(url: &str, body: &str, done: &JsValue);
    /// Calls `f` on `pagehide` and when the page becomes hidden.
    #[wasm_bindgen(js_name = onHide)]
    pub fn on_hide(f: &JsValue);
}

// The text-returning hooks hand back a JS value read with `as_string`: one string conversion in
// the glue for all of them instead of one per import.

/// The value of the cookie `name` as `cookie_set` writes it for `domain`: without a domain
/// (host-only) the cookie is `__Host-<name>`, which no other subdomain can plant for this host,
/// and the plain name is never read.
pub fn cookie_get(name: &str, domain: &str) -> Option<String> {
    cookie_get_js(name, domain).as_string()
}

/// Reads a localStorage entry.
pub fn storage_get(key: &str) -> Option<String> {
    storage_get_js(key).as_string()
}

/// Epoch ms as ISO-8601 (`Date.toISOString`).
pub fn iso_time(ms: f64) -> String {
    text(iso_time_js(ms))
}

/// `location.href`.
pub fn page_url() -> String {
    text(page_url_js())
}

/// `context.page` as JSON text, with `referrer`.
pub fn page_json(referrer: &str) -> String {
    text(page_json_js(referrer))
}

/// `"userAgent":"..","locale":".."` (JSON members) from the navigator.
pub fn navigator_context() -> String {
    text(navigator_context_js())
}

/// Merges `traits` into the JSON object `json`; `None` when not serialisable.
pub fn merge_traits(json: &str, traits: &JsValue) -> Option<String> {
    merge_traits_js(json, traits).as_string()
}

/// `document.referrer`.
pub fn document_referrer() -> String {
    text(document_referrer_js())
}

/// `value[key]` when it is a string, else empty (`key` "0" for an array's first item).
pub fn text_prop(value: &JsValue, key: &str) -> String {
    text(text_prop_js(value, key))
}

/// `JSON.stringify` of `value` when it is an object, else of `{}`; `None` when not
/// serialisable (cyclic, BigInt, a throwing `toJSON`).
pub fn stringify_object(value: &JsValue) -> Option<String> {
    stringify_object_js(value).as_string()
}

/// A hook's text result (always a string).
fn text(value: JsValue) -> String {
    value.as_string().unwrap_or_default()
}

/// A JS function that calls `f` with its first argument, for the life of the page. Every hook
/// goes through this one closure type (and [`once`] for one-shot callbacks): each distinct
/// closure type costs its own glue in the shipped wasm.
pub fn hook(f: impl FnMut(JsValue) + 'static) -> JsValue {
    Closure::wrap(Box::new(f) as Box<dyn FnMut(JsValue)>).into_js_value()
}

/// A JS function that calls `f` once with its first argument (later calls do nothing; the JS
/// side never makes them). A [`hook`] rather than `Closure::once_into_js`, whose own
/// bookkeeping (a shared cell holding the closure until its call) would ship as well.
pub fn once(f: impl FnOnce(JsValue) + 'static) -> JsValue {
    let mut f = Some(f);
    hook(move |value| {
        if let Some(f) = f.take() {
            f(value);
        }
    })
}

/// Milliseconds since the epoch, from the browser's clock.
pub fn now_ms() -> i64 {
    date_now() as i64
}

/// 16 random bytes from `crypto.getRandomValues` (`Math.random` where Web Crypto is missing).
pub fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    bytes
}

/// A consent parameter object (`{ analytics_storage: "granted", region: [...],
/// wait_for_update: 500 }`) read in one call: per-purpose letters (`g`, `d`, `-`, in `keys`
/// order), `wait_for_update` and the regions.
pub fn read_consent_params(params: &JsValue, keys: &str) -> (String, f64, Vec<String>) {
    let parts = consent_params(params, keys);
    let list = item(&parts, 2);
    // Every element is a string (`browser.js` maps them with `String`). A loop of pushes rather
    // than `collect`, whose generic from-iterator code is larger.
    let mut regions = Vec::new();
    while let Some(region) = item(&list, regions.len() as u32).as_string() {
        regions.push(region);
    }
    (
        text_prop(&parts, "0"),
        item(&parts, 1).as_f64().unwrap_or(0.0),
        regions,
    )
}

/// What the collector answered; `status` 0 when no response arrived.
#[derive(Debug, Default)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `Retry-After` header.
    pub retry_after: String,
    /// `messageId`s of `results` entries with `status: "rejected"`.
    pub rejected: Vec<String>,
    /// The ID the collector echoes from its cookie (empty when none).
    pub anonymous_id: String,
}

/// POSTs `body` as `text/plain` (a CORS-safelisted type, so no preflight) with `keepalive`, so the
/// request survives the page unloading; `done` gets the answer.
pub fn post(url: &str, body: &str, done: impl FnOnce(Answer) + 'static) {
    let callback = once(move |answer| {
        let text = |i| text_prop(&answer, i);
        let mut rejected = Vec::new();
        for id in seam_core::format::ascii::split_ascii(&text("2"), b'\n') {
            if !id.is_empty() {
                rejected.push(id.to_owned());
            }
        }
        done(Answer {
            status: item(&answer, 0).as_f64().unwrap_or(0.0) as u16,
            retry_after: text("1"),
            rejected,
            anonymous_id: text("3"),
        })
    });
    post_js(url, body, &callback);
}

/// Calls `f` once after `ms` milliseconds.
pub fn after(ms: u64, f: impl FnOnce() + 'static) {
    after_js(&once(move |_| f()), ms as f64);
}

/// Logs to the console (debug mode only; callers decide).
pub fn log(message: &str) {
    warn(message);
}
