//! The SDK's state and behaviour: consent, identity, event building, the queue and delivery.
//!
//! Browser access goes through [`crate::platform`]; rules that need no browser (consent merge
//! rules, TCF mapping, event shape, queue budget and leases, retry policy, IDs, time) come from
//! `seam-core`.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem;

use seam_core::consent::{Choices, ConsentModel, Purpose, RegionDefault, TcfSignal};
use seam_core::delivery::draft::{compose, Draft, Stamp};
use seam_core::delivery::outbox::{
    batch_body, parse_retry_after, Outbox, Reply, DEFAULT_BUDGET_BYTES, MAX_BATCH_BYTES,
};
use seam_core::format::ascii::split_ascii;
use seam_core::format::jsontext::ObjectWriter;
use seam_core::{format::id, LIBRARY_NAME, VERSION};
use wasm_bindgen::JsValue;

use crate::platform;

/// localStorage name of the persisted anonymous ID, and its cookie's (which the platform names
/// `__Host-seam_anonymous_id` unless the site shares it with its subdomains: `cookie.domain`).
pub const ANONYMOUS_ID_KEY: &str = "seam_anonymous_id";
/// localStorage key of the user ID from `identify`.
pub const USER_ID_KEY: &str = "seam_user_id";
/// localStorage key of the identity token the site gave with `identify` (the JS entry keeps it;
/// the platform's `post` sends it as batch-level `context.seam.identityToken`).
pub const IDENTITY_TOKEN_KEY: &str = "seam_identity_token";
/// localStorage key of the user's traits (JSON).
pub const TRAITS_KEY: &str = "seam_user_traits";
/// localStorage key of the group ID from `group`.
pub const GROUP_ID_KEY: &str = "seam_group_id";
/// localStorage key of the collector's ID that `reset` retired, kept until the collector
/// answers with a new one (its cookie is HttpOnly: only the collector can replace it).
pub const RETIRED_ID_KEY: &str = "seam_retired_id";
/// Prefix of the localStorage keys (and Web Lock names) of the tabs' queues: each tab stores its
/// queue under the prefix plus a random tab ID and holds the lock of that name while it lives.
pub const QUEUE_PREFIX: &str = "seam_queue";
/// One year, like the collector's cookie.
const COOKIE_MAX_AGE: u32 = 31_536_000;
/// Events held before consent decides, at most; the oldest are evicted (and counted) past it.
const MAX_HELD: usize = 1000;

/// What happens to events while `analytics_storage` is not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreConsent {
    /// Held in memory; sent with the persistent ID once granted, lost with the page otherwise.
    Buffer,
    /// Discarded.
    Drop,
    /// Sent now with a page-only anonymous ID (the collector stores them without identifiers).
    Cookieless,
}

/// Settings from `load(options)`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The source's write key.
    pub write_key: String,
    /// Collector base URL; empty means the page's own origin.
    pub endpoint: String,
    /// Send once this many events wait.
    pub flush_at: usize,
    /// Send at least this often (ms).
    pub flush_interval_ms: i32,
    /// Log failures to the console.
    pub debug: bool,
    /// Events before consent (`preConsent`).
    pub pre_consent: PreConsent,
    /// Byte budget of the stored queue (`queueBytes`).
    pub queue_bytes: usize,
    /// Cookie domain (`cookie.domain`); empty means host-only.
    pub cookie_domain: String,
    /// Send a `page` on History API navigations (`autoPage`, default true).
    pub auto_page: bool,
    /// The visitor's region for region-scoped consent defaults (`region`, e.g. `US-CA`).
    pub region: String,
}

fn get(value: &JsValue, key: &str) -> JsValue {
    platform::prop(value, key)
}

