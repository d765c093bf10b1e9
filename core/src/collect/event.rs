//! The event model: tolerant raw input, validated into a typed [`Event`].
//!
//! Parsing accepts anything that is JSON; validation decides, per event, whether it can be stored
//! and why not. Unknown fields are kept verbatim in [`Event::body`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::format::time::{format_iso8601, parse_iso8601};

/// Largest accepted event, serialised (Segment's limit).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// `messageId` must be shorter than this many characters.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// The six Segment event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A user action (`event` + `properties`).
    Track,
    /// Who the user is (`traits`).
    Identify,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// Membership of an account or group (`groupId` + `traits`).
    Group,
    /// Joins `previousId` to `userId`.
    Alias,
}

impl EventType {
    /// Parses the wire name (`"track"`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "track" => Self::Track,
            "identify" => Self::Identify,
            "page" => Self::Page,
            "screen" => Self::Screen,
            "group" => Self::Group,
            "alias" => Self::Alias,
            _ => return None,
        })
    }

    /// The type a single-event path stands for, long (`track`) or browser short form (`t`).
    pub fn from_path(segment: &str) -> Option<Self> {
        match segment {
            "t" => Some(Self::Track),
            "i" => Some(Self::Identify),
            "p" => Some(Self::Page),
            "s" => Some(Self::Screen),
            "g" => Some(Self::Group),
            "a" => Some(Self::Alias),
            other => Self::parse(other),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Track => "track",
            Self::Identify => "identify",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }
}

/// Why one event was rejected. Each variant has a stable [`EventError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The batch element is not a JSON object.
    #[error("event must be a JSON object")]
    NotAnObject,
    /// The batch element is JSON the collector cannot represent (e.g. a number beyond f64).
    #[error("event contains values that cannot be read (numbers out of range?)")]
    Unreadable,
    /// `type` is missing or not one of the six types.
    #[error("event type must be one of track, identify, page, screen, group, alias")]
    InvalidType,
    /// Neither `anonymousId` nor `userId` is present.
    #[error("event needs an anonymousId or a userId")]
    MissingId,
    /// `messageId` is not a string or is too long.
    #[error("messageId must be a string shorter than 100 characters")]
    InvalidMessageId,
    /// A track event without an `event` name.
    #[error("track events need an event name")]
    MissingEventName,
    /// A group event without `groupId`.
    #[error("group events need a groupId")]
    MissingGroupId,
    /// An alias event without `previousId` or `userId`.
    #[error("alias events need a previousId and a userId")]
    MissingPreviousId,
    /// The serialised event is over [`MAX_EVENT_BYTES`].
    #[error("event is larger than 32 KB")]
    TooLarge,
    /// `timestamp`/`sentAt` is present but not an ISO-8601 date-time.
    #[error("{0} must be an ISO-8601 date-time")]
    InvalidTimestamp(&'static str),
    /// A field has the wrong JSON type.
    #[error("{0} has the wrong type")]
    InvalidField(&'static str),
    /// An identifier field over [`MAX_ID_BYTES`].
    #[error("{0} is longer than 256 bytes")]
    IdTooLong(&'static str),
    /// Consent denies storing this event (see the policy table in `enrich`).
    #[error("consent does not allow storing this event")]
    ConsentDenied,
    /// The event carries an identifier on the suppression list (a data-subject request).
    #[error("this event's identifiers are suppressed")]
    Suppressed,
}

impl EventError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnObject | Self::Unreadable => "invalid_event",
            Self::InvalidType => "invalid_type",
            Self::MissingId => "missing_id",
            Self::InvalidMessageId => "invalid_message_id",
            Self::MissingEventName => "missing_event_name",
            Self::MissingGroupId => "missing_group_id",
            Self::MissingPreviousId => "missing_previous_id",
            Self::TooLarge => "event_too_large",
            Self::InvalidTimestamp(_) => "invalid_timestamp",
            Self::InvalidField(_) => "invalid_field",
            Self::IdTooLong(_) => "identifier_too_long",
            Self::ConsentDenied => "consent_denied",
            Self::Suppressed => "suppressed",
        }
    }
}

