//! The rules every delivery follows, whatever the destination: its ID, the consent it needs,
//! when to retry, and which URLs may be called.

use serde_json::{Map, Value};

use crate::consent::{self, ConsentState};
use crate::identity::sha256_hex;
use crate::personalise::computed::INTERNAL_EVENTS;

/// Default retry window (Segment's figure): after it, a delivery goes to the dead-letter list.
pub const DEFAULT_RETRY_WINDOW_MS: i64 = 4 * 60 * 60 * 1000;
/// First retry delay; each later one doubles, up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: i64 = 30_000;
/// Longest wait between attempts.
pub const MAX_BACKOFF_MS: i64 = 60 * 60 * 1000;

/// How long to keep retrying, and how fast.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's delay (before jitter); each later one doubles, up to `max_ms`.
    pub first_ms: i64,
    pub max_ms: i64,
    /// Measured from the first attempt.
    pub window_ms: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first_ms: FIRST_BACKOFF_MS,
            max_ms: MAX_BACKOFF_MS,
            window_ms: DEFAULT_RETRY_WINDOW_MS,
        }
    }
}

/// The stable ID of delivering one event to one destination: the same after a crash or a
/// redelivery, so the receiver can deduplicate on it (Meta `event_id` aside, which is the
/// `messageId` itself to match the browser pixel).
pub fn delivery_id(destination: &str, message_id: &str) -> String {
    let mut hex = sha256_hex(format!("{destination}\n{message_id}").as_bytes());
    hex.truncate(32);
    format!("dlv_{hex}")
}

/// What a destination does with the data, which decides the consent it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Measurement and messaging tools: need `analytics_storage`.
    Analytics,
    /// Ad platforms: need `ad_user_data`; Global Privacy Control denies them.
    Advertising,
    /// The site's own systems (an order webhook): the event was accepted, so it goes.
    Necessary,
}

/// Why an event is not delivered to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// The event's consent does not cover the destination's purpose.
    Consent,
    /// The event was stored without identifiers (consent denied analytics).
    Anonymized,
}

impl Withheld {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Withheld::Consent => "consent_denied",
            Withheld::Anonymized => "anonymized",
        }
    }
}

/// Whether `event` (a stored body) may go to a destination with `purpose`. An event without a
/// consent object is not restricted (the site did not ask), except that GPC, when the event
/// carried it, denies advertising.
pub fn permitted(event: &Value, purpose: Purpose) -> Result<(), Withheld> {
    match event.as_object() {
        Some(body) => permitted_body(body, purpose),
        None => Err(Withheld::Anonymized),
    }
}

