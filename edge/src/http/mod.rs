//! HTTP details shared by routes: request facts, CORS, the first-party ID cookie, and
//! admission (who may call: write keys with their source, origin and rate limits; admin keys
//! with their scopes).

pub mod admin;
pub mod admission;
pub mod limits;

use seam_core::collect::cookie::{self, CookieAction};
use seam_core::collect::enrich::{Geo, RequestFacts};
use wasm_bindgen::JsValue;
use worker::{Headers, Request};

/// Name of the collector's HttpOnly first-party ID cookie. The `__Host-` prefix makes browsers
/// accept it only from this very host (Secure, `Path=/`, no `Domain`): a page on a sibling
/// subdomain cannot plant its own sealed cookie for the whole site ("cookie tossing", which
/// would put the victim's browsing, and their profile once they sign in, on an ID the attacker
/// holds and can ask `/v1/decide` about).
pub const ID_COOKIE: &str = "__Host-seam_id";
/// The cookie's name before 2026-12-06, which any subdomain could set. Never believed; ingest
/// answers to same-site requests that bring it delete it.
pub const OLD_ID_COOKIE: &str = "seam_id";
/// The cookies the SDK keeps in step with the visitor's consent: `0` when personalisation
/// (`personalization_storage` or `ad_personalization`) is denied. `__Host-` when host-only (the
/// SDK since 2026-12-06), the plain name with the SDK's `cookie.domain` (and before).
const CONSENT_COOKIES: [&str; 2] = ["__Host-seam_personalise", "seam_personalise"];
/// The ID cookie's attributes (those `__Host-` requires, and `SameSite=Lax`).
const ID_COOKIE_ATTRIBUTES: &str = "Path=/; HttpOnly; Secure; SameSite=Lax";
const ONE_YEAR_SECONDS: u32 = 365 * 24 * 60 * 60;

/// A request header, if present.
pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// The request body, refused (413) over `max` bytes: by its declared length before reading.
pub async fn capped_body(req: &mut Request, max: usize) -> Result<Vec<u8>, crate::error::ApiError> {
    use seam_core::collect::ingest::RequestError;
    let declared = header(req, "Content-Length").and_then(|n| n.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(RequestError::TooLarge.into());
    }
    let body = req
        .bytes()
        .await
        .map_err(|_| crate::error::ApiError::InvalidBody)?;
    if body.len() > max {
        return Err(RequestError::TooLarge.into());
    }
    Ok(body)
}

/// The `Origin` header when it names another origin than the request's own. Same-origin requests
/// need no CORS.
pub fn cross_origin(req: &Request) -> Option<String> {
    let origin = header(req, "Origin")?;
    let own = req.url().ok().map(|u| u.origin().ascii_serialization());
    (own.as_deref() != Some(origin.as_str())).then_some(origin)
}

/// Whether the browser says this request comes from the site itself (`Sec-Fetch-Site`).
pub fn is_same_site(req: &Request) -> bool {
    matches!(
        header(req, "Sec-Fetch-Site").as_deref(),
        Some("same-origin" | "same-site")
    )
}

/// The ID in our cookie, when the Worker sealed it with `key` (see `cookie`): a cookie a
/// client wrote itself, or one from before the cookie was sealed, counts for nothing.
pub fn cookie_id(req: &Request, key: Option<&[u8; 32]>) -> Option<String> {
    let key = key?;
    // A browser holds one `__Host-` cookie of a name for a host, so a second value was planted
    // some other way (as a nameless cookie, in older browsers): neither is believed.
    match cookies(req, ID_COOKIE).as_slice() {
        [value] => cookie::open(key, value),
        _ => None,
    }
}

/// Every value sent for the cookie `name` (a browser may send several with one name). Only
/// spaces and tabs around a pair are dropped: a browser keeps a name with other whitespace in
/// front (U+2000, U+00A0) as a name of its own, free of the `__Host-` rules, so it must not
/// read as the prefixed one here.
pub fn cookies(req: &Request, name: &str) -> Vec<String> {
    let blank = |c: char| c == ' ' || c == '\t';
    header(req, "Cookie")
        .unwrap_or_default()
        .split(';')
        .filter_map(|c| c.trim_matches(blank).split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches(blank).to_owned())
        .collect()
}