/// A validated event, ready to store.
// Serialised only for the queue of events D1 could not take yet (`collect::deferred`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event type.
    pub kind: EventType,
    /// Dedup key (client's, or generated when missing).
    pub message_id: String,
    /// Anonymous ID, when present.
    pub anonymous_id: Option<String>,
    /// Known user ID, when present.
    pub user_id: Option<String>,
    /// `event` for track, `name` for page/screen.
    pub name: Option<String>,
    /// Skew-corrected event time.
    pub timestamp_ms: i64,
    /// When the collector received it.
    pub received_at_ms: i64,
    /// The whole event as stored: client fields (unknown ones included) plus normalised ones.
    pub body: Map<String, Value>,
    /// Stored without identifiers because consent denied analytics.
    pub anonymized: bool,
}

/// What the collector knows about the request an event arrived in.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// Receive time at the collector.
    pub received_at_ms: i64,
    /// Batch-level `sentAt`, if any.
    pub sent_at: Option<Value>,
    /// Batch-level `context`, merged under each event's own.
    pub context: Option<Map<String, Value>>,
    /// Batch-level `integrations`, merged under each event's own.
    pub integrations: Option<Map<String, Value>>,
    /// The type fixed by a single-event path (`/v1/track`), overriding the body's.
    pub path_type: Option<EventType>,
}

/// Validates one raw event. `fresh_message_id` is used when the client sent none.
pub fn validate(
    raw: Value,
    raw_len: usize,
    envelope: &Envelope,
    fresh_message_id: impl FnOnce() -> String,
) -> Result<Event, EventError> {
    if raw_len > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge);
    }
    let Value::Object(mut body) = raw else {
        return Err(EventError::NotAnObject);
    };
    let kind = match envelope.path_type {
        Some(kind) => kind,
        None => body
            .get("type")
            .and_then(Value::as_str)
            .and_then(EventType::parse)
            .ok_or(EventError::InvalidType)?,
    };
    let anonymous_id = id_field(&body, "anonymousId")?;
    let user_id = id_field(&body, "userId")?;
    if anonymous_id.is_none() && user_id.is_none() {
        return Err(EventError::MissingId);
    }
    let message_id = match body.get("messageId") {
        None | Some(Value::Null) => fresh_message_id(),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() < MAX_MESSAGE_ID_CHARS => {
            s.clone()
        }
        Some(_) => return Err(EventError::InvalidMessageId),
    };
    for field in ["properties", "traits", "context", "integrations"] {
        if !matches!(body.get(field), None | Some(Value::Null | Value::Object(_))) {
            return Err(EventError::InvalidField(field));
        }
    }
    let name = match kind {
        EventType::Track => Some(
            non_empty_str(&body, "event")
                .ok_or(EventError::MissingEventName)?
                .to_owned(),
        ),
        EventType::Page | EventType::Screen => non_empty_str(&body, "name").map(str::to_owned),
        _ => None,
    };
    if kind == EventType::Group && id_field(&body, "groupId")?.is_none() {
        return Err(EventError::MissingGroupId);
    }
    if kind == EventType::Alias && (id_field(&body, "previousId")?.is_none() || user_id.is_none()) {
        return Err(EventError::MissingPreviousId);
    }

    let original = time_field(body.get("timestamp"), "timestamp")?;
    let sent_at = match body.get("sentAt") {
        Some(v) => time_field(Some(v), "sentAt")?,
        None => time_field(envelope.sent_at.as_ref(), "sentAt")?,
    };
    let timestamp_ms = corrected_timestamp(original, sent_at, envelope.received_at_ms);

    merge_under(&mut body, "context", envelope.context.as_ref());
    merge_under(&mut body, "integrations", envelope.integrations.as_ref());
    // The write key authenticates the request; it is not part of the event.
    body.remove("writeKey");
    if let Some(ts) = body.remove("timestamp") {
        if !ts.is_null() {
            body.insert("originalTimestamp".into(), ts);
        }
    }
    body.insert("type".into(), Value::from(kind.as_str()));
    body.insert("messageId".into(), Value::from(message_id.clone()));
    body.insert(
        "timestamp".into(),
        Value::from(format_iso8601(timestamp_ms)),
    );
    body.insert(
        "receivedAt".into(),
        Value::from(format_iso8601(envelope.received_at_ms)),
    );
    if let Some(sent) = sent_at {
        body.insert("sentAt".into(), Value::from(format_iso8601(sent)));
    }
    // Normalise numeric IDs to strings so stored rows and the body agree.
    if let Some(a) = &anonymous_id {
        body.insert("anonymousId".into(), Value::from(a.clone()));
    }
    if let Some(u) = &user_id {
        body.insert("userId".into(), Value::from(u.clone()));
    }

    Ok(Event {
        kind,
        message_id,
        anonymous_id,
        user_id,
        name,
        timestamp_ms,
        received_at_ms: envelope.received_at_ms,
        body,
        anonymized: false,
    })
}

