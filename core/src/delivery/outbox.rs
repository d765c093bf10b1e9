//! The SDK's outgoing queue as pure data: what is stored, what goes in the next request, what a
//! response means for each event, and when to try again.
//!
//! Events are kept as already-serialised JSON strings so the browser never needs `serde_json`
//! (about 25 KB gzip): the SDK serialises properties with the browser's own `JSON.stringify`.
//!
//! Each tab stores its queue in its own storage entry ([`Outbox::encode`] / [`Outbox::decode`]),
//! written only by that tab; a queue left by a closed tab is adopted whole by another
//! ([`Outbox::append`] keeps retry state). An event being sent is *leased*: its `not_before`
//! moves [`LEASE_MS`] into the future so it is not sent twice meanwhile, and a page that dies
//! mid-send loses nothing: the lease runs out and the tab that adopts the queue (or the next
//! page) sends it again with the same `messageId`, which the collector dedups.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use crate::format::ascii::{parse_i64, parse_u64, split_ascii, trim};
use crate::format::jsontext::{push_integer, ObjectWriter};

/// Browsers cap the bodies of all in-flight `keepalive` requests of a page at 64 KiB together;
/// stay under it with room for the envelope.
pub const MAX_BATCH_BYTES: usize = 60 * 1024;
/// Default byte budget of the stored queue; past it the oldest events are evicted (and counted).
pub const DEFAULT_BUDGET_BYTES: usize = 1024 * 1024;
/// How long an event being sent is hidden from other senders.
pub const LEASE_MS: i64 = 10_000;
/// First retry delay; doubles per attempt up to [`MAX_BACKOFF_MS`].
pub const BASE_BACKOFF_MS: u64 = 500;
/// Longest delay between retries (Segment's cap).
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// Longest `Retry-After` honoured, so a misconfigured server cannot park events for days.
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// One queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Epoch ms before which nobody sends it (lease or backoff).
    pub not_before: i64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// The event's `messageId` (stable across retries).
    pub message_id: String,
    /// The serialised event.
    pub json: String,
}

impl Entry {
    fn size(&self) -> usize {
        self.json.len() + self.message_id.len() + 16
    }
}

/// Serialised events waiting to be sent, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    items: Vec<Entry>,
    bytes: usize,
    /// Events evicted for the byte budget and not yet reported to the collector.
    pub evicted: u64,
}

/// What the collector said about a sent batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status; `None` when no response arrived (network error, offline, CORS).
    pub status: Option<u16>,
    /// `Retry-After`, in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// `messageId`s the collector rejected per event (`status: "rejected"`): never retried.
    pub rejected: Vec<String>,
}

/// What [`Outbox::settle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Events the collector has (accepted or duplicate).
    pub delivered: usize,
    /// Events dropped for good (refused batch or per-event rejection).
    pub dropped: usize,
    /// Events kept for a retry.
    pub retried: usize,
    /// When they are due again (ms from now), when any were kept.
    pub retry_in_ms: Option<u64>,
}

impl Outbox {
    /// Adds one serialised event at the back, then evicts the oldest events while the queue is
    /// over `budget` bytes (never the one just added). Returns how many were evicted.
    pub fn push(&mut self, message_id: String, json: String, budget: usize) -> u64 {
        let entry = Entry {
            not_before: 0,
            attempts: 0,
            message_id,
            json,
        };
        self.bytes += entry.size();
        self.items.push(entry);
        let mut evicted = 0;
        while self.bytes > budget && evicted + 1 < self.items.len() {
            self.bytes -= self.items[evicted].size();
            evicted += 1;
        }
        self.items.drain(..evicted);
        self.evicted += evicted as u64;
        evicted as u64
    }

    /// Moves every event of `other` to the back of this queue (e.g. a tab's in-memory queue into
    /// the stored one once consent allows storage). Returns how many were evicted.
    pub fn append(&mut self, other: Outbox, budget: usize) -> u64 {
        let before = self.evicted;
        self.evicted += other.evicted;
        for entry in other.items {
            let (attempts, not_before) = (entry.attempts, entry.not_before);
            self.push(entry.message_id, entry.json, budget);
            if let Some(last) = self.items.last_mut() {
                last.attempts = attempts;
                last.not_before = not_before;
            }
        }
        self.evicted - before - other.evicted
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes the queue takes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The queued events, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.items.iter()
    }