impl Config {
    /// Reads the options object; an error (with a reason) when it is unusable.
    pub fn from_js(options: &JsValue) -> Result<Self, &'static str> {
        let text = |key: &str| platform::text_prop(options, key);
        let write_key = text("writeKey");
        if write_key.is_empty() {
            return Err("load() needs a writeKey");
        }
        let number = |key: &str, default: f64, min: f64| {
            get(options, key)
                .as_f64()
                .filter(|n| n.is_finite())
                .map_or(default, |n| n.max(min))
        };
        let pre_consent = match text("preConsent").as_str() {
            "drop" => PreConsent::Drop,
            "cookieless" => PreConsent::Cookieless,
            _ => PreConsent::Buffer,
        };
        Ok(Self {
            write_key,
            endpoint: {
                // Without trailing slashes (`trim_end_matches('/')`).
                let endpoint = text("endpoint");
                let end = endpoint
                    .bytes()
                    .rposition(|b| b != b'/')
                    .map_or(0, |i| i + 1);
                endpoint.get(..end).unwrap_or_default().to_owned()
            },
            flush_at: number("flushAt", 20.0, 1.0) as usize,
            flush_interval_ms: number("flushInterval", 5000.0, 100.0) as i32,
            debug: get(options, "debug").is_truthy(),
            pre_consent,
            queue_bytes: number("queueBytes", DEFAULT_BUDGET_BYTES as f64, 1024.0) as usize,
            cookie_domain: platform::text_prop(&get(options, "cookie"), "domain"),
            auto_page: get(options, "autoPage") != JsValue::FALSE,
            region: text("region"),
        })
    }
}

/// The GCM keys in [`Purpose::ALL`] order, for `platform::read_consent_params`.
const PURPOSE_KEYS: &str = "ad_storage,analytics_storage,ad_user_data,ad_personalization,functionality_storage,personalization_storage,security_storage";

/// A consent parameter object: `{ analytics_storage: "granted", ..., region?, wait_for_update? }`
/// (values `"granted"`/`"denied"` or booleans), as `gtag('consent', 'default', ...)` takes it.
pub fn default_from_js(value: &JsValue) -> RegionDefault {
    let (letters, wait, regions) = platform::read_consent_params(value, PURPOSE_KEYS);
    let mut choices: Choices = [None; 7];
    for (slot, letter) in choices.iter_mut().zip(letters.bytes()) {
        *slot = match letter {
            b'g' => Some(true),
            b'd' => Some(false),
            _ => None,
        };
    }
    RegionDefault {
        regions,
        choices,
        wait_for_update_ms: wait.clamp(0.0, 60_000.0) as u32,
    }
}

/// One loaded SDK instance.
pub struct Client {
    config: Config,
    consent: ConsentModel,
    consent_json: String,
    granted: bool,
    /// `context` members every event carries (library, userAgent, locale).
    context: String,
    anonymous_id: String,
    /// The ID `reset` retired while analytics storage was granted: until the collector answers
    /// with another, every batch asks it for a new cookie ID (`context.seam.newId`), so the
    /// next person on a shared browser does not carry on as the last.
    retired: Option<String>,
    /// Sent instead of the persistent ID by `Cookieless` events: lives for this page only.
    page_id: String,
    user_id: Option<String>,
    /// Merged `identify` traits, as JSON text.
    traits: String,
    group_id: Option<String>,
    /// Events waiting for consent to decide.
    held: Vec<Draft>,
    /// Events not (yet) in the stored queue: new ones until the next sync, and all of them while
    /// storage is not allowed.
    memory: Outbox,
    wait_until: i64,
    sending: bool,
    syncing: bool,
    queue_key: String,
    url: String,
    referrer: String,
}

// The SDK is no_std (no thread_local!): a spin lock that is never contended (wasm in the browser
// is single-threaded) holds the client. Client has no JS values, so it is Send.
static CLIENT: spin::Mutex<Option<Client>> = spin::Mutex::new(None);

/// Runs `f` on the loaded client; `None` before `load()` (or if called from inside `f`).
pub fn with_client<T>(f: impl FnOnce(&mut Client) -> T) -> Option<T> {
    CLIENT.try_lock()?.as_mut().map(f)
}

