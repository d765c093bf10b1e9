//! Everything an isolate keeps between requests, in one place: what is cached, for how long,
//! and what drops it. Each is a cache of D1/KV truth or of immutable assets, so losing any of
//! them (a new isolate) costs reads, never correctness.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use seam_core::activate::destination::Destination;
use seam_core::collect::event::Event;
use seam_core::collect::source::{Source, Sources};
use seam_core::journey::Journeys;
use seam_core::personalise::candidates::CandidateCache;
use seam_core::personalise::coalesce::Coalescer;
use seam_core::personalise::recommend::Changed;
use seam_core::personalise::refresh::Refresh;
use seam_core::personalise::PersonalisationConfig;
use worker::Context;

/// Work this isolate runs after its responses (profile refreshes, exposure logs) and has not
/// finished, and events being stored (see [`storing`]): `/health` reports it, so tests and
/// operators can tell when derived state caught up.
static BACKGROUND: AtomicUsize = AtomicUsize::new(0);

/// Ingest messages this isolate queued that its own consumer has not finished with. Locally
/// (one isolate) that is the queue's backlog, which `/health` reports so tests can tell when
/// queued events are stored. On Cloudflare another isolate may consume them, so the count is
/// dropped once this isolate has queued nothing for [`QUEUED_FORGOTTEN_MS`].
static QUEUED: AtomicUsize = AtomicUsize::new(0);
const QUEUED_FORGOTTEN_MS: i64 = 300_000;

thread_local! {
    /// When this isolate last queued ingest messages.
    static LAST_QUEUED_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
    /// The ingest messages already counted as consumed: one the queue delivers again after a
    /// failed attempt is not counted twice.
    static CONSUMED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Finished after-response work by kind: how many, and their wall time in ms.
    static FINISHED: RefCell<HashMap<&'static str, (u64, i64)>> = RefCell::new(HashMap::new());
}

/// Counted in [`background`] until dropped (see [`storing`]).
pub struct Storing(());

/// Counts as background work until the guard drops. Storing events commits them before it
/// reads their profiles and hands the refresh to [`after_response`]: in between, a reader sees
/// the events but not yet the work that follows them, and `/health` must not say all is done.
pub fn storing() -> Storing {
    BACKGROUND.fetch_add(1, Ordering::Relaxed);
    Storing(())
}

