//! Profile refreshes after an ingest response: computed traits, segments (with their transition
//! events) and the KV snapshot of every profile a request touched. A profile's refreshes are
//! spaced per isolate (`isolate::with_refreshes`): the first of a burst runs at once, the rest
//! fold into one trailing run owned by the first request that waits.
//!
//! [`run_many`] orchestrates refreshes over a [`ProfileStore`]: D1 and KV at the edge, memory in
//! the tests below.

use seam_core::collect::event::Event;
use seam_core::collect::source::Source;
use seam_core::identity::profile::ProfileView;
use seam_core::journey::Cause;
use seam_core::personalise::coalesce::{Claim, Offer};
use seam_core::personalise::computed::Applied;
use seam_core::personalise::recommend::Changed;
use seam_core::personalise::refresh::{Loaded, Refresh, SnapshotWrites};
use std::sync::Arc;

use seam_core::personalise::{PersonalisationConfig, ProfileState, Update};
use serde_json::Value;
use worker::{Context, Env};

use crate::error::ApiError;
use crate::store::d1::Patient;
use crate::store::personalisation::Job;
use crate::store::shards::Shards;
use crate::{isolate, platform, settings, store};

/// What a refresh reads and writes.
pub(crate) trait ProfileStore {
    /// The profile's read model with its state and version.
    async fn load(&self, profile_id: &str) -> Result<Loaded, ApiError>;
    /// The profile's state and version alone.
    async fn load_state(&self, profile_id: &str) -> Result<(ProfileState, Option<i64>), ApiError>;
    /// Folds `events` (and the states of `absorbed` profiles) into the profile's state and
    /// saves it under the version guard.
    async fn personalise(
        &self,
        config: &PersonalisationConfig,
        view: &ProfileView,
        absorbed: &[String],
        events: &[&Event],
        now_ms: i64,
        loaded: (ProfileState, Option<i64>),
    ) -> Result<Update, ApiError>;
    /// Stores server-made events under `source`.
    async fn store_events(
        &self,
        source: &Source,
        events: &[Value],
        now_ms: i64,
    ) -> Result<(), ApiError>;
    /// Enters the profile into the journeys its new segments and events trigger.
    async fn enter_journeys(
        &self,
        view: &ProfileView,
        source: &Source,
        causes: &[Cause<'_>],
        now_ms: i64,
    ) -> Result<(), ApiError>;
    /// [`ProfileStore::load`] for several profiles (one round trip at the edge).
    async fn load_many(&self, profile_ids: &[&str]) -> Result<Vec<Loaded>, ApiError> {
        let mut out = Vec::with_capacity(profile_ids.len());
        for id in profile_ids {
            out.push(self.load(id).await?);
        }
        Ok(out)
    }
    /// [`ProfileStore::personalise`] for several profiles that absorbed none (one write batch
    /// at the edge).
    async fn personalise_many(
        &self,
        config: &PersonalisationConfig,
        jobs: Vec<Job<'_>>,
    ) -> Vec<Result<Update, ApiError>> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(
                self.personalise(config, job.view, &[], &job.events, job.now_ms, job.loaded)
                    .await,
            );
        }
        out
    }
    /// Publishes the profile's snapshot with its pointer and forwarding writes.
    async fn publish(&self, view: &ProfileView, state: &ProfileState, writes: &SnapshotWrites);
    /// Drops cached recommendation inputs that saved writes made stale.
    fn forget(&self, stale: Stale);
}

/// Which cached recommendation inputs a refresh's writes made stale.
#[derive(Debug, PartialEq)]
pub(crate) enum Stale {
    Inputs(Changed),
    /// A merge moved evidence between profiles.
    Everything,
}

