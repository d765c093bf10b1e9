//! The collector's first-party ID cookie (`__Host-seam_id`): `<id>.<mac>`, the MAC an HMAC
//! under a key only the Worker holds.
//!
//! The ID travels: it becomes the events' `anonymousId`, the SDK adopts it, destinations get
//! it (GA4's `client_id`, Klaviyo's `anonymous_id`). The cookie itself stays in the browser's
//! cookie jar (`HttpOnly`). So knowing a visitor's ID is not enough to read their decisions or
//! to tie another browser to them: only a cookie the Worker sealed counts, and the Worker seals
//! only IDs it chose itself ([`cookie_action`]), never one a request names.

use serde_json::Value;

use crate::collect::auth::constant_time_eq;
use crate::collect::enrich::RequestFacts;
use crate::collect::event::Event;
use crate::collect::ingest::{Decoded, Outcome};
use crate::collect::proof::{hmac_sha256, seam_of};
use crate::collect::source::{Source, SourceKind};
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
    // One spelling only (lower-case hex, as `seal` writes it).
    let expected = hex(&mac(key, id));
    constant_time_eq(expected.as_bytes(), sent.as_bytes()).then(|| id.to_owned())
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

/// A new visitor ID for a cookie: a UUID of version 8 (RFC 9562's own-format version), so an ID
/// the Worker issued is told apart from the version-4 IDs scripts make ([`is_issued`]).
pub fn issue(random: [u8; 16]) -> String {
    let mut id = id::uuid_v4(random);
    // The same layout and variant; only the version digit differs.
    id.replace_range(14..15, "8");
    id
}

/// Whether `id` looks like one the Worker issued for a cookie ([`issue`]).
pub fn is_issued(id: &str) -> bool {
    id::is_uuid(id) && id.as_bytes()[14] == b'8'
}

impl Decoded {
    /// Gives every event of a browser request that came with the collector's sealed cookie (or
    /// gets one now) the cookie's ID as its `anonymousId`. An anonymousId that differs is the
    /// script's stale copy, or an ID someone else holds: it is replaced, so it never ties this
    /// browser to that ID's profile. Without a cookie, an anonymousId the Worker issued
    /// ([`is_issued`]) belongs to a browser that holds its cookie, and this request did not bring
    /// it: the ID is dropped (`context.seam.unprovenAnonymousId` says so), so it joins nothing
    /// and sets no consent and no traits. Before consent is recorded, so consent goes to the
    /// browser that gave it. Server sources name whom they like, and a source that trusts
    /// browsers (or an admin's import through one) is believed.
    pub fn bind_cookie(mut self, facts: &RequestFacts, source: &Source) -> Self {
        if source.kind != SourceKind::Browser {
            return self;
        }
        let Some(id) = &facts.cookie_id else {
            if source.is_trusted() {
                return self;
            }
            for outcome in &mut self.outcomes {
                if let Outcome::Valid(event) = outcome {
                    if event.anonymous_id.as_deref().is_some_and(is_issued) {
                        unclaim(event);
                    }
                }
            }
            return self;
        };
        for outcome in &mut self.outcomes {
            if let Outcome::Valid(event) = outcome {
                if event.anonymous_id.as_deref() != Some(id) {
                    event
                        .body
                        .insert("anonymousId".into(), Value::from(id.clone()));
                    event.anonymous_id = Some(id.clone());
                }
            }
        }
        self
    }
}

/// Takes an unproven anonymousId off `event`. The ID itself is not kept: a copy would be an
/// identifier that suppression, erasure and consent stripping do not look for.
fn unclaim(event: &mut Event) {
    if event.body.remove("anonymousId").is_none() {
        return;
    }
    event.anonymous_id = None;
    if let Some(seam) = seam_of(&mut event.body) {
        seam.insert("unprovenAnonymousId".into(), Value::Bool(true));
    }
}

