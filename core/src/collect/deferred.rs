//! Events stored after the answer: those of a source that asks for the queue (`"ingest":
//! "queue"`), and any accepted while D1 could not store them. The edge queues them as the
//! request left them (identity proven, clock clamped, not yet enriched) with the source and
//! request facts they were accepted under, and the consumer stores them exactly as ingestion
//! would have, several requests at a time ([`merge`]): a retry of the same `messageId`s stores
//! nothing twice.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::collect::enrich::RequestFacts;
use crate::collect::event::Event;
use crate::collect::ingest::{Decoded, Outcome};
use crate::collect::source::Source;

/// Largest message, serialised: Cloudflare Queues take 128 KB, and an event is at most
/// 32 KB plus what the collector adds.
pub const MAX_MESSAGE_BYTES: usize = 96 * 1024;

/// One queue message: some of a request's valid events, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    /// The source as it was when the events were accepted (its trust decides what they prove).
    pub source: Source,
    /// What the edge knew about the request.
    pub facts: RequestFacts,
    /// When the collector received the request.
    pub received_at: i64,
    /// The events.
    pub events: Vec<Event>,
}

impl Deferred {
    /// The events as a decoded request from `source`, ready to accept.
    pub fn into_decoded(self) -> (Source, RequestFacts, i64, Decoded) {
        let decoded = Decoded {
            write_key: None,
            outcomes: self.events.into_iter().map(Outcome::Valid).collect(),
        };
        (self.source, self.facts, self.received_at, decoded)
    }
}

/// Joins decoded requests of one source into one, in order. An event whose `messageId` an
/// earlier part holds becomes a repeat, as within one request: a statement may not write a row
/// twice, and a client's retry queued beside its first try is the same event.
pub fn merge(parts: impl IntoIterator<Item = Decoded>) -> Decoded {
    let mut seen = HashSet::new();
    let mut outcomes = Vec::new();
    for part in parts {
        for outcome in part.outcomes {
            outcomes.push(match outcome {
                Outcome::Valid(event) if !seen.insert(event.message_id.clone()) => {
                    Outcome::RepeatedInRequest(event.message_id)
                }
                other => other,
            });
        }
    }
    Decoded {
        write_key: None,
        outcomes,
    }
}

/// A [`Deferred`] as it is written: the events borrowed, not copied.
#[derive(Serialize)]
struct Outgoing<'a> {
    source: &'a Source,
    facts: &'a RequestFacts,
    received_at: i64,
    events: Vec<&'a Event>,
}

/// Counts the bytes serialised into it, keeping none.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn serialised_len(value: &impl Serialize) -> usize {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_or(0, |()| counter.0)
}

