//! Fuzzes the collector's request decoder: arbitrary bytes, as a batch body and as a single-event
//! (`/v1/track`) body, then the response entries and the write plan for every decodable request;
//! and the gzip layer in front of it. None of it may panic.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use seam_core::collect::event::EventType;
use seam_core::collect::ingest::{decode, decompress, MAX_REQUEST_BYTES};
use seam_core::plan::{insert_events, MAX_BOUND_PARAMS};

const RECEIVED_AT_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    // The gzip layer: any bytes, declared gzip or sniffed; output never exceeds the request cap.
    for encoding in [Some("gzip"), None] {
        if let Ok(body) = decompress(data, encoding) {
            assert!(body.len() <= MAX_REQUEST_BYTES.max(data.len()));
        }
    }
    for path_type in [None, Some(EventType::Track)] {
        let Ok(decoded) = decode(data, path_type, RECEIVED_AT_MS, || "fuzz-id".to_string()) else {
            continue;
        };
        let results = decoded.results(&HashSet::new());
        assert_eq!(results.len(), decoded.outcomes.len());
        let valid: Vec<_> = decoded.valid().collect();
        for statement in insert_events("src", &valid, RECEIVED_AT_MS, 1) {
            assert!(statement.params.len() <= MAX_BOUND_PARAMS);
            assert_eq!(statement.sql.matches('?').count(), statement.params.len());
        }
    }
});