/// Installs a client from `load()` options. A second `load()` replaces the settings, applies its
/// `consent` as an update and keeps the queue and identity, so calling it twice loses nothing.
/// Returns true the first time (the caller then wires timers and listeners).
pub fn install(config: Config, options: &JsValue) -> bool {
    let consent = get(options, "consent");
    let existing = with_client(|c| {
        c.config = config.clone();
        if consent.is_object() {
            let choices = default_from_js(&consent).choices;
            c.change_consent(|m| m.update(&choices));
        }
    });
    if existing.is_some() {
        return false;
    }
    let mut model = ConsentModel::default();
    model.gpc = platform::gpc();
    if consent.is_object() {
        model.add_default(default_from_js(&consent));
    }
    let anonymous_id = platform::cookie_get(ANONYMOUS_ID_KEY, &config.cookie_domain)
        .or_else(|| platform::storage_get(ANONYMOUS_ID_KEY))
        .filter(|s| !s.is_empty() && s.len() <= 100)
        .unwrap_or_else(|| id::uuid_v4(platform::random_bytes()));
    let traits = platform::storage_get(TRAITS_KEY)
        .and_then(|t| platform::merge_traits(&t, &JsValue::UNDEFINED))
        .unwrap_or_else(|| "{}".to_owned());
    let library = ObjectWriter::default()
        .string("name", LIBRARY_NAME)
        .string("version", VERSION)
        .finish();
    let context = ObjectWriter::members_only()
        .raw("library", &library)
        .members(&platform::navigator_context())
        .finish();
    let mut queue_key = QUEUE_PREFIX.to_owned();
    queue_key.push(':');
    queue_key.push_str(&id::uuid_v4(platform::random_bytes()));
    platform::hold_lock(&queue_key);
    let mut client = Client {
        wait_until: platform::now_ms() + i64::from(model.wait_for_update_ms(&config.region)),
        consent: model,
        consent_json: String::new(),
        granted: false,
        context,
        anonymous_id,
        retired: platform::storage_get(RETIRED_ID_KEY),
        page_id: id::uuid_v4(platform::random_bytes()),
        user_id: platform::storage_get(USER_ID_KEY),
        traits,
        group_id: platform::storage_get(GROUP_ID_KEY),
        held: Vec::new(),
        memory: Outbox::default(),
        sending: false,
        syncing: false,
        queue_key,
        url: platform::page_url(),
        referrer: platform::document_referrer(),
        config,
    };
    client.change_consent(|_| {});
    let wait = client.wait_until - platform::now_ms();
    // Nothing is ever dropped here: the slot is empty (the first load), and a client that cannot
    // be installed (a load() re-entered from inside the SDK, e.g. from a toJSON) holds only
    // memory. Forgetting instead of dropping keeps Client's drop glue out of the wasm.
    match CLIENT.try_lock() {
        Some(mut slot) => mem::forget(slot.replace(client)),
        None => mem::forget(client),
    }
    if wait > 0 {
        platform::after(wait as u64, || {
            with_client(|c| c.change_consent(|_| {}));
        });
    }
    true
}

impl Client {
    /// The current anonymous ID.
    pub fn anonymous_id(&self) -> &str {
        &self.anonymous_id
    }

    /// Settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `context.consent` as the events carry it.
    pub fn consent_json(&self) -> &str {
        &self.consent_json
    }

    /// Events waiting: held for consent, in memory, and (when storage is allowed) stored.
    pub fn pending(&self) -> usize {
        let stored = if self.granted {
            platform::storage_get(&self.queue_key).map_or(0, |q| Outbox::decode(&q).len())
        } else {
            0
        };
        self.held.len() + self.memory.len() + stored
    }

    /// Changes the consent state with `f`, then acts on the result: on a grant the identity is
    /// stored and held events are queued with it; on a revoke stored identifiers (cookie,
    /// localStorage, the stored queue) are deleted; when the wait for an update ends, held events
    /// go where the consent now sends them.
    pub fn change_consent(&mut self, f: impl FnOnce(&mut ConsentModel)) {
        f(&mut self.consent);
        self.consent_changed();
    }