/// Splits `decoded`'s valid events into messages of at most [`MAX_MESSAGE_BYTES`] each, in
/// request order, and returns each message's text (a [`Deferred`] as JSON). Rejected and
/// repeated events are left out: their results are final. The events are written from where
/// they are, not copied into a [`Deferred`] first: on the path that answers a page, copying and
/// freeing them cost as much as writing them.
pub fn defer(
    source: &Source,
    facts: &RequestFacts,
    received_at: i64,
    decoded: &Decoded,
) -> Result<Vec<String>, serde_json::Error> {
    let empty = || Outgoing {
        source,
        facts,
        received_at,
        events: Vec::new(),
    };
    let overhead = serialised_len(&empty());
    let mut messages = Vec::new();
    let mut current = empty();
    let mut bytes = overhead;
    for event in decoded.valid() {
        // A comma between events, and the event itself.
        let size = 1 + serialised_len(event);
        if !current.events.is_empty() && bytes + size > MAX_MESSAGE_BYTES {
            messages.push(std::mem::replace(&mut current, empty()));
            bytes = overhead;
        }
        bytes += size;
        current.events.push(event);
    }
    if !current.events.is_empty() {
        messages.push(current);
    }
    messages.iter().map(serde_json::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::enrich::Geo;
    use crate::collect::ingest::decode;

    fn request(events: &[serde_json::Value]) -> Decoded {
        let body = serde_json::json!({ "batch": events }).to_string();
        let mut n = 0;
        decode(body.as_bytes(), None, 1_700_000_000_000, || {
            n += 1;
            format!("generated-{n}")
        })
        .unwrap()
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            ip: Some("203.0.113.9".into()),
            user_agent: Some("Mozilla/5.0".into()),
            gpc: true,
            geo: Some(Geo {
                country: Some("DE".into()),
                ..Geo::default()
            }),
            cookie_id: Some("c-1".into()),
        }
    }

    #[test]
    fn keeps_valid_events_with_their_source_and_facts_through_the_queue() {
        let decoded = request(&[
            serde_json::json!({"type": "track", "event": "Order Completed", "anonymousId": "a",
                "messageId": "m1", "properties": {"revenue": 12.5}, "context": {"seam": {"identity": "claimed"}}}),
            serde_json::json!({"type": "nonsense", "anonymousId": "a", "messageId": "m2"}),
            serde_json::json!({"type": "identify", "userId": "u", "messageId": "m3", "traits": {"plan": "pro"}}),
            serde_json::json!({"type": "identify", "userId": "u", "messageId": "m3"}),
        ]);
        let source = Source::server("server");
        let messages = defer(&source, &facts(), 42, &decoded).unwrap();
        assert_eq!(messages.len(), 1);
        let back: Deferred = serde_json::from_str(&messages[0]).unwrap();
        let (source_back, facts_back, received_at, restored) = back.into_decoded();
        assert_eq!(source_back, source);
        assert_eq!(facts_back, facts());
        assert_eq!(received_at, 42);
        let original: Vec<_> = decoded.valid().cloned().collect();
        let restored: Vec<_> = restored.valid().cloned().collect();
        assert_eq!(restored, original);
        assert_eq!(restored.len(), 2);
    }

    #[test]
    fn splits_large_requests_into_messages_under_the_queue_limit_in_order() {
        let padding = "x".repeat(20_000);
        let events: Vec<_> = (0..20)
            .map(|i| {
                serde_json::json!({"type": "track", "event": "Viewed", "anonymousId": "a",
                "messageId": format!("m{i}"), "properties": {"padding": padding}})
            })
            .collect();
        let messages = defer(&Source::server("server"), &facts(), 1, &request(&events)).unwrap();
        assert!(messages.len() >= 4, "{} messages", messages.len());
        for m in &messages {
            assert!(m.len() <= MAX_MESSAGE_BYTES);
        }
        let ids: Vec<_> = messages
            .iter()
            .map(|m| serde_json::from_str::<Deferred>(m).unwrap())
            .flat_map(|m| m.events.into_iter().map(|e| e.message_id))
            .collect();
        let expected: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn merges_requests_in_order_with_a_repeated_message_id_as_a_repeat() {
        let first = request(&[
            serde_json::json!({"type": "track", "event": "A", "anonymousId": "a", "messageId": "m1"}),
            serde_json::json!({"type": "nonsense", "messageId": "bad"}),
        ]);
        let second = request(&[
            serde_json::json!({"type": "track", "event": "A", "anonymousId": "a", "messageId": "m1"}),
            serde_json::json!({"type": "track", "event": "B", "anonymousId": "b", "messageId": "m2"}),
        ]);
        let merged = merge([first, second]);
        let valid: Vec<_> = merged.valid().map(|e| e.message_id.as_str()).collect();
        assert_eq!(valid, ["m1", "m2"]);
        assert!(matches!(&merged.outcomes[1], Outcome::Rejected { .. }));
        assert_eq!(merged.outcomes[2], Outcome::RepeatedInRequest("m1".into()));
        assert_eq!(merged.outcomes.len(), 4);
    }

    #[test]
    fn defers_nothing_when_no_event_is_valid() {
        let decoded = request(&[serde_json::json!({"type": "nonsense"})]);
        assert!(defer(&Source::server("server"), &facts(), 1, &decoded)
            .unwrap()
            .is_empty());
    }
}
