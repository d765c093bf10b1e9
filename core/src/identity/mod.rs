//! The identity graph: which identifiers belong to the same person, decided deterministically.
//!
//! # Identifiers
//!
//! Every stored event contributes a [`Link`]: the [`Identifier`]s it carries plus its ordering key
//! `(timestamp_ms, message_id)`. [`identifiers_of`] reads them from the validated [`Event`]:
//!
//! | identifier type        | read from                                                           |
//! |------------------------|---------------------------------------------------------------------|
//! | [`IdType::UserId`]     | `userId`; `previousId` of an `alias` unless it looks anonymous¹      |
//! | [`IdType::Email`]      | `traits.email` (identify only), `context.traits.email`              |
//! | [`IdType::Phone`]      | `traits.phone` (identify only), `context.traits.phone`              |
//! | [`IdType::External`]   | `context.externalIds[]` with `collection` `"users"` or missing²      |
//! | [`IdType::CookieId`]   | `context.seam.cookieId` (the collector's first-party cookie)        |
//! | [`IdType::AnonymousId`]| `anonymousId`; `previousId` of an `alias` when it looks anonymous¹  |
//! | [`IdType::DeviceId`]   | `context.device.id`                                                 |
//!
//! ¹ `previousId` is the same kind of ID the client used before: an anonymous ID when it equals
//!   the event's `anonymousId` or looks like a UUID, a user ID otherwise. An alias from one user ID
//!   to another therefore puts two user IDs in one link, which the default user-ID limit of 1
//!   refuses (a conflict is recorded); raise that limit to honour such aliases.
//! ² An external ID of type `email`, `phone`, `user_id` or `anonymous_id` *is* that identifier
//!   (Segment's own type names), other types become `External(type)` with the type lower-cased.
//!   With an `encoding` other than `none` the value is opaque: it becomes `External("type.encoding")`,
//!   except that a 64-hex-digit `sha256` email or phone is taken as the hashed email/phone when
//!   [`Rules::hash_pii`] is on (so it matches hashed traits).
//!
//! `traits` of a `group` event describe the group, not the user, and are never read. An event
//! stored anonymized (consent denied analytics) has no identifiers at all.
//!
//! # Normalisation and blocking
//!
//! Emails are trimmed and lower-cased and must contain `@` (a value without one is dropped:
//! "unknown" is not an email and must not join people). Phones keep a leading `+` and the ASCII
//! digits, and need at least one digit. Every other value is trimmed. Blocking is decided on the
//! normalised value, *before* hashing: a value is blocked when, lower-cased, it is empty, in
//! [`DEFAULT_BLOCKED`] (unless [`Rules::use_default_blocklist`] is off), or matches one of
//! [`Rules::blocked`] (exact values or `*` globs, also compared lower-cased). Blocked values are
//! never identifiers. [`partition`] applies the block list again to stored links, so adding a
//! value to the list takes effect retroactively on the next recomputation (hashed values can only
//! be blocked at extraction). With [`Rules::hash_pii`], emails and phones are replaced by the hex
//! SHA-256 of their normalised value.
//!
//! # Rules
//!
//! [`Rules`] caps how many identifiers of each type one profile may hold (default: one user ID,
//! five emails, five phones, five of each external type, unlimited cookie/anonymous/device IDs),
//! ranks identifier types (default `user_id > email > phone > external > cookie_id > device_id >
//! anonymous_id`; external types tie and are ordered by their text), and caps each profile at
//! [`Rules::max_identifiers`] identifiers and [`Rules::max_merges`] merges. A *merge* joins two
//! clusters that both existed before the link that joins them; attaching identifiers seen for the
//! first time is not a merge (otherwise a profile could never collect more than 100 anonymous IDs).
//!
//! # The partition, and why it does not depend on arrival order
//!
//! [`partition`] canonicalises every link (blocked identifiers dropped, duplicates removed,
//! identifiers sorted by priority and then by text), sorts the links by the total order
//! `(timestamp_ms, message_id, identifiers)` and removes identical ones. It then runs union-find
//! over that sequence. For each link it starts from the cluster of the link's highest-priority
//! identifier and merges in every other identifier's cluster, in priority order, only when the
//! union keeps every per-type limit and both caps. A refused union is recorded as a [`Conflict`]
//! and the refused identifier stays where it was; so two profiles with different user IDs are
//! never merged, whatever links connect them.
//!
//! The output is a function of the *set* of canonical links: canonicalisation is per link, the
//! sorted deduplicated sequence is the same for every permutation and every number of
//! repetitions of the input, nothing depends on hashing or input positions, and a profile's ID
//! ([`ProfileId::for_identifier`] of its best identifier: highest priority, then smallest text)
//! depends only on its members. So a known user's profile ID is a stable function of their user
//! ID, and replaying events in any order gives byte-identical results.
//!
//! The cost of that guarantee: an event that arrives late (with an earlier timestamp than links
//! already stored) can change decisions made for later links, e.g. move an anonymous ID to the
//! user who, by event time, claimed it first. The [`StitchPlan`] reports every identifier's
//! profile, so the caller rewrites such moves like any other.
//!
//! The work is done on integers: every distinct identifier is interned once (blocked or not,
//! rank, text form and limit decided once, not per occurrence) to a node numbered in canonical
//! order, so a link is a sorted list of node numbers, a cluster's best identifier is its smallest
//! node, and each profile ID is hashed once.
//!
//! # Incremental stitching
//!
//! Processing a link only ever touches clusters of its own identifiers, so the partition
//! separates over the connected components of the *link graph* (identifiers joined by any link,
//! refused or not). Recomputing the components a new link touches therefore gives exactly the
//! same result as recomputing everything. [`stitch`] takes those components' stored links
//! ([`component_links`] computes them from an in-memory store; the edge loads them from D1 by
//! following identifiers to links and back until nothing new appears), recomputes, and returns a
//! [`StitchPlan`]. The partitions with and without the new link share the processing sequence up
//! to the new link's place in it, so that prefix is processed once (for the newest event, the
//! whole fragment). Note that a component is not a profile: a refused link still connects the
//! profiles it touches, because it influences which of them an identifier joins first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::collect::event::{Event, EventType};
use crate::format::id::is_uuid;

pub mod graph_plan;
pub mod profile;
mod resolve;

pub use resolve::{partition, stitch};

/// Prefix of every canonical profile ID.
pub const PROFILE_ID_PREFIX: &str = "prof_";
/// How many hex digits of the SHA-256 a profile ID keeps (80 bits).
pub const PROFILE_ID_HEX_CHARS: usize = 20;
/// Default cap on identifiers per profile.
pub const DEFAULT_MAX_IDENTIFIERS: usize = 1000;
/// Default cap on merges per profile.
pub const DEFAULT_MAX_MERGES: usize = 100;
/// Default limit for each external ID type.
pub const DEFAULT_EXTERNAL_LIMIT: usize = 5;

/// Placeholder values that are never identifiers (compared lower-cased after trimming).
///
/// The brief's list plus values that broken clients commonly send for "no ID": JavaScript's
/// `[object object]` and `nan`, `-1`, and the nil UUID (what iOS reports as IDFA when tracking is
/// limited).
pub const DEFAULT_BLOCKED: [&str; 14] = [
    "",
    "null",
    "undefined",
    "0",
    "anonymous",
    "guest",
    "none",
    "nil",
    "n/a",
    "test@test.com",
    "[object object]",
    "nan",
    "-1",
    "00000000-0000-0000-0000-000000000000",
];

/// The rank classes of identifier types: [`IdType`] without the external type's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdClass {
    /// A known user ID.
    UserId,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// Any external ID type.
    External,
    /// The collector's first-party cookie ID.
    CookieId,
    /// A device ID.
    DeviceId,
    /// A client-side anonymous ID.
    AnonymousId,
}

impl IdClass {
    /// The default priority, highest first.
    pub const DEFAULT_PRIORITY: [IdClass; 7] = [
        IdClass::UserId,
        IdClass::Email,
        IdClass::Phone,
        IdClass::External,
        IdClass::CookieId,
        IdClass::DeviceId,
        IdClass::AnonymousId,
    ];

