//! What the collector adds to and removes from each validated event before it is stored:
//! request facts (IP, user agent, geo, GPC), the source's IP policy, and consent enforcement.
//!
//! Consent policy (per event, from its `context.consent`; see [`crate::consent`]):
//!
//! | consent says                    | source `analyticsDenied` | track / page / screen            | identify / group / alias |
//! |---------------------------------|--------------------------|----------------------------------|--------------------------|
//! | nothing (no consent object)     | any                      | stored as sent                   | stored as sent           |
//! | `analytics_storage` granted     | any                      | stored as sent                   | stored as sent           |
//! | `analytics_storage` denied      | `anonymize` (default)    | stored without identifiers¹      | not stored²              |
//! | `analytics_storage` denied      | `drop`                   | not stored²                      | not stored²              |
//!
//! ¹ `anonymousId`, `userId`, `traits`, `context.traits`, `context.externalIds`, `context.ip`,
//!   `context.device.id`/`advertisingId` and city-level location are removed; the result is
//!   `accepted` with code `consent_anonymized`, and the event can never be linked to a profile.
//! ² result `rejected` with code `consent_denied` (these events exist only to identify).
//!
//! GPC (`Sec-GPC: 1` or `context.consent.gpc`) is recorded as `context.consent.gpc = true` and
//! denies `ad_storage`, `ad_user_data` and `ad_personalization`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::collect::event::{Event, EventError, EventType};
use crate::collect::ingest::{Decoded, Outcome};
use crate::collect::source::{property_key, DeniedPolicy, IpPolicy, Source};
use crate::consent::{ConsentState, Purpose};

/// Coarse location from the edge (Cloudflare's `request.cf`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geo {
    /// ISO country code.
    pub country: Option<String>,
    /// Region name.
    pub region: Option<String>,
    /// City name.
    pub city: Option<String>,
    /// IANA time zone.
    pub timezone: Option<String>,
}

/// What the edge knows about the request, beyond its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFacts {
    /// Client IP (`CF-Connecting-IP`).
    pub ip: Option<String>,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// `Sec-GPC: 1` was sent.
    pub gpc: bool,
    /// Geo from the edge.
    pub geo: Option<Geo>,
    /// The ID of the collector's first-party cookie, when the browser sent one the Worker
    /// sealed (or the Worker sets one now): it replaces the events' `anonymousId`
    /// ([`Decoded::bind_cookie`]). Serialised under its own name: queued requests of earlier
    /// versions carry `cookie_id` (then an unsealed ID), which is ignored.
    #[serde(rename = "sealedCookieId", default)]
    pub cookie_id: Option<String>,
}

/// Zeroes the last octet of an IPv4 address or the last 80 bits of an IPv6 address.
pub fn truncate_ip(ip: &str) -> Option<String> {
    match ip.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(IpAddr::from([a, b, c, 0]).to_string())
        }
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[6..].fill(0);
            Some(IpAddr::from(octets).to_string())
        }
    }
}

/// The client a per-IP limit counts: an IPv4 address as it is, an IPv6 one by its /64 (one
/// host commonly holds a whole /64 and could rotate through it). Unparsable text as it is.
pub fn limit_client(ip: &str) -> String {
    match ip.trim().parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            // An IPv4 client written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 client.
            Some(v4) => v4.to_string(),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                format!("{}/64", IpAddr::from(octets))
            }
        },
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

impl Decoded {
    /// Applies request facts and the source's policies to every valid event.
    pub fn enrich(mut self, facts: &RequestFacts, source: &Source) -> Self {
        self.outcomes = self
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Valid(event) => match enrich_event(event, facts, source) {
                    Ok(event) => Outcome::Valid(event),
                    Err((message_id, error)) => Outcome::Rejected {
                        message_id: Some(message_id),
                        error,
                    },
                },
                other => other,
            })
            .collect();
        self
    }

    /// What [`enrich`](Self::enrich) would answer, without enriching: the events it would
    /// refuse refused, those it would anonymise marked so, the bodies as they are. A queued
    /// request answers before its events are enriched and says what enrichment will.
    pub fn screen(mut self, facts: &RequestFacts, source: &Source) -> Self {
        for outcome in &mut self.outcomes {
            let Outcome::Valid(event) = outcome else {
                continue;
            };
            let denied = denies_analytics(event, facts);
            if refuses(event, denied, source) {
                *outcome = Outcome::Rejected {
                    message_id: Some(std::mem::take(&mut event.message_id)),
                    error: EventError::ConsentDenied,
                };
            } else {
                event.anonymized = denied;
            }
        }
        self
    }
}