/// [`permitted`] for a stored body.
pub fn permitted_body(body: &Map<String, Value>, purpose: Purpose) -> Result<(), Withheld> {
    let context = body.get("context");
    let anonymous = body.get("anonymousId").is_none() && body.get("userId").is_none();
    if anonymous && purpose != Purpose::Necessary {
        return Err(Withheld::Anonymized);
    }
    let consent_object = context.and_then(|c| c.get("consent"));
    // Server-made events (segment transitions, exposures) carry no consent of their own: the
    // person's may have denied advertising, so ad platforms get them only with consent shown.
    let server_made = body
        .get("event")
        .and_then(Value::as_str)
        .is_some_and(|name| INTERNAL_EVENTS.contains(&name));
    if purpose == Purpose::Advertising && server_made && consent_object.is_none() {
        return Err(Withheld::Consent);
    }
    let gpc = consent_object
        .and_then(|c| c.get("gpc"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let state = ConsentState::from_context(context, gpc);
    let allowed = match purpose {
        Purpose::Necessary => true,
        Purpose::Analytics => state.allows(consent::Purpose::AnalyticsStorage),
        Purpose::Advertising => state.allows(consent::Purpose::AdUserData),
    };
    if allowed {
        Ok(())
    } else {
        Err(Withheld::Consent)
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Delivered (2xx).
    Delivered,
    /// Try again in this many milliseconds.
    RetryIn(i64),
    /// Stop: keep it in the dead-letter list (replayable) with this reason.
    DeadLetter(String),
}

/// One attempt's outcome: the HTTP status (`None`: no response, a network error) and the
/// `Retry-After` header.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub status: Option<u16>,
    pub retry_after: Option<&'a str>,
    /// 1 for the first attempt.
    pub number: u32,
    /// When the first attempt was made, and now.
    pub first_at_ms: i64,
    pub now_ms: i64,
}

/// Decides what follows `attempt`: retry network errors, 408, 429 and 5xx with exponential
/// backoff ("equal jitter": half the delay fixed, half scaled by `jitter` in `[0, 1)`),
/// honouring `Retry-After` seconds, while the next attempt still falls inside the window; any
/// other status is final.
pub fn after(attempt: Attempt<'_>, backoff: &Backoff, jitter: f64) -> Next {
    let retryable = match attempt.status {
        Some(200..=299) => return Next::Delivered,
        None => true,
        Some(status) => status == 408 || status == 429 || (500..=599).contains(&status),
    };
    let reason = attempt
        .status
        .map_or_else(|| "network_error".to_owned(), |s| format!("http_{s}"));
    if !retryable {
        return Next::DeadLetter(reason);
    }
    let exponent = attempt.number.saturating_sub(1).min(20);
    let delay = backoff
        .first_ms
        .saturating_mul(1 << exponent)
        .min(backoff.max_ms);
    let jittered = delay / 2 + (delay as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as i64;
    let delay = match attempt
        .retry_after
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|s| *s >= 0)
    {
        Some(seconds) => seconds
            .saturating_mul(1000)
            .clamp(1000, backoff.max_ms.max(1000)),
        None => jittered.max(1000),
    };
    if attempt.now_ms.saturating_add(delay) > attempt.first_at_ms.saturating_add(backoff.window_ms)
    {
        return Next::DeadLetter(format!("{reason}_retry_window_exhausted"));
    }
    Next::RetryIn(delay)
}

/// Why a URL may not be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `https://` (plain `http` only to a local receiver, when allowed).
    #[error("destination URLs must use https")]
    NotHttps,
    /// A host that names this machine, a private network or a link-local address, or one
    /// written in a way that hides which address it is.
    #[error("destination URLs may not point at private, loopback or link-local addresses")]
    PrivateAddress,
    /// Not a URL this check can read (credentials in it, no host, odd characters).
    #[error("the destination URL is not valid")]
    Malformed,
}

impl UrlError {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            UrlError::NotHttps => "destination_url_not_https",
            UrlError::PrivateAddress => "destination_url_private",
            UrlError::Malformed => "destination_url_invalid",
        }
    }
}

/// Checks that `url` may be called: `https` to a public host. With `allow_local` (local
/// development: `ALLOW_LOCAL_DESTINATIONS=true`), `http` or `https` to `localhost` / `127.0.0.1`
/// / `[::1]` is allowed too. Names are not resolved here (a Worker's `fetch` cannot reach
/// private networks anyway); this stops the addresses a configuration can spell.
pub fn check_url(url: &str, allow_local: bool) -> Result<(), UrlError> {
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::Malformed)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err(UrlError::Malformed);
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    }
    .to_ascii_lowercase();
    let local = matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1");
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" if allow_local && local => {}
        "http" => return Err(UrlError::NotHttps),
        _ => return Err(UrlError::Malformed),
    }
    if local && allow_local {
        return Ok(());
    }
    if is_private_host(&host) {
        return Err(UrlError::PrivateAddress);
    }
    Ok(())
}

