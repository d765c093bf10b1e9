//! Activation: sending events to the tools a site already uses.
//!
//! Destinations are pure mappers, like Segment's action-destinations and Edgee's components: a
//! stored event plus a destination's settings become an [`HttpRequest`] description, and the edge
//! only executes it. Around them sit the rules every delivery follows, all pure:
//!
//! - [`destination`]: configuration (`config/destinations.json`, the admin API), parsed then
//!   validated, with errors that name the destination and the field; which events a destination
//!   takes; its secrets, which the admin API never returns.
//! - [`policy`]: the delivery ID (stable per destination and `messageId`, sent where the API can
//!   deduplicate on it), the consent a destination's purpose needs, retries (backoff with
//!   jitter, `Retry-After`, a retry window, then the dead-letter list) and which URLs may be
//!   called at all (no private, loopback or link-local targets).
//! - one module per destination type: [`webhook`], [`ga4`], [`meta`], [`klaviyo`]; and the
//!   message channels journeys send through: [`sendgrid`] (e-mail) and [`twilio`] (SMS,
//!   WhatsApp).

pub mod deliver;
pub mod destination;
pub mod ga4;
pub mod klaviyo;
pub mod meta;
pub mod policy;
pub mod sealed;
pub mod sendgrid;
pub mod twilio;
pub mod webhook;

use serde_json::Value;

use crate::identity::Proof;

/// A request a mapper asks the edge to make.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// `POST`, `DELETE`, ...
    pub method: &'static str,
    /// Full URL, query included.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body exactly as sent (signatures are computed over these bytes).
    pub body: String,
}

impl HttpRequest {
    /// A JSON `POST` of `body` to `url`.
    pub fn post_json(url: String, body: &Value) -> Self {
        Self {
            method: "POST",
            url,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a mapper makes of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Send this.
    Send(HttpRequest),
    /// Send this, then the request [`FollowUp::next`] builds from its answer (an API that
    /// needs an ID it only hands out in a response).
    SendThen(HttpRequest, FollowUp),
    /// Nothing to send, for this reason (a stable code): e.g. the destination needs an
    /// identifier the event lacks. Not an error: the delivery is recorded as skipped.
    Skip(&'static str),
}

/// A second request built from the first one's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    /// Add the profile Klaviyo returned to a list, or remove it.
    KlaviyoList(klaviyo::ListChange),
}

impl FollowUp {
    /// The request for the first request's JSON answer; `None` when the answer lacks what it
    /// needs.
    pub fn next(&self, answer: &Value) -> Option<HttpRequest> {
        match self {
            FollowUp::KlaviyoList(change) => change.request(answer),
        }
    }
}

/// One event on its way to one destination.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The event as stored (Segment spec, with the collector's additions).
    pub event: &'a Value,
    /// [`policy::delivery_id`] of the destination and the event's `messageId`.
    pub delivery_id: &'a str,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The event's time as stored (skew-corrected, a browser's clamped to a window around its
    /// receipt), epoch ms.
    pub timestamp_ms: i64,
}

/// Text of a string or number field.
pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number, or a numeric string.
pub(crate) fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `properties` of an event (an empty object when missing).
pub(crate) fn properties(event: &Value) -> &serde_json::Map<String, Value> {
    static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> = std::sync::OnceLock::new();
    event
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new))
}

/// The event's name as destinations see it: the `event` of a track, `Page Viewed` / `Screen
/// Viewed` for pages and screens, `Identify` for identifies.
pub(crate) fn event_name(event: &Value) -> String {
    event.as_object().map(name_of).unwrap_or_default()
}

/// [`event_name`] of a stored body.
pub fn name_of(body: &serde_json::Map<String, Value>) -> String {
    match body.get("type").and_then(Value::as_str) {
        Some("track") => text(body.get("event")).unwrap_or_default(),
        Some("page") => "Page Viewed".into(),
        Some("screen") => "Screen Viewed".into(),
        Some("identify") => "Identify".into(),
        Some("group") => "Group".into(),
        Some("alias") => "Alias".into(),
        _ => String::new(),
    }
}

/// The user ID a destination may act on: the event's own, unless a browser only claimed it
/// (an unverified `userId` must not reach another tool as that user).
pub(crate) fn user_id(event: &Value) -> Option<String> {
    match Proof::of_body(event.get("context")) {
        Proof::Claimed => None,
        Proof::Trusted | Proof::Verified => text(event.get("userId")),
    }
}

/// The person's email or phone as a trusted sender stated it: identify `traits`, then
/// `context.traits`. A browser's are claims (anyone may type anyone's address) and are never
/// passed on as the person's.
pub(crate) fn contact(event: &Value, field: &str) -> Option<String> {
    if Proof::of_body(event.get("context")) != Proof::Trusted {
        return None;
    }
    let from_traits = (event.get("type").and_then(Value::as_str) == Some("identify"))
        .then(|| text(event.get("traits").and_then(|t| t.get(field))))
        .flatten();
    from_traits.or_else(|| {
        text(
            event
                .get("context")
                .and_then(|c| c.get("traits"))
                .and_then(|t| t.get(field)),
        )
    })
}