/// Whether the event's consent (or the request's Global Privacy Control) denies analytics.
fn denies_analytics(event: &Event, facts: &RequestFacts) -> bool {
    !ConsentState::from_context(event.body.get("context"), facts.gpc)
        .allows(Purpose::AnalyticsStorage)
}

/// Whether an event is refused, not anonymised, when analytics is `denied`: by the source's
/// policy, or because it exists only to identify.
fn refuses(event: &Event, denied: bool, source: &Source) -> bool {
    denied
        && (source.analytics_denied == DeniedPolicy::Drop
            || matches!(
                event.kind,
                EventType::Identify | EventType::Group | EventType::Alias
            ))
}

fn enrich_event(
    mut event: Event,
    facts: &RequestFacts,
    source: &Source,
) -> Result<Event, (String, EventError)> {
    let consent = ConsentState::from_context(event.body.get("context"), facts.gpc);
    let denied = !consent.allows(Purpose::AnalyticsStorage);
    if refuses(&event, denied, source) {
        return Err((event.message_id, EventError::ConsentDenied));
    }

    let body = &mut event.body;
    if !source.deny_properties.is_empty() {
        for key in ["properties", "traits"] {
            if let Some(value) = body.get_mut(key) {
                strip_denied(value, &source.deny_properties);
            }
        }
    }
    let mut context = match body.remove("context") {
        Some(Value::Object(c)) => c,
        _ => Map::new(),
    };
    if denied {
        for key in ["anonymousId", "userId", "previousId", "traits"] {
            body.remove(key);
        }
        for key in ["traits", "externalIds", "ip"] {
            context.remove(key);
        }
        if let Some(Value::Object(device)) = context.get_mut("device") {
            device.remove("id");
            device.remove("advertisingId");
        }
        if let Some(Value::Object(location)) = context.get_mut("location") {
            location.remove("city");
            location.remove("latitude");
            location.remove("longitude");
        }
        event.anonymous_id = None;
        event.user_id = None;
        event.anonymized = true;
    } else {
        // A server library reports its end user's IP in context.ip; otherwise use the caller's.
        let ip = match context.remove("ip") {
            Some(Value::String(s)) => Some(s),
            _ => facts.ip.clone(),
        };
        let kept = match (source.ip, ip) {
            (_, None) | (IpPolicy::Drop, _) => None,
            (IpPolicy::Full, Some(ip)) => ip.parse::<IpAddr>().ok().map(|a| a.to_string()),
            (IpPolicy::Truncate, Some(ip)) => truncate_ip(&ip),
        };
        if let Some(ip) = kept {
            context.insert("ip".into(), Value::from(ip));
        }
    }
    if let Some(traits) = context.get_mut("traits") {
        strip_denied(traits, &source.deny_properties);
    }
    if let Some(ua) = &facts.user_agent {
        context
            .entry("userAgent")
            .or_insert_with(|| Value::from(ua.clone()));
    }
    if let Some(geo) = &facts.geo {
        let location = context
            .entry("location")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(location) = location {
            let city = if denied { None } else { geo.city.as_ref() };
            for (key, value) in [
                ("country", geo.country.as_ref()),
                ("region", geo.region.as_ref()),
                ("city", city),
            ] {
                if let Some(v) = value {
                    location
                        .entry(key)
                        .or_insert_with(|| Value::from(v.clone()));
                }
            }
        }
        if let Some(tz) = &geo.timezone {
            context
                .entry("timezone")
                .or_insert_with(|| Value::from(tz.clone()));
        }
    }
    if consent.gpc {
        let slot = context
            .entry("consent")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(c) = slot {
            c.insert("gpc".into(), Value::Bool(true));
        }
    }
    body.insert("context".into(), Value::Object(context));
    Ok(event)
}

