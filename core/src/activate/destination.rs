//! Destination configuration: `{"type": "...", "enabled": true, "settings": {...}, "filter":
//! {"events": [...]}}` per name, in `config/destinations.json` or through the admin API. Parsed,
//! then validated per type; every error names the destination and the field.

use serde_json::{Map, Value};

use super::policy::Purpose;
use super::{ga4, klaviyo, meta, name_of, sendgrid, twilio, webhook, Mapped, Outgoing};
use crate::identity::Proof;
use crate::personalise::segment::{event_condition, holds_for_event, Rule, SegmentConfigError};

/// The committed `config/destinations.json`: what applies until the admin API stores a change.
pub const DEFAULT_DESTINATIONS: &str = include_str!("../../../config/destinations.json");

/// Longest destination name (it is part of URLs and delivery IDs).
pub const MAX_NAME_LEN: usize = 64;
/// Most fields one mapping names.
pub const MAX_MAPPED_FIELDS: usize = 100;
/// Most event names one filter lists.
pub const MAX_FILTER_EVENTS: usize = 200;

/// Why a destination's configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationConfigError {
    /// The name is empty, too long or has characters other than letters, digits, `-` and `_`.
    #[error("destination names are 1 to 64 letters, digits, '-' or '_'")]
    InvalidName,
    /// A field is missing or has a bad value.
    #[error("destination {name}: {field} {problem}")]
    Invalid {
        /// The destination.
        name: String,
        /// The field (`settings.url`, `filter.events`, ...).
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// `filter.where` is not a valid condition.
    #[error("destination {name}: {detail}")]
    Condition {
        /// The destination.
        name: String,
        /// Where in the condition, and what is wrong.
        detail: String,
    },
}

impl DestinationConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName => "invalid_destination_name",
            Self::Invalid { .. } | Self::Condition { .. } => "invalid_destination_config",
        }
    }
}

/// A destination's type and its validated settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Any HTTPS endpoint: the Segment-spec event, signed.
    Webhook(webhook::Settings),
    /// Google Analytics 4 Measurement Protocol.
    Ga4(ga4::Settings),
    /// Meta Conversions API.
    Meta(meta::Settings),
    /// Klaviyo Events API.
    Klaviyo(klaviyo::Settings),
    /// SendGrid mail send, for transactional e-mail (an order confirmation).
    Sendgrid(sendgrid::Transactional),
    /// Twilio Messages, for transactional SMS or WhatsApp (a shipping notice).
    Twilio(twilio::Transactional),
}