impl Drop for Storing {
    fn drop(&mut self) {
        BACKGROUND.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `work` after the response is sent (`ctx.wait_until`), counted in [`background`] and,
/// once done, in [`finished_work`] under `kind`.
pub fn after_response(ctx: &Context, kind: &'static str, work: impl Future<Output = ()> + 'static) {
    BACKGROUND.fetch_add(1, Ordering::Relaxed);
    ctx.wait_until(async move {
        let started = crate::platform::now_ms();
        work.await;
        finished(kind, crate::platform::now_ms() - started);
        BACKGROUND.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Runs `work`, counted in [`finished_work`] under `kind`.
pub async fn timed<T>(kind: &'static str, work: impl Future<Output = T>) -> T {
    let started = crate::platform::now_ms();
    let out = work.await;
    finished(kind, crate::platform::now_ms() - started);
    out
}

/// Counts a piece of work of `kind` that took `ms` (see [`finished_work`]).
pub fn finished(kind: &'static str, ms: i64) {
    FINISHED.with(|f| {
        let mut f = f.borrow_mut();
        let entry = f.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += ms;
    });
}

/// Counts `n` ingest messages queued now (see [`queued`]).
pub fn queued_ingest(n: usize, now_ms: i64) {
    if now_ms - LAST_QUEUED_MS.with(|t| t.replace(now_ms)) > QUEUED_FORGOTTEN_MS {
        QUEUED.store(0, Ordering::Relaxed);
    }
    QUEUED.fetch_add(n, Ordering::Relaxed);
}

/// Counts the ingest messages (by ID) this isolate's consumer finished with: stored, or back on
/// the queue for a later attempt, each counted once.
pub fn consumed_ingest(ids: impl IntoIterator<Item = String>) {
    let n = CONSUMED.with(|seen| {
        let mut seen = seen.borrow_mut();
        // Only to tell a redelivery from a first delivery: a bounded memory is enough.
        if seen.len() > 10_000 {
            seen.clear();
        }
        ids.into_iter().filter(|id| seen.insert(id.clone())).count()
    });
    let _ = QUEUED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
        Some(q.saturating_sub(n))
    });
}

/// Ingest messages this isolate queued and has not seen consumed (see [`QUEUED`]).
pub fn queued(now_ms: i64) -> usize {
    if now_ms - LAST_QUEUED_MS.with(std::cell::Cell::get) > QUEUED_FORGOTTEN_MS {
        return 0;
    }
    QUEUED.load(Ordering::Relaxed)
}

/// Background tasks running now (see [`after_response`]).
pub fn background() -> usize {
    BACKGROUND.load(Ordering::Relaxed)
}

/// The after-response work this isolate finished, by kind: (count, wall ms). Wall time, since
/// a Worker's clock moves only at I/O: what it shows is time spent waiting on storage.
pub fn finished_work() -> Vec<(&'static str, u64, i64)> {
    FINISHED.with(|f| {
        let mut all: Vec<_> = f
            .borrow()
            .iter()
            .map(|(k, (n, ms))| (*k, *n, *ms))
            .collect();
        all.sort_unstable();
        all
    })
}

// --- Archive keys waiting to be queued ---------------------------------------------------

/// What an isolate gathers from the requests it answers, for one scheduled run to take.
struct Gathered<T> {
    held: Vec<T>,
    scheduled: bool,
}

impl<T> Gathered<T> {
    const fn new() -> Self {
        Self {
            held: Vec::new(),
            scheduled: false,
        }
    }

    /// True when no run is scheduled: the caller schedules one.
    fn hold(&mut self, items: Vec<T>) -> bool {
        self.held.extend(items);
        !std::mem::replace(&mut self.scheduled, true)
    }

    fn take(&mut self) -> Vec<T> {
        self.scheduled = false;
        std::mem::take(&mut self.held)
    }
}

thread_local! {
    /// Keys of stored events not yet queued for the archive.
    static ARCHIVE_KEYS: RefCell<Gathered<(String, String)>> = const { RefCell::new(Gathered::new()) };
    /// Profile refreshes not yet run.
    static GATHERED_REFRESHES: RefCell<Gathered<Refresh>> = const { RefCell::new(Gathered::new()) };
}

/// Holds `keys` for the isolate's next archive send. True when no send is scheduled: the
/// caller schedules one, which takes everything held by then ([`take_archive_keys`]).
pub fn hold_archive_keys(keys: Vec<(String, String)>) -> bool {
    ARCHIVE_KEYS.with(|k| k.borrow_mut().hold(keys))
}

/// The held archive keys; the next [`hold_archive_keys`] schedules a send again.
pub fn take_archive_keys() -> Vec<(String, String)> {
    ARCHIVE_KEYS.with(|k| k.borrow_mut().take())
}

/// Holds `refreshes` for the isolate's next refresh run. True when none is scheduled: the
/// caller schedules one, which takes everything held by then ([`take_refreshes`]).
pub fn hold_refreshes(refreshes: Vec<Refresh>) -> bool {
    GATHERED_REFRESHES.with(|r| r.borrow_mut().hold(refreshes))
}

/// The held refreshes; the next [`hold_refreshes`] schedules a run again.
pub fn take_refreshes() -> Vec<Refresh> {
    GATHERED_REFRESHES.with(|r| r.borrow_mut().take())
}

// --- Personalisation configuration -------------------------------------------------------

/// How long an isolate uses its configuration before checking KV for an upload (so an upload
/// reaches every isolate within this time; the isolate that took the upload uses it at once).
const CONFIG_TTL_MS: i64 = 30_000;
/// The stamp of the committed documents (an upload's stamp is a hash of its documents).
pub const COMMITTED: &str = "committed";

struct Active {
    config: Option<Arc<PersonalisationConfig>>,
    stamp: String,
    checked_ms: i64,
}

thread_local! {
    static ACTIVE: RefCell<Active> = RefCell::new(Active {
        config: committed_config(),
        stamp: COMMITTED.into(),
        checked_ms: i64::MIN,
    });
}

/// The committed `config/*.json`; `None` (logged) when invalid: personalisation is derived data
/// and must never block ingestion.
pub fn committed_config() -> Option<Arc<PersonalisationConfig>> {
    match PersonalisationConfig::committed() {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            worker::console_error!("personalisation config: {} ({e})", e.code());
            None
        }
    }
}

/// The personalisation configuration in force in this isolate.
pub fn config() -> Option<Arc<PersonalisationConfig>> {
    ACTIVE.with(|a| a.borrow().config.clone())
}

/// The stamp of the configuration in force.
pub fn config_stamp() -> String {
    ACTIVE.with(|a| a.borrow().stamp.clone())
}

/// Whether the configuration is due a check for an upload at `now_ms`; marks it checked, so
/// concurrent requests do not all read.
pub fn config_check_due(now_ms: i64) -> bool {
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let due = now_ms.saturating_sub(a.checked_ms) >= CONFIG_TTL_MS;
        if due {
            a.checked_ms = now_ms;
        }
        due
    })
}