/// Segment's clock-skew correction: `receivedAt - (sentAt - timestamp)`. Without `sentAt` the
/// client's timestamp is kept; without a timestamp the event happened when it was received.
pub fn corrected_timestamp(timestamp: Option<i64>, sent_at: Option<i64>, received_at: i64) -> i64 {
    match (timestamp, sent_at) {
        (Some(ts), Some(sent)) => received_at.saturating_sub(sent.saturating_sub(ts)),
        (Some(ts), None) => ts,
        (None, _) => received_at,
    }
}

/// Identifiers longer than this are refused: every identifier is an index key, a KV key and a
/// hash input, and no real ID system needs more.
pub const MAX_ID_BYTES: usize = 256;

/// An identifier field: a non-empty string of at most [`MAX_ID_BYTES`] (trimmed), or a number
/// (some server libraries send numeric user IDs), normalised to a string.
fn id_field(body: &Map<String, Value>, field: &'static str) -> Result<Option<String>, EventError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.trim().len() > MAX_ID_BYTES => {
            Err(EventError::IdTooLong(field))
        }
        // Stored as the identity graph normalises it: an ID padded with spaces must not be a
        // second spelling that export and erasure by the plain ID miss.
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(EventError::InvalidField(field)),
    }
}

fn non_empty_str<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn time_field(value: Option<&Value>, field: &'static str) -> Result<Option<i64>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_iso8601(s)
            .map(Some)
            .ok_or(EventError::InvalidTimestamp(field)),
        Some(_) => Err(EventError::InvalidTimestamp(field)),
    }
}