/// Whether the browser asks for a new cookie ID (`context.seam.newId`, which the SDK's `reset`
/// sends): the next person on a shared browser must not carry on as the last. A browser may
/// only ever renew its own cookie, to an ID the Worker chooses.
pub fn asks_new_id(decoded: &Decoded) -> bool {
    decoded.valid().any(|e| {
        e.body
            .get("context")
            .and_then(|c| c.get("seam"))
            .and_then(|s| s.get("newId"))
            == Some(&Value::Bool(true))
    })
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
/// same-site browser requests get a cookie. `cookie_id` is the ID of a cookie the Worker sealed
/// ([`open`]): it wins, so the ID stays stable when the browser's own storage was wiped (Safari
/// caps script-set storage at 7 days). Without one the cookie gets a `fresh` ID (`None` when
/// the Worker has no key to seal it with), never the request's `anonymousId`: a request can
/// name anyone's ID, and sealing it would hand that person's identity to whoever sent it.
/// A withdrawal deletes any ID cookie the request brought (`present`), sealed or not.
pub fn cookie_action(
    decoded: &Decoded,
    cookie_id: Option<&str>,
    present: bool,
    same_site: bool,
    fresh: Option<impl FnOnce() -> String>,
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
        Some((_, consent)) if !consent.allows(Purpose::AnalyticsStorage) => match present {
            true => CookieAction::Clear,
            false => CookieAction::Keep,
        },
        Some(_) => match cookie_id {
            Some(id) => CookieAction::Set(id.to_owned()),
            None => fresh.map_or(CookieAction::Keep, |fresh| CookieAction::Set(fresh())),
        },
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
    use crate::collect::source::parse_source;
    use crate::format::id;
    use serde_json::{json, Value};

    const AID: &str = "0b6b1c3e-2a5f-4c1e-9a7d-3f2e1d0c9b8a";
    const EXISTING: &str = "11111111-2222-4333-8444-555555555555";
    const FRESH: &str = "99999999-8888-4777-8666-555555555555";

    fn fresh() -> Option<fn() -> String> {
        Some(|| FRESH.into())
    }

    #[test]
    fn opens_only_what_it_sealed_with_its_own_key() {
        let k = key(b"a long random secret");
        let sealed = seal(&k, AID);
        assert!(sealed.starts_with(&format!("{AID}.")));
        assert!(is_cookie_safe(&sealed));
        assert_eq!(open(&k, &sealed).as_deref(), Some(AID));
        let (id, mac) = sealed.rsplit_once('.').unwrap();
        assert_eq!(
            open(&k, &format!("{}.{mac}", id.to_ascii_uppercase())),
            None
        );
        assert_eq!(
            open(&k, &format!("{id}.{}", mac.to_ascii_uppercase())),
            None,
            "one spelling"
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
    fn the_sealed_cookie_replaces_the_anonymous_id_a_browser_request_names() {
        let facts = RequestFacts {
            cookie_id: Some(AID.into()),
            ..RequestFacts::default()
        };
        let browser = parse_source("k", &json!({"id": "shop"})).unwrap();
        let events = json!([
            {"type": "page", "anonymousId": "someone-elses-id", "messageId": "m1"},
            {"type": "identify", "userId": "u-1", "messageId": "m2"},
            {"type": "page", "anonymousId": AID, "messageId": "m3"},
        ]);
        let bound = decoded_batch(events.clone()).bind_cookie(&facts, &browser);
        for event in bound.valid() {
            assert_eq!(
                event.anonymous_id.as_deref(),
                Some(AID),
                "{}",
                event.message_id
            );
            assert_eq!(event.body["anonymousId"], json!(AID));
        }
        let unbound = decoded_batch(events.clone()).bind_cookie(&RequestFacts::default(), &browser);
        assert_eq!(
            unbound.valid().next().unwrap().anonymous_id.as_deref(),
            Some("someone-elses-id"),
            "no cookie: as sent"
        );
        let server = parse_source("k", &json!({"id": "s", "kind": "server"})).unwrap();
        assert_eq!(server.kind, SourceKind::Server);
        let kept = decoded_batch(events).bind_cookie(&facts, &server);
        assert_eq!(
            kept.valid().next().unwrap().anonymous_id.as_deref(),
            Some("someone-elses-id"),
            "a server source names whom it likes"
        );
    }

    #[test]
    fn cookie_is_set_only_with_analytics_consent_on_same_site_requests() {
        let granted = decoded_batch(json!([{"type": "page", "anonymousId": AID,
            "context": {"consent": {"categoryPreferences": {"analytics_storage": true}}}}]));
        assert_eq!(
            cookie_action(&granted, None, false, true, fresh()),
            CookieAction::Set(FRESH.into()),
            "a new cookie gets the Worker's ID, not the anonymousId the request names"
        );
        assert_eq!(
            cookie_action(&granted, None, false, false, fresh()),
            CookieAction::Keep
        );
        assert_eq!(
            cookie_action(&granted, Some(EXISTING), true, true, fresh()),
            CookieAction::Set(EXISTING.into())
        );

        let denied = decoded_batch(json!([{"type": "page", "anonymousId": AID,
            "context": {"consent": {"categoryPreferences": {"analytics_storage": false}}}}]));
        assert_eq!(
            cookie_action(&denied, None, false, true, fresh()),
            CookieAction::Keep
        );
        assert_eq!(
            cookie_action(&denied, Some(EXISTING), true, true, fresh()),
            CookieAction::Clear
        );

        assert_eq!(
            cookie_action(&denied, None, true, true, fresh()),
            CookieAction::Clear,
            "an unsealed cookie goes too"
        );
        assert_eq!(
            cookie_action(&granted, None, false, true, None::<fn() -> String>),
            CookieAction::Keep,
            "no key to seal a new cookie with"
        );

        let silent = decoded_batch(json!([{"type": "page", "anonymousId": AID}]));
        assert_eq!(
            cookie_action(&silent, Some(EXISTING), true, true, fresh()),
            CookieAction::Keep
        );
    }

    #[test]
    fn issued_ids_are_version_8_uuids_and_scripts_ids_are_not() {
        let issued = issue([0xab; 16]);
        assert!(id::is_uuid(&issued));
        assert_eq!(&issued[14..15], "8");
        assert!(is_issued(&issued));
        assert!(is_cookie_safe(&issued));
        assert!(!is_issued(&id::uuid_v4([0xab; 16])));
        assert!(!is_issued(AID));
        assert_ne!(issue([1; 16]), issue([2; 16]));
    }

    #[test]
    fn without_its_cookie_an_issued_id_is_only_a_claim() {
        let browser = parse_source("k", &json!({"id": "shop"})).unwrap();
        let theirs = issue([7; 16]);
        let events = json!([
            {"type": "identify", "anonymousId": theirs, "userId": "u-1", "traits": {"plan": "x"}, "messageId": "m1"},
            {"type": "page", "anonymousId": AID, "messageId": "m2"},
            {"type": "page", "anonymousId": theirs, "context": {"seam": "junk"}, "messageId": "m3"},
        ]);
        let bound = decoded_batch(events.clone()).bind_cookie(&RequestFacts::default(), &browser);
        let bound: Vec<_> = bound.valid().collect();
        assert_eq!(bound[0].anonymous_id, None);
        assert_eq!(bound[0].body.get("anonymousId"), None);
        assert_eq!(
            bound[0].body["context"]["seam"]["unprovenAnonymousId"],
            json!(true)
        );
        let kept = serde_json::to_string(&bound[0].body).unwrap();
        assert!(!kept.contains(&theirs), "the ID is kept nowhere: {kept}");
        assert_eq!(
            bound[1].anonymous_id.as_deref(),
            Some(AID),
            "a script's own ID stays"
        );
        assert_eq!(
            bound[2].body["context"]["seam"]["unprovenAnonymousId"],
            json!(true)
        );
        let trusting = parse_source("k", &json!({"id": "t", "identity": "trust-browser"})).unwrap();
        let believed =
            decoded_batch(events.clone()).bind_cookie(&RequestFacts::default(), &trusting);
        assert_eq!(
            believed.valid().next().unwrap().anonymous_id.as_deref(),
            Some(theirs.as_str()),
            "a source that trusts browsers is believed"
        );
        // With the cookie, it is the browser's own.
        let facts = RequestFacts {
            cookie_id: Some(theirs.clone()),
            ..RequestFacts::default()
        };
        let own = decoded_batch(events).bind_cookie(&facts, &browser);
        assert!(own
            .valid()
            .all(|e| e.anonymous_id.as_deref() == Some(theirs.as_str())));
    }

    #[test]
    fn a_reset_browser_asks_for_a_new_id() {
        let asks = |seam: Value| {
            asks_new_id(&decoded_batch(json!([
                {"type": "page", "anonymousId": AID, "context": {"seam": seam}}
            ])))
        };
        assert!(asks(json!({"newId": true})));
        assert!(!asks(json!({"newId": "true"})));
        assert!(!asks(json!({})));
        // As the SDK sends it: batch-level context, merged into every event.
        let body = json!({"batch": [{"type": "page", "anonymousId": AID}], "context": {"seam": {"newId": true}}});
        let decoded =
            crate::collect::ingest::decode(body.to_string().as_bytes(), None, 0, || "g".into())
                .unwrap();
        assert!(asks_new_id(&decoded));
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
            cookie_action(&d, Some(AID), true, true, fresh()),
            CookieAction::Clear
        );
        assert!(!is_cookie_safe("a;b=c"));
        assert!(!is_cookie_safe("short"));
    }
}