/// Makes `config` (stamped `stamp`) the isolate's configuration.
pub fn use_config(config: Option<Arc<PersonalisationConfig>>, stamp: &str) {
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        a.config = config;
        a.stamp = stamp.to_owned();
    });
}

// --- Destinations -------------------------------------------------------------------------

struct Routing {
    destinations: Arc<Vec<Destination>>,
    stamp: String,
    checked_ms: i64,
}

thread_local! {
    static DESTINATIONS: RefCell<Routing> = RefCell::new(Routing {
        destinations: Arc::new(Vec::new()),
        stamp: String::new(),
        checked_ms: i64::MIN,
    });
}

/// The destinations in force in this isolate (secrets opened).
pub fn destinations() -> Arc<Vec<Destination>> {
    DESTINATIONS.with(|d| d.borrow().destinations.clone())
}

/// Whether this isolate has read the destinations at least once (routing against an empty
/// list would silently skip them).
pub fn destinations_loaded() -> bool {
    DESTINATIONS.with(|d| !d.borrow().stamp.is_empty())
}

/// The stamp of the destinations in force (empty before the first load).
pub fn destinations_stamp() -> String {
    DESTINATIONS.with(|d| d.borrow().stamp.clone())
}

/// Makes the destinations due a check again (the last one failed).
pub fn destinations_check_failed() {
    DESTINATIONS.with(|d| d.borrow_mut().checked_ms = i64::MIN);
}

/// Whether the destinations are due a check at `now_ms` (as [`config_check_due`]).
pub fn destinations_check_due(now_ms: i64) -> bool {
    DESTINATIONS.with(|d| {
        let mut d = d.borrow_mut();
        let due = now_ms.saturating_sub(d.checked_ms) >= CONFIG_TTL_MS;
        if due {
            d.checked_ms = now_ms;
        }
        due
    })
}

/// Makes `destinations` (stamped `stamp`) the isolate's destinations.
pub fn use_destinations(destinations: Vec<Destination>, stamp: &str) {
    DESTINATIONS.with(|d| {
        let mut d = d.borrow_mut();
        d.destinations = Arc::new(destinations);
        d.stamp = stamp.to_owned();
    });
}

// --- Journeys -----------------------------------------------------------------------------

struct Flows {
    journeys: Arc<Journeys>,
    stamp: String,
    checked_ms: i64,
}

thread_local! {
    static JOURNEYS: RefCell<Flows> = RefCell::new(Flows {
        journeys: Arc::new(Journeys::default()),
        stamp: String::new(),
        checked_ms: i64::MIN,
    });
}

/// The journeys and templates in force in this isolate (none before the first load).
pub fn journeys() -> Arc<Journeys> {
    JOURNEYS.with(|j| j.borrow().journeys.clone())
}

/// The stamp of the journeys in force (empty before the first load).
pub fn journeys_stamp() -> String {
    JOURNEYS.with(|j| j.borrow().stamp.clone())
}

/// Whether the journeys are due a check at `now_ms` (as [`config_check_due`]).
pub fn journeys_check_due(now_ms: i64) -> bool {
    JOURNEYS.with(|j| {
        let mut j = j.borrow_mut();
        let due = now_ms.saturating_sub(j.checked_ms) >= CONFIG_TTL_MS;
        if due {
            j.checked_ms = now_ms;
        }
        due
    })
}

