//! The SDK's outgoing queue as pure data: which events go in the next request, how the request
//! body looks, and what a response status means for them.
//!
//! Events are kept as already-serialised JSON strings so the browser never needs `serde_json`
//! (about 25 KB gzip): the SDK serialises with the browser's own `JSON.stringify`.

use std::collections::VecDeque;

/// Browsers cap the bodies of all in-flight `keepalive` requests of a page at 64 KiB together;
/// stay under it with room for the envelope.
pub const MAX_BATCH_BYTES: usize = 60 * 1024;

/// Serialised events waiting to be sent, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    items: VecDeque<String>,
    bytes: usize,
}

impl Outbox {
    /// Adds one serialised event at the back.
    pub fn push(&mut self, event_json: String) {
        self.bytes += event_json.len();
        self.items.push_back(event_json);
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of serialised events waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Removes the oldest events that fit in one request: at most `max_events`, and at most
    /// `max_bytes` of events, but always at least one so an oversized event cannot block the queue
    /// (the collector rejects it with a code instead).
    pub fn take_batch(&mut self, max_events: usize, max_bytes: usize) -> Vec<String> {
        let mut batch = Vec::new();
        let mut size = 0;
        while let Some(next) = self.items.front() {
            let fits = size + next.len() < max_bytes;
            if batch.len() >= max_events.max(1) || (!batch.is_empty() && !fits) {
                break;
            }
            size += next.len() + 1;
            if let Some(item) = self.items.pop_front() {
                self.bytes -= item.len();
                batch.push(item);
            }
        }
        batch
    }

    /// Puts a batch that could not be delivered back at the front, in its original order.
    pub fn restore(&mut self, batch: Vec<String>) {
        for item in batch.into_iter().rev() {
            self.bytes += item.len();
            self.items.push_front(item);
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }
}

/// The `/v1/batch` body for `events` (each already a JSON object).
pub fn batch_body(events: &[String], write_key: &str, sent_at: &str) -> String {
    let mut body = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 96);
    body.push_str("{\"batch\":[");
    body.push_str(&events.join(","));
    body.push_str("],\"sentAt\":");
    body.push_str(&json_string(sent_at));
    body.push_str(",\"writeKey\":");
    body.push_str(&json_string(write_key));
    body.push('}');
    body
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What to do with a sent batch, given the response status (`None`: no response at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The collector has it.
    Delivered,
    /// Try again later (network failure, 429, 5xx).
    Retry,
    /// The collector refused it for good (other 4xx): retrying cannot help.
    Drop,
}

/// Segment's delivery policy: < 400 delivered; 429 and 5xx retried; other 4xx dropped.
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(s) if s < 400 => Verdict::Delivered,
        Some(429) => Verdict::Retry,
        Some(s) if s >= 500 => Verdict::Retry,
        Some(_) => Verdict::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outbox(items: &[&str]) -> Outbox {
        let mut o = Outbox::default();
        for i in items {
            o.push((*i).to_owned());
        }
        o
    }

    #[test]
    fn takes_oldest_first_up_to_count() {
        let mut o = outbox(&["{1}", "{2}", "{3}"]);
        assert_eq!(o.take_batch(2, 1000), vec!["{1}", "{2}"]);
        assert_eq!(o.len(), 1);
        assert_eq!(o.bytes(), 3);
    }

    #[test]
    fn stops_at_byte_budget_but_never_takes_nothing() {
        let mut o = outbox(&["aaaa", "bbbb", "cccc"]);
        assert_eq!(o.take_batch(10, 10), vec!["aaaa", "bbbb"]);
        let mut huge = outbox(&["way-too-large"]);
        assert_eq!(huge.take_batch(10, 4), vec!["way-too-large"]);
    }

    #[test]
    fn restore_puts_failed_batch_back_in_order() {
        let mut o = outbox(&["a", "b", "c"]);
        let batch = o.take_batch(2, 100);
        o.push("d".into());
        o.restore(batch);
        assert_eq!(o.take_batch(10, 100), vec!["a", "b", "c", "d"]);
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn batch_body_is_valid_json() {
        let body = batch_body(
            &["{\"a\":1}".into(), "{}".into()],
            "k\"ey",
            "2026-01-01T00:00:00.000Z",
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["batch"][0]["a"], 1);
        assert_eq!(v["writeKey"], "k\"ey");
    }

    #[test]
    fn verdict_follows_segment_policy() {
        assert_eq!(verdict(Some(200)), Verdict::Delivered);
        assert_eq!(verdict(Some(400)), Verdict::Drop);
        assert_eq!(verdict(Some(413)), Verdict::Drop);
        assert_eq!(verdict(Some(429)), Verdict::Retry);
        assert_eq!(verdict(Some(503)), Verdict::Retry);
        assert_eq!(verdict(None), Verdict::Retry);
    }

    proptest! {
        #[test]
        fn json_string_round_trips(s in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
            let back: String = serde_json::from_str(&json_string(&s)).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn batches_preserve_every_event_once(
            items in proptest::collection::vec("[a-z]{0,30}", 0..40),
            max_events in 1usize..10,
            max_bytes in 1usize..100,
        ) {
            let mut o = Outbox::default();
            for i in &items { o.push(i.clone()); }
            let mut out = Vec::new();
            while !o.is_empty() {
                let b = o.take_batch(max_events, max_bytes);
                prop_assert!(!b.is_empty() && b.len() <= max_events);
                out.extend(b);
            }
            prop_assert_eq!(out, items);
        }
    }
}