    /// The name used in text forms and configuration (`"user_id"`, `"email"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserId => "user_id",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::External => "external",
            Self::CookieId => "cookie_id",
            Self::DeviceId => "device_id",
            Self::AnonymousId => "anonymous_id",
        }
    }

    /// Parses [`IdClass::as_str`]'s names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::DEFAULT_PRIORITY
            .into_iter()
            .find(|class| class.as_str() == name)
    }

    fn default_rank(self) -> usize {
        Self::DEFAULT_PRIORITY
            .iter()
            .position(|c| *c == self)
            .unwrap_or(Self::DEFAULT_PRIORITY.len())
    }
}

/// The type of an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdType {
    /// `userId` (and a non-anonymous alias `previousId`).
    UserId,
    /// An email address (or its SHA-256 with [`Rules::hash_pii`]).
    Email,
    /// A phone number (or its SHA-256 with [`Rules::hash_pii`]).
    Phone,
    /// An ID from `context.externalIds`, named by its (lower-cased) `type`.
    External(String),
    /// `context.seam.cookieId`.
    CookieId,
    /// `anonymousId`.
    AnonymousId,
    /// `context.device.id`.
    DeviceId,
}

impl IdType {
    /// The rank class of this type.
    pub fn class(&self) -> IdClass {
        match self {
            Self::UserId => IdClass::UserId,
            Self::Email => IdClass::Email,
            Self::Phone => IdClass::Phone,
            Self::External(_) => IdClass::External,
            Self::CookieId => IdClass::CookieId,
            Self::AnonymousId => IdClass::AnonymousId,
            Self::DeviceId => IdClass::DeviceId,
        }
    }

    /// The type for a non-external class; `None` for [`IdClass::External`] (it needs a name).
    pub fn of_class(class: IdClass) -> Option<Self> {
        Some(match class {
            IdClass::UserId => Self::UserId,
            IdClass::Email => Self::Email,
            IdClass::Phone => Self::Phone,
            IdClass::External => return None,
            IdClass::CookieId => Self::CookieId,
            IdClass::DeviceId => Self::DeviceId,
            IdClass::AnonymousId => Self::AnonymousId,
        })
    }
}

/// One identifier: a type and a normalised value.
///
/// Its text form (`Display`, [`Identifier::parse`]) is the storage key: `<class>:<value>`, e.g.
/// `email:a@b.example`, `user_id:42`, and `external:<type>:<value>` for external IDs, where `%` and
/// `:` in the type are written `%25` and `%3A` (the value may contain anything).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    /// The type.
    pub kind: IdType,
    /// The value, already normalised (see the module docs).
    pub value: String,
}

impl Identifier {
    /// An identifier from parts that are already normalised (no checks).
    pub fn new(kind: IdType, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }

    /// Normalises `raw` for `kind`, applies the block list and, for emails and phones, the
    /// optional hashing. `None` when nothing usable is left or the value is blocked.
    pub fn normalized(kind: IdType, raw: &str, rules: &Rules) -> Option<Self> {
        let class = kind.class();
        let hashed_class = rules.hash_pii && matches!(class, IdClass::Email | IdClass::Phone);
        // With hashing on, a value that already is a hash (the collector rewrites stored bodies
        // to hashes) is taken as it is: hashing it again would split the person in two.
        if hashed_class && is_sha256_hex(raw.trim()) {
            return Some(Self {
                kind,
                value: raw.trim().to_ascii_lowercase(),
            });
        }
        // The raw value is checked too: normalising can turn a placeholder into a plausible
        // value (a phone of "-1" keeps only its digit, "1").
        if rules.is_blocked(raw.trim()) {
            return None;
        }
        let value = normalize_value(class, raw)?;
        if rules.is_blocked(&value) {
            return None;
        }
        let value = if hashed_class {
            match &rules.pii_salt {
                Some(salt) => sha256_hex(format!("{salt}\n{value}").as_bytes()),
                None => sha256_hex(value.as_bytes()),
            }
        } else {
            value
        };
        Some(Self { kind, value })
    }

    /// Parses the text form written by `Display`. `None` for anything else (unknown class,
    /// empty value, bad escape in an external type).
    pub fn parse(text: &str) -> Option<Self> {
        let (tag, rest) = text.split_once(':')?;
        let (kind, value) = if tag == IdClass::External.as_str() {
            let (name, value) = rest.split_once(':')?;
            let name = unescape_type(name)?;
            if name.is_empty() {
                return None;
            }
            (IdType::External(name), value)
        } else {
            (IdType::of_class(IdClass::parse(tag)?)?, rest)
        };
        if value.is_empty() {
            return None;
        }
        Some(Self::new(kind, value))
    }

    /// The rank class of this identifier's type.
    pub fn class(&self) -> IdClass {
        self.kind.class()
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            IdType::External(name) => {
                f.write_str("external:")?;
                f.write_str(&escape_type(name))?;
            }
            kind => f.write_str(kind.class().as_str())?,
        }
        f.write_str(":")?;
        f.write_str(&self.value)
    }
}

fn escape_type(name: &str) -> String {
    name.replace('%', "%25").replace(':', "%3A")
}

fn unescape_type(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match (chars.next(), chars.next()) {
                (Some('2'), Some('5')) => out.push('%'),
                (Some('3'), Some('A')) => out.push(':'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn normalize_value(class: IdClass, raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    match class {
        IdClass::Email => {
            let email = trimmed.to_lowercase();
            email.contains('@').then_some(email)
        }
        IdClass::Phone => {
            let mut phone = String::with_capacity(trimmed.len());
            if trimmed.starts_with('+') {
                phone.push('+');
            }
            phone.extend(trimmed.chars().filter(char::is_ascii_digit));
            phone.chars().any(|c| c.is_ascii_digit()).then_some(phone)
        }
        _ => (!trimmed.is_empty()).then(|| trimmed.to_owned()),
    }
}

fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0f));
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n & 0x0f), 16).unwrap_or('0')
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Position after the last `*` seen, and the text position it is currently matched up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some('*'), _) => {
                p += 1;
                backtrack = Some((p, t));
            }
            (Some(pc), Some(tc)) if pc == tc => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star_p, star_t)) => {
                    p = star_p;
                    t = star_t + 1;
                    backtrack = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// Identity resolution settings. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Per-type limits on identifiers per profile; `None` = unlimited. Types not listed use
    /// [`Rules::external_limit`] (external types) or are unlimited. A limit of 0 acts as 1:
    /// an identifier always fits in a profile of its own.
    pub limits: BTreeMap<IdType, Option<usize>>,
    /// Limit for each external type not listed in [`Rules::limits`]; `None` = unlimited.
    pub external_limit: Option<usize>,
    /// Type classes, highest priority first. Classes not listed rank after the listed ones, in
    /// default order.
    pub priority: Vec<IdClass>,
    /// Whether [`DEFAULT_BLOCKED`] applies.
    pub use_default_blocklist: bool,
    /// Extra blocked values: exact values or patterns with `*`, compared lower-cased after
    /// trimming against the normalised value.
    pub blocked: Vec<String>,
    /// Store emails and phones as the hex SHA-256 of their normalised value.
    pub hash_pii: bool,
    /// Secret salt for [`Rules::hash_pii`] (the `PII_SALT` secret, never in configuration): the
    /// hash becomes SHA-256 of `salt`, a newline and the value, so a stolen table cannot be
    /// reversed by hashing a list of known addresses. Pre-hashed (unsalted) external IDs then no
    /// longer match emails and are kept as their own external type.
    pub pii_salt: Option<String>,
    /// Most identifiers one profile may hold.
    pub max_identifiers: usize,
    /// Most merges one profile may absorb (see the module docs for what counts).
    pub max_merges: usize,
}

impl Default for Rules {
    fn default() -> Self {
        let limits = [
            (IdType::UserId, Some(1)),
            (IdType::Email, Some(5)),
            (IdType::Phone, Some(5)),
            (IdType::CookieId, None),
            (IdType::AnonymousId, None),
            (IdType::DeviceId, None),
        ]
        .into_iter()
        .collect();
        Self {
            limits,
            external_limit: Some(DEFAULT_EXTERNAL_LIMIT),
            priority: IdClass::DEFAULT_PRIORITY.to_vec(),
            use_default_blocklist: true,
            blocked: Vec::new(),
            hash_pii: false,
            pii_salt: None,
            max_identifiers: DEFAULT_MAX_IDENTIFIERS,
            max_merges: DEFAULT_MAX_MERGES,
        }
    }
}

