//! Sources: who may send, from which origins, and how their events are treated.
//!
//! Configured as JSON keyed by write key, in the `SOURCES` setting and/or the D1 `sources`
//! table:
//!
//! ```json
//! {"seam_dev_write_key": {"id": "demo-site", "origins": ["https://shop.example", "https://*.shop.example"],
//!                         "ip": "truncate", "analyticsDenied": "anonymize", "dedupWindowDays": 7}}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::collect::auth::{constant_time_eq, AuthError};

/// Default window in which a repeated `messageId` is a duplicate.
pub const DEFAULT_DEDUP_WINDOW_DAYS: u32 = 7;

/// Property names no source stores unless it sets its own `denyProperties` list: secrets and
/// payment data that must never reach an analytics store.
pub const DEFAULT_DENY_PROPERTIES: [&str; 8] = [
    "password",
    "passwd",
    "creditcard",
    "cardnumber",
    "cvv",
    "cvc",
    "iban",
    "ssn",
];

/// A property name as the denylist compares it: lower-case, without `_`, `-` or spaces.
pub fn property_key(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// What to keep of the client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IpPolicy {
    /// Zero the last octet (IPv4) or the last 80 bits (IPv6). The default.
    #[default]
    Truncate,
    /// Keep the full address.
    Full,
    /// Store no IP at all.
    Drop,
}

/// What to do with an event whose consent denies `analytics_storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeniedPolicy {
    /// Store it without identifiers (never linked to a person). The default.
    #[default]
    Anonymize,
    /// Do not store it.
    Drop,
}

/// How far a source's events are believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SourceKind {
    /// A write key shipped in pages: public, so what it sends is a claim by whoever holds the
    /// page. Rate-limited per client IP and per source.
    #[default]
    Browser,
    /// A secret key used by the site's own servers: trusted. Rate-limited per source only (one
    /// import host sends everything).
    Server,
}

/// Whether a browser source's identity claims are believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IdentityPolicy {
    /// `"identity": "verify"` (the default): a browser's `userId` counts only with a valid
    /// identity token, its emails and phones only as traits, its anonymous IDs only as claims;
    /// `/v1/decide` personalises only for the visitor's own cookie or a verified user.
    #[default]
    Verify,
    /// `"identity": "trust-browser"`: everything a page sends is believed, as before identity
    /// verification existed. Anyone who copies the write key can then join their browser to
    /// any profile whose user ID or email they know and read its personalisation.
    TrustBrowser,
}

/// When a source's events reach D1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IngestMode {
    /// `"ingest": "direct"` (the default for server sources and browser sources that trust
    /// browsers): stored before the answer, which names the profile to trusted callers
    /// (read-your-writes).
    #[default]
    Direct,
    /// `"ingest": "queue"` (the default for browser sources that verify identity): validated,
    /// proven and queued before the answer; the queue's consumer stores many requests' events in
    /// one D1 batch. The answer names no profile (such a page is never told one anyway), and
    /// profiles and personalisation follow within about a second.
    Queue,
}

/// A validated source. Serialised only for the ingest queue's messages (`collect::deferred`);
/// configuration is read with [`parse_source`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Stable source ID (stored with each event).
    pub id: String,
    /// `"kind": "browser"` (default) or `"server"`.
    pub kind: SourceKind,
    /// `"identity": "verify"` (default) or `"trust-browser"`; only browser sources read it.
    pub identity: IdentityPolicy,
    /// Origins allowed to send from browsers: exact (`https://a.example`), wildcard subdomain
    /// (`https://*.a.example`) or `*`.
    pub origins: Vec<String>,
    /// IP handling.
    pub ip: IpPolicy,
    /// Handling of analytics-denied events.
    pub analytics_denied: DeniedPolicy,
    /// Dedup window in days.
    pub dedup_window_days: u32,
    /// Property names never stored (compared case-insensitively, ignoring `_` and `-`), wherever
    /// they appear in `properties`, `traits` or `context.traits`.
    pub deny_properties: Vec<String>,
    /// The site's own origin (`https://origin.shop.example`) when the Worker proxies the site's
    /// pages from it (filling their slots) instead of serving them from its assets.
    pub site_origin: Option<String>,
    /// `"ingest"`: stored before the answer, or queued.
    #[serde(default)]
    pub ingest: IngestMode,
}

