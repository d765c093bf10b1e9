//! Work that runs outside a request's response: the cron jobs (journeys, segment sweep, the
//! profile shards' move, retention) and what a request leaves for after its response (profile refreshes, the
//! exposure log). Jobs use store functions, never routes.

pub mod archive;
pub mod deferred;
pub mod deliver;
pub mod exposures;
pub mod followups;
pub mod import;
pub mod journeys;
pub mod refresh;
pub mod reshard;
pub mod retention;
pub mod sweep;

use worker::Env;

/// The segment sweep's cron (`wrangler.toml`); any other trigger runs retention.
const SWEEP_CRON: &str = "*/5 * * * *";
/// The journeys' cron: every minute.
const JOURNEY_CRON: &str = "* * * * *";

/// Sends what storing events left: their deliveries and their archive lines. A send that
/// fails loses nothing: the sweep sends overdue deliveries and unarchived events again.
pub async fn send_stored(env: &Env, stored: crate::store::events::Inserted) {
    deliver::send(env, stored.deliveries).await;
    let messages = seam_core::archive::messages(stored.archive);
    if let Err(e) = archive::send(env, messages).await {
        worker::console_error!("archive queue: {e}");
    }
}

/// Runs the job of a cron trigger, as of the trigger's scheduled time.
pub async fn scheduled(cron: &str, env: &Env, now_ms: i64) {
    // The sweep stores segment transitions: they are routed like any event.
    crate::store::destinations::refresh(env, now_ms).await;
    if cron == JOURNEY_CRON {
        match journeys::run(env, now_ms).await {
            Ok(report) if report.walked > 0 => worker::console_log!(
                "journeys: {} runs walked, {} messages",
                report.walked,
                report.sent
            ),
            Ok(_) => {}
            Err(e) => worker::console_error!("journeys failed: {} ({})", e.code(), e),
        }
        let moved = match crate::store::shards::Shards::of(env) {
            Ok(db) => reshard::run(&db, crate::settings::profile_move_budget(env), now_ms).await,
            Err(e) => Err(e),
        };
        match moved {
            Ok(report) if report.moved > 0 || report.walked > 0 => worker::console_log!(
                "profile shards: {} rows walked, {} moved, {} of {} shards done",
                report.walked,
                report.moved,
                report.done,
                report.shards
            ),
            Ok(_) => {}
            Err(e) => worker::console_error!("profile shard move failed: {} ({})", e.code(), e),
        }
        return;
    }
    if cron == SWEEP_CRON {
        match archive::sweep(env, now_ms).await {
            Ok((0, 0, 0)) => {}
            Ok((keys, claims, rewrites)) => worker::console_log!(
                "archive: {keys} events and {claims} claims queued again, {rewrites} objects rebuilt"
            ),
            Err(e) => worker::console_error!("archive sweep: {e}"),
        }
        match archive::compact(env, now_ms).await {
            Ok(0) => {}
            Ok(n) => worker::console_log!("archive: {n} events past the hot window left D1"),
            Err(e) => worker::console_error!("archive compaction: {e}"),
        }
        match import::resume_stalled(env, now_ms).await {
            Ok(0) => {}
            Ok(n) => worker::console_log!("imports: {n} resumed"),
            Err(e) => worker::console_error!("imports: {e}"),
        }
        match deliver::resend_overdue(env, now_ms).await {
            Ok(0) => {}
            Ok(n) => worker::console_log!("deliveries: {n} overdue sent again"),
            Err(e) => worker::console_error!("overdue deliveries: {e}"),
        }
        // Tombstones of profiles no longer in use, older than any request (the resolution's
        // rows, `core::identity::graph_plan`).
        let tombstones = [seam_core::identity::graph_plan::sweep_tombstones(now_ms)];
        let swept = match env.d1("DB") {
            Ok(db) => crate::store::d1::execute(&db, &tombstones).await,
            Err(e) => Err(e),
        };
        if let Err(e) = swept {
            worker::console_error!("profile tombstones: {e}");
        }
        // What erasures and resolutions left to do in the profile shards.
        match followups::run(env, now_ms).await {
            Ok(0) => {}
            Ok(n) => worker::console_log!("follow-ups finished in the profile shards: {n}"),
            Err(e) => worker::console_error!("follow-ups: {} ({})", e.code(), e),
        }
        match sweep::run(env, now_ms).await {
            Ok(report) => worker::console_log!(
                "segment sweep: {} profiles, {} transitions",
                report.profiles,
                report.transitions
            ),
            Err(e) => worker::console_error!("segment sweep failed: {} ({})", e.code(), e),
        }
        return;
    }
    match retention::run(env, now_ms).await {
        Ok(report) => worker::console_log!(
            "retention: {} events, {} anonymous profiles, {} chunks",
            report.events,
            report.profiles,
            report.chunks
        ),
        Err(e) => worker::console_error!("retention failed: {} ({})", e.code(), e),
    }
}
