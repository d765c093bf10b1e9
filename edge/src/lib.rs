//! # seam-edge
//!
//! Seam's edge collector: a Cloudflare Worker (Rust, `worker` crate) that speaks the Segment HTTP
//! Tracking API, stitches identities, keeps profiles and decides what pages show. The pure logic
//! is `seam-core`; this crate is the plumbing around it:
//!
//! - [`accept`]: what happens to decoded events, whichever route received them.
//! - [`app`]: the route table and CORS; reads the clock once per request.
//! - [`http`]: request facts, cookies, admission (write keys with source, origin and rate
//!   limits; admin keys with scopes). [`error`]: the one place errors become HTTP.
//! - [`routes`]: decode -> core -> execute plan -> encode; no route calls another.
//! - [`store`]: the only code that touches D1 and KV; never calls a route.
//! - [`jobs`]: cron jobs and after-response work, built on store functions.
//! - [`isolate`]: everything an isolate keeps between requests. [`platform`]: clock,
//!   randomness, sleep.
//!
//! Requests that match no route fall through to the static assets (the site), which wrangler's
//! `[assets]` serves before the Worker for every path not listed in `run_worker_first`. The site's
//! HTML pages are listed there: the Worker fetches them from `ASSETS` and fills their
//! personalisation slots (`routes::render`).

pub mod accept;
pub mod app;
pub mod error;
pub mod http;
pub mod isolate;
pub mod jobs;
pub mod platform;
pub mod routes;
pub mod settings;
pub mod store;

use worker::{
    event, Context, Env, MessageBatch, Request, Response, Result, ScheduleContext, ScheduledEvent,
};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    app::fetch(req, env, ctx).await
}

/// The cron triggers, as of the trigger's scheduled time.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    jobs::scheduled(&event.cron(), &env, event.schedule() as i64).await;
}

/// The queues' consumer: events D1 could not take (`jobs::deferred`), the archive's
/// (`jobs::archive`), the imports' (`jobs::import`) or the deliveries' (`jobs::deliver`).
#[event(queue)]
async fn queue(batch: MessageBatch<serde_json::Value>, env: Env, ctx: Context) -> Result<()> {
    let queue = batch.queue();
    let started = platform::now_ms();
    let (kind, outcome) = if queue == jobs::deferred::QUEUE_NAME {
        (
            "deferred queue",
            jobs::deferred::consume(batch, &env, &ctx).await,
        )
    } else if queue == jobs::archive::QUEUE_NAME {
        ("archive queue", jobs::archive::consume(batch, &env).await)
    } else if queue == jobs::import::QUEUE_NAME {
        (
            "import queue",
            jobs::import::consume(batch, &env, &ctx).await,
        )
    } else {
        ("delivery queue", jobs::deliver::consume(batch, &env).await)
    };
    isolate::finished(kind, platform::now_ms() - started);
    outcome
}
