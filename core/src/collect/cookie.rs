//! The collector's first-party ID cookie (`seam_id`): `<id>.<mac>`, the MAC an HMAC under a
//! key only the Worker holds.
//!
//! The ID travels: it becomes the events' `anonymousId`, the SDK adopts it, destinations get
//! it (GA4's `client_id`, Klaviyo's `anonymous_id`). The cookie itself stays in the browser's
//! cookie jar (`HttpOnly`). So knowing a visitor's ID is not enough to read their decisions or
//! to tie another browser to them: only a cookie the Worker sealed counts, and the Worker seals
//! only IDs it chose itself ([`cookie_action`]), never one a request names.

use crate::collect::auth::constant_time_eq;
use crate::collect::ingest::Decoded;
use crate::collect::proof::hmac_sha256;
use crate::consent::{ConsentState, Purpose};
use crate::format::encode::hex;
use crate::format::id;

/// Bytes of the MAC kept in the cookie (128 bits, as hex).
const MAC_BYTES: usize = 16;
/// An ID the cookie may carry: a UUID, or a long enough token of URL-safe characters.
const MAX_ID_BYTES: usize = 64;

/// The cookie key, derived from a Worker secret (its own domain, so it never equals a key
/// made from the same secret for something else).
pub fn key(secret: &[u8]) -> [u8; 32] {
    hmac_sha256(secret, b"seam cookie v1")
}

/// The cookie value that proves the Worker issued `id` to this browser.
pub fn seal(key: &[u8; 32], id: &str) -> String {
    format!("{id}.{}", hex(&mac(key, id)))
}

/// The ID in a sealed cookie value; `None` for anything the Worker did not seal with `key`
/// (including the bare IDs earlier versions wrote).
pub fn open(key: &[u8; 32], value: &str) -> Option<String> {
    let (id, sent) = value.rsplit_once('.')?;
    if !is_id(id) || sent.len() != MAC_BYTES * 2 {
        return None;
    }
    let expected = hex(&mac(key, id));
    constant_time_eq(expected.as_bytes(), sent.to_ascii_lowercase().as_bytes())
        .then(|| id.to_owned())
}

fn mac(key: &[u8; 32], id: &str) -> [u8; MAC_BYTES] {
    let full = hmac_sha256(key, id.as_bytes());
    let mut out = [0u8; MAC_BYTES];
    out.copy_from_slice(&full[..MAC_BYTES]);
    out
}

fn is_id(value: &str) -> bool {
    value.len() <= MAX_ID_BYTES && is_cookie_safe(value) && !value.contains('.')
}

/// What to do with the collector's first-party ID cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieAction {
    /// Leave it as it is.
    Keep,
    /// (Re)set it to this ID for another year.
    Set(String),
    /// Delete it (analytics consent was withdrawn).
    Clear,
}

/// Decides the cookie from the most recent event in the request that states consent. Only
/// same-site browser requests get a cookie. `cookie_id` is the ID of a cookie the Worker
/// sealed ([`open`]): it wins, so the ID stays stable when the browser's own storage was wiped
/// (Safari caps script-set storage at 7 days). Without one the cookie gets a `fresh` ID, never
/// the request's `anonymousId`: a request can name anyone's ID, and sealing it would hand that
/// person's identity to whoever sent it.
pub fn cookie_action(
    decoded: &Decoded,
    cookie_id: Option<&str>,
    same_site: bool,
    fresh: impl FnOnce() -> String,
) -> CookieAction {
    if !same_site {
        return CookieAction::Keep;
    }
    let latest = decoded
        .valid()
        .map(|e| (e, ConsentState::from_context(e.body.get("context"), false)))
        .filter(|(_, consent)| consent.is_known())
        .max_by_key(|(e, _)| e.timestamp_ms);
    match latest {
        None => CookieAction::Keep,
        Some((_, consent)) if !consent.allows(Purpose::AnalyticsStorage) => match cookie_id {
            Some(_) => CookieAction::Clear,
            None => CookieAction::Keep,
        },
        Some(_) => CookieAction::Set(cookie_id.map_or_else(fresh, str::to_owned)),
    }
}