/// Makes `journeys` (stamped `stamp`) the isolate's journeys.
pub fn use_journeys(journeys: Journeys, stamp: &str) {
    JOURNEYS.with(|j| {
        let mut j = j.borrow_mut();
        j.journeys = Arc::new(journeys);
        j.stamp = stamp.to_owned();
    });
}

// --- Configured sources ---------------------------------------------------------------------

thread_local! {
    /// The text the sources were parsed from (the `SOURCES` setting and the server key), and
    /// the result: every request reads them, and parsing them each time cost more than
    /// answering `/health`.
    static SOURCES: RefCell<Option<(String, Rc<Sources>)>> = const { RefCell::new(None) };
}

/// The sources parsed from `text` by `parse`, parsed again only when `text` changes (a new
/// deploy's settings). A failed parse is not kept.
pub fn sources_of<E>(
    text: String,
    parse: impl FnOnce() -> Result<Sources, E>,
) -> Result<Rc<Sources>, E> {
    if let Some(kept) = SOURCES.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(kept, _)| *kept == text)
            .map(|(_, sources)| sources.clone())
    }) {
        return Ok(kept);
    }
    let sources = Rc::new(parse()?);
    SOURCES.with(|c| *c.borrow_mut() = Some((text, sources.clone())));
    Ok(sources)
}

// --- Suppression list ---------------------------------------------------------------------

/// How long an isolate trusts its copy of the suppression list. Staleness is caught anyway by
/// the check inside every ingest batch; the cache only saves the common case a round trip.
const SUPPRESSION_TTL_MS: i64 = 30_000;

thread_local! {
    /// `None` inside: the list is too long to hold (each request asks D1 about its own keys).
    #[allow(clippy::type_complexity)]
    static SUPPRESSED: RefCell<Option<(i64, Option<Rc<HashSet<String>>>)>> =
        const { RefCell::new(None) };
}

/// The cached suppression keys, when fresh at `now_ms` (`Some(None)`: too many to hold).
pub fn suppressions(now_ms: i64) -> Option<Option<Rc<HashSet<String>>>> {
    SUPPRESSED.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(at, _)| now_ms - at < SUPPRESSION_TTL_MS)
            .map(|(_, keys)| keys.clone())
    })
}

/// Keeps the suppression keys read at `now_ms` (`None`: too many to hold).
pub fn keep_suppressions(now_ms: i64, keys: Option<Rc<HashSet<String>>>) {
    SUPPRESSED.with(|c| *c.borrow_mut() = Some((now_ms, keys)));
}

/// Drops the copy of the suppression list (after this isolate changed it, or saw it change).
pub fn forget_suppressions() {
    SUPPRESSED.with(|c| *c.borrow_mut() = None);
}

// --- Shared recommendation inputs ---------------------------------------------------------

/// Popular items read per decision (defaults and top-ups).
const POPULAR: usize = 50;
/// Entries kept per kind (products' partner lists, listings, items); each kind is also held to
/// `candidates::DEFAULT_MAX_BYTES`.
const CANDIDATE_CAPACITY: usize = 5_000;

thread_local! {
    /// Each decision sets the lifetime from the configured `cacheSeconds`.
    static CANDIDATES: RefCell<CandidateCache> =
        RefCell::new(CandidateCache::new(0, CANDIDATE_CAPACITY, POPULAR));
}

/// Runs `f` with the isolate's shared recommendation inputs.
pub fn with_candidates<R>(f: impl FnOnce(&mut CandidateCache) -> R) -> R {
    CANDIDATES.with(|c| f(&mut c.borrow_mut()))
}

/// Drops the cached recommendation inputs that writes changed (`None`: all of them, for a
/// catalogue upload, an erasure or a merge).
pub fn forget_candidates(changed: Option<&Changed>) {
    with_candidates(|c| match changed {
        Some(changed) => c.forget(changed),
        None => c.clear(),
    });
}

// --- Anonymous ID -> profile pointers -----------------------------------------------------

/// Pointers remembered (cleared when full), each for at most [`POINTER_TTL_MS`]; this isolate's
/// own KV publishes update them at once.
const KNOWN_PROFILES: usize = 10_000;
const POINTER_TTL_MS: i64 = 60_000;

