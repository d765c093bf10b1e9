//! `GET /health`: liveness, with no storage access (also the benchmark's no-op baseline).

use worker::{Response, Result};

/// Answers `{"status":"ok","version":...,"refreshing":n}`: `refreshing` counts this isolate's
/// profile refreshes still running after their ingest responses.
pub fn get() -> Result<Response> {
    let refreshing = super::ingest::REFRESHING.load(std::sync::atomic::Ordering::Relaxed);
    Response::from_json(&serde_json::json!({
        "status": "ok",
        "version": seam_core::VERSION,
        "refreshing": refreshing,
    }))
}