/// Brings several profiles' derived state up to date: the reads the requests did not carry in
/// one round trip, and the state writes of those sharing a configuration in one batch. A
/// profile that absorbed others (a merge) goes alone. One outcome per refresh, in no order.
pub(crate) async fn run_many(
    store: &impl ProfileStore,
    mut refreshes: Vec<Refresh>,
) -> Vec<Result<(), ApiError>> {
    let unread: Vec<String> = refreshes
        .iter()
        .filter(|r| r.loaded.is_none())
        .map(|r| r.profile_id.clone())
        .collect();
    if unread.len() > 1 {
        let ids: Vec<&str> = unread.iter().map(String::as_str).collect();
        // On failure each is read alone below, and fails alone.
        if let Ok(loaded) = store.load_many(&ids).await {
            let mut loaded = loaded.into_iter();
            for refresh in refreshes.iter_mut().filter(|r| r.loaded.is_none()) {
                refresh.loaded = loaded.next();
            }
        }
    }
    let mut outcomes = Vec::with_capacity(refreshes.len());
    let mut batch: Vec<Batched> = Vec::new();
    for mut refresh in refreshes {
        let (mut view, loaded) = match refresh.loaded.take() {
            Some(loaded) => loaded,
            None => match store.load(&refresh.profile_id).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            },
        };
        if view.identifiers.is_empty() {
            // The profile was erased (or merged away) since the request committed: writing its
            // state or snapshot now would bring the person's data back.
            outcomes.push(Ok(()));
            continue;
        }
        let Some(config) = refresh.config.clone() else {
            store::profiles::fill_personalisation(&mut view, &loaded.0, refresh.received_at);
            store.publish(&view, &loaded.0, &refresh.snapshot).await;
            outcomes.push(Ok(()));
            continue;
        };
        if !refresh.absorbed.is_empty() {
            let events: Vec<&Event> = refresh.events.iter().collect();
            let update = store
                .personalise(
                    &config,
                    &view,
                    &refresh.absorbed,
                    &events,
                    refresh.received_at,
                    loaded,
                )
                .await;
            outcomes.push(finish(store, refresh, view, update).await);
            continue;
        }
        batch.push((refresh, view, loaded, config));
    }
    // Requests of one isolate share the configuration they read: one group, as a rule.
    while let Some(first) = batch.first() {
        let config = first.3.clone();
        let (group, rest): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(_, _, _, c)| Arc::ptr_eq(c, &config));
        batch = rest;
        let (parts, loadeds): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|(refresh, view, loaded, _)| ((refresh, view), loaded))
            .unzip();
        let jobs: Vec<Job<'_>> = parts
            .iter()
            .zip(loadeds)
            .map(|((refresh, view), loaded)| Job {
                view,
                events: refresh.events.iter().collect(),
                loaded,
                now_ms: refresh.received_at,
            })
            .collect();
        let updates = store.personalise_many(&config, jobs).await;
        // Snapshots (KV) and the rest go out together, not one profile after another.
        let finishing = parts
            .into_iter()
            .zip(updates)
            .map(|((refresh, view), update)| finish(store, refresh, view, update));
        outcomes.extend(futures_util::future::join_all(finishing).await);
    }
    outcomes
}

/// A refresh that waits for its group's write batch: its read model, state and configuration.
type Batched = (
    Refresh,
    ProfileView,
    (ProfileState, Option<i64>),
    Arc<PersonalisationConfig>,
);

/// What follows a profile's personalisation: caches, its transition events, journeys, and
/// its snapshot.
async fn finish(
    store: &impl ProfileStore,
    refresh: Refresh,
    mut view: ProfileView,
    update: Result<Update, ApiError>,
) -> Result<(), ApiError> {
    let update = match update {
        Ok(update) if refresh.absorbed.is_empty() => {
            store.forget(Stale::Inputs(update.changed.clone()));
            update
        }
        Ok(update) => {
            store.forget(Stale::Everything);
            update
        }
        Err(e) => {
            // The snapshot still gets the new traits; a retry of the batch re-applies the rest.
            platform::log_error(&format!("personalisation skipped: {}", e.code()));
            let (stored, _) = store.load_state(&refresh.profile_id).await?;
            store::profiles::fill_personalisation(&mut view, &stored, refresh.received_at);
            store.publish(&view, &stored, &refresh.snapshot).await;
            return Ok(());
        }
    };
    store
        .store_events(
            &refresh.source,
            &update.internal_events,
            refresh.received_at,
        )
        .await?;
    // Retries and late arrivals enter no one; identifies and other non-behaviour count.
    let new = |a: &Applied| !matches!(a, Applied::Duplicate | Applied::Late);
    let causes: Vec<Cause<'_>> = update
        .diff
        .entered()
        .map(Cause::SegmentEntered)
        .chain(
            refresh
                .events
                .iter()
                .zip(&update.applied)
                .filter(|(_, applied)| new(applied))
                .map(|(e, _)| Cause::Event(&e.body)),
        )
        .collect();
    if !causes.is_empty() {
        if let Err(e) = store
            .enter_journeys(&view, &refresh.source, &causes, refresh.received_at)
            .await
        {
            platform::log_error(&format!("journey entry failed: {}", e.code()));
        }
    }
    view.computed_traits = update.computed;
    view.segments = update.segments;
    store.publish(&view, &update.state, &refresh.snapshot).await;
    Ok(())
}