thread_local! {
    static PROFILE_OF: RefCell<HashMap<String, (String, i64)>> = RefCell::new(HashMap::new());
}

/// The profile `anonymous_id` pointed to when last seen, if recent.
pub fn known_profile(anonymous_id: &str, now_ms: i64) -> Option<String> {
    PROFILE_OF.with(|p| {
        p.borrow()
            .get(anonymous_id)
            .filter(|(_, at)| now_ms - at < POINTER_TTL_MS)
            .map(|(id, _)| id.clone())
    })
}

/// Remembers that `anonymous_id` belongs to `profile_id` (as the KV pointer says).
pub fn remember_profile(anonymous_id: &str, profile_id: &str, now_ms: i64) {
    PROFILE_OF.with(|p| {
        let mut known = p.borrow_mut();
        if known.len() >= KNOWN_PROFILES {
            known.clear();
        }
        known.insert(anonymous_id.to_owned(), (profile_id.to_owned(), now_ms));
    });
}

// --- Site pages ---------------------------------------------------------------------------

/// A site page as fetched: its HTML, the slots it carries and its headers.
#[allow(missing_docs)] // the fields say what they hold
pub struct Page {
    pub html: String,
    pub slots: Vec<String>,
    pub headers: Vec<(String, String)>,
}

/// Pages of the Worker's own assets kept: assets are immutable within a deployment (a new
/// deployment starts new isolates), so the asset fetch is paid once per page and isolate.
/// Proxied origins are fetched every time. Bounded in bytes as well as pages: an isolate has
/// 128 MB for everything.
const CACHED_PAGES: usize = 64;
const CACHED_PAGE_BYTES: usize = 4 * 1024 * 1024;

thread_local! {
    static PAGES: RefCell<(HashMap<String, Rc<Page>>, usize)> =
        RefCell::new((HashMap::new(), 0));
}

/// The kept asset page at `path`.
pub fn cached_page(path: &str) -> Option<Rc<Page>> {
    PAGES.with(|p| p.borrow().0.get(path).cloned())
}

/// Keeps an asset page while fewer than [`CACHED_PAGES`] pages and [`CACHED_PAGE_BYTES`] bytes
/// are kept (a page that does not fit is simply fetched again next time).
pub fn keep_page(path: String, page: &Rc<Page>) {
    let size = page.html.len()
        + page
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>();
    PAGES.with(|p| {
        let (pages, bytes) = &mut *p.borrow_mut();
        if pages.len() < CACHED_PAGES
            && *bytes + size <= CACHED_PAGE_BYTES
            && !pages.contains_key(&path)
        {
            pages.insert(path, Rc::clone(page));
            *bytes += size;
        }
    });
}

// --- Exposures waiting to be written ------------------------------------------------------

thread_local! {
    /// `Some` while a write is scheduled.
    static EXPOSURES: RefCell<Option<Vec<(Source, Event)>>> = const { RefCell::new(None) };
}

/// Adds events to the pending exposure log; `true` when none were pending (the caller then
/// schedules the write).
pub fn queue_exposures(source: &Source, events: Vec<Event>) -> bool {
    EXPOSURES.with(|pending| {
        let mut pending = pending.borrow_mut();
        let first = pending.is_none();
        let list = pending.get_or_insert_with(Vec::new);
        list.extend(events.into_iter().map(|e| (source.clone(), e)));
        first
    })
}

/// Takes the pending exposures (the next queued one schedules a new write).
pub fn take_exposures() -> Vec<(Source, Event)> {
    EXPOSURES
        .with(|p| p.borrow_mut().take())
        .unwrap_or_default()
}

// --- Profile refresh spacing --------------------------------------------------------------

/// A profile's refreshes start at most once a second in an isolate (KV takes one write per
/// second per key); what arrives in between runs once, after the spacing.
const REFRESH_SPACING_MS: i64 = 1_000;
/// Profiles whose spacing an isolate remembers.
const SPACED_PROFILES: usize = 10_000;

thread_local! {
    static REFRESHES: RefCell<Coalescer<Refresh>> =
        RefCell::new(Coalescer::new(REFRESH_SPACING_MS, SPACED_PROFILES));
}