impl Kind {
    /// The type's name in configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Webhook(_) => "webhook",
            Kind::Ga4(_) => "ga4",
            Kind::Meta(_) => "meta",
            Kind::Klaviyo(_) => "klaviyo",
            Kind::Sendgrid(_) => "sendgrid",
            Kind::Twilio(_) => "twilio",
        }
    }

    /// What the destination uses the data for, which decides the consent it needs.
    pub fn purpose(&self) -> Purpose {
        match self {
            Kind::Webhook(s) => s.purpose,
            Kind::Sendgrid(s) => s.purpose,
            Kind::Twilio(s) => s.purpose,
            Kind::Ga4(_) | Kind::Klaviyo(_) => Purpose::Analytics,
            Kind::Meta(_) => Purpose::Advertising,
        }
    }

    /// The base URLs it calls (checked by [`super::policy::check_url`] before any call).
    pub fn urls(&self) -> Vec<&str> {
        match self {
            Kind::Webhook(s) => vec![s.url.as_str()],
            Kind::Ga4(s) => vec![s.base_url.as_str()],
            Kind::Meta(s) => vec![s.base_url.as_str()],
            Kind::Klaviyo(s) => vec![s.base_url.as_str()],
            Kind::Sendgrid(s) => vec![s.settings.base_url.as_str()],
            Kind::Twilio(s) => vec![s.settings.base_url.as_str()],
        }
    }

    /// Whether an erasure can be forwarded to it: Klaviyo has a deletion API; a webhook gets
    /// the request signed like an event. GA4's user deletion needs OAuth, and Meta has none.
    pub fn forwards_erasure(&self) -> bool {
        match self {
            Kind::Webhook(s) => s.forward_erasures,
            Kind::Klaviyo(_) => true,
            _ => false,
        }
    }

    /// The request for a forwarded erasure ([`super::deliver::forward_erasure`]'s payload).
    pub fn map_erasure(&self, out: Outgoing<'_>) -> Mapped {
        match self {
            Kind::Webhook(s) => webhook::map(s, out),
            Kind::Klaviyo(s) => klaviyo::erase(s, out.event),
            Kind::Ga4(_) | Kind::Meta(_) | Kind::Sendgrid(_) | Kind::Twilio(_) => {
                Mapped::Skip("erasure_not_supported")
            }
        }
    }

    /// Whether events are routed to it: a SendGrid destination without `templateId` or a
    /// Twilio one without `text`/`contentSid` sends journey messages only.
    pub fn takes_events(&self) -> bool {
        match self {
            Kind::Sendgrid(s) => s.template_id.is_some(),
            Kind::Twilio(s) => s.takes_events(),
            _ => true,
        }
    }

    /// The request for a journey message (`core::journey::message`): e-mail through SendGrid,
    /// SMS and WhatsApp through Twilio.
    pub fn map_message(&self, out: Outgoing<'_>) -> Mapped {
        match self {
            Kind::Sendgrid(s) => s.message(out),
            Kind::Twilio(s) => s.message(out),
            _ => Mapped::Skip("messages_not_supported"),
        }
    }

    /// The request for one event.
    pub fn map(&self, out: Outgoing<'_>) -> Mapped {
        match self {
            Kind::Webhook(s) => webhook::map(s, out),
            Kind::Ga4(s) => ga4::map(s, out),
            Kind::Meta(s) => meta::map(s, out),
            Kind::Klaviyo(s) => klaviyo::map(s, out),
            Kind::Sendgrid(s) => s.map(out),
            Kind::Twilio(s) => s.map(out),
        }
    }
}

/// Which events a destination takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Event names (`Order Completed`, `Page Viewed`, `Identify`, `Segment Entered`); empty
    /// means every event.
    pub events: Vec<String>,
    /// `where`: a condition over the event in the segment rule language, with
    /// `{"field": "properties.revenue"}` operands.
    pub condition: Option<Rule>,
}

impl Filter {
    /// Whether `event` (a stored body) passes at `now_ms`.
    pub fn accepts(&self, event: &Value, now_ms: i64) -> bool {
        event
            .as_object()
            .is_some_and(|body| self.accepts_body(body, now_ms))
    }

    /// [`Filter::accepts`] for a stored body.
    pub fn accepts_body(&self, body: &Map<String, Value>, now_ms: i64) -> bool {
        self.takes_name(&name_of(body))
            && self
                .condition
                .as_ref()
                .is_none_or(|rule| holds_for_event(rule, body, now_ms))
    }

    /// Whether the event names let `name` through (the condition aside).
    pub fn takes_name(&self, name: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == name)
    }
}

/// A validated destination.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Its name (unique; part of every delivery ID).
    pub name: String,
    /// Whether events go to it.
    pub enabled: bool,
    pub kind: Kind,
    pub filter: Filter,
    /// `mapping` (webhooks): the body is `{target: the value at a dotted path of the event}`
    /// instead of the whole event.
    pub mapping: Vec<(String, Vec<String>)>,
}

