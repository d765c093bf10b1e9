//! # seam-sdk
//!
//! Seam's browser SDK, compiled to WebAssembly and shipped as an npm package (`@seam/sdk`).
//! It owns consent state (Google Consent Mode v2 fed by the site, gtag/dataLayer commands, IAB
//! TCF v2.2 and GPC), first-party IDs (cookie + localStorage, only with `analytics_storage`),
//! and a durable queue shared by the site's tabs that batches Segment-compatible events to the
//! Seam edge collector with `fetch(keepalive)` and a `text/plain` body (no CORS preflight),
//! retrying with backoff until the collector has them.
//!
//! This file holds every `#[wasm_bindgen]` export; browser APIs live in [`platform`], state and
//! behaviour in [`client`]. No export throws into the host page: bad input is logged in debug
//! mode and ignored.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod client;
pub mod platform;

/// The shipped build's panic handler (`--features panic-trap`, set by scripts/build.sh): trap
/// without formatting a message. std's handler would bring ~2 KB gzip of formatting code; test
/// builds link std and use its handler.
#[cfg(all(feature = "panic-trap", target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

use alloc::borrow::ToOwned;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

use seam_core::consent::TcfSignal;
use wasm_bindgen::prelude::*;

use client::{flush_on_hide, install, spawn_flush, with_client, Config};

/// Starts the SDK: `load({ writeKey, endpoint?, consent?, cookie?, flushAt?, flushInterval?,
/// debug?, preConsent?, queueBytes?, autoPage?, region? })`. Returns false (and logs) when the
/// options are unusable.
#[wasm_bindgen]
pub fn load(options: JsValue) -> bool {
    let config = match Config::from_js(&options) {
        Ok(config) => config,
        Err(reason) => {
            platform::log(reason);
            return false;
        }
    };
    let interval = config.flush_interval_ms;
    if install(config, &options) {
        platform::every(&platform::hook(|_| spawn_flush()), interval);
        platform::on_hide(&platform::hook(|_| flush_on_hide()));
        platform::on_online(&platform::hook(|_| spawn_flush()));
        platform::watch_history(&platform::hook(|_| after(|c| c.navigated())));
        platform::watch_data_layer(&platform::hook(|command| {
            let name = platform::text_prop(&command, "0");
            let params = platform::item(&command, 1);
            with_client(|c| c.consent_command(&name, &params));
        }));
        platform::listen_tcf(&platform::hook(|d| {
            let number = |i| platform::item(&d, i).as_f64().unwrap_or(0.0) as u16;
            let signal = TcfSignal {
                gdpr_applies: platform::item(&d, 0).is_truthy(),
                consents: number(1),
                legitimate_interests: number(2),
                tc_string: platform::item(&d, 3).as_string(),
            };
            with_client(|c| c.tcf_signal(signal));
        }));
        // Events stored by earlier pages go out now.
        spawn_flush();
    }
    true
}

/// Runs a recording call on the client and starts a flush when the queue is due.
fn after(f: impl FnOnce(&mut client::Client) -> bool) {
    if with_client(f) == Some(true) {
        spawn_flush();
    }
}

// The exports take their text arguments as JS values (strings from the package entry, or
// undefined) read with `as_string`: the glue then passes every argument as it is, with no string
// copy (and, for two strings, no clean-up on a throw) per export.

/// Records a user action: `track("Product Viewed", { product_id: "p1" })`.
#[wasm_bindgen]
pub fn track(event: JsValue, properties: JsValue) {
    let event = event.as_string().unwrap_or_default();
    if !seam_core::format::ascii::trim(&event).is_empty() {
        after(|c| c.track(&event, &properties));
    }
}

/// Records a page view: `page()`, `page("Product")`, `page("Product", { sku })`.
#[wasm_bindgen]
pub fn page(name: JsValue, properties: JsValue) {
    after(|c| c.page(name.as_string(), &properties));
}

/// Says who the user is: `identify("u1", { email })`, or `identify(undefined, { plan })`.
#[wasm_bindgen]
pub fn identify(user_id: JsValue, traits: JsValue) {
    after(|c| c.identify(user_id.as_string(), &traits));
}

/// Puts the user in a group (account): `group("acme", { plan: "pro" })`.
#[wasm_bindgen]
pub fn group(group_id: JsValue, traits: JsValue) {
    let group_id = group_id.as_string().unwrap_or_default();
    if !group_id.is_empty() {
        after(|c| c.group(group_id, &traits));
    }
}

/// Joins `previousId` (default: the current user or anonymous ID) to `userId`.
#[wasm_bindgen]
pub fn alias(user_id: JsValue, previous_id: JsValue) {
    let user_id = user_id.as_string().unwrap_or_default();
    if !user_id.is_empty() {
        after(|c| c.alias(user_id, previous_id.as_string()));
    }
}

/// Records the visitor's choice: `consentUpdate({ analytics_storage: "granted" })`.
#[wasm_bindgen(js_name = consentUpdate)]
pub fn consent_update(values: JsValue) {
    with_client(|c| c.consent_command("update", &values));
    spawn_flush();
}

/// The consent in force, as events carry it: `{ categoryPreferences, gcm, tcString?, gpc? }`.
#[wasm_bindgen(js_name = consentGet)]
pub fn consent_get() -> JsValue {
    with_client(|c| platform::parse_json(c.consent_json())).unwrap_or(JsValue::UNDEFINED)
}

/// Sends everything due now. Resolves when the queue is empty or the collector is unreachable.
#[wasm_bindgen]
pub fn flush() -> JsValue {
    let done = platform::flush_waiter();
    client::flush();
    done
}

/// The current anonymous ID (empty before `load()`).
#[wasm_bindgen(js_name = anonymousId)]
pub fn anonymous_id() -> JsValue {
    // A JS string made from the borrowed ID: no owned copy handed over and shrunk to fit.
    JsValue::from_str(&with_client(|c| c.anonymous_id().to_owned()).unwrap_or_default())
}

/// Forgets the IDs and traits and drops queued events.
#[wasm_bindgen]
pub fn reset() {
    with_client(|c| c.reset());
}

/// Number of events waiting to be sent (for diagnostics and tests).
#[wasm_bindgen]
pub fn pending() -> usize {
    with_client(|c| c.pending()).unwrap_or(0)
}