/// D1 and KV.
struct Edge<'a> {
    env: &'a Env,
    db: Shards,
    /// When the run stops retrying failed reads and writes (`d1::Patient`).
    until_ms: i64,
}

impl Edge<'_> {
    fn patient(&self) -> Patient<'_> {
        Patient {
            db: &self.db,
            until_ms: self.until_ms,
        }
    }
}

impl ProfileStore for Edge<'_> {
    // A refresh runs after the response, and a read that fails would lose it: it is tried
    // again (`d1::Patient`).
    async fn load(&self, profile_id: &str) -> Result<Loaded, ApiError> {
        let read = self
            .patient()
            .retry(|| store::profiles::view_and_state(&self.db, profile_id));
        Ok(isolate::timed("refresh: read profile", read).await?)
    }

    async fn load_state(&self, profile_id: &str) -> Result<(ProfileState, Option<i64>), ApiError> {
        let read = self
            .patient()
            .retry(|| store::personalisation::load(&self.db, profile_id));
        Ok(read.await?)
    }

    async fn load_many(&self, profile_ids: &[&str]) -> Result<Vec<Loaded>, ApiError> {
        let read = self
            .patient()
            .retry(|| store::profiles::views_and_states(&self.db, profile_ids));
        Ok(isolate::timed("refresh: read profile", read).await?)
    }

    async fn personalise_many(
        &self,
        config: &PersonalisationConfig,
        jobs: Vec<Job<'_>>,
    ) -> Vec<Result<Update, ApiError>> {
        let update = store::personalisation::update_many(self.patient(), &self.db, config, jobs);
        isolate::timed("refresh: personalise", async {
            Ok::<_, ApiError>(update.await)
        })
        .await
        .unwrap_or_default()
    }

    async fn personalise(
        &self,
        config: &PersonalisationConfig,
        view: &ProfileView,
        absorbed: &[String],
        events: &[&Event],
        now_ms: i64,
        loaded: (ProfileState, Option<i64>),
    ) -> Result<Update, ApiError> {
        let update = store::personalisation::update(
            self.patient(),
            &self.db,
            config,
            view,
            absorbed,
            events,
            now_ms,
            loaded,
        );
        isolate::timed("refresh: personalise", update).await
    }

    async fn store_events(
        &self,
        source: &Source,
        events: &[Value],
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let rules = settings::identity_rules(self.env)?;
        let store = store::events::store(&self.db, &rules, source, events, now_ms);
        let stored = isolate::timed("refresh: server events", store).await?;
        super::send_stored(self.env, stored).await;
        Ok(())
    }

    async fn enter_journeys(
        &self,
        view: &ProfileView,
        source: &Source,
        causes: &[Cause<'_>],
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let (user_id, anonymous_id) = view.first_ids();
        let who = super::journeys::Who {
            profile_id: &view.profile_id,
            source: Some(source),
            user_id: user_id.as_deref(),
            anonymous_id: anonymous_id.as_deref(),
        };
        let enter = super::journeys::enter(self.env, &self.db, who, causes, now_ms);
        isolate::timed("refresh: journeys", enter).await?;
        Ok(())
    }

    async fn publish(&self, view: &ProfileView, state: &ProfileState, writes: &SnapshotWrites) {
        let publish = store::snapshots::publish(
            self.env,
            view,
            Some(state),
            &writes.anonymous,
            &writes.absorbed,
            platform::now_ms(),
        );
        isolate::timed("refresh: publish", publish).await;
    }

    fn forget(&self, stale: Stale) {
        match stale {
            Stale::Inputs(changed) => isolate::forget_candidates(Some(&changed)),
            Stale::Everything => isolate::forget_candidates(None),
        }
    }
}