impl Rules {
    /// Reads rules from configuration JSON; every field is optional (`null` = default):
    ///
    /// ```json
    /// {"limits": {"user_id": 1, "email": 5, "external": 5, "external:ga_client_id": 2,
    ///             "cookie_id": null},
    ///  "priority": ["user_id", "email", "phone", "external", "cookie_id", "device_id", "anonymous_id"],
    ///  "blocked": ["unknown@example.com", "*@mailinator.com"], "useDefaultBlocked": true,
    ///  "hashPii": false, "maxIdentifiers": 1000, "maxMerges": 100}
    /// ```
    ///
    /// A limit is a positive integer or `null` (unlimited); `external` sets the limit of every
    /// external type not named as `external:<type>`. `priority` lists each class at most once;
    /// unlisted classes follow in default order. Unknown fields are errors (typos must not
    /// silently fall back to defaults).
    pub fn from_json(config: &Value) -> Result<Rules, IdentityConfigError> {
        let object = config.as_object().ok_or(IdentityConfigError::NotAnObject)?;
        let mut rules = Rules::default();
        for (field, value) in object {
            if value.is_null() {
                continue;
            }
            match field.as_str() {
                "limits" => parse_limits(value, &mut rules)?,
                "priority" => rules.priority = parse_priority(value)?,
                "blocked" => rules.blocked = parse_blocked(value)?,
                "useDefaultBlocked" => {
                    rules.use_default_blocklist = parse_bool(value, "useDefaultBlocked")?;
                }
                "hashPii" => rules.hash_pii = parse_bool(value, "hashPii")?,
                "maxIdentifiers" => {
                    rules.max_identifiers = parse_count(value, "maxIdentifiers", 1)?;
                }
                "maxMerges" => rules.max_merges = parse_count(value, "maxMerges", 0)?,
                other => {
                    return Err(IdentityConfigError::UnknownField {
                        field: other.to_owned(),
                    })
                }
            }
        }
        Ok(rules)
    }

    /// The per-profile limit for `kind`; `None` = unlimited. Never `Some(0)`.
    pub fn limit(&self, kind: &IdType) -> Option<usize> {
        let configured = match (self.limits.get(kind), kind) {
            (Some(limit), _) => *limit,
            (None, IdType::External(_)) => self.external_limit,
            (None, _) => None,
        };
        configured.map(|n| n.max(1))
    }

    /// The rank of `class`: 0 is the highest priority.
    pub fn rank(&self, class: IdClass) -> usize {
        self.priority
            .iter()
            .position(|c| *c == class)
            .unwrap_or_else(|| self.priority.len() + class.default_rank())
    }

    /// Whether a normalised value is blocked (see the module docs).
    pub fn is_blocked(&self, value: &str) -> bool {
        Blocker::new(self).blocks(value)
    }

    /// Sort key of an identifier: priority rank, then text form (smallest first).
    fn key(&self, id: &Identifier) -> (usize, String) {
        (self.rank(id.class()), id.to_string())
    }

    /// Drops blocked identifiers and duplicates, and sorts the rest best first.
    fn canonical_ids(&self, ids: &[Identifier]) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = ids
            .iter()
            .filter(|id| !self.is_blocked(&id.value))
            .cloned()
            .collect();
        ids.sort_by_cached_key(|id| self.key(id));
        ids.dedup();
        ids
    }

    #[cfg(test)]
    fn canonical_link(&self, link: &Link) -> Link {
        Link {
            timestamp_ms: link.timestamp_ms,
            message_id: link.message_id.clone(),
            identifiers: self.canonical_ids(&link.identifiers),
        }
    }
}

/// [`Rules::is_blocked`] with the configured patterns lower-cased once.
struct Blocker {
    defaults: bool,
    /// Trimmed, lower-cased patterns, each with whether it is a glob.
    patterns: Vec<(String, bool)>,
}

impl Blocker {
    fn new(rules: &Rules) -> Self {
        let patterns = rules
            .blocked
            .iter()
            .map(|pattern| {
                let pattern = pattern.trim().to_lowercase();
                let glob = pattern.contains('*');
                (pattern, glob)
            })
            .collect();
        Self {
            defaults: rules.use_default_blocklist,
            patterns,
        }
    }

    fn blocks(&self, value: &str) -> bool {
        let value = value.trim();
        if value.is_empty() {
            return true;
        }
        if self.patterns.is_empty() && value.is_ascii() {
            // ASCII lower-cases to ASCII: compare without allocating (non-ASCII text can
            // lower-case to ASCII, e.g. the Kelvin sign, so it takes the general path).
            return self.defaults
                && DEFAULT_BLOCKED
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(value));
        }
        let value = value.to_lowercase();
        (self.defaults && DEFAULT_BLOCKED.contains(&value.as_str()))
            || self.patterns.iter().any(|(pattern, glob)| {
                if *glob {
                    glob_matches(pattern, &value)
                } else {
                    *pattern == value
                }
            })
    }
}

fn parse_limits(value: &Value, rules: &mut Rules) -> Result<(), IdentityConfigError> {
    let object = value.as_object().ok_or(IdentityConfigError::Invalid {
        field: "limits".into(),
        problem: "must be an object keyed by identifier type",
    })?;
    for (name, limit) in object {
        let field = format!("limits.{name}");
        let limit = match limit {
            Value::Null => None,
            other => Some(parse_count(other, &field, 1)?),
        };
        if name == IdClass::External.as_str() {
            rules.external_limit = limit;
            continue;
        }
        let kind = match name.split_once(':') {
            Some((tag, ext)) if tag == IdClass::External.as_str() && !ext.trim().is_empty() => {
                IdType::External(ext.trim().to_lowercase())
            }
            _ => IdClass::parse(name)
                .and_then(IdType::of_class)
                .ok_or_else(|| IdentityConfigError::UnknownIdType {
                    field: field.clone(),
                    name: name.clone(),
                })?,
        };
        rules.limits.insert(kind, limit);
    }
    Ok(())
}

fn parse_priority(value: &Value) -> Result<Vec<IdClass>, IdentityConfigError> {
    let items = value.as_array().ok_or(IdentityConfigError::Invalid {
        field: "priority".into(),
        problem: "must be an array of identifier types",
    })?;
    let mut priority = Vec::with_capacity(IdClass::DEFAULT_PRIORITY.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("priority[{i}]");
        let name = item.as_str().ok_or_else(|| IdentityConfigError::Invalid {
            field: field.clone(),
            problem: "must be a string",
        })?;
        let class = IdClass::parse(name).ok_or_else(|| IdentityConfigError::UnknownIdType {
            field: field.clone(),
            name: name.to_owned(),
        })?;
        if priority.contains(&class) {
            return Err(IdentityConfigError::DuplicatePriority {
                field,
                name: name.to_owned(),
            });
        }
        priority.push(class);
    }
    for class in IdClass::DEFAULT_PRIORITY {
        if !priority.contains(&class) {
            priority.push(class);
        }
    }
    Ok(priority)
}

fn parse_blocked(value: &Value) -> Result<Vec<String>, IdentityConfigError> {
    let items = value.as_array().ok_or(IdentityConfigError::Invalid {
        field: "blocked".into(),
        problem: "must be an array of strings",
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| IdentityConfigError::Invalid {
                    field: format!("blocked[{i}]"),
                    problem: "must be a string",
                })
        })
        .collect()
}

fn parse_bool(value: &Value, field: &str) -> Result<bool, IdentityConfigError> {
    value.as_bool().ok_or_else(|| IdentityConfigError::Invalid {
        field: field.to_owned(),
        problem: "must be true or false",
    })
}

fn parse_count(value: &Value, field: &str, min: usize) -> Result<usize, IdentityConfigError> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n >= min)
        .ok_or_else(|| IdentityConfigError::Invalid {
            field: field.to_owned(),
            problem: if min == 0 {
                "must be a non-negative integer"
            } else {
                "must be a positive integer"
            },
        })
}

