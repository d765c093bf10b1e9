//! The SDK's state and behaviour: identity, event building, the outbox and delivery.
//!
//! Browser access goes through [`crate::platform`]; rules that need no browser (batching, body
//! format, retry policy, IDs, time) come from `seam-core`.

use std::cell::RefCell;

use js_sys::{Object, Reflect, JSON};
use seam_core::outbox::{batch_body, verdict, Outbox, Verdict, MAX_BATCH_BYTES};
use seam_core::{id, time, LIBRARY_NAME, VERSION};
use wasm_bindgen::JsValue;

use crate::platform;

/// localStorage key of the persisted anonymous ID.
pub const ANONYMOUS_ID_KEY: &str = "seam_anonymous_id";

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
    /// Whether `analytics_storage` consent allows a persistent identifier.
    pub analytics_granted: bool,
}

impl Config {
    /// Reads the options object; `None` (with a reason) when it is unusable.
    pub fn from_js(options: &JsValue) -> Result<Self, &'static str> {
        let get = |key: &str| Reflect::get(options, &JsValue::from_str(key)).ok();
        let write_key = get("writeKey")
            .and_then(|v| v.as_string())
            .filter(|k| !k.is_empty())
            .ok_or("load() needs a writeKey")?;
        let endpoint = get("endpoint")
            .and_then(|v| v.as_string())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let number = |key: &str, default: f64, min: f64| {
            get(key)
                .and_then(|v| v.as_f64())
                .filter(|n| n.is_finite())
                .map_or(default, |n| n.max(min))
        };
        let analytics_granted = get("consent")
            .and_then(|c| Reflect::get(&c, &JsValue::from_str("analytics_storage")).ok())
            .and_then(|v| v.as_string())
            .is_some_and(|v| v == "granted");
        Ok(Self {
            write_key,
            endpoint,
            flush_at: number("flushAt", 20.0, 1.0) as usize,
            flush_interval_ms: number("flushInterval", 5000.0, 100.0) as i32,
            debug: get("debug").is_some_and(|v| v.is_truthy()),
            analytics_granted,
        })
    }
}

/// One loaded SDK instance.
pub struct Client {
    config: Config,
    anonymous_id: String,
    outbox: Outbox,
    sending: bool,
}

thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// Runs `f` on the loaded client; `None` before `load()`.
pub fn with_client<T>(f: impl FnOnce(&mut Client) -> T) -> Option<T> {
    CLIENT.with(|c| c.borrow_mut().as_mut().map(f))
}

/// Installs a client from `load()` options. A second `load()` replaces the settings but keeps the
/// queue and identity, so calling it twice loses nothing.
pub fn install(config: Config) -> bool {
    CLIENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let first = slot.is_none();
        match slot.as_mut() {
            Some(client) => {
                client.config = config;
                client.persist_identity();
            }
            None => {
                let mut client = Client {
                    anonymous_id: String::new(),
                    config,
                    outbox: Outbox::default(),
                    sending: false,
                };
                client.anonymous_id = client.load_or_mint_anonymous_id();
                *slot = Some(client);
            }
        }
        first
    })
}

impl Client {
    fn load_or_mint_anonymous_id(&self) -> String {
        let stored = platform::storage_get(ANONYMOUS_ID_KEY).filter(|s| id::is_uuid(s));
        let anonymous_id = stored.unwrap_or_else(|| id::uuid_v4(platform::random_bytes()));
        self.persist(&anonymous_id);
        anonymous_id
    }

    fn persist_identity(&self) {
        self.persist(&self.anonymous_id);
    }

    /// The ID is written to storage only with analytics consent; without it, it lives in memory
    /// for this page only, and a copy stored under an earlier grant is deleted.
    fn persist(&self, anonymous_id: &str) {
        if self.config.analytics_granted {
            platform::storage_set(ANONYMOUS_ID_KEY, anonymous_id);
        } else {
            platform::storage_remove(ANONYMOUS_ID_KEY);
        }
    }

    /// The current anonymous ID.
    pub fn anonymous_id(&self) -> &str {
        &self.anonymous_id
    }