/// How long a run of refreshes keeps retrying failed reads and writes: well inside the 30 s
/// the platform gives work after a response.
const RETRY_FOR_MS: i64 = 10_000;

/// How long an isolate gathers the refreshes of the requests it answers before it runs them as
/// one batch: one read and one write round trip for all of them, instead of one each.
const GATHER_MS: u64 = 25;

/// Runs `refreshes` after the response, with those of the other requests the isolate answers
/// within [`GATHER_MS`]. They are idempotent; a retried batch re-applies them.
pub fn after_response(ctx: &Context, env: &Env, refreshes: Vec<Refresh>) {
    if refreshes.is_empty() || !isolate::hold_refreshes(refreshes) {
        return;
    }
    let env = env.clone();
    isolate::after_response(ctx, "refresh", async move {
        platform::sleep(GATHER_MS).await;
        spaced(&env, isolate::take_refreshes()).await
    });
}

/// Runs each refresh at once unless its profile refreshed within the spacing, then folded into
/// that profile's trailing run. The ones that run together run as one batch.
async fn spaced(env: &Env, refreshes: Vec<Refresh>) {
    let mut owed: Vec<(String, i64)> = Vec::new();
    let mut now = Vec::new();
    for refresh in refreshes {
        let key = refresh.profile_id.clone();
        match isolate::with_refreshes(|c| c.offer(&key, refresh, platform::now_ms())) {
            Offer::Run(refresh) => now.push((key, refresh)),
            Offer::Wait(ms) => owed.push((key, platform::now_ms() + ms)),
            Offer::Joined => {}
        }
    }
    run_spaced(env, now).await;
    while let Some(earliest) = owed.iter().map(|(_, at)| *at).min() {
        platform::sleep((earliest - platform::now_ms()).max(0) as u64).await;
        let mut later = Vec::new();
        let mut due = Vec::new();
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
                    due.push((key, refresh));
                }
                Claim::Wait(ms) => later.push((key, platform::now_ms() + ms)),
            }
        }
        run_spaced(env, due).await;
        owed = later;
    }
}