/// A mistake in identity configuration. Each variant has a stable [`IdentityConfigError::code`]
/// and, where there is one, names the field ([`IdentityConfigError::field`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityConfigError {
    /// The configuration is not a JSON object.
    #[error("identity rules must be a JSON object")]
    NotAnObject,
    /// A top-level field that does not exist.
    #[error("identity rules: unknown field {field}")]
    UnknownField {
        /// The field.
        field: String,
    },
    /// A field has the wrong type or an out-of-range value.
    #[error("identity rules: {field} {problem}")]
    Invalid {
        /// The field, e.g. `limits.email` or `priority[2]`.
        field: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// An identifier type name that does not exist.
    #[error("identity rules: {field}: unknown identifier type {name:?}")]
    UnknownIdType {
        /// The field.
        field: String,
        /// The unknown name.
        name: String,
    },
    /// A type listed twice in `priority`.
    #[error("identity rules: {field}: {name} is listed more than once")]
    DuplicatePriority {
        /// The field of the second listing.
        field: String,
        /// The repeated type.
        name: String,
    },
}

impl IdentityConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnObject => "invalid_identity_config",
            Self::UnknownField { .. } => "unknown_identity_field",
            Self::Invalid { .. } => "invalid_identity_field",
            Self::UnknownIdType { .. } => "unknown_id_type",
            Self::DuplicatePriority { .. } => "duplicate_priority",
        }
    }

    /// The offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::NotAnObject => None,
            Self::UnknownField { field }
            | Self::Invalid { field, .. }
            | Self::UnknownIdType { field, .. }
            | Self::DuplicatePriority { field, .. } => Some(field),
        }
    }
}

/// The identifiers an event carries (see the table in the module docs): normalised, blocked
/// values dropped, duplicates removed, best first.
pub fn identifiers_of(event: &Event, rules: &Rules) -> Vec<Identifier> {
    if event.anonymized {
        return Vec::new();
    }
    let body = &event.body;
    let mut ids = Vec::new();
    let mut add = |kind: IdType, raw: Option<String>| {
        if let Some(id) = raw.and_then(|raw| Identifier::normalized(kind, &raw, rules)) {
            ids.push(id);
        }
    };
    add(IdType::UserId, event.user_id.clone());
    add(IdType::AnonymousId, event.anonymous_id.clone());
    if event.kind == EventType::Identify {
        let traits = body.get("traits").and_then(Value::as_object);
        add(IdType::Email, field_text(traits, "email"));
        add(IdType::Phone, field_text(traits, "phone"));
    }
    let context = body.get("context").and_then(Value::as_object);
    let context_traits = object_field(context, "traits");
    add(IdType::Email, field_text(context_traits, "email"));
    add(IdType::Phone, field_text(context_traits, "phone"));
    add(
        IdType::CookieId,
        field_text(object_field(context, "seam"), "cookieId"),
    );
    add(
        IdType::DeviceId,
        field_text(object_field(context, "device"), "id"),
    );
    if event.kind == EventType::Alias {
        if let Some(previous) = body.get("previousId").and_then(scalar_text) {
            let trimmed = previous.trim();
            let anonymous = is_uuid(trimmed)
                || event
                    .anonymous_id
                    .as_deref()
                    .is_some_and(|a| a.trim() == trimmed);
            let kind = if anonymous {
                IdType::AnonymousId
            } else {
                IdType::UserId
            };
            add(kind, Some(previous));
        }
    }
    if let Some(Value::Array(entries)) = context.and_then(|c| c.get("externalIds")) {
        ids.extend(
            entries
                .iter()
                .filter_map(|entry| external_identifier(entry, rules)),
        );
    }
    rules.canonical_ids(&ids)
}

fn object_field<'a>(
    object: Option<&'a Map<String, Value>>,
    field: &str,
) -> Option<&'a Map<String, Value>> {
    object.and_then(|o| o.get(field)).and_then(Value::as_object)
}

fn field_text(object: Option<&Map<String, Value>>, field: &str) -> Option<String> {
    object.and_then(|o| o.get(field)).and_then(scalar_text)
}

/// A string, or a number as text (server libraries send numeric IDs and phones).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn external_identifier(entry: &Value, rules: &Rules) -> Option<Identifier> {
    let entry = entry.as_object()?;
    match entry.get("collection") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c.trim().eq_ignore_ascii_case("users") => {}
        Some(_) => return None,
    }
    let raw = entry.get("id").and_then(scalar_text)?;
    let type_name = entry.get("type")?.as_str()?.trim().to_lowercase();
    if type_name.is_empty() {
        return None;
    }
    let encoding = match entry.get("encoding") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => {
            let e = e.trim().to_lowercase();
            (!e.is_empty() && e != "none").then_some(e)
        }
        Some(_) => return None,
    };
    let known = match type_name.as_str() {
        "email" => Some(IdType::Email),
        "phone" => Some(IdType::Phone),
        "user_id" | "userid" => Some(IdType::UserId),
        "anonymous_id" | "anonymousid" => Some(IdType::AnonymousId),
        _ => None,
    };
    match (encoding, known) {
        (None, Some(kind)) => Identifier::normalized(kind, &raw, rules),
        (None, None) => Identifier::normalized(IdType::External(type_name), &raw, rules),
        (Some(enc), Some(kind @ (IdType::Email | IdType::Phone)))
            if rules.hash_pii
                && rules.pii_salt.is_none()
                && (enc == "sha256" || enc == "sha-256") =>
        {
            let hex = raw.trim().to_ascii_lowercase();
            is_sha256_hex(&hex).then(|| Identifier::new(kind, hex))
        }
        (Some(enc), _) => {
            Identifier::normalized(IdType::External(format!("{type_name}.{enc}")), &raw, rules)
        }
    }
}

/// One event's contribution to the graph: its identifiers and its ordering key.
///
/// Field order makes the derived `Ord` the processing order: `(timestamp_ms, message_id,
/// identifiers)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// The event's (skew-corrected) time.
    pub timestamp_ms: i64,
    /// The event's `messageId`.
    pub message_id: String,
    /// The identifiers it carries.
    pub identifiers: Vec<Identifier>,
}

impl Link {
    /// A link from parts.
    pub fn new(
        timestamp_ms: i64,
        message_id: impl Into<String>,
        identifiers: Vec<Identifier>,
    ) -> Self {
        Self {
            timestamp_ms,
            message_id: message_id.into(),
            identifiers,
        }
    }

    /// The link an event contributes ([`identifiers_of`] plus its ordering key).
    pub fn from_event(event: &Event, rules: &Rules) -> Self {
        Self::new(
            event.timestamp_ms,
            event.message_id.clone(),
            identifiers_of(event, rules),
        )
    }
}

/// A canonical profile ID: `prof_` + the first 20 hex digits of the SHA-256 of the text form of
/// the profile's best identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileId(String);

impl ProfileId {
    /// The ID of a profile whose best identifier is `best`.
    pub fn for_identifier(best: &Identifier) -> Self {
        let digest = Sha256::digest(best.to_string().as_bytes());
        let mut id = String::with_capacity(PROFILE_ID_PREFIX.len() + PROFILE_ID_HEX_CHARS);
        id.push_str(PROFILE_ID_PREFIX);
        id.extend(
            digest
                .iter()
                .flat_map(|b| [b >> 4, b & 0x0f])
                .take(PROFILE_ID_HEX_CHARS)
                .map(hex_digit),
        );
        Self(id)
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One resolved person: a cluster of identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Canonical ID, from the best identifier.
    pub id: ProfileId,
    /// Members, best first (priority rank, then text form).
    pub identifiers: Vec<Identifier>,
}

/// Why a union was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictReason {
    /// The profile would hold more identifiers of this type than its limit (the highest-priority
    /// breached type is reported). Two user IDs is this, with [`IdType::UserId`].
    TypeLimit(IdType),
    /// The profile would exceed [`Rules::max_identifiers`].
    MaxIdentifiers,
    /// The profile would exceed [`Rules::max_merges`].
    MaxMerges,
}

impl ConflictReason {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TypeLimit(IdType::UserId) => "user_id_conflict",
            Self::TypeLimit(_) => "identifier_limit",
            Self::MaxIdentifiers => "max_identifiers",
            Self::MaxMerges => "max_merges",
        }
    }
}

/// A link that could not join everything it carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conflict {
    /// Time of the link.
    pub timestamp_ms: i64,
    /// `messageId` of the link.
    pub message_id: String,
    /// The profile the link's event belongs to (that of its best identifier), as finally
    /// resolved.
    pub profile: ProfileId,
    /// The identifier whose cluster was not merged in.
    pub refused: Identifier,
    /// The profile the refused identifier belongs to, as finally resolved.
    pub refused_profile: ProfileId,
    /// Why.
    pub reason: ConflictReason,
}