/// Removes, at any depth, object keys on the source's denylist (see [`property_key`]).
fn strip_denied(value: &mut Value, denied: &[String]) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !denied.contains(&property_key(k)));
            for v in map.values_mut() {
                strip_denied(v, denied);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip_denied(v, denied)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ingest::{decode, decoded_batch};
    use crate::collect::source::parse_source;
    use serde_json::json;

    fn source(extra: Value) -> Source {
        let mut raw = json!({"id": "s"});
        if let (Value::Object(r), Value::Object(e)) = (&mut raw, extra) {
            r.extend(e);
        }
        parse_source("k", &raw).unwrap()
    }

    fn one(event: Value, facts: &RequestFacts, source: &Source) -> Outcome {
        let body = json!({"batch": [event]}).to_string();
        let decoded = decode(body.as_bytes(), None, 1_000, || "gen".into()).unwrap();
        decoded.enrich(facts, source).outcomes.remove(0)
    }

    fn stored(outcome: Outcome) -> Event {
        match outcome {
            Outcome::Valid(e) => e,
            other => panic!("expected a stored event, got {other:?}"),
        }
    }

    const DENIED: &str = "denied";

    fn with_consent(kind: &str, analytics: &str) -> Value {
        json!({"type": kind, "event": "E", "anonymousId": "a-1", "userId": "u-1", "messageId": "m",
               "traits": {"email": "x@example.com"},
               "context": {"consent": {"gcm": {"analytics_storage": analytics}},
                           "ip": "203.0.113.77", "traits": {"email": "x@example.com"},
                           "device": {"id": "dev-1", "model": "Phone"}}})
    }

    #[test]
    fn never_stores_denylisted_properties_at_any_depth() {
        let event = json!({"type": "track", "event": "Order Completed", "anonymousId": "a-1",
            "properties": {"total": 5, "credit_card": "4111", "payment": {"Card-Number": "4111", "cvv": "123"},
                           "items": [{"sku": "s", "password": "p"}]},
            "context": {"traits": {"Password": "p", "name": "Jane"}}});
        let e = stored(one(
            event.clone(),
            &RequestFacts::default(),
            &source(json!({})),
        ));
        assert_eq!(
            e.body["properties"],
            json!({"total": 5, "payment": {}, "items": [{"sku": "s"}]})
        );
        assert_eq!(e.body["context"]["traits"], json!({"name": "Jane"}));
        let own = source(json!({"denyProperties": ["total"]}));
        let e = stored(one(event, &RequestFacts::default(), &own));
        assert_eq!(
            e.body["properties"]["credit_card"], "4111",
            "a source's own list replaces the default"
        );
        assert!(e.body["properties"].get("total").is_none());
    }

    #[test]
    fn limits_count_an_ipv6_client_by_its_64_and_an_ipv4_one_by_its_address() {
        assert_eq!(limit_client("203.0.113.77"), "203.0.113.77");
        assert_eq!(
            limit_client("2001:db8:85a3:1234:5678:8a2e:370:7334"),
            limit_client("2001:db8:85a3:1234:ffff::1")
        );
        assert_eq!(
            limit_client("2001:db8:85a3:1234:5678:8a2e:370:7334"),
            "2001:db8:85a3:1234::/64"
        );
        assert_ne!(
            limit_client("2001:db8:85a3:1234::1"),
            limit_client("2001:db8:85a3:1235::1")
        );
        assert_eq!(limit_client("::ffff:203.0.113.77"), "203.0.113.77");
        assert_ne!(
            limit_client("::ffff:203.0.113.77"),
            limit_client("::ffff:203.0.113.78")
        );
        assert_eq!(limit_client("not an ip"), "not an ip");
    }

    #[test]
    fn truncates_ipv4_and_ipv6() {
        assert_eq!(truncate_ip("203.0.113.77").as_deref(), Some("203.0.113.0"));
        assert_eq!(
            truncate_ip("2001:db8:85a3:1234:5678:8a2e:370:7334").as_deref(),
            Some("2001:db8:85a3::")
        );
        assert_eq!(truncate_ip("not an ip"), None);
    }

    #[test]
    fn applies_ip_policy_to_request_ip() {
        let facts = RequestFacts {
            ip: Some("198.51.100.23".into()),
            ..RequestFacts::default()
        };
        let ev = json!({"type": "track", "event": "E", "anonymousId": "a"});
        let ip = |policy: &str| {
            stored(one(ev.clone(), &facts, &source(json!({"ip": policy})))).body["context"]
                .get("ip")
                .cloned()
        };
        assert_eq!(ip("truncate"), Some(json!("198.51.100.0")));
        assert_eq!(ip("full"), Some(json!("198.51.100.23")));
        assert_eq!(ip("drop"), None);
    }

    #[test]
    fn anonymizes_track_when_analytics_is_denied() {
        let event = stored(one(
            with_consent("track", DENIED),
            &RequestFacts::default(),
            &source(json!({})),
        ));
        assert!(event.anonymized);
        assert_eq!((event.anonymous_id, event.user_id), (None, None));
        for key in ["anonymousId", "userId", "traits"] {
            assert!(!event.body.contains_key(key), "{key} kept");
        }
        let context = &event.body["context"];
        assert_eq!(context.get("ip"), None);
        assert_eq!(context.get("traits"), None);
        assert_eq!(context["device"], json!({"model": "Phone"}));
    }

    #[test]
    fn screening_refuses_what_enrichment_refuses_and_changes_nothing_else() {
        let mut events = vec![
            with_consent("identify", DENIED),
            with_consent("track", DENIED),
            with_consent("identify", "granted"),
            json!({"type": "nonsense"}),
            with_consent("page", DENIED),
            with_consent("track", "granted"),
        ];
        for (i, e) in events.iter_mut().enumerate() {
            e["messageId"] = json!(format!("m{i}"));
        }
        let events = Value::Array(events);
        let all_ids: std::collections::HashSet<String> = (0..6).map(|i| format!("m{i}")).collect();
        for policy in [json!({}), json!({"analyticsDenied": "drop"})] {
            let source = source(policy);
            let facts = RequestFacts::default();
            let enriched = decoded_batch(events.clone()).enrich(&facts, &source);
            let screened = decoded_batch(events.clone()).screen(&facts, &source);
            let results = screened.results(&all_ids);
            assert_eq!(results, enriched.results(&all_ids));
            let refused = results
                .iter()
                .filter(|r| r.status == crate::collect::ingest::Status::Rejected)
                .count();
            assert!(refused >= 2, "{results:?}");
            let sent: Vec<_> = decoded_batch(events.clone())
                .valid()
                .map(|e| e.body.clone())
                .collect();
            assert!(
                screened.valid().all(|e| sent.contains(&e.body)),
                "bodies as sent"
            );
        }
    }

    #[test]
    fn drops_identify_when_analytics_is_denied_and_everything_under_drop_policy() {
        let identify = one(
            with_consent("identify", DENIED),
            &RequestFacts::default(),
            &source(json!({})),
        );
        assert!(matches!(
            identify,
            Outcome::Rejected {
                error: EventError::ConsentDenied,
                ..
            }
        ));
        let track = one(
            with_consent("track", DENIED),
            &RequestFacts::default(),
            &source(json!({"analyticsDenied": "drop"})),
        );
        assert!(matches!(
            track,
            Outcome::Rejected {
                error: EventError::ConsentDenied,
                ..
            }
        ));
    }

    #[test]
    fn keeps_identifiers_when_granted_and_fills_request_facts() {
        let facts = RequestFacts {
            user_agent: Some("UA/1".into()),
            gpc: true,
            geo: Some(Geo {
                country: Some("NL".into()),
                city: Some("Utrecht".into()),
                timezone: Some("Europe/Amsterdam".into()),
                ..Geo::default()
            }),
            cookie_id: Some("cookie-id-0123456789".into()),
            ..RequestFacts::default()
        };
        let event = stored(one(
            with_consent("identify", "granted"),
            &facts,
            &source(json!({})),
        ));
        assert_eq!(event.user_id.as_deref(), Some("u-1"));
        let context = &event.body["context"];
        assert_eq!(context["ip"], json!("203.0.113.0"));
        assert_eq!(context["userAgent"], json!("UA/1"));
        assert_eq!(
            context["location"],
            json!({"country": "NL", "city": "Utrecht"})
        );
        assert_eq!(context["timezone"], json!("Europe/Amsterdam"));
        assert_eq!(context["consent"]["gpc"], json!(true));
    }

    #[test]
    fn events_without_consent_are_stored_as_sent() {
        let mut ev = with_consent("track", "x");
        ev["context"].as_object_mut().unwrap().remove("consent");
        let event = stored(one(ev, &RequestFacts::default(), &source(json!({}))));
        assert!(!event.anonymized);
        assert_eq!(event.anonymous_id.as_deref(), Some("a-1"));
    }
}