/// Runs `f` with the isolate's refresh spacing.
pub fn with_refreshes<R>(f: impl FnOnce(&mut Coalescer<Refresh>) -> R) -> R {
    REFRESHES.with(|c| f(&mut c.borrow_mut()))
}

/// How long an isolate trusts what it read of a walk taking `DB`'s rows home
/// (`store::identity`): the walk's end is read again this often while it is not known done.
const LEFT_IN_DB_TTL_MS: i64 = 60_000;

thread_local! {
    /// By the walk's name: whether `DB` was last found to hold rows it has still to take home
    /// (other shards' identifiers' links or assignments), and when.
    static LEFT_IN_DB: RefCell<BTreeMap<&'static str, (bool, i64)>> = const { RefCell::new(BTreeMap::new()) };
}

/// Whether `DB` still holds what the walk `walk` takes home, as last read, while fresh.
pub fn left_in_db(walk: &'static str, now_ms: i64) -> Option<bool> {
    LEFT_IN_DB.with(|m| {
        m.borrow()
            .get(walk)
            .filter(|(_, at)| now_ms.saturating_sub(*at) < LEFT_IN_DB_TTL_MS)
            .map(|(held, _)| *held)
    })
}

/// Records what was read of the walk `walk`.
pub fn found_left_in_db(walk: &'static str, held: bool, now_ms: i64) {
    LEFT_IN_DB.with(|m| m.borrow_mut().insert(walk, (held, now_ms)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(bytes: usize) -> Rc<Page> {
        Rc::new(Page {
            html: "x".repeat(bytes),
            slots: Vec::new(),
            headers: Vec::new(),
        })
    }

    #[test]
    fn pages_are_kept_within_a_byte_budget() {
        keep_page("/big".into(), &page(CACHED_PAGE_BYTES + 1));
        assert!(
            cached_page("/big").is_none(),
            "larger than the whole budget"
        );
        keep_page("/half".into(), &page(CACHED_PAGE_BYTES / 2));
        keep_page("/half".into(), &page(CACHED_PAGE_BYTES / 2));
        keep_page("/other".into(), &page(CACHED_PAGE_BYTES / 2 - 10));
        assert!(cached_page("/half").is_some());
        assert!(
            cached_page("/other").is_some(),
            "a page kept twice counts once"
        );
        keep_page("/more".into(), &page(100));
        assert!(cached_page("/more").is_none(), "the budget is spent");
        keep_page("/tiny".into(), &page(10));
        assert!(cached_page("/tiny").is_some(), "what still fits is kept");
    }

    #[test]
    fn sources_are_parsed_once_per_setting_and_a_failed_parse_is_not_kept() {
        let parses = std::cell::Cell::new(0);
        let parse = || {
            parses.set(parses.get() + 1);
            Ok::<_, ()>(Sources::default())
        };
        let first = sources_of("a".into(), parse).unwrap();
        let again = sources_of("a".into(), parse).unwrap();
        assert!(Rc::ptr_eq(&first, &again));
        assert_eq!(parses.get(), 1);
        assert!(sources_of("b".into(), || Err::<Sources, _>("broken")).is_err());
        sources_of("b".into(), parse).unwrap();
        assert_eq!(
            parses.get(),
            2,
            "a new setting is parsed, a broken one was not kept"
        );
    }

    #[test]
    fn queued_ingest_counts_down_as_consumed_and_is_forgotten_when_another_isolate_consumes() {
        queued_ingest(2, 1_000);
        consumed_ingest(["m1".to_owned()]);
        assert_eq!(queued(2_000), 1);
        consumed_ingest(["m1".to_owned()]);
        assert_eq!(queued(2_000), 1, "a redelivered message counts once");
        consumed_ingest((2..7).map(|i| format!("m{i}")));
        assert_eq!(queued(2_000), 0, "never below zero");
        queued_ingest(3, 3_000);
        assert_eq!(
            queued(3_000 + QUEUED_FORGOTTEN_MS + 1),
            0,
            "nothing queued for five minutes"
        );
        queued_ingest(1, 3_000 + QUEUED_FORGOTTEN_MS + 2);
        assert_eq!(
            queued(3_000 + QUEUED_FORGOTTEN_MS + 2),
            1,
            "the stale count starts over"
        );
    }
}