    /// Leases the oldest events due at `now` that fit in one request (at most `max_events`, at
    /// most `max_bytes` of events, but at least one so an oversized event cannot block the queue;
    /// the collector rejects it with a code instead). Returns `(messageId, json)` pairs; the
    /// events stay queued, hidden from other senders for [`LEASE_MS`], until [`Outbox::settle`].
    pub fn lease(
        &mut self,
        now: i64,
        max_events: usize,
        max_bytes: usize,
    ) -> Vec<(String, String)> {
        let mut batch = Vec::new();
        let mut size = 0;
        for entry in self.items.iter_mut().filter(|e| e.not_before <= now) {
            let fits = size + entry.json.len() < max_bytes;
            if batch.len() >= max_events.max(1) || (!batch.is_empty() && !fits) {
                break;
            }
            size += entry.json.len() + 1;
            entry.not_before = now + LEASE_MS;
            batch.push((entry.message_id.clone(), entry.json.clone()));
        }
        batch
    }

    /// The earliest time an event is due (0 when one is due now); `None` when empty.
    pub fn next_due(&self) -> Option<i64> {
        self.items.iter().map(|e| e.not_before).min()
    }

    /// Applies the collector's `reply` to the events `sent` (their `messageId`s):
    /// - status < 400: delivered, except the events the reply rejects, which are dropped;
    /// - no response, 408, 429 or 5xx: kept, due again after [`backoff_ms`] (honouring
    ///   `Retry-After`) with the same `messageId`;
    /// - any other 4xx: dropped (retrying cannot help; Segment's policy).
    ///
    /// `jitter` in `[0, 1)` spreads retries of many clients. Events no longer queued (another
    /// tab settled them, or `reset()`) are ignored.
    pub fn settle(&mut self, sent: &[String], reply: &Reply, now: i64, jitter: f64) -> Settled {
        let mut settled = Settled::default();
        let retry = match reply.status {
            None | Some(408 | 429) => true,
            Some(s) => s >= 500,
        };
        let mut kept = Vec::with_capacity(self.items.len());
        for mut entry in core::mem::take(&mut self.items) {
            if !sent.contains(&entry.message_id) {
                kept.push(entry);
                continue;
            }
            if retry {
                entry.attempts = entry.attempts.saturating_add(1);
                let delay = backoff_ms(entry.attempts, jitter, reply.retry_after_ms);
                entry.not_before = now.saturating_add(delay as i64);
                settled.retried += 1;
                settled.retry_in_ms = Some(settled.retry_in_ms.map_or(delay, |d| d.min(delay)));
                kept.push(entry);
            } else if reply.status.is_some_and(|s| s < 400)
                && !reply.rejected.contains(&entry.message_id)
            {
                settled.delivered += 1;
            } else {
                settled.dropped += 1;
            }
        }
        self.bytes = kept.iter().map(Entry::size).sum();
        self.items = kept;
        settled
    }

    /// Drops everything (the eviction count too).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The stored form: the eviction count on the first line, then one event per line as
    /// `not_before \t attempts \t messageId \t json`. `JSON.stringify` never writes a raw tab or
    /// newline, so the separators are unambiguous.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.bytes + 24);
        push_integer(&mut out, self.evicted as i64);
        for e in &self.items {
            out.push('\n');
            push_integer(&mut out, e.not_before);
            out.push('\t');
            push_integer(&mut out, i64::from(e.attempts));
            out.push('\t');
            out.push_str(&e.message_id);
            out.push('\t');
            out.push_str(&e.json);
        }
        out
    }

    /// Reads the stored form. Tolerant: a line that does not parse is skipped (storage written by
    /// another version, or edited by hand), the rest is kept.
    pub fn decode(text: &str) -> Self {
        let mut outbox = Self::default();
        let mut lines = split_ascii(text, b'\n');
        outbox.evicted = lines.next().and_then(|l| parse_u64(trim(l))).unwrap_or(0);
        for line in lines {
            let mut parts = split_ascii(line, b'\t');
            let (Some(not_before), Some(attempts), Some(id)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(json) = parts.remainder() else {
                continue;
            };
            let (Some(not_before), Some(attempts)) = (
                parse_i64(not_before),
                parse_u64(attempts).and_then(|a| u32::try_from(a).ok()),
            ) else {
                continue;
            };
            if id.is_empty() || json.as_bytes().first() != Some(&b'{') {
                continue;
            }
            let entry = Entry {
                not_before,
                attempts,
                message_id: id.to_owned(),
                json: json.to_owned(),
            };
            outbox.bytes += entry.size();
            outbox.items.push(entry);
        }
        outbox
    }
}

/// Delay before retry number `attempts` (1 = first retry): exponential from
/// [`BASE_BACKOFF_MS`] to [`MAX_BACKOFF_MS`], with "equal jitter" (between half and all of the
/// step, `jitter` in `[0, 1)`), and never sooner than the server's `Retry-After`.
pub fn backoff_ms(attempts: u32, jitter: f64, retry_after_ms: Option<u64>) -> u64 {
    let step = BASE_BACKOFF_MS
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF_MS);
    let jittered = step / 2 + (step as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as u64;
    jittered.max(retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS))
}