async fn run_spaced(env: &Env, refreshes: Vec<(String, Refresh)>) {
    if refreshes.is_empty() {
        return;
    }
    let (keys, refreshes): (Vec<String>, Vec<Refresh>) = refreshes.into_iter().unzip();
    let outcomes = match Shards::of(env) {
        Ok(db) => {
            let until_ms = platform::now_ms() + RETRY_FOR_MS;
            run_many(&Edge { env, db, until_ms }, refreshes).await
        }
        Err(e) => vec![Err(e)],
    };
    for e in outcomes.into_iter().filter_map(Result::err) {
        platform::log_error(&format!("profile refresh failed: {}", e.code()));
    }
    for key in &keys {
        isolate::with_refreshes(|c| c.finished(key));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context as Task, Poll, Waker};

    use seam_core::collect::ingest::decode;
    use seam_core::collect::source::parse_source;
    use seam_core::personalise;
    use serde_json::json;

    use super::*;

    const T0: i64 = 1_800_000_000_000;

    /// One profile's refresh, as a batch of one.
    async fn run(store: &impl ProfileStore, refresh: Refresh) -> Result<(), ApiError> {
        run_many(store, vec![refresh]).await.pop().unwrap_or(Ok(()))
    }

    /// The in-memory twin of D1 + KV: one state row per profile, the events stored, the
    /// snapshots published and the cache drops asked for.
    #[derive(Default)]
    struct Memory {
        profiles: RefCell<HashMap<String, Loaded>>,
        broken: bool,
        stored: RefCell<Vec<(String, Value)>>,
        published: RefCell<Vec<(ProfileView, ProfileState, SnapshotWrites)>>,
        forgotten: RefCell<Vec<Stale>>,
        entered_by: RefCell<Vec<String>>,
    }

    impl Memory {
        fn with_profile(profile_id: &str, identifiers: &[&str]) -> Self {
            let memory = Memory::default();
            let texts = identifiers.iter().map(|i| (*i).to_owned()).collect();
            let view = ProfileView::new(profile_id, texts, &[]);
            memory
                .profiles
                .borrow_mut()
                .insert(profile_id.into(), (view, (ProfileState::default(), None)));
            memory
        }
    }

    impl ProfileStore for Memory {
        async fn load(&self, profile_id: &str) -> Result<Loaded, ApiError> {
            Ok(self
                .profiles
                .borrow()
                .get(profile_id)
                .cloned()
                .unwrap_or_else(|| {
                    let view = ProfileView::new(profile_id, Vec::new(), &[]);
                    (view, (ProfileState::default(), None))
                }))
        }

        async fn load_state(
            &self,
            profile_id: &str,
        ) -> Result<(ProfileState, Option<i64>), ApiError> {
            Ok(self.load(profile_id).await?.1)
        }

        async fn personalise(
            &self,
            config: &PersonalisationConfig,
            view: &ProfileView,
            _absorbed: &[String],
            events: &[&Event],
            now_ms: i64,
            (state, version): (ProfileState, Option<i64>),
        ) -> Result<Update, ApiError> {
            if self.broken {
                return Err(ApiError::Storage("down".into()));
            }
            let update = personalise::update(
                state,
                version,
                &view.profile_id,
                &view.traits,
                events,
                config,
                now_ms,
            );
            if let Some(row) = self.profiles.borrow_mut().get_mut(&view.profile_id) {
                row.1 = (update.state.clone(), Some(version.unwrap_or(0) + 1));
            }
            Ok(update)
        }

        async fn store_events(
            &self,
            source: &Source,
            events: &[Value],
            _now_ms: i64,
        ) -> Result<(), ApiError> {
            let mut stored = self.stored.borrow_mut();
            stored.extend(events.iter().map(|e| (source.id.clone(), e.clone())));
            Ok(())
        }

        async fn enter_journeys(
            &self,
            _view: &ProfileView,
            _source: &Source,
            causes: &[Cause<'_>],
            _now_ms: i64,
        ) -> Result<(), ApiError> {
            self.entered_by
                .borrow_mut()
                .extend(causes.iter().map(|c| match c {
                    Cause::SegmentEntered(s) => format!("segment:{s}"),
                    Cause::Event(body) => format!("event:{}", body["event"]),
                }));
            Ok(())
        }

        async fn publish(&self, view: &ProfileView, state: &ProfileState, writes: &SnapshotWrites) {
            let published = (view.clone(), state.clone(), writes.clone());
            self.published.borrow_mut().push(published);
        }

        fn forget(&self, stale: Stale) {
            self.forgotten.borrow_mut().push(stale);
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Task::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => unreachable!("the in-memory store never waits"),
        }
    }

    fn order(revenue: f64) -> Vec<Event> {
        let body = json!({"batch": [{"type": "track", "event": "Order Completed", "userId": "u1",
            "messageId": "o1", "timestamp": "2027-01-15T08:00:00Z",
            "properties": {"order_id": "o1", "revenue": revenue}}]});
        decode(body.to_string().as_bytes(), None, T0, || "generated".into())
            .unwrap()
            .valid()
            .cloned()
            .collect()
    }

    fn refresh(events: Vec<Event>, personalised: bool) -> Refresh {
        Refresh {
            source: parse_source("k", &json!({"id": "web"})).unwrap(),
            profile_id: "p1".into(),
            snapshot: SnapshotWrites {
                anonymous: vec!["a1".into()],
                absorbed: Vec::new(),
            },
            absorbed: Vec::new(),
            events,
            received_at: T0,
            loaded: None,
            config: personalised.then(|| Arc::new(PersonalisationConfig::committed().unwrap())),
        }
    }

    #[test]
    fn profiles_refreshed_together_each_get_their_own_state_and_snapshot() {
        let memory = Memory::with_profile("p1", &["user_id:u1"]);
        let view = ProfileView::new("p2", vec!["user_id:u2".into()], &[]);
        memory
            .profiles
            .borrow_mut()
            .insert("p2".into(), (view, (ProfileState::default(), None)));
        let config = Arc::new(PersonalisationConfig::committed().unwrap());
        let mut big = refresh(order(600.0), true);
        let mut small = refresh(order(20.0), true);
        small.profile_id = "p2".into();
        // One configuration, as an isolate's requests share it: one group.
        big.config = Some(config.clone());
        small.config = Some(config);
        let mut erased = refresh(order(5.0), true);
        erased.profile_id = "gone".into();
        memory.profiles.borrow_mut().insert(
            "gone".into(),
            (
                ProfileView::new("gone", vec![], &[]),
                (ProfileState::default(), None),
            ),
        );
        let outcomes = block_on(run_many(&memory, vec![big, erased, small]));
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes.iter().all(Result::is_ok));
        let published = memory.published.borrow();
        let values: HashMap<&str, &Value> = published
            .iter()
            .map(|(v, _, _)| (v.profile_id.as_str(), &v.computed_traits["lifetime_value"]))
            .collect();
        assert_eq!(values.len(), 2, "the erased profile gets no snapshot");
        assert_eq!(values["p1"], &json!(600.0));
        assert_eq!(values["p2"], &json!(20.0));
        let stored = memory.stored.borrow();
        assert_eq!(
            stored.len(),
            1,
            "only the big order enters high_value: {stored:?}"
        );
    }

    #[test]
    fn a_big_order_publishes_its_value_and_stores_the_segment_entry() {
        let memory = Memory::with_profile("p1", &["user_id:u1"]);
        block_on(run(&memory, refresh(order(600.0), true))).unwrap();
        let published = memory.published.borrow();
        let (view, state, writes) = &published[0];
        assert_eq!(view.computed_traits["lifetime_value"], json!(600.0));
        assert!(view.segments.contains(&"high_value".to_owned()));
        assert_eq!(writes.anonymous, ["a1"]);
        assert_eq!(
            state,
            &memory.profiles.borrow()["p1"].1 .0,
            "the saved state"
        );
        let stored = memory.stored.borrow();
        assert!(stored.iter().any(|(source, e)| source == "web"
            && e["event"] == "Segment Entered"
            && e["properties"]["segment"] == "high_value"));
        assert!(matches!(memory.forgotten.borrow()[..], [Stale::Inputs(_)]));
        drop((stored, published));
        assert_eq!(
            memory.entered_by.borrow()[..],
            ["segment:high_value", "event:\"Order Completed\""],
            "journeys may start from the new segment and from the order"
        );
        // The same order again enters nothing.
        block_on(run(&memory, refresh(order(600.0), true))).unwrap();
        assert_eq!(memory.entered_by.borrow().len(), 2);
    }

    #[test]
    fn an_erased_profile_gets_no_state_and_no_snapshot() {
        let memory = Memory::with_profile("p1", &[]);
        block_on(run(&memory, refresh(order(600.0), true))).unwrap();
        assert!(memory.published.borrow().is_empty());
        assert!(memory.stored.borrow().is_empty());
        assert!(memory.forgotten.borrow().is_empty());
    }

    #[test]
    fn a_failed_personalisation_still_publishes_the_stored_state() {
        let mut memory = Memory::with_profile("p1", &["user_id:u1"]);
        memory.broken = true;
        block_on(run(&memory, refresh(order(600.0), true))).unwrap();
        let published = memory.published.borrow();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].1, ProfileState::default());
        assert!(memory.stored.borrow().is_empty());
        assert!(memory.forgotten.borrow().is_empty(), "nothing was written");
    }

    #[test]
    fn a_merge_drops_every_cached_input() {
        let memory = Memory::with_profile("p1", &["user_id:u1"]);
        let mut merge = refresh(order(10.0), true);
        merge.absorbed = vec!["p0".into()];
        block_on(run(&memory, merge)).unwrap();
        assert_eq!(memory.forgotten.borrow()[..], [Stale::Everything]);
    }

    #[test]
    fn without_personalisation_only_the_snapshot_is_published() {
        let memory = Memory::with_profile("p1", &["user_id:u1"]);
        block_on(run(&memory, refresh(order(600.0), false))).unwrap();
        assert_eq!(memory.published.borrow().len(), 1);
        assert!(memory.stored.borrow().is_empty());
        assert_eq!(memory.profiles.borrow()["p1"].1 .1, None, "no state saved");
    }
}
