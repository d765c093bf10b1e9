//! Decoding one collector request (a batch or a single event) into per-event outcomes.
//!
//! A malformed event never sinks its siblings: each element is validated on its own and gets its
//! own result. Only a request that cannot be read at all fails as a whole ([`RequestError`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::collect::event::{validate, Envelope, Event, EventError, EventType};

/// Largest accepted request body.
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// Most events accepted in one batch.
pub const MAX_BATCH_EVENTS: usize = 2500;

/// Why a whole request was refused. Each variant has a stable [`RequestError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Body over [`MAX_REQUEST_BYTES`].
    #[error("request body is larger than 500 KB")]
    TooLarge,
    /// Not JSON (or not UTF-8).
    #[error("request body is not valid JSON")]
    InvalidJson,
    /// JSON, but not a batch: no `batch` array.
    #[error("batch requests need a \"batch\" array")]
    InvalidBatch,
    /// More than [`MAX_BATCH_EVENTS`] events.
    #[error("a batch holds at most 2500 events")]
    TooManyEvents,
    /// `Content-Encoding` we cannot read, or a corrupt gzip stream.
    #[error("request body encoding is not supported or is corrupt (use identity or gzip)")]
    InvalidEncoding,
}

impl RequestError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "request_too_large",
            Self::InvalidJson => "invalid_json",
            Self::InvalidBatch => "invalid_batch",
            Self::TooManyEvents => "batch_too_large",
            Self::InvalidEncoding => "invalid_encoding",
        }
    }
}

/// What happened to one event of the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Valid; stored unless the store already has its `messageId`.
    Valid(Event),
    /// Same `messageId` as an earlier event of this request.
    RepeatedInRequest(String),
    /// Invalid; nothing stored.
    Rejected {
        /// The client's `messageId`, if it sent a usable one.
        message_id: Option<String>,
        /// Why.
        error: EventError,
    },
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// `writeKey` from the body, if any (the edge also reads `Authorization: Basic`).
    pub write_key: Option<String>,
    /// One outcome per event, in request order.
    pub outcomes: Vec<Outcome>,
}

/// Per-event status in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored now.
    Accepted,
    /// Stored before (same `messageId`); not stored again.
    Duplicate,
    /// Invalid; see `code`.
    Rejected,
}

/// One entry of the response's `results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventResult {
    /// The event's `messageId` (generated ones included); absent when the client's was unusable.
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// What happened.
    pub status: Status,
    /// Rejection code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Rejection reason for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    context: Value,
    #[serde(default)]
    integrations: Value,
    #[serde(rename = "writeKey", default)]
    write_key: Value,
    #[serde(rename = "sentAt", default)]
    sent_at: Value,
}

/// Undoes `Content-Encoding`. Gzip is also recognised by its magic bytes, because some server
/// libraries gzip without saying so. Decompressed output is capped at [`MAX_REQUEST_BYTES`] so a
/// small "zip bomb" cannot exhaust the isolate's memory.
pub fn decompress<'a>(
    body: &'a [u8],
    content_encoding: Option<&str>,
) -> Result<Cow<'a, [u8]>, RequestError> {
    let encoding = content_encoding.map(|e| e.trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("") | Some("identity") => body.starts_with(&[0x1f, 0x8b]),
        Some("gzip") | Some("x-gzip") => true,
        Some(_) => return Err(RequestError::InvalidEncoding),
    };
    if !gzip {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| RequestError::InvalidEncoding)?;
    if out.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge);
    }
    Ok(Cow::Owned(out))
}

