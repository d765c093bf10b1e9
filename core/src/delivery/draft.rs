//! Events as the browser SDK records them: captured when the call happens, stamped with the
//! anonymous ID and consent when they are queued (which, before `analytics_storage` is granted,
//! may be later: buffered events leave with the ID minted at the grant).

use alloc::string::String;

use crate::format::jsontext::ObjectWriter;

/// An event recorded by the SDK, not yet stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// `track`, `page`, `identify`, `group` or `alias`.
    pub kind: &'static str,
    /// Stable across retries; the collector dedups on it.
    pub message_id: String,
    /// ISO-8601 time of the call.
    pub timestamp: String,
    /// The user ID at the time of the call (for `alias`, the new one).
    pub user_id: Option<String>,
    /// Type-specific members as JSON text, without braces (`"event":"X","properties":{}`).
    pub members: String,
    /// `context.page` as JSON text, captured at the call.
    pub page: String,
}

/// What [`compose`] adds when the event is queued.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The anonymous ID to send (the persistent one, or a page-only one when cookieless).
    pub anonymous_id: &'a str,
    /// `context` members common to every event, as JSON text without braces
    /// (`"library":{..},"userAgent":".."`).
    pub context: &'a str,
    /// `context.consent` as JSON text.
    pub consent: &'a str,
}

/// The event as sent: Segment's shape, with `context.page` and `context.consent`.
pub fn compose(draft: &Draft, stamp: Stamp<'_>) -> String {
    let mut context = String::with_capacity(stamp.context.len() + draft.page.len() + 400);
    context.push('{');
    context.push_str(stamp.context);
    if !stamp.context.is_empty() {
        context.push(',');
    }
    context.push_str("\"page\":");
    context.push_str(&draft.page);
    context.push_str(",\"consent\":");
    context.push_str(stamp.consent);
    context.push('}');
    let mut event = ObjectWriter::with_capacity(context.len() + draft.members.len() + 160)
        .string("type", draft.kind)
        .string("messageId", &draft.message_id)
        .string("timestamp", &draft.timestamp)
        .string("anonymousId", stamp.anonymous_id)
        .string_opt("userId", draft.user_id.as_deref());
    if !draft.members.is_empty() {
        event = event.members(&draft.members);
    }
    event.raw("context", &context).finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn composes_a_segment_event_with_page_and_consent() {
        let draft = Draft {
            kind: "track",
            message_id: "seam-1-x".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            user_id: Some("u\"1".into()),
            members: r#""event":"Product Viewed","properties":{"price":12.5}"#.into(),
            page: r#"{"path":"/p"}"#.into(),
        };
        let stamp = Stamp {
            anonymous_id: "a1",
            context: r#""library":{"name":"seam.js"}"#,
            consent: r#"{"gcm":{}}"#,
        };
        let v: Value = serde_json::from_str(&compose(&draft, stamp)).unwrap();
        assert_eq!(
            v,
            json!({"type": "track", "messageId": "seam-1-x", "timestamp": "2026-01-01T00:00:00.000Z",
                   "anonymousId": "a1", "userId": "u\"1", "event": "Product Viewed",
                   "properties": {"price": 12.5},
                   "context": {"library": {"name": "seam.js"}, "page": {"path": "/p"}, "consent": {"gcm": {}}}})
        );
        let bare = Draft {
            user_id: None,
            members: String::new(),
            ..draft
        };
        let v: Value = serde_json::from_str(&compose(
            &bare,
            Stamp {
                context: "",
                ..stamp
            },
        ))
        .unwrap();
        assert!(v.get("userId").is_none());
        assert_eq!(
            v["context"],
            json!({"page": {"path": "/p"}, "consent": {"gcm": {}}})
        );
    }
}