impl Source {
    /// The source of the deployment's server key (`SERVER_WRITE_KEY`): trusted, no browser
    /// origin, defaults otherwise.
    pub fn server(id: &str) -> Self {
        Source {
            id: id.to_owned(),
            kind: SourceKind::Server,
            identity: IdentityPolicy::Verify,
            origins: Vec::new(),
            ip: IpPolicy::Truncate,
            analytics_denied: DeniedPolicy::Anonymize,
            dedup_window_days: DEFAULT_DEDUP_WINDOW_DAYS,
            deny_properties: DEFAULT_DENY_PROPERTIES.map(String::from).to_vec(),
            site_origin: None,
            ingest: IngestMode::Direct,
        }
    }

    /// Whether what this source sends is believed as sent: a server source, or a browser source
    /// that opted into `trust-browser`.
    pub fn is_trusted(&self) -> bool {
        self.kind == SourceKind::Server || self.identity == IdentityPolicy::TrustBrowser
    }

    /// Whether a browser on `origin` may send to this source.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|allowed| origin_matches(allowed, origin))
    }
}

fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(origin) {
        return true;
    }
    match pattern.split_once("://*.") {
        Some((scheme, domain)) => origin
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|host| {
                host.len() > domain.len()
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }),
        None => false,
    }
}

/// A configuration mistake, naming the source and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or not an object keyed by write key.
    #[error("sources must be a JSON object keyed by write key")]
    NotAnObject,
    /// A field is missing or has a bad value.
    #[error("source {key}: {field} {problem}")]
    Invalid {
        /// Write key (or its first characters) of the bad entry.
        key: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

impl ConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "invalid_source_config"
    }
}

#[derive(Deserialize)]
struct RawSource {
    id: Option<Value>,
    #[serde(default)]
    kind: Value,
    #[serde(default)]
    identity: Value,
    #[serde(default)]
    origins: Value,
    #[serde(default)]
    ip: Value,
    #[serde(rename = "analyticsDenied", default)]
    analytics_denied: Value,
    #[serde(rename = "dedupWindowDays", default)]
    dedup_window_days: Value,
    #[serde(rename = "denyProperties", default)]
    deny_properties: Value,
    #[serde(rename = "siteOrigin", default)]
    site_origin: Value,
    #[serde(default)]
    ingest: Value,
}