/// Whether the SDK's consent cookie says the visitor refused personalisation. Any `0` counts:
/// another subdomain can plant a `1` of the plain name, never lift the visitor's refusal.
pub fn personalisation_refused(req: &Request) -> bool {
    CONSENT_COOKIES
        .iter()
        .any(|name| cookies(req, name).iter().any(|v| v == "0"))
}

/// A cookie's value (the first sent with that name).
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    cookies(req, name).into_iter().next()
}

fn cf_string(cf: &JsValue, key: &str) -> Option<String> {
    worker::js_sys::Reflect::get(cf, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_string())
        .filter(|s| !s.is_empty())
}

/// What the request itself tells about the client; `cookie_key` opens the ID cookie.
pub fn facts(req: &Request, cookie_key: Option<&[u8; 32]>) -> RequestFacts {
    // Read `request.cf` directly: the worker crate's typed getters unwrap, and a panic would
    // kill the isolate. Locally (wrangler dev) this is a placeholder object.
    let cf = worker::js_sys::Reflect::get(req.inner().as_ref(), &JsValue::from_str("cf"))
        .ok()
        .filter(|v| v.is_object());
    let geo = cf.map(|cf| Geo {
        country: cf_string(&cf, "country"),
        region: cf_string(&cf, "region"),
        city: cf_string(&cf, "city"),
        timezone: cf_string(&cf, "timezone"),
    });
    RequestFacts {
        ip: header(req, "CF-Connecting-IP"),
        user_agent: header(req, "User-Agent"),
        gpc: header(req, "Sec-GPC").is_some_and(|v| v.trim() == "1"),
        geo: geo.filter(|g| g != &Geo::default()),
        cookie_id: cookie_id(req, cookie_key),
    }
}

/// Adds the CORS headers that let a browser on `origin` read the response (and send cookies).
pub fn allow_origin(headers: &mut Headers, origin: &str) -> worker::Result<()> {
    headers.set("Access-Control-Allow-Origin", origin)?;
    headers.set("Access-Control-Allow-Credentials", "true")?;
    headers.append("Vary", "Origin")
}

/// Headers of a successful preflight.
pub fn preflight_headers(headers: &mut Headers, origin: &str) -> worker::Result<()> {
    allow_origin(headers, origin)?;
    headers.set("Access-Control-Allow-Methods", "POST, OPTIONS")?;
    headers.set(
        "Access-Control-Allow-Headers",
        "Content-Type, Authorization, Content-Encoding, X-Retry-Count",
    )?;
    headers.set("Access-Control-Max-Age", "86400")
}

/// The `Set-Cookie` value for a cookie decision, if any: a set cookie is sealed with `key`
/// (none without one).
pub fn set_cookie(action: &CookieAction, key: Option<&[u8; 32]>) -> Option<String> {
    let attributes = ID_COOKIE_ATTRIBUTES;
    match action {
        CookieAction::Keep => None,
        CookieAction::Set(id) => Some(format!(
            "{ID_COOKIE}={}; Max-Age={ONE_YEAR_SECONDS}; {attributes}",
            cookie::seal(key?, id)
        )),
        CookieAction::Clear => Some(format!("{ID_COOKIE}=; Max-Age=0; {attributes}")),
    }
}

/// The `Set-Cookie` value deleting the cookie of the old name, when a same-site request brought
/// one (a copy some subdomain set for the whole site has its own `Domain` and stays; it is
/// ignored all the same).
pub fn clear_old_cookie(req: &Request) -> Option<String> {
    (is_same_site(req) && cookie(req, OLD_ID_COOKIE).is_some())
        .then(|| format!("{OLD_ID_COOKIE}=; Max-Age=0; {ID_COOKIE_ATTRIBUTES}"))
}