/// Reads a `Retry-After` header value (delay in seconds; HTTP dates are not used by Seam's
/// collector and read as absent) as milliseconds.
pub fn parse_retry_after(value: &str) -> Option<u64> {
    parse_u64(trim(value)).map(|s| s.saturating_mul(1000))
}

/// The `/v1/batch` body for `events` (each already a JSON object). `evicted`, when non-zero, is
/// reported as batch-level `context.seam.evicted`, which the collector merges into each event;
/// `new_id` as `context.seam.newId`: the browser was reset and asks the collector for a new
/// cookie ID (`collect::cookie::asks_new_id`).
pub fn batch_body(
    events: &[String],
    write_key: &str,
    sent_at: &str,
    evicted: u64,
    new_id: bool,
) -> String {
    let mut batch = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    batch.push('[');
    // By hand rather than `join`, whose length-overflow panic message ships in the SDK's wasm.
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            batch.push(',');
        }
        batch.push_str(event);
    }
    batch.push(']');
    let mut body = ObjectWriter::with_capacity(batch.len() + 96).raw("batch", &batch);
    if evicted > 0 || new_id {
        let mut seam = ObjectWriter::default();
        if evicted > 0 {
            seam = seam.integer("evicted", evicted as i64);
        }
        if new_id {
            seam = seam.raw("newId", "true");
        }
        let context = ObjectWriter::default().raw("seam", &seam.finish()).finish();
        body = body.raw("context", &context);
    }
    body.string("sentAt", sent_at)
        .string("writeKey", write_key)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BIG: usize = usize::MAX;

    fn outbox(items: &[&str]) -> Outbox {
        let mut o = Outbox::default();
        for i in items {
            o.push(format!("id-{i}"), format!("{{\"v\":\"{i}\"}}"), BIG);
        }
        o
    }

    fn ids(batch: &[(String, String)]) -> Vec<String> {
        batch.iter().map(|(id, _)| id.clone()).collect()
    }

    fn ok() -> Reply {
        Reply {
            status: Some(200),
            ..Reply::default()
        }
    }

    #[test]
    fn leases_oldest_first_up_to_count_and_hides_them_from_other_senders() {
        let mut o = outbox(&["1", "2", "3"]);
        let batch = o.lease(1000, 2, BIG);
        assert_eq!(ids(&batch), ["id-1", "id-2"]);
        assert_eq!(o.len(), 3, "leased events stay queued until settled");
        assert_eq!(
            ids(&o.lease(1000, 10, BIG)),
            ["id-3"],
            "a second sender gets the rest"
        );
        assert!(o.lease(1000 + LEASE_MS - 1, 10, BIG).is_empty());
        assert_eq!(
            o.lease(1000 + LEASE_MS, 10, BIG).len(),
            3,
            "a sender that died loses nothing: the lease runs out"
        );
    }

    #[test]
    fn stops_at_byte_budget_but_never_takes_nothing() {
        let mut o = outbox(&["aaaa", "bbbb", "cccc"]);
        assert_eq!(ids(&o.lease(0, 10, 30)), ["id-aaaa", "id-bbbb"]);
        let mut huge = outbox(&["way-too-large"]);
        assert_eq!(huge.lease(0, 10, 4).len(), 1);
    }

    #[test]
    fn delivered_events_leave_and_refused_ones_are_dropped_per_event() {
        let mut o = outbox(&["a", "b", "c"]);
        let sent = ids(&o.lease(0, 2, BIG));
        let reply = Reply {
            rejected: vec!["id-b".into()],
            ..ok()
        };
        let s = o.settle(&sent, &reply, 5, 0.0);
        assert_eq!((s.delivered, s.dropped, s.retried), (1, 1, 0));
        assert_eq!(
            o.entries()
                .map(|e| e.message_id.as_str())
                .collect::<Vec<_>>(),
            ["id-c"]
        );
        assert_eq!(o.bytes(), outbox(&["c"]).bytes());
    }

    #[test]
    fn retries_network_errors_429_and_5xx_with_the_same_message_ids() {
        for status in [None, Some(429), Some(500), Some(503), Some(408)] {
            let mut o = outbox(&["a"]);
            let sent = ids(&o.lease(0, 10, BIG));
            let reply = Reply {
                status,
                ..Reply::default()
            };
            let s = o.settle(&sent, &reply, 100, 0.0);
            assert_eq!(s.retried, 1, "{status:?}");
            assert_eq!(s.retry_in_ms, Some(250));
            let e = o.entries().next().unwrap();
            assert_eq!(
                (e.attempts, e.not_before, e.message_id.as_str()),
                (1, 350, "id-a")
            );
        }
    }

    #[test]
    fn drops_other_4xx_whole_batches() {
        for status in [400, 401, 403, 413] {
            let mut o = outbox(&["a", "b"]);
            let sent = ids(&o.lease(0, 10, BIG));
            let reply = Reply {
                status: Some(status),
                ..Reply::default()
            };
            assert_eq!(o.settle(&sent, &reply, 0, 0.5).dropped, 2);
            assert!(o.is_empty());
        }
    }

    #[test]
    fn settling_ignores_events_another_tab_already_settled() {
        let mut o = outbox(&["a"]);
        let s = o.settle(&["id-gone".into()], &ok(), 0, 0.0);
        assert_eq!(s, Settled::default());
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn backoff_doubles_with_jitter_caps_and_honours_retry_after() {
        assert_eq!(backoff_ms(1, 0.0, None), 250);
        assert_eq!(backoff_ms(1, 0.999_999, None), 499);
        assert_eq!(backoff_ms(2, 0.0, None), 500);
        assert_eq!(backoff_ms(4, 0.5, None), 3000);
        assert_eq!(backoff_ms(30, 0.0, None), 30_000);
        assert_eq!(backoff_ms(30, 1.0, None), MAX_BACKOFF_MS);
        assert_eq!(
            backoff_ms(1, 0.0, Some(7000)),
            7000,
            "never sooner than Retry-After"
        );
        assert_eq!(backoff_ms(9, 1.0, Some(1000)), MAX_BACKOFF_MS.min(128_000));
        assert_eq!(backoff_ms(1, 0.0, Some(u64::MAX)), MAX_RETRY_AFTER_MS);
        assert_eq!(parse_retry_after(" 60 "), Some(60_000));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn evicts_oldest_over_budget_and_counts_it() {
        let mut o = Outbox::default();
        let one = outbox(&["0"]).bytes();
        for i in 0..5 {
            o.push(format!("id-{i}"), format!("{{\"v\":\"{i}\"}}"), one * 3);
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.evicted, 2);
        assert_eq!(
            o.entries().next().unwrap().message_id,
            "id-2",
            "oldest go first"
        );
        let mut huge = Outbox::default();
        assert_eq!(
            huge.push("x".into(), "{}".into(), 1),
            0,
            "the newest event always stays"
        );
        assert_eq!(huge.len(), 1);
    }

    #[test]
    fn append_moves_a_memory_queue_into_the_stored_one() {
        let mut stored = outbox(&["a"]);
        let mut memory = outbox(&["b", "c"]);
        memory.evicted = 4;
        let _ = memory.lease(0, 1, BIG);
        assert_eq!(stored.append(memory, BIG), 0);
        assert_eq!(stored.len(), 3);
        assert_eq!(stored.evicted, 4);
        assert_eq!(stored.entries().nth(1).unwrap().not_before, LEASE_MS);
    }

    #[test]
    fn encode_decode_round_trips_and_skips_garbage() {
        let mut o = outbox(&["a", "b c"]);
        o.evicted = 3;
        let _ = o.lease(42, 1, BIG);
        let text = o.encode();
        assert_eq!(Outbox::decode(&text), o);
        let damaged = format!("x\n{text}\nnot a line\n1\t2\tid\tnot json\n\n");
        let back = Outbox::decode(&damaged);
        assert_eq!(back.len(), 2);
        assert_eq!(back.evicted, 0);
        assert_eq!(Outbox::decode(""), Outbox::default());
    }

    #[test]
    fn batch_body_is_valid_json_and_reports_evictions() {
        let body = batch_body(
            &["{\"a\":1}".into(), "{}".into()],
            "k\"ey",
            "2026-01-01T00:00:00.000Z",
            0,
            false,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["batch"][0]["a"], 1);
        assert_eq!(v["writeKey"], "k\"ey");
        assert!(v.get("context").is_none());
        let body = batch_body(&["{}".into()], "k", "t", 7, false);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["context"]["seam"], serde_json::json!({"evicted": 7}));
        let body = batch_body(&["{}".into()], "k", "t", 0, true);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["context"]["seam"], serde_json::json!({"newId": true}));
    }

    proptest! {
        #[test]
        fn every_event_is_sent_once_when_all_deliveries_succeed(
            n in 0usize..40,
            max_events in 1usize..10,
            max_bytes in 1usize..100,
        ) {
            let mut o = Outbox::default();
            let all: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            for id in &all { o.push(id.clone(), format!("{{\"id\":\"{id}\"}}"), BIG); }
            let mut out = Vec::new();
            while !o.is_empty() {
                let b = ids(&o.lease(0, max_events, max_bytes));
                prop_assert!(!b.is_empty() && b.len() <= max_events);
                o.settle(&b, &ok(), 0, 0.0);
                out.extend(b);
            }
            prop_assert_eq!(out, all);
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,200}") {
            let _ = Outbox::decode(&s);
        }
    }
}
