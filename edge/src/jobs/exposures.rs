//! The exposure log: `Decision Exposed` events of decided and rendered pages gather per isolate
//! and are written together shortly after the first one's response, one D1 batch instead of a
//! write per decision or page view. Deduplicated by `messageId` like any event.

use std::time::Duration;

use seam_core::collect::event::Event;
use seam_core::collect::source::Source;
use worker::{Context, Env};

use crate::error::ApiError;
use crate::{isolate, platform, store};

/// How long exposures gather before they are written.
const GATHER: Duration = Duration::from_millis(200);

/// Logs server-made `events` of `source` soon.
pub fn log_soon(
    env: &Env,
    ctx: &Context,
    source: &Source,
    events: Vec<Event>,
) -> Result<(), ApiError> {
    if events.is_empty() || !isolate::queue_exposures(source, events) {
        return Ok(());
    }
    let db = env.d1("DB")?;
    let env = env.clone();
    isolate::after_response(ctx, "exposures", async move {
        platform::sleep(GATHER.as_millis() as u64).await;
        let mut by_source: Vec<(Source, Vec<Event>)> = Vec::new();
        for (source, event) in isolate::take_exposures() {
            match by_source.iter_mut().find(|(s, _)| s.id == source.id) {
                Some((_, events)) => events.push(event),
                None => by_source.push((source, vec![event])),
            }
        }
        let now_ms = platform::now_ms();
        for (source, events) in by_source {
            match store::events::insert(&db, &source, &events, now_ms).await {
                Ok(stored) => super::send_stored(&env, stored).await,
                Err(e) => worker::console_error!("exposure log failed: {}", e.code()),
            }
        }
    });
    Ok(())
}
