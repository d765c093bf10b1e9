//! Profile refreshes after an ingest response: computed traits, segments (with their transition
//! events) and the KV snapshot of every profile a request touched. A profile's refreshes are
//! spaced per isolate (`isolate::with_refreshes`): the first of a burst runs at once, the rest
//! fold into one trailing run owned by the first request that waits.

use seam_core::coalesce::{Claim, Offer};
use seam_core::personalise::ProfileState;
use seam_core::profile::ProfileView;
use seam_core::refresh::Refresh;
use worker::{Context, Env};

use crate::error::ApiError;
use crate::{isolate, platform, store};

/// Runs `refreshes` after the response. They are idempotent; a retried batch re-applies them.
pub fn after_response(ctx: &Context, env: &Env, refreshes: Vec<Refresh>) {
    if refreshes.is_empty() {
        return;
    }
    let env = env.clone();
    isolate::after_response(ctx, async move { spaced(&env, refreshes).await });
}

/// Runs each refresh at once unless its profile refreshed within the spacing, then folded into
/// that profile's trailing run.
async fn spaced(env: &Env, refreshes: Vec<Refresh>) {
    let mut owed: Vec<(String, i64)> = Vec::new();
    for refresh in refreshes {
        let key = refresh.profile_id.clone();
        match isolate::with_refreshes(|c| c.offer(&key, refresh, platform::now_ms())) {
            Offer::Run(refresh) => run_spaced(env, &key, refresh).await,
            Offer::Wait(ms) => owed.push((key, platform::now_ms() + ms)),
            Offer::Joined => {}
        }
    }
    while let Some(earliest) = owed.iter().map(|(_, at)| *at).min() {
        platform::sleep((earliest - platform::now_ms()).max(0) as u64).await;
        let mut later = Vec::new();
        for (key, at) in owed {
            let now = platform::now_ms();
            if at > now {
                later.push((key, at));
                continue;
            }
            match isolate::with_refreshes(|c| c.claim(&key, now)) {
                Claim::Run(mut refresh) => {
                    // Read at run time: what the request read is older than the runs since.
                    refresh.loaded = None;
                    run_spaced(env, &key, refresh).await;
                }
                Claim::Wait(ms) => later.push((key, platform::now_ms() + ms)),
            }
        }
        owed = later;
    }
}

async fn run_spaced(env: &Env, key: &str, refresh: Refresh) {
    if let Err(e) = run(env, refresh).await {
        worker::console_error!("profile refresh failed: {}", e.code());
    }
    isolate::with_refreshes(|c| c.finished(key));
}

async fn run(env: &Env, mut refresh: Refresh) -> Result<(), ApiError> {
    let db = env.d1("DB")?;
    let (mut view, loaded) = match refresh.loaded.take() {
        Some(loaded) => loaded,
        None => store::profiles::view_and_state(&db, &refresh.profile_id).await?,
    };
    if view.identifiers.is_empty() {
        // The profile was erased (or merged away) since the request committed: writing its
        // state or snapshot now would bring the person's data back.
        return Ok(());
    }
    let Some(config) = refresh.config.take() else {
        store::profiles::fill_personalisation(&mut view, &loaded.0, refresh.received_at);
        return publish(env, &refresh, &view, &loaded.0).await;
    };
    let events: Vec<&seam_core::event::Event> = refresh.events.iter().collect();
    let update = store::personalisation::update(
        &db,
        &config,
        &view,
        &refresh.absorbed,
        &events,
        refresh.received_at,
        loaded,
    )
    .await;
    let update = match update {
        // New product evidence changes partner lists and listings (a merge moves evidence
        // between profiles: everything).
        Ok(update) if refresh.absorbed.is_empty() => {
            isolate::forget_candidates(Some(&update.changed));
            update
        }
        Ok(update) => {
            isolate::forget_candidates(None);
            update
        }
        Err(e) => {
            // The snapshot still gets the new traits; a retry of the batch re-applies the rest.
            worker::console_error!("personalisation skipped: {}", e.code());
            let (stored, _) = store::personalisation::load(&db, &refresh.profile_id).await?;
            store::profiles::fill_personalisation(&mut view, &stored, refresh.received_at);
            return publish(env, &refresh, &view, &stored).await;
        }
    };
    store::events::store(
        &db,
        &refresh.source,
        &update.internal_events,
        refresh.received_at,
    )
    .await?;
    view.computed_traits = update.computed;
    view.segments = update.segments;
    publish(env, &refresh, &view, &update.state).await
}

async fn publish(
    env: &Env,
    refresh: &Refresh,
    view: &ProfileView,
    state: &ProfileState,
) -> Result<(), ApiError> {
    store::snapshots::publish(
        env,
        view,
        Some(state),
        &refresh.snapshot.anonymous,
        &refresh.snapshot.absorbed,
        platform::now_ms(),
    )
    .await;
    Ok(())
}