/// IDs we are willing to put in a cookie: short, and only URL/cookie-safe characters.
pub fn is_cookie_safe(value: &str) -> bool {
    (8..=100).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && (id::is_uuid(value) || value.len() >= 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ingest::decoded_batch;
    use serde_json::json;

    const AID: &str = "0b6b1c3e-2a5f-4c1e-9a7d-3f2e1d0c9b8a";
    const EXISTING: &str = "11111111-2222-4333-8444-555555555555";
    const FRESH: &str = "99999999-8888-4777-8666-555555555555";

    fn fresh() -> String {
        FRESH.into()
    }

    #[test]
    fn opens_only_what_it_sealed_with_its_own_key() {
        let k = key(b"a long random secret");
        let sealed = seal(&k, AID);
        assert!(sealed.starts_with(&format!("{AID}.")));
        assert!(is_cookie_safe(&sealed));
        assert_eq!(open(&k, &sealed).as_deref(), Some(AID));
        assert_eq!(
            open(&k, &sealed.to_ascii_uppercase()),
            None,
            "the ID is case-sensitive"
        );

        assert_eq!(open(&key(b"another secret"), &sealed), None);
        assert_eq!(open(&k, AID), None, "a bare ID (earlier versions' cookie)");
        let (_, mac) = sealed.rsplit_once('.').unwrap();
        assert_eq!(
            open(&k, &format!("{EXISTING}.{mac}")),
            None,
            "a MAC moved to another ID"
        );
        assert_eq!(open(&k, &sealed[..sealed.len() - 1]), None);
        assert_eq!(open(&k, &format!("{sealed}0")), None);
        assert_eq!(open(&k, ""), None);
        assert_eq!(open(&k, "."), None);
    }

    #[test]
    fn cookie_is_set_only_with_analytics_consent_on_same_site_requests() {
        let granted = decoded_batch(json!([{"type": "page", "anonymousId": AID,
            "context": {"consent": {"categoryPreferences": {"analytics_storage": true}}}}]));
        assert_eq!(
            cookie_action(&granted, None, true, fresh),
            CookieAction::Set(FRESH.into()),
            "a new cookie gets the Worker's ID, not the anonymousId the request names"
        );
        assert_eq!(
            cookie_action(&granted, None, false, fresh),
            CookieAction::Keep
        );
        assert_eq!(
            cookie_action(&granted, Some(EXISTING), true, fresh),
            CookieAction::Set(EXISTING.into())
        );

        let denied = decoded_batch(json!([{"type": "page", "anonymousId": AID,
            "context": {"consent": {"categoryPreferences": {"analytics_storage": false}}}}]));
        assert_eq!(
            cookie_action(&denied, None, true, fresh),
            CookieAction::Keep
        );
        assert_eq!(
            cookie_action(&denied, Some(EXISTING), true, fresh),
            CookieAction::Clear
        );

        let silent = decoded_batch(json!([{"type": "page", "anonymousId": AID}]));
        assert_eq!(
            cookie_action(&silent, Some(EXISTING), true, fresh),
            CookieAction::Keep
        );
    }

    #[test]
    fn latest_consent_in_the_request_decides_the_cookie() {
        let d = decoded_batch(json!([
            {"type": "page", "anonymousId": AID, "timestamp": "2026-01-01T00:00:02Z",
             "context": {"consent": {"gcm": {"analytics_storage": "denied"}}}},
            {"type": "page", "anonymousId": AID, "timestamp": "2026-01-01T00:00:01Z",
             "context": {"consent": {"gcm": {"analytics_storage": "granted"}}}}
        ]));
        assert_eq!(
            cookie_action(&d, Some(AID), true, fresh),
            CookieAction::Clear
        );
        assert!(!is_cookie_safe("a;b=c"));
        assert!(!is_cookie_safe("short"));
    }
}