/// The profiles a set of links resolves to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    /// Profiles, sorted by ID. Every non-blocked identifier of the input is in exactly one.
    pub profiles: Vec<Profile>,
    /// Refused unions, sorted (time, message ID, ...), without repeats.
    pub conflicts: Vec<Conflict>,
}

impl Partition {
    /// The profile holding `id` (linear scan).
    pub fn profile_of(&self, id: &Identifier) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.identifiers.contains(id))
    }
}

/// The stored links in the link-graph components that `seeds` touch: every link sharing an
/// identifier with a seed, then every link sharing one with those, until nothing new appears.
/// Blocked identifiers connect nothing. Returned in store order.
pub fn component_links(store: &[Link], seeds: &[Identifier], rules: &Rules) -> Vec<Link> {
    let canonical: Vec<Vec<Identifier>> = store
        .iter()
        .map(|l| rules.canonical_ids(&l.identifiers))
        .collect();
    let mut links_of: BTreeMap<&Identifier, Vec<usize>> = BTreeMap::new();
    for (i, ids) in canonical.iter().enumerate() {
        for id in ids {
            links_of.entry(id).or_default().push(i);
        }
    }
    let mut seen: BTreeSet<&Identifier> = BTreeSet::new();
    let mut queue: VecDeque<&Identifier> = VecDeque::new();
    for seed in seeds {
        if !rules.is_blocked(&seed.value) && seen.insert(seed) {
            queue.push_back(seed);
        }
    }
    let mut taken = vec![false; store.len()];
    while let Some(id) = queue.pop_front() {
        for &i in links_of.get(id).into_iter().flatten() {
            match taken.get_mut(i) {
                Some(t) if !*t => *t = true,
                _ => continue,
            }
            for other in canonical.get(i).into_iter().flatten() {
                if seen.insert(other) {
                    queue.push_back(other);
                }
            }
        }
    }
    store
        .iter()
        .zip(taken)
        .filter(|(_, taken)| *taken)
        .map(|(link, _)| link.clone())
        .collect()
}

/// A profile absorbed by another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Merge {
    /// The profile that no longer exists.
    pub from: ProfileId,
    /// The profile now holding its best identifier.
    pub into: ProfileId,
    /// `messageId` of the link whose arrival caused it.
    pub cause_message_id: String,
}

