//! `GET /health`: liveness, with no storage access (also the benchmark's no-op baseline).

use worker::{Env, Response, Result};

/// Answers `{"status":"ok","version":...,"background":n,"queued":n}`: `background` counts this
/// isolate's work still running after its responses (profile refreshes, exposure logs) and the
/// events it is storing; `queued`, the ingest messages it queued that its own consumer has not
/// finished with (locally the queue's backlog). With `REPORT_TIMINGS`, `finished` gives the
/// after-response work's count and wall time by kind.
pub fn get(env: &Env) -> Result<Response> {
    let mut body = serde_json::json!({
        "status": "ok",
        "version": seam_core::VERSION,
        "background": crate::isolate::background(),
        "queued": crate::isolate::queued(crate::platform::now_ms()),
    });
    if crate::settings::report_timings(env) {
        body["finished"] = crate::isolate::finished_work()
            .into_iter()
            .map(|(kind, n, ms)| (kind.to_owned(), serde_json::json!({ "n": n, "ms": ms })))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    Response::from_json(&body)
}