/// Fills keys missing from `body[field]` with the batch-level object's; the event's own win.
fn merge_under(body: &mut Map<String, Value>, field: &str, batch: Option<&Map<String, Value>>) {
    let Some(batch) = batch.filter(|b| !b.is_empty()) else {
        return;
    };
    let slot = body
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(own) = slot {
        for (k, v) in batch {
            own.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope() -> Envelope {
        Envelope {
            received_at_ms: 1_700_000_000_000,
            ..Envelope::default()
        }
    }

    fn check(raw: Value) -> Result<Event, EventError> {
        let len = raw.to_string().len();
        validate(raw, len, &envelope(), || "generated".into())
    }

    #[test]
    fn stores_identifiers_trimmed() {
        let event = check(
            json!({"type": "track", "event": "x", "anonymousId": "  a1 ", "userId": "\tu1\n"}),
        )
        .unwrap();
        assert_eq!(event.anonymous_id.as_deref(), Some("a1"));
        assert_eq!(event.user_id.as_deref(), Some("u1"));
        assert_eq!(event.body["anonymousId"], json!("a1"));
        assert_eq!(event.body["userId"], json!("u1"));
    }

    #[test]
    fn rejects_identifiers_over_256_bytes() {
        let at_cap = "é".repeat(128);
        assert!(check(json!({"type": "identify", "userId": at_cap})).is_ok());
        for field in ["anonymousId", "userId"] {
            let mut raw = json!({"type": "track", "event": "x", "anonymousId": "a"});
            raw[field] = json!("x".repeat(257));
            let err = check(raw).unwrap_err();
            assert_eq!(
                (err.code(), err.to_string()),
                (
                    "identifier_too_long",
                    format!("{field} is longer than 256 bytes")
                )
            );
        }
        let group = check(json!({"type": "group", "userId": "u", "groupId": "g".repeat(300)}));
        assert_eq!(group.unwrap_err(), EventError::IdTooLong("groupId"));
    }

    #[test]
    fn accepts_track_and_keeps_unknown_fields() {
        let event = check(json!({
            "type": "track", "event": "Product Viewed", "anonymousId": "a1",
            "messageId": "m1", "properties": {"sku": "X"}, "custom": {"deep": [1, 2]}
        }))
        .unwrap();
        assert_eq!(event.kind, EventType::Track);
        assert_eq!(event.name.as_deref(), Some("Product Viewed"));
        assert_eq!(event.body["custom"], json!({"deep": [1, 2]}));
        assert_eq!(event.body["receivedAt"], json!("2023-11-14T22:13:20.000Z"));
    }

    #[test]
    fn rejects_event_without_ids() {
        let err = check(json!({"type": "track", "event": "x", "anonymousId": "  "})).unwrap_err();
        assert_eq!(err.code(), "missing_id");
    }

    #[test]
    fn rejects_track_without_event_name() {
        let err = check(json!({"type": "track", "userId": "u"})).unwrap_err();
        assert_eq!(err, EventError::MissingEventName);
    }

    #[test]
    fn rejects_unknown_type_and_non_objects() {
        assert_eq!(
            check(json!({"type": "explode", "userId": "u"})).unwrap_err(),
            EventError::InvalidType
        );
        assert_eq!(check(json!([1])).unwrap_err(), EventError::NotAnObject);
    }

    #[test]
    fn rejects_group_without_group_id_and_alias_without_previous_id() {
        assert_eq!(
            check(json!({"type": "group", "userId": "u"})).unwrap_err(),
            EventError::MissingGroupId
        );
        assert_eq!(
            check(json!({"type": "alias", "userId": "u"})).unwrap_err(),
            EventError::MissingPreviousId
        );
        assert!(check(json!({"type": "alias", "userId": "u", "previousId": "a"})).is_ok());
    }

    #[test]
    fn rejects_long_message_id_and_wrong_field_types() {
        let long = "m".repeat(100);
        assert_eq!(
            check(json!({"type": "page", "userId": "u", "messageId": long})).unwrap_err(),
            EventError::InvalidMessageId
        );
        assert_eq!(
            check(json!({"type": "page", "userId": "u", "properties": "nope"})).unwrap_err(),
            EventError::InvalidField("properties")
        );
    }

    #[test]
    fn rejects_oversized_event() {
        let raw = json!({"type": "track", "event": "x", "userId": "u"});
        let err = validate(raw, MAX_EVENT_BYTES + 1, &envelope(), String::new).unwrap_err();
        assert_eq!(err.code(), "event_too_large");
    }

    #[test]
    fn generates_message_id_when_missing_and_normalises_numeric_user_id() {
        let event = check(json!({"type": "identify", "userId": 42})).unwrap();
        assert_eq!(event.message_id, "generated");
        assert_eq!(event.user_id.as_deref(), Some("42"));
        assert_eq!(event.body["userId"], json!("42"));
    }

    #[test]
    fn corrects_clock_skew_with_sent_at() {
        // Client clock is one hour fast: sent 10 s after the event by its own clock.
        let event = check(json!({
            "type": "track", "event": "x", "userId": "u",
            "timestamp": "2023-11-14T23:13:10.000Z", "sentAt": "2023-11-14T23:13:20.000Z"
        }))
        .unwrap();
        assert_eq!(event.timestamp_ms, 1_700_000_000_000 - 10_000);
        assert_eq!(
            event.body["originalTimestamp"],
            json!("2023-11-14T23:13:10.000Z")
        );
        assert_eq!(event.body["timestamp"], json!("2023-11-14T22:13:10.000Z"));
    }

    #[test]
    fn rejects_unparseable_timestamp() {
        let err = check(json!({"type": "track", "event": "x", "userId": "u", "timestamp": "soon"}))
            .unwrap_err();
        assert_eq!(err, EventError::InvalidTimestamp("timestamp"));
    }

    #[test]
    fn batch_context_fills_gaps_without_overriding() {
        let env = Envelope {
            context: json!({"ip": "1.2.3.4", "locale": "nl"})
                .as_object()
                .cloned(),
            path_type: Some(EventType::Page),
            ..envelope()
        };
        let raw = json!({"userId": "u", "context": {"locale": "en"}, "writeKey": "k"});
        let event = validate(raw, 10, &env, String::new).unwrap();
        assert_eq!(event.kind, EventType::Page);
        assert_eq!(
            event.body["context"],
            json!({"ip": "1.2.3.4", "locale": "en"})
        );
        assert!(!event.body.contains_key("writeKey"));
    }
}