/// What storing one more link changes, for the caller to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StitchPlan {
    /// The profile of the new link's best identifier (the event's profile); `None` when the link
    /// carries no identifiers.
    pub profile_id: Option<ProfileId>,
    /// Every identifier of the touched components with its profile, sorted by identifier.
    pub assignments: Vec<(Identifier, ProfileId)>,
    /// Profiles that existed before (in `partition(fragment)`) and no longer exist, each with the
    /// profile now holding its best identifier. A profile renamed because a higher-priority
    /// identifier joined it (anonymous visitor signs in) is reported here too. Sorted by `from`.
    pub merges: Vec<Merge>,
    /// Conflicts of the new partition that the old one did not have (compared by time, message
    /// ID, refused identifier and reason).
    pub conflicts: Vec<Conflict>,
    /// False when `fragment` already held this link (the plan then changes nothing).
    pub is_new_link: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope};
    use proptest::prelude::*;
    use serde_json::json;

    fn event(raw: Value) -> Event {
        let len = raw.to_string().len();
        let envelope = Envelope {
            received_at_ms: 1_700_000_000_000,
            ..Envelope::default()
        };
        validate(raw, len, &envelope, || "generated".into()).unwrap()
    }

    fn uid(v: &str) -> Identifier {
        Identifier::new(IdType::UserId, v)
    }
    fn email(v: &str) -> Identifier {
        Identifier::new(IdType::Email, v)
    }
    fn anon(v: &str) -> Identifier {
        Identifier::new(IdType::AnonymousId, v)
    }
    fn cookie(v: &str) -> Identifier {
        Identifier::new(IdType::CookieId, v)
    }
    fn link(ts: i64, mid: &str, ids: &[Identifier]) -> Link {
        Link::new(ts, mid, ids.to_vec())
    }
    fn owner_of(p: &Partition, id: &Identifier) -> ProfileId {
        p.profile_of(id).unwrap().id.clone()
    }

    #[test]
    fn never_merges_two_user_ids() {
        let rules = Rules::default();
        let links = [
            link(1, "m1", &[uid("u1"), anon("a")]),
            link(2, "m2", &[uid("u2"), anon("a")]),
            link(3, "m3", &[uid("u1"), uid("u2")]),
        ];
        let p = partition(&links, &rules);
        assert_ne!(owner_of(&p, &uid("u1")), owner_of(&p, &uid("u2")));
        // The anonymous ID stays with the user who claimed it first.
        assert_eq!(owner_of(&p, &anon("a")), owner_of(&p, &uid("u1")));
        let reasons: Vec<_> = p.conflicts.iter().map(|c| c.reason.code()).collect();
        assert_eq!(reasons, ["user_id_conflict", "user_id_conflict"]);
        let first = &p.conflicts[0];
        assert_eq!(first.message_id, "m2");
        assert_eq!(first.refused, anon("a"));
        assert_eq!(first.profile, ProfileId::for_identifier(&uid("u2")));
        assert_eq!(first.refused_profile, ProfileId::for_identifier(&uid("u1")));
    }

    #[test]
    fn anonymous_browsing_then_sign_in_joins_one_profile() {
        let rules = Rules::default();
        let links = [
            link(1, "page1", &[anon("a"), cookie("c")]),
            link(2, "page2", &[anon("a")]),
            link(
                3,
                "identify",
                &[uid("u1"), anon("a"), email("u1@shop.example")],
            ),
            link(4, "later", &[cookie("c"), anon("a2")]),
        ];
        let p = partition(&links, &rules);
        assert_eq!(p.profiles.len(), 1);
        let profile = &p.profiles[0];
        assert_eq!(profile.id, ProfileId::for_identifier(&uid("u1")));
        assert_eq!(profile.identifiers[0], uid("u1"));
        assert_eq!(profile.identifiers.len(), 5);
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn profile_id_is_a_stable_function_of_the_user_id() {
        assert_eq!(
            ProfileId::for_identifier(&uid("u1")).as_str(),
            "prof_90c5bc873dedef8054fd"
        );
        let rules = Rules::default();
        let a = partition(&[link(1, "m", &[uid("u1"), anon("x")])], &rules);
        let b = partition(&[link(9, "n", &[anon("y"), uid("u1")])], &rules);
        assert_eq!(a.profiles[0].id, b.profiles[0].id);
    }

    #[test]
    fn email_limit_records_conflict() {
        let rules = Rules::default();
        let mut links: Vec<Link> = (0..6)
            .map(|i| {
                link(
                    i,
                    &format!("m{i}"),
                    &[uid("u1"), email(&format!("e{i}@x.example"))],
                )
            })
            .collect();
        links.reverse();
        let p = partition(&links, &rules);
        let main = p.profile_of(&uid("u1")).unwrap();
        assert_eq!(main.identifiers.len(), 6);
        let lone = p.profile_of(&email("e5@x.example")).unwrap();
        assert_eq!(lone.identifiers, [email("e5@x.example")]);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].message_id, "m5");
        assert_eq!(
            p.conflicts[0].reason,
            ConflictReason::TypeLimit(IdType::Email)
        );
        assert_eq!(p.conflicts[0].reason.code(), "identifier_limit");
    }

    #[test]
    fn blocked_values_never_match() {
        let rules = Rules {
            blocked: vec!["*@mailinator.com".into(), "Shared-Kiosk".into()],
            ..Rules::default()
        };
        let e = event(json!({
            "type": "identify", "userId": " null ", "anonymousId": "a1",
            "traits": {"email": "Test@Test.com", "phone": "n/a"},
            "context": {"device": {"id": "shared-kiosk"},
                        "traits": {"email": "bob@MAILINATOR.com"}}
        }));
        assert_eq!(identifiers_of(&e, &rules), [anon("a1")]);
        // Stored links are filtered too: the blocked value joins no one.
        let links = [
            link(
                1,
                "m1",
                &[uid("u1"), Identifier::new(IdType::DeviceId, "shared-kiosk")],
            ),
            link(
                2,
                "m2",
                &[uid("u2"), Identifier::new(IdType::DeviceId, "shared-kiosk")],
            ),
        ];
        let p = partition(&links, &rules);
        assert_eq!(p.profiles.len(), 2);
        assert!(p.conflicts.is_empty());
        assert!(p
            .profile_of(&Identifier::new(IdType::DeviceId, "shared-kiosk"))
            .is_none());
    }

    #[test]
    fn identifiers_with_one_fingerprint_stay_apart() {
        // Same length and same first and last eight bytes: one fingerprint, three identifiers.
        let a = anon("AAAAAAAA1BBBBBBBB");
        let b = anon("AAAAAAAA2BBBBBBBB");
        let u = uid("AAAAAAAA1BBBBBBBB");
        assert_eq!(
            resolve::fingerprint(&a.value),
            resolve::fingerprint(&b.value)
        );
        let links = [
            link(1, "m1", &[a.clone(), cookie("c")]),
            link(2, "m2", std::slice::from_ref(&b)),
            link(3, "m3", &[u.clone(), a.clone()]),
        ];
        let p = partition(&links, &Rules::default());
        assert_eq!(p.profiles.len(), 2);
        let user = ProfileId::for_identifier(&u);
        assert_eq!(owner_of(&p, &a), user);
        assert_eq!(owner_of(&p, &cookie("c")), user);
        assert_eq!(p.profile_of(&b).unwrap().identifiers, [b]);
    }

    #[test]
    fn block_list_compares_unicode_lower_case() {
        let rules = Rules {
            blocked: vec!["Kiosk".into()],
            ..Rules::default()
        };
        // The Kelvin sign lower-cases to an ASCII `k`.
        assert!(rules.is_blocked("\u{212A}IOSK"));
        assert!(Rules::default().is_blocked(" NuLL "));
        assert!(!Rules::default().is_blocked("\u{212A}"));
    }

    #[test]
    fn default_blocklist_can_be_turned_off() {
        let rules = Rules {
            use_default_blocklist: false,
            ..Rules::default()
        };
        assert!(!rules.is_blocked("guest"));
        assert!(rules.is_blocked("  "));
        assert!(Rules::default().is_blocked(" GUEST "));
    }

    #[test]
    fn glob_patterns_match_whole_values() {
        assert!(glob_matches("*@example.com", "a@example.com"));
        assert!(glob_matches("a*b*c", "aXXbYbc"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("*@example.com", "a@example.com.evil"));
        assert!(!glob_matches("a*b", "ac"));
        assert!(glob_matches("test-*", "test-42"));
    }

    #[test]
    fn normalises_emails_and_phones() {
        let rules = Rules::default();
        let n = |kind, raw| Identifier::normalized(kind, raw, &rules);
        assert_eq!(
            n(IdType::Email, "  Ann@Shop.Example "),
            Some(email("ann@shop.example"))
        );
        assert_eq!(n(IdType::Email, "unknown"), None);
        assert_eq!(
            n(IdType::Phone, " +1 (555) 123-4567 "),
            Some(Identifier::new(IdType::Phone, "+15551234567"))
        );
        assert_eq!(
            n(IdType::Phone, "06-1234 5678"),
            Some(Identifier::new(IdType::Phone, "0612345678"))
        );
        assert_eq!(n(IdType::Phone, "call me"), None);
        assert_eq!(n(IdType::UserId, "  u1 "), Some(uid("u1")));
    }

    #[test]
    fn hashes_pii_after_normalisation() {
        let rules = Rules {
            hash_pii: true,
            ..Rules::default()
        };
        assert_eq!(
            Identifier::normalized(IdType::Email, " A@B.example", &rules),
            Some(email(
                "ebb18a030bf15174f5714e24d63af1a81355c951ea7389bd2a9bd18e3d0c2477"
            ))
        );
        assert_eq!(
            Identifier::normalized(IdType::Phone, "+1 555 123 4567", &rules)
                .unwrap()
                .value,
            "8a59780bb8cd2ba022bfa5ba2ea3b6e07af17a7d8b30c1f9b3390e36f69019e4"
        );
        // Blocking is decided before hashing.
        assert_eq!(
            Identifier::normalized(IdType::Email, "test@test.com", &rules),
            None
        );
        assert_eq!(
            Identifier::normalized(IdType::UserId, "u1", &rules),
            Some(uid("u1"))
        );
    }

    #[test]
    fn text_form_round_trips_and_escapes_external_types() {
        let ids = [
            email("a@b.example"),
            uid("user:with:colons"),
            Identifier::new(IdType::External("ga:client%id".into()), "x:y"),
            Identifier::new(IdType::DeviceId, "d"),
            cookie("c"),
            anon("a"),
            Identifier::new(IdType::Phone, "+1"),
        ];
        assert_eq!(ids[0].to_string(), "email:a@b.example");
        assert_eq!(ids[2].to_string(), "external:ga%3Aclient%25id:x:y");
        for id in ids {
            assert_eq!(Identifier::parse(&id.to_string()), Some(id));
        }
        for bad in [
            "",
            "email",
            "email:",
            "bogus:x",
            "external:t",
            "external::v",
            "external:%zz:v",
        ] {
            assert_eq!(Identifier::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_every_identifier_source_best_first() {
        let rules = Rules::default();
        let e = event(json!({
            "type": "identify", "userId": "u1", "anonymousId": "a1",
            "traits": {"email": "Ann@Shop.Example", "phone": 15551234567_u64},
            "context": {
                "traits": {"email": "ann@shop.example"},
                "seam": {"cookieId": "ck"},
                "device": {"id": "dev"},
                "externalIds": [
                    {"id": "GA.1", "type": "GA_Client_ID", "collection": "users", "encoding": "none"},
                    {"id": "acct-9", "type": "account", "collection": "accounts"},
                    {"id": "work@corp.example", "type": "email"},
                    {"id": "abc", "type": "braze_id", "encoding": "base64"},
                    "garbage"
                ]
            }
        }));
        let ids: Vec<String> = identifiers_of(&e, &rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ids,
            [
                "user_id:u1",
                "email:ann@shop.example",
                "email:work@corp.example",
                "phone:15551234567",
                "external:braze_id.base64:abc",
                "external:ga_client_id:GA.1",
                "cookie_id:ck",
                "device_id:dev",
                "anonymous_id:a1",
            ]
        );
    }

    #[test]
    fn group_traits_are_not_user_traits() {
        let e = event(json!({
            "type": "group", "userId": "u1", "groupId": "g",
            "traits": {"email": "billing@corp.example"}
        }));
        assert_eq!(identifiers_of(&e, &Rules::default()), [uid("u1")]);
    }

    #[test]
    fn alias_previous_id_keeps_its_kind() {
        let rules = Rules::default();
        let uuid = "0b5a1c2e-3f4d-4e5f-8a6b-7c8d9e0f1a2b";
        let e = event(json!({"type": "alias", "userId": "u1", "previousId": uuid}));
        assert_eq!(identifiers_of(&e, &rules), [uid("u1"), anon(uuid)]);
        let e = event(
            json!({"type": "alias", "userId": "u1", "previousId": "a1", "anonymousId": "a1"}),
        );
        assert_eq!(identifiers_of(&e, &rules), [uid("u1"), anon("a1")]);
        let e = event(json!({"type": "alias", "userId": "u2", "previousId": "u1"}));
        assert_eq!(identifiers_of(&e, &rules), [uid("u1"), uid("u2")]);
        // Previous user ID to a new one: refused under the default user-ID limit.
        let p = partition(&[Link::from_event(&e, &rules)], &rules);
        assert_eq!(p.profiles.len(), 2);
        assert_eq!(p.conflicts[0].reason.code(), "user_id_conflict");
    }

    #[test]
    fn hashed_external_email_matches_hashed_traits() {
        let rules = Rules {
            hash_pii: true,
            ..Rules::default()
        };
        let hash = "EBB18A030BF15174F5714E24D63AF1A81355C951EA7389BD2A9BD18E3D0C2477";
        let e = event(json!({
            "type": "track", "event": "x", "anonymousId": "a1",
            "context": {"externalIds": [{"id": hash, "type": "email", "encoding": "sha256"}],
                        "traits": {"email": "a@b.example"}}
        }));
        assert_eq!(
            identifiers_of(&e, &rules),
            [email(&hash.to_lowercase()), anon("a1")]
        );
        let plain = identifiers_of(&e, &Rules::default());
        assert!(plain.contains(&Identifier::new(
            IdType::External("email.sha256".into()),
            hash
        )));
    }

    #[test]
    fn anonymized_events_have_no_identifiers() {
        let mut e = event(json!({"type": "page", "anonymousId": "a1"}));
        e.anonymized = true;
        assert!(identifiers_of(&e, &Rules::default()).is_empty());
        let plan = stitch(
            &[],
            Link::from_event(&e, &Rules::default()),
            &Rules::default(),
        );
        assert_eq!(plan.profile_id, None);
        assert!(plan.assignments.is_empty());
    }

    #[test]
    fn max_identifiers_cap_records_conflict() {
        let rules = Rules {
            max_identifiers: 3,
            ..Rules::default()
        };
        let links: Vec<Link> = (0..4)
            .map(|i| link(i, &format!("m{i}"), &[cookie("c"), anon(&format!("a{i}"))]))
            .collect();
        let p = partition(&links, &rules);
        assert_eq!(p.profile_of(&cookie("c")).unwrap().identifiers.len(), 3);
        assert_eq!(p.conflicts.len(), 2);
        assert!(p
            .conflicts
            .iter()
            .all(|c| c.reason == ConflictReason::MaxIdentifiers));
    }

    #[test]
    fn max_merges_cap_records_conflict_but_new_identifiers_still_attach() {
        let rules = Rules {
            max_merges: 1,
            ..Rules::default()
        };
        let links = [
            link(1, "m1", &[anon("a1")]),
            link(2, "m2", &[anon("a2")]),
            link(3, "m3", &[anon("a3")]),
            link(4, "m4", &[uid("u"), anon("a1"), anon("new1")]), // attach: no merge
            link(5, "m5", &[uid("u"), anon("a2")]),               // merge 1
            link(6, "m6", &[uid("u"), anon("a3")]),               // merge 2: refused
            link(7, "m7", &[uid("u"), anon("new2")]),             // attach: fine
        ];
        let p = partition(&links, &rules);
        let main = p.profile_of(&uid("u")).unwrap();
        assert_eq!(main.identifiers.len(), 5);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].message_id, "m6");
        assert_eq!(p.conflicts[0].reason.code(), "max_merges");
    }

    #[test]
    fn duplicates_and_order_do_not_matter() {
        let rules = Rules::default();
        let links = vec![
            link(1, "m1", &[uid("u1"), anon("a")]),
            link(1, "m0", &[uid("u2"), anon("a")]),
            link(2, "m2", &[anon("a"), cookie("c")]),
        ];
        let mut shuffled = links.clone();
        shuffled.reverse();
        shuffled.push(link(1, "m0", &[anon("a"), uid("u2"), anon("a")]));
        assert_eq!(partition(&links, &rules), partition(&shuffled, &rules));
        // m0 sorts before m1 at the same millisecond, so u2 claims the anonymous ID.
        let p = partition(&links, &rules);
        assert_eq!(owner_of(&p, &anon("a")), owner_of(&p, &uid("u2")));
    }

    #[test]
    fn priority_decides_the_best_identifier() {
        let rules = Rules::from_json(&json!({"priority": ["cookie_id"]})).unwrap();
        let p = partition(&[link(1, "m", &[uid("u1"), cookie("c")])], &rules);
        assert_eq!(p.profiles[0].id, ProfileId::for_identifier(&cookie("c")));
        assert_eq!(p.profiles[0].identifiers, [cookie("c"), uid("u1")]);
    }

    #[test]
    fn stitch_of_the_same_link_twice_is_a_no_op() {
        let rules = Rules::default();
        let first = link(1, "m1", &[anon("a"), cookie("c")]);
        let plan1 = stitch(&[], first.clone(), &rules);
        assert!(plan1.is_new_link);
        assert!(plan1.merges.is_empty());
        let plan2 = stitch(std::slice::from_ref(&first), first.clone(), &rules);
        assert!(!plan2.is_new_link);
        assert!(plan2.merges.is_empty());
        assert!(plan2.conflicts.is_empty());
        assert_eq!(plan1.assignments, plan2.assignments);
        assert_eq!(plan1.profile_id, plan2.profile_id);
    }

    #[test]
    fn stitch_reports_absorbed_profiles_as_merges() {
        let rules = Rules::default();
        let store = vec![
            link(1, "m1", &[anon("a1")]),
            link(2, "m2", &[anon("a2"), cookie("c")]),
        ];
        let sign_in = link(3, "m3", &[uid("u1"), anon("a1"), cookie("c")]);
        let fragment = component_links(&store, &sign_in.identifiers, &rules);
        assert_eq!(fragment.len(), 2);
        let plan = stitch(&fragment, sign_in, &rules);
        let user = ProfileId::for_identifier(&uid("u1"));
        assert_eq!(plan.profile_id, Some(user.clone()));
        let mut expected = vec![
            Merge {
                from: ProfileId::for_identifier(&anon("a1")),
                into: user.clone(),
                cause_message_id: "m3".into(),
            },
            Merge {
                from: ProfileId::for_identifier(&cookie("c")),
                into: user.clone(),
                cause_message_id: "m3".into(),
            },
        ];
        expected.sort();
        assert_eq!(plan.merges, expected);
        assert_eq!(plan.assignments.len(), 4);
        assert!(plan.assignments.iter().all(|(_, p)| *p == user));
    }

    #[test]
    fn stitch_reports_only_new_conflicts() {
        let rules = Rules::default();
        let store = vec![link(1, "m1", &[uid("u1"), anon("a")])];
        let plan = stitch(&store, link(2, "m2", &[uid("u2"), anon("a")]), &rules);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.profile_id, Some(ProfileId::for_identifier(&uid("u2"))));
        let mut store = store;
        store.push(link(2, "m2", &[uid("u2"), anon("a")]));
        let plan = stitch(&store, link(3, "m3", &[anon("a"), cookie("c")]), &rules);
        assert!(plan.conflicts.is_empty());
        assert!(plan.merges.is_empty());
        assert_eq!(plan.profile_id, Some(ProfileId::for_identifier(&uid("u1"))));
    }

    #[test]
    fn late_event_is_ordered_by_event_time() {
        let rules = Rules::default();
        let store = vec![link(10, "m10", &[uid("u2"), anon("a")])];
        // u1 used the browser earlier but that event arrives late: it takes the anonymous ID.
        let plan = stitch(&store, link(5, "m5", &[uid("u1"), anon("a")]), &rules);
        let u1 = ProfileId::for_identifier(&uid("u1"));
        assert!(plan.assignments.contains(&(anon("a"), u1)));
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].message_id, "m10");
    }

    #[test]
    fn component_links_follow_refused_links_too() {
        let rules = Rules::default();
        let store = vec![
            link(1, "m1", &[uid("u1"), anon("a")]),
            link(2, "m2", &[uid("u2"), anon("a")]),
            link(3, "m3", &[uid("u2"), email("x@y.example")]),
            link(4, "m4", &[uid("u9")]),
        ];
        let got = component_links(&store, &[email("x@y.example")], &rules);
        assert_eq!(got.len(), 3);
        assert!(component_links(&store, &[uid("nobody")], &rules).is_empty());
    }

    #[test]
    fn default_rules_match_the_documented_defaults() {
        let rules = Rules::default();
        assert_eq!(rules.limit(&IdType::UserId), Some(1));
        assert_eq!(rules.limit(&IdType::Email), Some(5));
        assert_eq!(rules.limit(&IdType::Phone), Some(5));
        assert_eq!(rules.limit(&IdType::External("x".into())), Some(5));
        assert_eq!(rules.limit(&IdType::CookieId), None);
        assert_eq!(rules.limit(&IdType::AnonymousId), None);
        assert_eq!(rules.limit(&IdType::DeviceId), None);
        assert!(rules.rank(IdClass::UserId) < rules.rank(IdClass::Email));
        assert!(rules.rank(IdClass::CookieId) < rules.rank(IdClass::DeviceId));
        assert!(rules.rank(IdClass::DeviceId) < rules.rank(IdClass::AnonymousId));
        assert_eq!((rules.max_identifiers, rules.max_merges), (1000, 100));
        assert_eq!(Rules::from_json(&json!({})).unwrap(), rules);
    }

    #[test]
    fn rules_from_json_reads_every_field() {
        let rules = Rules::from_json(&json!({
            "limits": {"email": 2, "external": null, "external:GA_Client_ID": 1, "cookie_id": 3},
            "priority": ["email", "user_id"],
            "blocked": ["*@mailinator.com"],
            "useDefaultBlocked": false,
            "hashPii": true,
            "maxIdentifiers": 50,
            "maxMerges": 0
        }))
        .unwrap();
        assert_eq!(rules.limit(&IdType::Email), Some(2));
        assert_eq!(rules.limit(&IdType::External("other".into())), None);
        assert_eq!(
            rules.limit(&IdType::External("ga_client_id".into())),
            Some(1)
        );
        assert_eq!(rules.limit(&IdType::CookieId), Some(3));
        assert_eq!(
            rules.priority[..3],
            [IdClass::Email, IdClass::UserId, IdClass::Phone]
        );
        assert_eq!(rules.priority.len(), 7);
        assert!(rules.is_blocked("x@mailinator.com"));
        assert!(!rules.is_blocked("guest"));
        assert!(rules.hash_pii);
        assert_eq!((rules.max_identifiers, rules.max_merges), (50, 0));
    }

    #[test]
    fn rules_from_json_names_the_bad_field() {
        let err = |v: Value| Rules::from_json(&v).unwrap_err();
        let e = err(json!([]));
        assert_eq!((e.code(), e.field()), ("invalid_identity_config", None));
        let e = err(json!({"limit": {}}));
        assert_eq!(
            (e.code(), e.field()),
            ("unknown_identity_field", Some("limit"))
        );
        let e = err(json!({"limits": {"email": 0}}));
        assert_eq!(
            (e.code(), e.field()),
            ("invalid_identity_field", Some("limits.email"))
        );
        let e = err(json!({"limits": {"emails": 1}}));
        assert_eq!(
            (e.code(), e.field()),
            ("unknown_id_type", Some("limits.emails"))
        );
        let e = err(json!({"priority": ["email", "phone", "email"]}));
        assert_eq!(
            (e.code(), e.field()),
            ("duplicate_priority", Some("priority[2]"))
        );
        let e = err(json!({"priority": ["email", 3]}));
        assert_eq!(e.field(), Some("priority[1]"));
        let e = err(json!({"blocked": ["ok", false]}));
        assert_eq!(e.field(), Some("blocked[1]"));
        let e = err(json!({"maxIdentifiers": 0}));
        assert_eq!(e.field(), Some("maxIdentifiers"));
        let e = err(json!({"hashPii": "yes"}));
        assert_eq!(e.field(), Some("hashPii"));
        assert!(e.to_string().contains("hashPii"));
    }

    // ---- properties ----

    fn tight_rules() -> Rules {
        let mut rules = Rules::default();
        rules.limits.insert(IdType::Email, Some(2));
        rules.limits.insert(IdType::CookieId, Some(2));
        rules.max_identifiers = 5;
        rules.max_merges = 1;
        rules
    }

    fn arb_rules() -> impl Strategy<Value = Rules> {
        prop_oneof![Just(Rules::default()), Just(tight_rules())]
    }

    fn arb_link() -> impl Strategy<Value = Link> {
        (
            0i64..12,
            0u8..30,
            proptest::option::of(0u8..4),
            proptest::collection::vec(0u8..5, 0..3),
            proptest::option::of(0u8..6),
            proptest::option::of(0u8..4),
        )
            .prop_filter_map("a link needs an identifier", |(ts, m, u, es, a, c)| {
                let mut ids: Vec<Identifier> = Vec::new();
                ids.extend(u.map(|u| uid(&format!("u{u}"))));
                ids.extend(es.iter().map(|e| email(&format!("e{e}@x.example"))));
                ids.extend(a.map(|a| anon(&format!("a{a}"))));
                ids.extend(c.map(|c| cookie(&format!("c{c}"))));
                (!ids.is_empty()).then(|| Link::new(ts, format!("m{m}"), ids))
            })
    }

    fn arb_links() -> impl Strategy<Value = Vec<Link>> {
        proptest::collection::vec(arb_link(), 1..24)
            .prop_flat_map(|links| {
                let n = links.len();
                (Just(links), proptest::collection::vec(0..n, 0..4))
            })
            .prop_map(|(mut links, dups)| {
                for i in dups {
                    if let Some(l) = links.get(i).cloned() {
                        links.push(l);
                    }
                }
                links
            })
    }

    fn arb_case() -> impl Strategy<Value = (Vec<Link>, Vec<Link>, Rules)> {
        (arb_links(), arb_rules()).prop_flat_map(|(links, rules)| {
            (Just(links.clone()).prop_shuffle(), Just(links), Just(rules))
        })
    }

    fn assignment_map(p: &Partition) -> BTreeMap<Identifier, ProfileId> {
        p.profiles
            .iter()
            .flat_map(|prof| {
                prof.identifiers
                    .iter()
                    .map(|id| (id.clone(), prof.id.clone()))
            })
            .collect()
    }

    fn arb_identifier() -> impl Strategy<Value = Identifier> {
        let kind = prop_oneof![
            Just(IdType::UserId),
            Just(IdType::Email),
            Just(IdType::Phone),
            Just(IdType::CookieId),
            Just(IdType::AnonymousId),
            Just(IdType::DeviceId),
            "[a-z:%_.]{1,8}".prop_map(IdType::External),
        ];
        (kind, "\\PC{1,12}").prop_map(|(kind, value)| Identifier::new(kind, value))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn partition_is_independent_of_order_and_duplicates((shuffled, links, rules) in arb_case()) {
            let a = partition(&links, &rules);
            let b = partition(&shuffled, &rules);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn folding_stitch_in_any_arrival_order_equals_the_batch_partition(
            (arrival, links, rules) in arb_case()
        ) {
            let mut store: Vec<Link> = Vec::new();
            let mut assigned: BTreeMap<Identifier, ProfileId> = BTreeMap::new();
            for new in arrival {
                let fragment = component_links(&store, &new.identifiers, &rules);
                let seen = fragment.iter().any(|l| rules.canonical_link(l) == rules.canonical_link(&new));
                let plan = stitch(&fragment, new.clone(), &rules);
                prop_assert_eq!(plan.is_new_link, !seen);
                if !plan.is_new_link {
                    prop_assert!(plan.merges.is_empty());
                    prop_assert!(plan.conflicts.is_empty());
                    for (id, p) in &plan.assignments {
                        prop_assert_eq!(assigned.get(id), Some(p));
                    }
                }
                for merge in &plan.merges {
                    prop_assert!(plan.assignments.iter().all(|(_, p)| *p != merge.from));
                }
                assigned.extend(plan.assignments);
                store.push(new);
            }
            prop_assert_eq!(assigned, assignment_map(&partition(&links, &rules)));
        }

        #[test]
        fn no_profile_holds_two_user_ids((_, links, rules) in arb_case()) {
            for profile in partition(&links, &rules).profiles {
                let users = profile.identifiers.iter().filter(|id| id.kind == IdType::UserId).count();
                prop_assert!(users <= 1);
                for (kind, n) in profile.identifiers.iter().fold(BTreeMap::new(), |mut m, id| {
                    *m.entry(id.kind.clone()).or_insert(0usize) += 1;
                    m
                }) {
                    prop_assert!(rules.limit(&kind).is_none_or(|l| n <= l));
                }
                prop_assert!(profile.identifiers.len() <= rules.max_identifiers);
            }
        }

        #[test]
        fn every_identifier_ends_in_exactly_one_profile((_, links, rules) in arb_case()) {
            let p = partition(&links, &rules);
            let input: BTreeSet<&Identifier> = links.iter().flat_map(|l| &l.identifiers).collect();
            let mut count: BTreeMap<&Identifier, usize> = BTreeMap::new();
            for id in p.profiles.iter().flat_map(|prof| &prof.identifiers) {
                *count.entry(id).or_insert(0) += 1;
            }
            prop_assert_eq!(count.keys().copied().collect::<BTreeSet<_>>(), input);
            prop_assert!(count.values().all(|n| *n == 1));
            let ids: BTreeSet<&ProfileId> = p.profiles.iter().map(|prof| &prof.id).collect();
            prop_assert_eq!(ids.len(), p.profiles.len());
        }

        #[test]
        fn identifier_text_form_round_trips(id in arb_identifier()) {
            prop_assert_eq!(Identifier::parse(&id.to_string()), Some(id));
        }
    }
}