    /// Events waiting to be sent.
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// Settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Builds an event of `kind` with the extra `fields` and queues it. Returns whether the queue
    /// is now due for a flush.
    pub fn enqueue(&mut self, kind: &str, fields: &[(&str, JsValue)]) -> bool {
        let now = platform::now_ms();
        let event = Object::new();
        let set = |target: &Object, key: &str, value: &JsValue| {
            let _ = Reflect::set(target, &JsValue::from_str(key), value);
        };
        let message_id = id::message_id("seam", now, platform::random_bytes());
        set(&event, "type", &kind.into());
        set(&event, "messageId", &message_id.into());
        set(&event, "anonymousId", &self.anonymous_id.as_str().into());
        set(&event, "timestamp", &time::format_iso8601(now).into());
        for (key, value) in fields {
            if !value.is_undefined() && !value.is_null() {
                set(&event, key, value);
            }
        }
        set(&event, "context", &self.context());
        match JSON::stringify(&event).ok().and_then(|s| s.as_string()) {
            Some(json) => self.outbox.push(json),
            // Cyclic or otherwise unserialisable properties: drop this event, never throw.
            None => self.debug("seam: event dropped, properties cannot be serialised"),
        }
        self.outbox.len() >= self.config.flush_at || self.outbox.bytes() >= MAX_BATCH_BYTES
    }

    fn context(&self) -> JsValue {
        let context = Object::new();
        let set = |target: &Object, key: &str, value: JsValue| {
            let _ = Reflect::set(target, &JsValue::from_str(key), &value);
        };
        let library = Object::new();
        set(&library, "name", LIBRARY_NAME.into());
        set(&library, "version", VERSION.into());
        set(&context, "library", library.into());
        if let Some(page) = platform::page_info() {
            let p = Object::new();
            set(&p, "url", page.url.into());
            set(&p, "path", page.path.into());
            set(&p, "search", page.search.into());
            set(&p, "title", page.title.into());
            set(&p, "referrer", page.referrer.into());
            set(&context, "page", p.into());
        }
        let (user_agent, locale) = platform::user_agent_and_locale();
        if let Some(ua) = user_agent {
            set(&context, "userAgent", ua.into());
        }
        if let Some(locale) = locale {
            set(&context, "locale", locale.into());
        }
        let analytics = self.config.analytics_granted;
        let prefs = Object::new();
        set(&prefs, "analytics_storage", analytics.into());
        let consent = Object::new();
        set(&consent, "categoryPreferences", prefs.into());
        set(&context, "consent", consent.into());
        context.into()
    }

    /// Adopts the anonymous ID the collector echoes from its HttpOnly cookie, so the script's ID
    /// and the cookie agree (the cookie outlives Safari's 7-day cap on script storage).
    fn adopt_collector_id(&mut self, reply: &JsValue) {
        let echoed = Reflect::get(reply, &JsValue::from_str("anonymousId"))
            .ok()
            .and_then(|v| v.as_string())
            .filter(|id| !id.is_empty() && id.len() <= 100);
        if let Some(id) = echoed {
            if self.config.analytics_granted && id != self.anonymous_id {
                self.anonymous_id = id;
                self.persist_identity();
            }
        }
    }

    /// Forgets the identity and everything queued; a new anonymous ID is minted.
    pub fn reset(&mut self) {
        platform::storage_remove(ANONYMOUS_ID_KEY);
        self.outbox.clear();
        self.anonymous_id = id::uuid_v4(platform::random_bytes());
        self.persist_identity();
    }

    fn debug(&self, message: &str) {
        if self.config.debug {
            platform::log(message);
        }
    }
}

/// Sends queued events until the queue is empty or the collector cannot take more right now.
/// Only one flush runs at a time; a concurrent call returns at once.
pub async fn flush() {
    let started = with_client(|c| !std::mem::replace(&mut c.sending, true)).unwrap_or(false);
    if !started {
        return;
    }
    while let Some((batch, url, body)) = with_client(|c| {
        let batch = c.outbox.take_batch(c.config.flush_at, MAX_BATCH_BYTES);
        let sent_at = time::format_iso8601(platform::now_ms());
        let body = batch_body(&batch, &c.config.write_key, &sent_at);
        (batch, format!("{}/v1/batch", c.config.endpoint), body)
    })
    .filter(|(batch, _, _)| !batch.is_empty())
    {
        let reply = platform::post_text(&url, &body).await;
        let delivered = with_client(|c| match verdict(reply.as_ref().map(|r| r.status)) {
            Verdict::Delivered => {
                if let Some(reply) = &reply {
                    c.adopt_collector_id(&reply.body);
                }
                true
            }
            Verdict::Drop => {
                c.debug("seam: collector refused a batch; dropped");
                true
            }
            Verdict::Retry => {
                c.debug("seam: send failed; will retry");
                c.outbox.restore(batch);
                false
            }
        });
        if delivered != Some(true) {
            break;
        }
    }
    with_client(|c| c.sending = false);
}
