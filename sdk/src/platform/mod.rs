//! Everything that touches the browser. The rest of the SDK sees plain Rust values.
//!
//! Every function here swallows browser errors (private-mode storage, blocked fetch, missing
//! `window` in a worker) and reports them as `None`/`false`: the SDK must never throw into the
//! host page.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response, Storage};

/// Milliseconds since the epoch, from the browser's clock.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// 16 random bytes from `crypto.getRandomValues` (via getrandom).
pub fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No Web Crypto (very old or locked-down runtimes): fall back rather than fail.
        for b in &mut bytes {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes
}

fn local_storage() -> Option<Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// Reads a localStorage entry.
pub fn storage_get(key: &str) -> Option<String> {
    local_storage()?.get_item(key).ok().flatten()
}

/// Writes a localStorage entry; false when storage is unavailable or full.
pub fn storage_set(key: &str, value: &str) -> bool {
    local_storage().is_some_and(|s| s.set_item(key, value).is_ok())
}

/// Removes a localStorage entry.
pub fn storage_remove(key: &str) {
    if let Some(s) = local_storage() {
        let _ = s.remove_item(key);
    }
}

/// What the SDK reports about the current page (`context.page`).
#[derive(Debug, Clone, Default)]
pub struct PageInfo {
    /// Full URL.
    pub url: String,
    /// Path.
    pub path: String,
    /// Query string including `?`.
    pub search: String,
    /// Document title.
    pub title: String,
    /// `document.referrer`.
    pub referrer: String,
}

/// The current page, when running in a window.
pub fn page_info() -> Option<PageInfo> {
    let window = web_sys::window()?;
    let location = window.location();
    let document = window.document()?;
    Some(PageInfo {
        url: location.href().ok()?,
        path: location.pathname().unwrap_or_default(),
        search: location.search().unwrap_or_default(),
        title: document.title(),
        referrer: document.referrer(),
    })
}

/// `navigator.userAgent` and `navigator.language`.
pub fn user_agent_and_locale() -> (Option<String>, Option<String>) {
    match web_sys::window().map(|w| w.navigator()) {
        Some(n) => (n.user_agent().ok(), n.language()),
        None => (None, None),
    }
}

/// A collector response: status and, when it was JSON, the parsed body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Parsed JSON body (`undefined` when absent or not JSON).
    pub body: JsValue,
}

/// POSTs `body` as `text/plain` (a CORS-safelisted type, so no preflight) with `keepalive`, so the
/// request survives the page unloading. `None` when no response arrived.
pub async fn post_text(url: &str, body: &str) -> Option<Reply> {
    let window = web_sys::window()?;
    let init = RequestInit::new();
    init.set_method("POST");
    // web-sys has no setter for `keepalive`; RequestInit is a plain dictionary, so set it directly.
    let _ = js_sys::Reflect::set(&init, &JsValue::from_str("keepalive"), &JsValue::TRUE);
    init.set_body(&JsValue::from_str(body));
    let request = Request::new_with_str_and_init(url, &init).ok()?;
    request
        .headers()
        .set("Content-Type", "text/plain;charset=UTF-8")
        .ok()?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .ok()?
        .dyn_into()
        .ok()?;
    let body = match response.json() {
        Ok(promise) => JsFuture::from(promise).await.unwrap_or(JsValue::UNDEFINED),
        Err(_) => JsValue::UNDEFINED,
    };
    Some(Reply {
        status: response.status(),
        body,
    })
}

/// Calls `f` every `ms` milliseconds for the life of the page.
pub fn every(ms: i32, f: impl FnMut() + 'static) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let callback = Closure::<dyn FnMut()>::new(f);
    let _ = window.set_interval_with_callback_and_timeout_and_arguments_0(
        callback.as_ref().unchecked_ref(),
        ms,
    );
    // The timer lives as long as the page, so the closure must too.
    callback.forget();
}

/// Calls `f` when the page is hidden or unloaded (`pagehide`, `visibilitychange` to hidden): the
/// last reliable moment to send.
pub fn on_page_hide(f: impl Fn() + 'static) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let f = std::rc::Rc::new(f);
    let on_hide = {
        let f = f.clone();
        Closure::<dyn FnMut()>::new(move || f())
    };
    let on_visibility = Closure::<dyn FnMut()>::new(move || {
        let hidden = web_sys::window()
            .and_then(|w| w.document())
            .is_some_and(|d| d.visibility_state() == web_sys::VisibilityState::Hidden);
        if hidden {
            f();
        }
    });
    let _ = window.add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
    if let Some(document) = window.document() {
        let _ = document.add_event_listener_with_callback(
            "visibilitychange",
            on_visibility.as_ref().unchecked_ref(),
        );
    }
    on_hide.forget();
    on_visibility.forget();
}

/// Logs to the console (debug mode only; callers decide).
pub fn log(message: &str) {
    web_sys::console::warn_1(&JsValue::from_str(message));
}