/// Validates one source entry.
pub fn parse_source(key: &str, raw: &Value) -> Result<Source, ConfigError> {
    let label: String = key.chars().take(12).collect();
    let invalid = |field, problem| ConfigError::Invalid {
        key: label.clone(),
        field,
        problem,
    };
    let raw: RawSource =
        serde_json::from_value(raw.clone()).map_err(|_| invalid("entry", "must be an object"))?;
    let id = raw
        .id
        .as_ref()
        .and_then(Value::as_str)
        // `$…` names are the collector's own (the `$erasure` deliveries).
        .filter(|s| !s.trim().is_empty() && s.len() <= 64 && !s.starts_with('$'))
        .ok_or_else(|| {
            invalid(
                "id",
                "must be a non-empty string of at most 64 characters, not starting with '$'",
            )
        })?;
    let kind = match raw.kind.as_str() {
        None if raw.kind.is_null() => SourceKind::Browser,
        Some("browser") => SourceKind::Browser,
        Some("server") => SourceKind::Server,
        _ => return Err(invalid("kind", "must be \"browser\" or \"server\"")),
    };
    let identity = match raw.identity.as_str() {
        None if raw.identity.is_null() => IdentityPolicy::Verify,
        Some("verify") => IdentityPolicy::Verify,
        Some("trust-browser") => IdentityPolicy::TrustBrowser,
        _ => {
            return Err(invalid(
                "identity",
                "must be \"verify\" or \"trust-browser\"",
            ))
        }
    };
    let origins = match &raw.origins {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|o| o.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("origins", "must be a list of strings"))?,
        _ => return Err(invalid("origins", "must be a list of strings")),
    };
    let ip = match raw.ip.as_str() {
        None if raw.ip.is_null() => IpPolicy::Truncate,
        Some("truncate") => IpPolicy::Truncate,
        Some("full") => IpPolicy::Full,
        Some("drop") => IpPolicy::Drop,
        _ => return Err(invalid("ip", "must be \"truncate\", \"full\" or \"drop\"")),
    };
    let analytics_denied = match raw.analytics_denied.as_str() {
        None if raw.analytics_denied.is_null() => DeniedPolicy::Anonymize,
        Some("anonymize") => DeniedPolicy::Anonymize,
        Some("drop") => DeniedPolicy::Drop,
        _ => {
            return Err(invalid(
                "analyticsDenied",
                "must be \"anonymize\" or \"drop\"",
            ))
        }
    };
    let dedup_window_days = match &raw.dedup_window_days {
        Value::Null => DEFAULT_DEDUP_WINDOW_DAYS,
        v => v
            .as_u64()
            .filter(|d| (1..=365).contains(d))
            .map(|d| d as u32)
            .ok_or_else(|| invalid("dedupWindowDays", "must be a whole number from 1 to 365"))?,
    };
    let deny_properties = match &raw.deny_properties {
        Value::Null => DEFAULT_DENY_PROPERTIES.map(String::from).to_vec(),
        Value::Array(items) => items
            .iter()
            .map(|o| o.as_str().map(property_key).filter(|k| !k.is_empty()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("denyProperties", "must be a list of property names"))?,
        _ => {
            return Err(invalid(
                "denyProperties",
                "must be a list of property names",
            ))
        }
    };
    let site_origin =
        match &raw.site_origin {
            Value::Null => None,
            v => Some(v.as_str().and_then(site_origin).ok_or_else(|| {
                invalid("siteOrigin", "must be an http(s) origin without a path")
            })?),
        };
    let ingest = match raw.ingest.as_str() {
        // A page's answer names no profile (unless the source trusts browsers, whose answers do),
        // so nothing is lost by answering before D1.
        None if raw.ingest.is_null()
            && kind == SourceKind::Browser
            && identity == IdentityPolicy::Verify =>
        {
            IngestMode::Queue
        }
        None if raw.ingest.is_null() => IngestMode::Direct,
        Some("direct") => IngestMode::Direct,
        Some("queue") => IngestMode::Queue,
        _ => return Err(invalid("ingest", "must be \"direct\" or \"queue\"")),
    };
    Ok(Source {
        id: id.to_owned(),
        kind,
        identity,
        origins,
        ip,
        analytics_denied,
        dedup_window_days,
        deny_properties,
        site_origin,
        ingest,
    })
}

/// `scheme://host[:port]` (a trailing `/` is dropped); anything with a path, query, fragment or
/// credentials is refused, so a proxied path is always appended to the origin itself.
fn site_origin(text: &str) -> Option<String> {
    let text = text.strip_suffix('/').unwrap_or(text);
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))?;
    let valid = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    valid.then(|| text.to_owned())
}

/// All configured sources, by write key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(Vec<(String, Source)>);