fn is_private_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.is_empty()
        || host == "localhost"
        || [".localhost", ".local", ".internal", ".lan", ".home.arpa"]
            .iter()
            .any(|s| host.ends_with(s))
    {
        return true;
    }
    if host.contains(':') {
        return match host.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => {
                let s = ip.segments();
                let embedded_v4 = |hi: u16, lo: u16| {
                    let [a, b] = hi.to_be_bytes();
                    let [c, d] = lo.to_be_bytes();
                    std::net::Ipv4Addr::new(a, b, c, d)
                };
                ip.is_loopback()
                    || ip.is_unspecified()
                    || (s[0] & 0xfe00) == 0xfc00 // unique local
                    || (s[0] & 0xffc0) == 0xfe80 // link-local
                    || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                    || (s[0] & 0xff00) == 0xff00 // multicast
                    || ip.to_ipv4_mapped().is_some_and(|v4| is_private_v4(&v4))
                    // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
                    // addresses reach an IPv4 address: judge that one.
                    || (s[..6] == [0; 6] && is_private_v4(&embedded_v4(s[6], s[7])))
                    || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_private_v4(&embedded_v4(s[6], s[7])))
                    || (s[0] == 0x2002 && is_private_v4(&embedded_v4(s[1], s[2])))
            }
            Err(_) => true,
        };
    }
    // Every label numeric (or hex): an address, possibly in a form browsers and resolvers
    // read differently (`0x7f.1`, `2130706433`). Only plain dotted quads are read; the rest is
    // refused.
    let numeric = host
        .split('.')
        .all(|l| !l.is_empty() && (l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x")));
    if numeric {
        return match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => {
                is_private_v4(&ip) || host.split('.').any(|l| l.len() > 1 && l.starts_with('0'))
            }
            Err(_) => true,
        };
    }
    !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_private_v4(ip: &std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && (c == 0 || c == 2)) // IETF protocol assignments, TEST-NET-1
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 224
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_delivery_id_is_stable_per_destination_and_message() {
        let a = delivery_id("hooks", "m1");
        assert_eq!(a, delivery_id("hooks", "m1"));
        assert_ne!(a, delivery_id("hooks", "m2"));
        assert_ne!(a, delivery_id("ga4", "m1"));
        assert!(a.starts_with("dlv_") && a.len() == 36);
    }

    #[test]
    fn consent_gates_each_purpose() {
        let with = |consent: Value| json!({"type": "track", "event": "X", "anonymousId": "a", "context": {"consent": consent}});
        let analytics_only =
            with(json!({"gcm": {"analytics_storage": "granted", "ad_user_data": "denied"}}));
        assert_eq!(permitted(&analytics_only, Purpose::Analytics), Ok(()));
        assert_eq!(
            permitted(&analytics_only, Purpose::Advertising),
            Err(Withheld::Consent)
        );
        let all = with(json!({"gcm": {"analytics_storage": "granted", "ad_user_data": "granted"}}));
        assert_eq!(permitted(&all, Purpose::Advertising), Ok(()));
        let gpc = with(
            json!({"gcm": {"analytics_storage": "granted", "ad_user_data": "granted"}, "gpc": true}),
        );
        assert_eq!(
            permitted(&gpc, Purpose::Advertising),
            Err(Withheld::Consent),
            "GPC denies advertising"
        );
        assert_eq!(permitted(&gpc, Purpose::Analytics), Ok(()));
        let denied = with(json!({"gcm": {"analytics_storage": "denied"}}));
        assert_eq!(
            permitted(&denied, Purpose::Analytics),
            Err(Withheld::Consent)
        );
        assert_eq!(permitted(&denied, Purpose::Necessary), Ok(()));
        let anonymized = json!({"type": "track", "event": "X", "context": {}});
        assert_eq!(
            permitted(&anonymized, Purpose::Analytics),
            Err(Withheld::Anonymized)
        );
        let silent = json!({"type": "track", "event": "X", "userId": "u"});
        assert_eq!(
            permitted(&silent, Purpose::Advertising),
            Ok(()),
            "no consent object: not restricted"
        );
        let entered = json!({"type": "track", "event": "Segment Entered", "userId": "u"});
        assert_eq!(
            permitted(&entered, Purpose::Advertising),
            Err(Withheld::Consent),
            "a server-made event shows no ad consent"
        );
        assert_eq!(permitted(&entered, Purpose::Analytics), Ok(()));
    }

    fn attempt(
        status: Option<u16>,
        retry_after: Option<&str>,
        number: u32,
        now_ms: i64,
    ) -> Attempt<'_> {
        Attempt {
            status,
            retry_after,
            number,
            first_at_ms: 0,
            now_ms,
        }
    }

    #[test]
    fn retries_transient_failures_with_backoff_and_stops_at_the_window() {
        let w = &Backoff::default();
        assert_eq!(
            after(attempt(Some(204), None, 1, 0), w, 0.5),
            Next::Delivered
        );
        assert_eq!(
            after(attempt(Some(400), None, 1, 0), w, 0.5),
            Next::DeadLetter("http_400".into())
        );
        assert_eq!(
            after(attempt(Some(404), None, 3, 0), w, 0.5),
            Next::DeadLetter("http_404".into())
        );
        for status in [None, Some(408), Some(429), Some(500), Some(503)] {
            assert!(
                matches!(after(attempt(status, None, 1, 0), w, 0.0), Next::RetryIn(_)),
                "{status:?}"
            );
        }
        // Exponential: 30 s, 60 s, 120 s ... halved and jittered back up to the full value.
        assert_eq!(
            after(attempt(Some(500), None, 1, 0), w, 0.0),
            Next::RetryIn(15_000)
        );
        assert_eq!(
            after(attempt(Some(500), None, 1, 0), w, 0.999_999),
            Next::RetryIn(29_999)
        );
        assert_eq!(
            after(attempt(Some(500), None, 3, 0), w, 0.0),
            Next::RetryIn(60_000)
        );
        assert_eq!(
            after(attempt(Some(500), None, 30, 0), w, 0.0),
            Next::RetryIn(MAX_BACKOFF_MS / 2)
        );
        // Retry-After wins over the backoff.
        assert_eq!(
            after(attempt(Some(429), Some("7"), 1, 0), w, 0.9),
            Next::RetryIn(7_000)
        );
        assert_eq!(
            after(attempt(Some(429), Some("soon"), 1, 0), w, 0.0),
            Next::RetryIn(15_000)
        );
        // Out of window.
        assert_eq!(
            after(attempt(Some(503), None, 9, w.window_ms - 1_000), w, 0.0),
            Next::DeadLetter("http_503_retry_window_exhausted".into())
        );
    }

    #[test]
    fn only_public_https_urls_are_called() {
        for ok in [
            "https://hooks.example/seam",
            "https://api.klaviyo.com",
            "https://8.8.8.8/x",
            "https://[2001:db8::1]/",
            "https://192.0.78.9/",
        ] {
            assert_eq!(check_url(ok, false), Ok(()), "{ok}");
        }
        for (bad, err) in [
            ("http://hooks.example", UrlError::NotHttps),
            ("https://localhost/x", UrlError::PrivateAddress),
            ("https://127.0.0.1/x", UrlError::PrivateAddress),
            ("https://10.0.0.5", UrlError::PrivateAddress),
            ("https://172.20.1.1", UrlError::PrivateAddress),
            ("https://192.168.1.1", UrlError::PrivateAddress),
            (
                "https://169.254.169.254/latest/meta-data",
                UrlError::PrivateAddress,
            ),
            ("https://100.64.0.1", UrlError::PrivateAddress),
            ("https://[::1]/", UrlError::PrivateAddress),
            ("https://[fe80::1]/", UrlError::PrivateAddress),
            ("https://[fd00::1]/", UrlError::PrivateAddress),
            ("https://[::ffff:10.0.0.1]/", UrlError::PrivateAddress),
            ("https://[64:ff9b::a00:1]/", UrlError::PrivateAddress),
            ("https://[2002:a00:1::]/", UrlError::PrivateAddress),
            ("https://[::127.0.0.1]/", UrlError::PrivateAddress),
            ("https://[ff02::1]/", UrlError::PrivateAddress),
            ("https://198.18.0.1/", UrlError::PrivateAddress),
            ("https://2130706433/", UrlError::PrivateAddress),
            ("https://0x7f.0.0.1/", UrlError::PrivateAddress),
            ("https://0177.0.0.1/", UrlError::PrivateAddress),
            ("https://printer.local/", UrlError::PrivateAddress),
            ("https://db.internal/", UrlError::PrivateAddress),
            ("https://user:pw@hooks.example/", UrlError::Malformed),
            ("https://hooks.example\\@10.0.0.1/", UrlError::Malformed),
            ("ftp://hooks.example/", UrlError::Malformed),
            ("hooks.example", UrlError::Malformed),
        ] {
            assert_eq!(check_url(bad, false), Err(err), "{bad}");
        }
        assert_eq!(
            check_url("http://127.0.0.1:9000/hook", true),
            Ok(()),
            "local dev receivers"
        );
        assert_eq!(check_url("http://localhost:9000/hook", true), Ok(()));
        assert_eq!(
            check_url("http://10.0.0.5/hook", true),
            Err(UrlError::NotHttps)
        );
    }
}