    /// The part of [`Client::change_consent`] that does not depend on `f`: one copy in the wasm
    /// instead of one per caller.
    #[inline(never)]
    fn consent_changed(&mut self) {
        self.consent.gpc = platform::gpc();
        let region = &self.config.region;
        self.consent_json = self.consent.context_json(region);
        let was = self.granted;
        // `allows` for each purpose below, computed once.
        let allows = self.consent.effective(region);
        self.granted = allows[Purpose::AnalyticsStorage as usize];
        // Pages the edge renders read this next to the ID cookie, before any event says so; it
        // lives and goes with that cookie (max-age 0 deletes it).
        let personal = allows[Purpose::PersonalizationStorage as usize]
            && allows[Purpose::AdPersonalization as usize];
        platform::cookie_set(
            "seam_personalise",
            if personal { "1" } else { "0" },
            &self.config.cookie_domain,
            if self.granted { COOKIE_MAX_AGE } else { 0 },
        );
        if self.granted {
            self.store_identity();
        } else if was {
            self.forget_stored();
        }
        if !self.waiting() {
            for draft in mem::take(&mut self.held) {
                self.admit(draft);
            }
        }
        if self.granted && !self.memory.is_empty() {
            spawn_sync();
        }
    }

    fn waiting(&self) -> bool {
        !self.consent.updated && platform::now_ms() < self.wait_until
    }

    /// A gtag consent command: `default` or `update`.
    pub fn consent_command(&mut self, command: &str, params: &JsValue) {
        match command {
            "default" => {
                let default = default_from_js(params);
                if default.wait_for_update_ms > 0 && !self.consent.updated {
                    let wait = i64::from(default.wait_for_update_ms);
                    self.wait_until = self.wait_until.max(platform::now_ms() + wait);
                    platform::after(wait as u64, || {
                        with_client(|c| c.change_consent(|_| {}));
                    });
                }
                self.change_consent(|m| m.add_default(default));
            }
            "update" => {
                let choices = default_from_js(params).choices;
                self.change_consent(|m| m.update(&choices));
            }
            _ => {}
        }
    }

    /// A TCF v2.2 signal from the CMP.
    pub fn tcf_signal(&mut self, signal: TcfSignal) {
        self.change_consent(|m| {
            m.apply_tcf(&signal);
        });
    }

    fn store_identity(&self) {
        let domain = &self.config.cookie_domain;
        platform::cookie_set(ANONYMOUS_ID_KEY, &self.anonymous_id, domain, COOKIE_MAX_AGE);
        platform::storage_set(ANONYMOUS_ID_KEY, &self.anonymous_id);
        let keep = |key, value: &Option<String>| match value {
            Some(v) => platform::storage_set(key, v),
            None => {
                platform::storage_remove(key);
                true
            }
        };
        keep(USER_ID_KEY, &self.user_id);
        keep(GROUP_ID_KEY, &self.group_id);
        keep(RETIRED_ID_KEY, &self.retired);
        let traits = Some(self.traits.clone()).filter(|t| t != "{}");
        keep(TRAITS_KEY, &traits);
    }

    /// Deletes every identifier and queued event kept in the browser's storage. The stored queue
    /// moves to memory: those events were recorded with consent and are still sent.
    fn forget_stored(&mut self) {
        platform::cookie_set(ANONYMOUS_ID_KEY, "", &self.config.cookie_domain, 0);
        for key in [
            ANONYMOUS_ID_KEY,
            USER_ID_KEY,
            TRAITS_KEY,
            GROUP_ID_KEY,
            IDENTITY_TOKEN_KEY,
            RETIRED_ID_KEY,
        ] {
            platform::storage_remove(key);
        }
        if let Some(stored) = platform::storage_get(&self.queue_key) {
            platform::storage_remove(&self.queue_key);
            let memory = mem::take(&mut self.memory);
            let mut moved = Outbox::decode(&stored);
            moved.append(memory, self.config.queue_bytes);
            self.memory = moved;
        }
    }

    /// Takes over the stored queue `key` of a tab that is gone: its events join this tab's queue
    /// (stored when consent allows, else in memory) with their retry state.
    fn adopt(&mut self, key: &str) {
        if let Some(stored) = platform::storage_get(key) {
            let orphan = Outbox::decode(&stored);
            self.memory.append(orphan, self.config.queue_bytes);
            platform::storage_remove(key);
            self.request_sync();
            spawn_flush();
        }
    }