impl Sources {
    /// Parses the `SOURCES` JSON object. An empty string means no sources.
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let map: Map<String, Value> =
            serde_json::from_str(json).map_err(|_| ConfigError::NotAnObject)?;
        let mut sources = Self::default();
        for (key, raw) in &map {
            sources.insert(key.clone(), parse_source(key, raw)?);
        }
        Ok(sources)
    }

    /// Adds (or replaces) a source.
    pub fn insert(&mut self, write_key: String, source: Source) {
        self.0.retain(|(k, _)| *k != write_key);
        self.0.push((write_key, source));
    }

    /// The source of a write key, compared in constant time.
    pub fn source_for(&self, key: Option<&str>) -> Result<&Source, AuthError> {
        let key = key.ok_or(AuthError::MissingWriteKey)?;
        self.0
            .iter()
            .find(|(k, _)| constant_time_eq(k.as_bytes(), key.as_bytes()))
            .map(|(_, s)| s)
            .ok_or(AuthError::UnknownWriteKey)
    }

    /// The source with this ID.
    pub fn by_id(&self, id: &str) -> Option<&Source> {
        self.0.iter().map(|(_, s)| s).find(|s| s.id == id)
    }

    /// The IDs of all sources.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, s)| s.id.as_str())
    }

    /// The source a page served on `origin` belongs to (for events the edge logs itself, such
    /// as exposures of edge-rendered slots): the first whose origins allow it, else the first
    /// configured.
    pub fn site_source(&self, origin: &str) -> Option<&Source> {
        self.0
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.allows_origin(origin))
            .or_else(|| self.0.first().map(|(_, s)| s))
    }

    /// Whether any source accepts browsers on `origin` (answers CORS preflights, which carry no
    /// write key).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.0.iter().any(|(_, s)| s.allows_origin(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kind_defaults_to_browser_and_server_is_opt_in() {
        let browser = parse_source("k", &json!({"id": "web"})).unwrap();
        assert_eq!(browser.kind, SourceKind::Browser);
        let server = parse_source("k", &json!({"id": "api", "kind": "server"})).unwrap();
        assert_eq!(server.kind, SourceKind::Server);
        let bad = parse_source("k", &json!({"id": "x", "kind": "admin"})).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "source k: kind must be \"browser\" or \"server\""
        );
        assert_eq!(Source::server("server").kind, SourceKind::Server);
        assert!(
            Source::server("server").origins.is_empty(),
            "no page may use it"
        );
    }

    #[test]
    fn a_page_belongs_to_the_source_allowing_its_origin_else_the_first() {
        let sources = Sources::parse(
            r#"{"k1": {"id": "blog", "origins": ["https://blog.example"]},
                "k2": {"id": "shop", "origins": ["https://*.shop.example"]}}"#,
        )
        .unwrap();
        let id = |o| sources.site_source(o).map(|s| s.id.as_str());
        assert_eq!(id("https://www.shop.example"), Some("shop"));
        assert_eq!(id("https://blog.example"), Some("blog"));
        assert_eq!(id("http://127.0.0.1:8787"), Some("blog"));
        assert_eq!(Sources::default().site_source("https://a.example"), None);
    }

    #[test]
    fn parses_sources_with_defaults() {
        let sources = Sources::parse(r#"{"k1": {"id": "web"}, "k2": {"id": "srv", "ip": "full", "analyticsDenied": "drop", "dedupWindowDays": 30}}"#).unwrap();
        let web = sources.source_for(Some("k1")).unwrap();
        assert_eq!(
            (web.ip, web.analytics_denied, web.dedup_window_days),
            (IpPolicy::Truncate, DeniedPolicy::Anonymize, 7)
        );
        let srv = sources.source_for(Some("k2")).unwrap();
        assert_eq!(
            (srv.ip, srv.analytics_denied, srv.dedup_window_days),
            (IpPolicy::Full, DeniedPolicy::Drop, 30)
        );
        assert_eq!(
            sources.source_for(Some("k3")),
            Err(AuthError::UnknownWriteKey)
        );
        assert_eq!(sources.source_for(None), Err(AuthError::MissingWriteKey));
    }

    #[test]
    fn bad_config_names_the_source_and_field() {
        let err =
            Sources::parse(r#"{"secret_key_123456": {"id": "x", "ip": "half"}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "source secret_key_1: ip must be \"truncate\", \"full\" or \"drop\""
        );
        assert!(matches!(
            Sources::parse(r#"{"k": {}}"#),
            Err(ConfigError::Invalid { field: "id", .. })
        ));
        assert!(matches!(
            Sources::parse(r#"{"k": {"id": "x", "origins": "*"}}"#),
            Err(ConfigError::Invalid {
                field: "origins",
                ..
            })
        ));
        assert!(matches!(
            Sources::parse(r#"{"k": {"id": "x", "dedupWindowDays": 0}}"#),
            Err(ConfigError::Invalid {
                field: "dedupWindowDays",
                ..
            })
        ));
        assert_eq!(Sources::parse("[1]"), Err(ConfigError::NotAnObject));
        assert_eq!(Sources::parse(""), Ok(Sources::default()));
    }

    #[test]
    fn matches_exact_wildcard_and_any_origins() {
        let s = parse_source(
            "k",
            &json!({"id": "x", "origins": ["https://shop.example", "https://*.brand.example"]}),
        )
        .unwrap();
        assert!(s.allows_origin("https://shop.example"));
        assert!(s.allows_origin("https://SHOP.example"));
        assert!(s.allows_origin("https://eu.brand.example"));
        assert!(!s.allows_origin("https://brand.example"));
        assert!(!s.allows_origin("https://evilbrand.example"));
        assert!(!s.allows_origin("http://shop.example"));
        assert!(!s.allows_origin("https://shop.example.evil"));
        let any = parse_source("k", &json!({"id": "x", "origins": ["*"]})).unwrap();
        assert!(any.allows_origin("https://anything.example"));
        let none = parse_source("k", &json!({"id": "x"})).unwrap();
        assert!(!none.allows_origin("https://shop.example"));
    }

    #[test]
    fn browser_sources_queue_and_trusted_sources_store_directly_unless_they_say_otherwise() {
        let ingest = |v: Value| parse_source("k", &json!({"id": "x", "ingest": v}));
        assert_eq!(ingest(Value::Null).unwrap().ingest, IngestMode::Queue);
        assert_eq!(ingest(json!("direct")).unwrap().ingest, IngestMode::Direct);
        assert_eq!(ingest(json!("queue")).unwrap().ingest, IngestMode::Queue);
        let server =
            |v: Value| parse_source("k", &json!({"id": "x", "kind": "server", "ingest": v}));
        assert_eq!(server(Value::Null).unwrap().ingest, IngestMode::Direct);
        assert_eq!(server(json!("queue")).unwrap().ingest, IngestMode::Queue);
        // Trusted, so its answers name the profile: stored before them.
        let trusting = parse_source("k", &json!({"id": "x", "identity": "trust-browser"})).unwrap();
        assert_eq!(trusting.ingest, IngestMode::Direct);
        for bad in [json!("later"), json!(true)] {
            assert!(
                matches!(
                    ingest(bad),
                    Err(ConfigError::Invalid {
                        field: "ingest",
                        ..
                    })
                ),
                "bad ingest mode accepted"
            );
        }
        assert_eq!(Source::server("s").ingest, IngestMode::Direct);
    }

    #[test]
    fn site_origin_is_an_origin_without_a_path() {
        let origin = |v: Value| parse_source("k", &json!({"id": "x", "siteOrigin": v}));
        assert_eq!(
            origin(json!("https://origin.shop.example/"))
                .unwrap()
                .site_origin
                .as_deref(),
            Some("https://origin.shop.example")
        );
        assert_eq!(
            origin(json!("http://127.0.0.1:8080"))
                .unwrap()
                .site_origin
                .as_deref(),
            Some("http://127.0.0.1:8080")
        );
        for bad in [
            json!("https://a.example/shop"),
            json!("ftp://a.example"),
            json!("https://user@a.example"),
            json!("https://a.example?x=1"),
            json!("https://"),
            json!(1),
        ] {
            assert!(
                matches!(
                    origin(bad.clone()),
                    Err(ConfigError::Invalid {
                        field: "siteOrigin",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert_eq!(origin(Value::Null).unwrap().site_origin, None);
    }
}