/// Decodes a request body. `path_type` is `Some` for single-event paths (`/v1/track`), `None` for
/// batches. `fresh_message_id` mints IDs for events that came without one.
pub fn decode(
    body: &[u8],
    path_type: Option<EventType>,
    received_at_ms: i64,
    mut fresh_message_id: impl FnMut() -> String,
) -> Result<Decoded, RequestError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge);
    }
    let mut envelope = Envelope {
        received_at_ms,
        path_type,
        ..Envelope::default()
    };
    let mut seen = HashSet::new();
    let mut judge = |raw: Value, len: usize, envelope: &Envelope| {
        let client_id = raw
            .get("messageId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match validate(raw, len, envelope, &mut fresh_message_id) {
            Ok(event) if !seen.insert(event.message_id.clone()) => {
                Outcome::RepeatedInRequest(event.message_id)
            }
            Ok(event) => Outcome::Valid(event),
            Err(error) => Outcome::Rejected {
                message_id: client_id.filter(|_| error != EventError::InvalidMessageId),
                error,
            },
        }
    };

    if path_type.is_some() {
        let raw: Value = serde_json::from_slice(body).map_err(|_| RequestError::InvalidJson)?;
        let write_key = raw.get("writeKey").and_then(string_of);
        let outcome = judge(raw, body.len(), &envelope);
        return Ok(Decoded {
            write_key,
            outcomes: vec![outcome],
        });
    }

    let batch: RawBatch = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => RequestError::InvalidBatch,
        _ => RequestError::InvalidJson,
    })?;
    let items = batch.batch.ok_or(RequestError::InvalidBatch)?;
    if items.len() > MAX_BATCH_EVENTS {
        return Err(RequestError::TooManyEvents);
    }
    envelope.sent_at = Some(batch.sent_at).filter(|v| !v.is_null());
    envelope.context = object_of(batch.context);
    envelope.integrations = object_of(batch.integrations);
    let mut write_key = string_of(&batch.write_key);
    let outcomes = items
        .into_iter()
        .map(|item| {
            // Scanning the batch does not range-check numbers; a value like 1e400 fails only
            // here, and only its own event.
            let Ok(raw) = serde_json::from_str::<Value>(item.get()) else {
                return Outcome::Rejected {
                    message_id: None,
                    error: EventError::Unreadable,
                };
            };
            if write_key.is_none() {
                write_key = raw.get("writeKey").and_then(string_of);
            }
            judge(raw, item.get().len(), &envelope)
        })
        .collect();
    Ok(Decoded {
        write_key,
        outcomes,
    })
}

impl Decoded {
    /// The events to store, in request order.
    pub fn valid(&self) -> impl Iterator<Item = &Event> {
        self.outcomes.iter().filter_map(|o| match o {
            Outcome::Valid(e) => Some(e),
            _ => None,
        })
    }

    /// The response entries, given the `messageId`s the store newly inserted.
    pub fn results(&self, inserted: &HashSet<String>) -> Vec<EventResult> {
        self.outcomes
            .iter()
            .map(|o| match o {
                Outcome::Valid(e) => EventResult {
                    message_id: Some(e.message_id.clone()),
                    status: if inserted.contains(&e.message_id) {
                        Status::Accepted
                    } else {
                        Status::Duplicate
                    },
                    code: e.anonymized.then_some("consent_anonymized"),
                    message: None,
                },
                Outcome::RepeatedInRequest(id) => EventResult {
                    message_id: Some(id.clone()),
                    status: Status::Duplicate,
                    code: None,
                    message: None,
                },
                Outcome::Rejected { message_id, error } => EventResult {
                    message_id: message_id.clone(),
                    status: Status::Rejected,
                    code: Some(error.code()),
                    message: Some(error.to_string()),
                },
            })
            .collect()
    }
}