    /// Records an event of `kind` with type-specific `members` (JSON text). Returns whether the
    /// queue is now due for a flush.
    pub fn record(&mut self, kind: &'static str, members: String, user_id: Option<String>) -> bool {
        let now = platform::now_ms();
        let draft = Draft {
            kind,
            message_id: id::message_id("seam", now, platform::random_bytes()),
            timestamp: platform::iso_time(now as f64),
            user_id: user_id.or_else(|| self.user_id.clone()),
            members,
            page: platform::page_json(&self.referrer),
        };
        self.admit(draft);
        self.memory.len() >= self.config.flush_at || self.memory.bytes() >= MAX_BATCH_BYTES
    }

    /// Queues a draft the way consent allows: stamped with the persistent ID when
    /// `analytics_storage` is granted, else per `preConsent`; held while waiting for an update.
    fn admit(&mut self, draft: Draft) {
        let mode = self.config.pre_consent;
        if self.waiting() || (!self.granted && mode == PreConsent::Buffer) {
            if self.held.len() >= MAX_HELD {
                self.held.remove(0);
                self.memory.evicted += 1;
            }
            self.held.push(draft);
            return;
        }
        if !self.granted && mode == PreConsent::Drop {
            return;
        }
        let stamp = Stamp {
            anonymous_id: if self.granted {
                &self.anonymous_id
            } else {
                &self.page_id
            },
            context: &self.context,
            consent: &self.consent_json,
        };
        let json = compose(&draft, stamp);
        let evicted = self
            .memory
            .push(draft.message_id, json, self.config.queue_bytes);
        if evicted > 0 {
            self.debug("seam: queue over its byte budget; oldest events evicted");
        }
        self.request_sync();
    }

    /// Schedules one [`spawn_sync`] for the events recorded meanwhile (when storage is allowed).
    fn request_sync(&mut self) {
        if self.granted && !self.syncing {
            self.syncing = true;
            spawn_sync();
        }
    }

    /// `identify(userId?, traits?)`: remembers the user and merges the traits.
    pub fn identify(&mut self, user_id: Option<String>, traits: &JsValue) -> bool {
        if let Some(id) = user_id.filter(|id| !id.is_empty()) {
            self.user_id = Some(id);
        }
        if traits.is_object() {
            match platform::merge_traits(&self.traits, traits) {
                Some(merged) => self.traits = merged,
                None => return self.unserialisable(),
            }
        }
        if self.granted {
            self.store_identity();
        }
        let members = ObjectWriter::members_only().raw("traits", &self.traits);
        self.record("identify", members.finish(), None)
    }

    /// `group(groupId, traits?)`.
    pub fn group(&mut self, group_id: String, traits: &JsValue) -> bool {
        self.group_id = Some(group_id.clone());
        if self.granted {
            self.store_identity();
        }
        match platform::stringify_object(traits) {
            Some(traits) => {
                let members = ObjectWriter::members_only()
                    .string("groupId", &group_id)
                    .raw("traits", &traits)
                    .finish();
                self.record("group", members, None)
            }
            None => self.unserialisable(),
        }
    }

    /// `alias(userId, previousId?)`: `previousId` defaults to the current user or anonymous ID.
    pub fn alias(&mut self, user_id: String, previous_id: Option<String>) -> bool {
        let previous = previous_id
            .or_else(|| self.user_id.clone())
            .unwrap_or_else(|| self.anonymous_id.clone());
        let members = ObjectWriter::members_only()
            .string("previousId", &previous)
            .finish();
        self.record("alias", members, Some(user_id))
    }

    /// `track(event, properties?)`.
    pub fn track(&mut self, event: &str, properties: &JsValue) -> bool {
        match platform::stringify_object(properties) {
            Some(props) => {
                let members = ObjectWriter::members_only()
                    .string("event", event)
                    .raw("properties", &props)
                    .finish();
                self.record("track", members, None)
            }
            None => self.unserialisable(),
        }
    }

    /// `page(name?, properties?)`.
    pub fn page(&mut self, name: Option<String>, properties: &JsValue) -> bool {
        match platform::stringify_object(properties) {
            Some(props) => {
                let members = ObjectWriter::members_only()
                    .string_opt("name", name.as_deref())
                    .raw("properties", &props)
                    .finish();
                self.record("page", members, None)
            }
            None => self.unserialisable(),
        }
    }

