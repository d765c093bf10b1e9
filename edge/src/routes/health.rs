//! `GET /health`: liveness, with no storage access (also the benchmark's no-op baseline).

use worker::{Response, Result};

/// Answers `{"status":"ok","version":...,"background":n}`: `background` counts this isolate's
/// work still running after its responses (profile refreshes, exposure logs).
pub fn get() -> Result<Response> {
    Response::from_json(&serde_json::json!({
        "status": "ok",
        "version": seam_core::VERSION,
        "background": crate::isolate::background(),
    }))
}