fn string_of(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn object_of(v: Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A batch of `events` decoded at time 0 (message IDs `"g"`), for other modules' tests.
#[cfg(test)]
pub(crate) fn decoded_batch(events: Value) -> Decoded {
    decode(
        serde_json::json!({"batch": events}).to_string().as_bytes(),
        None,
        0,
        || "g".into(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("gen-{n}")
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn stores_valid_siblings_of_a_malformed_event() {
        let decoded = decode(&fixture("batch_mixed.json"), None, 0, ids()).unwrap();
        assert_eq!(decoded.write_key.as_deref(), Some("seam_dev_write_key"));
        let inserted: HashSet<String> = decoded.valid().map(|e| e.message_id.clone()).collect();
        let results = serde_json::to_value(decoded.results(&inserted)).unwrap();
        assert_eq!(
            results,
            json!([
                {"messageId": "mixed-1", "status": "accepted"},
                {"messageId": "mixed-2", "status": "rejected", "code": "missing_event_name",
                 "message": "track events need an event name"},
                {"status": "rejected", "code": "invalid_event", "message": "event must be a JSON object"},
                {"messageId": "mixed-1", "status": "duplicate"},
                {"messageId": "mixed-4", "status": "accepted"}
            ])
        );
    }

    #[test]
    fn marks_events_already_stored_as_duplicates() {
        let decoded = decode(&fixture("batch_mixed.json"), None, 0, ids()).unwrap();
        let results = decoded.results(&HashSet::from(["mixed-4".to_owned()]));
        assert_eq!(results[0].status, Status::Duplicate);
        assert_eq!(results[4].status, Status::Accepted);
    }

    #[test]
    fn rejects_invalid_json_and_non_batches() {
        assert_eq!(
            decode(b"{nope", None, 0, ids()),
            Err(RequestError::InvalidJson)
        );
        assert_eq!(
            decode(b"\xff\xfe", None, 0, ids()),
            Err(RequestError::InvalidJson)
        );
        assert_eq!(
            decode(b"[1,2]", None, 0, ids()),
            Err(RequestError::InvalidBatch)
        );
        assert_eq!(
            decode(b"{\"batch\":5}", None, 0, ids()),
            Err(RequestError::InvalidBatch)
        );
        assert_eq!(
            decode(b"{}", None, 0, ids()),
            Err(RequestError::InvalidBatch)
        );
    }

    #[test]
    fn an_out_of_range_number_rejects_only_its_event() {
        let body = br#"{"batch":[{"type":"track","event":"x","userId":"u","properties":{"n":1e400}},
                                 {"type":"track","event":"y","userId":"u","properties":{"n":123456789012345678901234567890}}]}"#;
        let decoded = decode(body, None, 0, ids()).unwrap();
        assert!(matches!(
            decoded.outcomes[0],
            Outcome::Rejected {
                error: EventError::Unreadable,
                ..
            }
        ));
        assert_eq!(decoded.valid().count(), 1);
    }

    #[test]
    fn rejects_oversized_request_and_batch() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(decode(&big, None, 0, ids()), Err(RequestError::TooLarge));
        let many = format!(
            "{{\"batch\":[{}]}}",
            vec!["{}"; MAX_BATCH_EVENTS + 1].join(",")
        );
        assert_eq!(
            decode(many.as_bytes(), None, 0, ids()),
            Err(RequestError::TooManyEvents)
        );
    }

    #[test]
    fn single_event_path_sets_type_and_reads_write_key() {
        let body = br#"{"event":"Signed Up","userId":"u1","writeKey":"k"}"#;
        let decoded = decode(body, Some(EventType::Track), 5, ids()).unwrap();
        assert_eq!(decoded.write_key.as_deref(), Some("k"));
        let event = decoded.valid().next().unwrap();
        assert_eq!(event.kind, EventType::Track);
        assert_eq!(event.message_id, "gen-1");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn decompresses_gzip_declared_or_sniffed() {
        let body = fixture("batch_mixed.json");
        let zipped = gzip(&body);
        assert_eq!(
            decompress(&zipped, Some("gzip")).unwrap().as_ref(),
            body.as_slice()
        );
        assert_eq!(decompress(&zipped, None).unwrap().as_ref(), body.as_slice());
        assert_eq!(
            decompress(&body, Some("identity")).unwrap().as_ref(),
            body.as_slice()
        );
    }

    #[test]
    fn refuses_unknown_encodings_corrupt_gzip_and_zip_bombs() {
        assert_eq!(
            decompress(b"{}", Some("br")),
            Err(RequestError::InvalidEncoding)
        );
        assert_eq!(
            decompress(&[0x1f, 0x8b, 0, 1, 2], None),
            Err(RequestError::InvalidEncoding)
        );
        let bomb = gzip(&vec![b' '; MAX_REQUEST_BYTES * 4]);
        assert!(bomb.len() < 10_000);
        assert_eq!(decompress(&bomb, Some("gzip")), Err(RequestError::TooLarge));
    }

    #[test]
    fn batch_level_sent_at_corrects_each_event() {
        let body = json!({
            "sentAt": "1970-01-01T00:00:10.000Z",
            "batch": [{"type": "track", "event": "x", "userId": "u",
                       "timestamp": "1970-01-01T00:00:04.000Z"}]
        });
        let decoded = decode(body.to_string().as_bytes(), None, 100_000, ids()).unwrap();
        assert_eq!(decoded.valid().next().unwrap().timestamp_ms, 94_000);
    }
}