    /// A History API navigation: the referrer chain moves on, and with `autoPage` a page view is
    /// recorded when the URL (ignoring the fragment) changed.
    pub fn navigated(&mut self) -> bool {
        let url = platform::page_url();
        let base = |u: &str| split_ascii(u, b'#').next().unwrap_or_default().to_owned();
        if base(&url) == base(&self.url) {
            return false;
        }
        self.referrer = mem::replace(&mut self.url, url);
        self.config.auto_page && self.page(None, &JsValue::UNDEFINED)
    }

    fn unserialisable(&self) -> bool {
        // Cyclic or otherwise unserialisable properties: drop this event, never throw.
        self.debug("seam: event dropped, properties cannot be serialised");
        false
    }

    /// Forgets the identity, traits and everything queued (here and in storage); a new
    /// anonymous ID is minted.
    pub fn reset(&mut self) {
        self.held.clear();
        self.memory.clear();
        platform::storage_remove(&self.queue_key);
        self.user_id = None;
        self.group_id = None;
        self.traits = "{}".to_owned();
        let retired = mem::replace(
            &mut self.anonymous_id,
            id::uuid_v4(platform::random_bytes()),
        );
        self.page_id = id::uuid_v4(platform::random_bytes());
        if self.granted {
            self.retired = Some(retired);
            self.store_identity();
        }
    }

    /// Adopts the anonymous ID the collector echoes from its HttpOnly cookie, so the script's ID
    /// and the cookie agree (the cookie outlives Safari's 7-day cap on script storage).
    fn adopt_collector_id(&mut self, echoed: Option<String>) {
        let Some(id) = echoed else {
            return;
        };
        // Still the retired ID: an answer to a batch sent before the reset, or the collector
        // could not renew its cookie. The next batch asks again.
        if self.retired.as_ref() == Some(&id) {
            return;
        }
        let renewed = self.retired.take().is_some();
        if self.granted && (renewed || id != self.anonymous_id) {
            self.anonymous_id = id;
            self.store_identity();
        }
    }

    fn url(&self) -> String {
        let mut url = self.config.endpoint.clone();
        url.push_str("/v1/batch");
        url
    }

    fn debug(&self, message: &str) {
        if self.config.debug {
            platform::log(message);
        }
    }
}

/// Moves this tab's new events into its stored queue, so they survive a reload. Runs soon after
/// events are recorded; calls made meanwhile share one sync.
pub fn spawn_sync() {
    platform::after(0, || {
        with_client(|c| {
            c.sync_stored();
            c.syncing = false;
        });
    });
}

impl Client {
    /// Moves [`Client::memory`] into the stored queue; returns the stored queue (still in memory
    /// for the caller's next step).
    fn sync_stored(&mut self) -> Option<Outbox> {
        if !self.granted {
            return None;
        }
        let mut stored = platform::storage_get(&self.queue_key)
            .map(|q| Outbox::decode(&q))
            .unwrap_or_default();
        let memory = mem::take(&mut self.memory);
        if stored.append(memory.clone(), self.config.queue_bytes) > 0 {
            self.debug("seam: queue over its byte budget; oldest events evicted");
        }
        if platform::storage_set(&self.queue_key, &stored.encode()) {
            Some(stored)
        } else {
            // Storage full or blocked: keep the events in memory rather than lose them.
            self.memory = memory;
            None
        }
    }

    /// Leases the next batch: from the stored queue when storage is allowed, else from memory.
    /// Returns the leased message IDs, the URL and the body.
    fn lease(&mut self, now: i64) -> Option<(Vec<String>, String, String, u64)> {
        let (leased, evicted) = match self.sync_stored() {
            Some(mut stored) => {
                let leased = stored.lease(now, self.config.flush_at, MAX_BATCH_BYTES);
                let evicted = mem::take(&mut stored.evicted);
                platform::storage_set(&self.queue_key, &stored.encode());
                (leased, evicted)
            }
            None => {
                let leased = self
                    .memory
                    .lease(now, self.config.flush_at, MAX_BATCH_BYTES);
                (leased, mem::take(&mut self.memory.evicted))
            }
        };
        if leased.is_empty() {
            self.memory.evicted += evicted;
            return None;
        }
        // `unzip` by hand (its generic extend code is larger).
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for (id, json) in leased {
            ids.push(id);
            events.push(json);
        }
        let sent_at = platform::iso_time(now as f64);
        let body = batch_body(
            &events,
            &self.config.write_key,
            &sent_at,
            evicted,
            self.retired.is_some(),
        );
        Some((ids, self.url(), body, evicted))
    }

