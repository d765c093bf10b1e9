//! `GET /health`: liveness, with no storage access (also the benchmark's no-op baseline).

use worker::{Response, Result};

/// Answers `{"status":"ok","version":...}`.
pub fn get() -> Result<Response> {
    Response::from_json(&serde_json::json!({ "status": "ok", "version": seam_core::VERSION }))
}