impl Destination {
    /// Parses and validates one destination entry.
    pub fn parse(name: &str, raw: &Value) -> Result<Self, DestinationConfigError> {
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DestinationConfigError::InvalidName);
        }
        let invalid = |field, problem| DestinationConfigError::Invalid {
            name: name.to_owned(),
            field,
            problem,
        };
        let raw = raw
            .as_object()
            .ok_or_else(|| invalid("entry", "must be an object"))?;
        let enabled = match raw.get("enabled") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("enabled", "must be true or false")),
        };
        let empty = Map::new();
        let settings = match raw.get("settings") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(s)) => s,
            Some(_) => return Err(invalid("settings", "must be an object")),
        };
        let fields = Fields {
            settings,
            invalid: &invalid,
        };
        let kind = match raw.get("type").and_then(Value::as_str) {
            Some("webhook") => Kind::Webhook(webhook::Settings::parse(&fields)?),
            Some("ga4") => Kind::Ga4(ga4::Settings::parse(&fields)?),
            Some("meta") => Kind::Meta(meta::Settings::parse(&fields)?),
            Some("klaviyo") => Kind::Klaviyo(klaviyo::Settings::parse(&fields)?),
            Some("sendgrid") => Kind::Sendgrid(sendgrid::Transactional::parse(&fields)?),
            Some("twilio") => Kind::Twilio(twilio::Transactional::parse(&fields)?),
            _ => return Err(invalid(
                "type",
                "must be \"webhook\", \"ga4\", \"meta\", \"klaviyo\", \"sendgrid\" or \"twilio\"",
            )),
        };
        let filter = match raw.get("filter") {
            None | Some(Value::Null) => Filter::default(),
            Some(Value::Object(f)) => Filter {
                events: Self::filter_events(f, &invalid)?,
                condition: match f.get("where") {
                    None | Some(Value::Null) => None,
                    Some(rule) => Some(event_condition(rule, name).map_err(|e| {
                        DestinationConfigError::Condition {
                            name: name.to_owned(),
                            detail: condition_detail(e),
                        }
                    })?),
                },
            },
            Some(_) => return Err(invalid("filter", "must be an object")),
        };
        let mapping = match raw.get("mapping") {
            None | Some(Value::Null) => Vec::new(),
            Some(_) if !matches!(kind, Kind::Webhook(_)) => {
                return Err(invalid("mapping", "is only available for webhooks"))
            }
            Some(Value::Object(m)) if !m.is_empty() && m.len() <= MAX_MAPPED_FIELDS => m
                .iter()
                .map(|(target, path)| {
                    let path: Vec<String> = path
                        .as_str()
                        .map(|p| p.split('.').map(str::to_owned).collect())
                        .filter(|p: &Vec<String>| p.iter().all(|seg| !seg.is_empty()))
                        .ok_or_else(|| {
                            invalid("mapping", "must map names to dotted event paths")
                        })?;
                    Ok((target.clone(), path))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(invalid(
                    "mapping",
                    "must be an object of 1 to 100 names and dotted event paths",
                ))
            }
        };
        Ok(Self {
            name: name.to_owned(),
            enabled,
            kind,
            filter,
            mapping,
        })
    }

    /// The request for one event, with the field mapping applied.
    pub fn map(&self, out: Outgoing<'_>) -> Mapped {
        if self.mapping.is_empty() {
            return self.kind.map(out);
        }
        // What a page only claimed (a user ID without a token, its traits) must not leave as the
        // person's: a mapping cannot carry the proof marker, so such fields are left out.
        let proof = Proof::of_body(out.event.get("context"));
        let claimed = |path: &[String]| match path.first().map(String::as_str) {
            Some("userId") => proof == Proof::Claimed,
            Some("traits") => proof != Proof::Trusted,
            Some("context") => {
                proof != Proof::Trusted && path.get(1).map(String::as_str) == Some("traits")
            }
            _ => false,
        };
        let mapped: Map<String, Value> = self
            .mapping
            .iter()
            .filter(|(_, path)| !claimed(path))
            .filter_map(|(target, path)| {
                let value = path.iter().try_fold(out.event, |v, seg| v.get(seg))?;
                Some((target.clone(), value.clone()))
            })
            .collect();
        let event = Value::Object(mapped);
        self.kind.map(Outgoing {
            event: &event,
            ..out
        })
    }

    fn filter_events(
        f: &Map<String, Value>,
        invalid: &dyn Fn(&'static str, &'static str) -> DestinationConfigError,
    ) -> Result<Vec<String>, DestinationConfigError> {
        Ok(match f.get("events") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) if names.len() <= MAX_FILTER_EVENTS => names
                .iter()
                .map(|n| n.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("filter.events", "must be event names"))?,
            Some(_) => {
                return Err(invalid(
                    "filter.events",
                    "must be a list of at most 200 event names",
                ))
            }
        })
    }

    /// Parses a `{"name": {...}, ...}` document (`config/destinations.json`).
    pub fn parse_all(doc: &Value) -> Result<Vec<Self>, DestinationConfigError> {
        let Some(entries) = doc.as_object() else {
            return Err(DestinationConfigError::Invalid {
                name: String::new(),
                field: "document",
                problem: "must be an object keyed by destination name",
            });
        };
        entries
            .iter()
            .filter(|(name, _)| !name.starts_with('_'))
            .map(|(name, raw)| Self::parse(name, raw))
            .collect()
    }

    /// The configuration as the admin API shows it: secrets replaced by `"********"`.
    pub fn redacted(raw: &Value) -> Value {
        let mut out = raw.clone();
        if let Some(Value::Object(settings)) = out.get_mut("settings") {
            for (key, value) in settings.iter_mut() {
                if SECRET_FIELDS.contains(&key.as_str()) && !value.is_null() {
                    *value = Value::from(super::sealed::MASK);
                }
            }
        }
        out
    }
}