    /// Applies the collector's reply to the sent events, wherever they are now (memory, or the
    /// stored queue). Returns when to retry, if needed.
    fn settle(&mut self, ids: &[String], reply: &Reply, evicted: u64) -> Option<u64> {
        let now = platform::now_ms();
        let jitter = platform::random_unit();
        let mut result = self.memory.settle(ids, reply, now, jitter);
        if self.granted {
            if let Some(text) = platform::storage_get(&self.queue_key) {
                let mut stored = Outbox::decode(&text);
                let s = stored.settle(ids, reply, now, jitter);
                platform::storage_set(&self.queue_key, &stored.encode());
                result.delivered += s.delivered;
                result.dropped += s.dropped;
                result.retried += s.retried;
                result.retry_in_ms = result.retry_in_ms.or(s.retry_in_ms);
            }
        }
        if result.retried > 0 {
            // The batch did not arrive: report the evictions with the next one.
            self.memory.evicted += evicted;
            self.debug("seam: send failed; will retry");
        }
        if result.dropped > 0 {
            self.debug("seam: the collector refused events; dropped");
        }
        result.retry_in_ms
    }
}

/// A leased batch: message IDs, URL, body, evictions it reports.
type Batch = (Vec<String>, String, String, u64);

/// Sends one leased batch; `next` runs after it is settled, with the retry delay when the
/// collector did not take it.
fn send((ids, url, body, evicted): Batch, next: fn(Option<u64>)) {
    platform::post(&url, &body, move |answer| {
        let reply = Reply {
            status: Some(answer.status).filter(|s| *s != 0),
            retry_after_ms: parse_retry_after(&answer.retry_after),
            rejected: answer.rejected,
        };
        let echoed = Some(answer.anonymous_id).filter(|id| !id.is_empty() && id.len() <= 100);
        with_client(|c| c.adopt_collector_id(echoed));
        next(with_client(|c| c.settle(&ids, &reply, evicted)).flatten());
    });
}

/// Sends due events until none are due or a send fails (a retry is then scheduled). Only one
/// flush runs per tab at a time; a concurrent call joins it. Offline, nothing is tried (the
/// `online` event flushes). `done` runs when this flush ends.
pub fn flush() {
    let start = with_client(|c| !mem::replace(&mut c.sending, true));
    if start == Some(true) {
        adopt_orphans();
        step();
    } else if start.is_none() {
        finish();
    }
}

/// Queues left by closed tabs and earlier pages join this tab's queue (asynchronously: each
/// needs its owner's lock).
fn adopt_orphans() {
    if let Some(own) = with_client(|c| c.queue_key.clone()) {
        let adopt = platform::hook(|key| {
            if let Some(key) = key.as_string() {
                with_client(|c| c.adopt(&key));
            }
        });
        platform::orphans(QUEUE_PREFIX, &own, &adopt);
    }
}

fn step() {
    if !platform::online() {
        return finish();
    }
    let now = platform::now_ms();
    match with_client(|c| c.lease(now)).flatten() {
        Some(batch) => send(batch, |retry| match retry {
            Some(delay) => {
                platform::after(delay, spawn_flush);
                finish();
            }
            None => step(),
        }),
        None => finish(),
    }
}

fn finish() {
    with_client(|c| c.sending = false);
    platform::flushed();
}

/// Starts a flush in the background, after the current task: the caller may hold the client,
/// and events recorded in the same task (a page load's `page` and `track`) go in one batch.
pub fn spawn_flush() {
    platform::after(0, flush);
}

/// The page is being hidden or unloaded: lease one batch (at most 60 KB, under the browser's
/// 64 KB keepalive cap) right now and send it with `keepalive`.
/// What does not fit stays stored for the next page.
pub fn flush_on_hide() {
    if !platform::online() {
        return;
    }
    if let Some(batch) = with_client(|c| c.lease(platform::now_ms())).flatten() {
        send(batch, |_| {});
    }
}