/// A condition error without the segment document's framing.
fn condition_detail(e: SegmentConfigError) -> String {
    match e {
        SegmentConfigError::Invalid { field, problem, .. } => format!("{field} {problem}"),
        SegmentConfigError::Unknown { field, .. } => format!("unknown {field}"),
        SegmentConfigError::TooComplex { field, .. } => {
            format!("{field} makes the condition too large")
        }
        other => other.to_string(),
    }
}

/// Settings fields that hold credentials.
pub const SECRET_FIELDS: [&str; 5] = ["secret", "apiSecret", "accessToken", "apiKey", "authToken"];

/// Reads settings fields, reporting errors against the destination.
pub struct Fields<'a> {
    settings: &'a Map<String, Value>,
    invalid: &'a dyn Fn(&'static str, &'static str) -> DestinationConfigError,
}

impl Fields<'_> {
    /// A required non-empty string of at most 2,048 bytes.
    pub fn required(
        &self,
        key: &'static str,
        field: &'static str,
    ) -> Result<String, DestinationConfigError> {
        self.optional(key, field)?
            .ok_or_else(|| (self.invalid)(field, "is required"))
    }

    /// An optional non-empty string of at most 2,048 bytes.
    pub fn optional(
        &self,
        key: &str,
        field: &'static str,
    ) -> Result<Option<String>, DestinationConfigError> {
        match self.settings.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 2048 => {
                Ok(Some(s.trim().to_owned()))
            }
            Some(_) => Err((self.invalid)(field, "must be a non-empty string")),
        }
    }

    /// A base URL: `https://host[:port]`, no trailing `/`; `default` when unset.
    pub fn base_url(
        &self,
        key: &str,
        field: &'static str,
        default: &str,
    ) -> Result<String, DestinationConfigError> {
        let url = self
            .optional(key, field)?
            .unwrap_or_else(|| default.to_owned());
        let url = url.trim_end_matches('/').to_owned();
        if url.starts_with("https://") || url.starts_with("http://") {
            Ok(url)
        } else {
            Err((self.invalid)(field, "must be an http(s) URL"))
        }
    }

    /// An optional boolean setting (default false).
    pub fn flag(&self, key: &str, field: &'static str) -> Result<bool, DestinationConfigError> {
        match self.settings.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err((self.invalid)(field, "must be true or false")),
        }
    }

    /// `settings.purpose`: `"analytics"`, `"necessary"` or `"advertising"`, else `default`.
    pub fn purpose(&self, default: Purpose) -> Result<Purpose, DestinationConfigError> {
        match self.optional("purpose", "settings.purpose")?.as_deref() {
            None => Ok(default),
            Some("analytics") => Ok(Purpose::Analytics),
            Some("necessary") => Ok(Purpose::Necessary),
            Some("advertising") => Ok(Purpose::Advertising),
            Some(_) => Err(self.error(
                "settings.purpose",
                "must be \"analytics\", \"necessary\" or \"advertising\"",
            )),
        }
    }

    /// An optional object of non-empty strings (at most 200 entries), e.g. segment -> list ID.
    pub fn string_map(
        &self,
        key: &str,
        field: &'static str,
    ) -> Result<Vec<(String, String)>, DestinationConfigError> {
        match self.settings.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(map)) if map.len() <= 200 => map
                .iter()
                .map(|(k, v)| match v.as_str().map(str::trim) {
                    Some(s) if !s.is_empty() && s.len() <= 256 && !k.is_empty() => {
                        Ok((k.clone(), s.to_owned()))
                    }
                    _ => Err((self.invalid)(field, "must map names to non-empty strings")),
                })
                .collect(),
            Some(_) => Err((self.invalid)(field, "must be an object")),
        }
    }

    /// The error for `field`.
    pub fn error(&self, field: &'static str, problem: &'static str) -> DestinationConfigError {
        (self.invalid)(field, problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_destination_and_the_field() {
        let err =
            Destination::parse("orders", &json!({"type": "webhook", "settings": {}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination orders: settings.url is required"
        );
        assert_eq!(err.code(), "invalid_destination_config");
        let err = Destination::parse("x", &json!({"type": "fax"})).unwrap_err();
        assert!(err.to_string().starts_with("destination x: type must be"));
        let err = Destination::parse(
            "x",
            &json!({"type": "webhook", "settings": {"url": "https://a.example", "secret": "0123456789abcdef"}, "filter": {"events": [1]}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination x: filter.events must be event names"
        );
        assert_eq!(
            Destination::parse("bad name!", &json!({}))
                .unwrap_err()
                .code(),
            "invalid_destination_name"
        );
    }

    #[test]
    fn parses_a_document_and_defaults_to_disabled() {
        let doc = json!({
            "_comment": "ignored",
            "hooks": {"type": "webhook", "settings": {"url": "https://hooks.example/seam", "secret": "whsec_0123456789abcdef"},
                      "filter": {"events": ["Order Completed", "Segment Entered"]}},
            "analytics": {"type": "ga4", "enabled": true, "settings": {"measurementId": "G-ABC", "apiSecret": "k"}}
        });
        let all = Destination::parse_all(&doc).unwrap();
        assert_eq!(all.len(), 2);
        let ga4 = all.iter().find(|d| d.name == "analytics").unwrap();
        assert!(ga4.enabled);
        assert_eq!(ga4.kind.name(), "ga4");
        let hooks = all.iter().find(|d| d.name == "hooks").unwrap();
        assert!(!hooks.enabled, "nothing is enabled unless it says so");
        assert!(hooks
            .filter
            .accepts(&json!({"type": "track", "event": "Order Completed"}), 0));
        assert!(!hooks
            .filter
            .accepts(&json!({"type": "track", "event": "Product Viewed"}), 0));
        assert!(!hooks.filter.accepts(&json!({"type": "page"}), 0));
    }

    #[test]
    fn a_condition_in_the_segment_rule_language_filters_events() {
        let big = Destination::parse(
            "big-orders",
            &json!({"type": "webhook", "settings": {"url": "https://h.example", "secret": "0123456789abcdef"},
                    "filter": {"events": ["Order Completed"],
                               "where": {"and": [{"gte": [{"field": "properties.revenue"}, 100]},
                                                 {"in": [{"field": "properties.currency"}, ["EUR", "USD"]]}]}}}),
        )
        .unwrap();
        let order = |revenue: f64, currency: &str| {
            json!({"type": "track", "event": "Order Completed",
                   "properties": {"revenue": revenue, "currency": currency}})
        };
        assert!(big.filter.accepts(&order(150.0, "EUR"), 0));
        assert!(!big.filter.accepts(&order(99.0, "EUR"), 0));
        assert!(!big.filter.accepts(&order(150.0, "GBP"), 0));
        assert!(!big.filter.accepts(
            &json!({"type": "track", "event": "Checkout Started", "properties": {"revenue": 500}}),
            0
        ));
        let err = Destination::parse(
            "big-orders",
            &json!({"type": "webhook", "settings": {"url": "https://h.example", "secret": "0123456789abcdef"},
                    "filter": {"where": {"gte": [{"computed": "lifetime_value"}, 1]}}}),
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_destination_config");
        assert!(
            err.to_string().starts_with(
                "destination big-orders: filter.where.gte[0].computed is not available"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_webhook_mapping_sends_only_the_mapped_fields() {
        let d = Destination::parse(
            "erp",
            &json!({"type": "webhook", "settings": {"url": "https://h.example", "secret": "0123456789abcdef"},
                    "mapping": {"order": "properties.order_id", "total": "properties.revenue",
                                "missing": "properties.nothing"}}),
        )
        .unwrap();
        let event = json!({"type": "track", "event": "Order Completed", "anonymousId": "a",
                           "properties": {"order_id": "o1", "revenue": 9.5}});
        let Mapped::Send(r) = d.map(Outgoing {
            event: &event,
            delivery_id: "dlv_1",
            attempt: 1,
            timestamp_ms: 0,
        }) else {
            panic!("expected a request");
        };
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({"order": "o1", "total": 9.5})
        );
        let identity = Destination::parse(
            "erp",
            &json!({"type": "webhook", "settings": {"url": "https://h.example", "secret": "0123456789abcdef"},
                    "mapping": {"customer": "userId", "email": "context.traits.email"}}),
        )
        .unwrap();
        let body_for = |context: Value| {
            let event = json!({"type": "track", "event": "X", "userId": "victim",
                               "context": context});
            let Mapped::Send(r) = identity.map(Outgoing {
                event: &event,
                delivery_id: "dlv_1",
                attempt: 1,
                timestamp_ms: 0,
            }) else {
                panic!("expected a request");
            };
            serde_json::from_str::<Value>(&r.body).unwrap()
        };
        assert_eq!(
            body_for(json!({"traits": {"email": "v@x.example"}, "seam": {"identity": "claimed"}})),
            json!({}),
            "a page's claims are not mapped out as the person's"
        );
        assert_eq!(
            body_for(json!({"traits": {"email": "v@x.example"}, "seam": {"identity": "verified"}})),
            json!({"customer": "victim"})
        );
        assert_eq!(
            body_for(json!({"traits": {"email": "v@x.example"}})),
            json!({"customer": "victim", "email": "v@x.example"})
        );
        let err = Destination::parse(
            "m",
            &json!({"type": "meta", "settings": {"pixelId": "1", "accessToken": "t"},
                    "mapping": {"x": "y"}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination m: mapping is only available for webhooks"
        );
    }

    #[test]
    fn the_committed_defaults_parse_and_enable_nothing() {
        let doc: Value = serde_json::from_str(DEFAULT_DESTINATIONS).unwrap();
        let all = Destination::parse_all(&doc).unwrap();
        assert!(all.iter().all(|d| !d.enabled));
    }

    #[test]
    fn the_admin_view_never_shows_a_secret() {
        let raw = json!({"type": "meta", "settings": {"pixelId": "1", "accessToken": "EAAB", "testEventCode": "T"}});
        let shown = Destination::redacted(&raw);
        assert_eq!(shown["settings"]["accessToken"], json!("********"));
        assert_eq!(shown["settings"]["pixelId"], json!("1"));
        assert!(!shown.to_string().contains("EAAB"));
    }
}
