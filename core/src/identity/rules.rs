//! Identity rules: per-type limits and caps, priority, the block list and PII hashing, read
//! from configuration that rejects unknown fields (a typo must not silently fall back to a
//! default).

use std::collections::BTreeMap;

use serde_json::Value;

use super::identifier::{IdClass, IdType, Identifier};
#[cfg(test)]
use super::Link;
use super::{DEFAULT_BLOCKED, DEFAULT_EXTERNAL_LIMIT, DEFAULT_MAX_IDENTIFIERS, DEFAULT_MAX_MERGES};

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
    /// Secret mixed into profile IDs (the `PROFILE_ID_SALT` secret), so no one can compute a
    /// person's profile ID from their user ID or email. `None`: unsalted, as before it existed.
    /// Changing it renames every profile on its next event.
    pub profile_salt: Option<String>,
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
            profile_salt: None,
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
                    if rules.max_identifiers > MAX_PROFILE_IDENTIFIERS {
                        return Err(IdentityConfigError::Invalid {
                            field: "maxIdentifiers".into(),
                            problem: "must be at most 1000",
                        });
                    }
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
    pub(super) fn canonical_ids(&self, ids: &[Identifier]) -> Vec<Identifier> {
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
    pub(super) fn canonical_link(&self, link: &Link) -> Link {
        Link {
            timestamp_ms: link.timestamp_ms,
            message_id: link.message_id.clone(),
            identifiers: self.canonical_ids(&link.identifiers),
            claimed: link.claimed.clone(),
        }
    }
}

/// [`Rules::is_blocked`] with the configured patterns lower-cased once.
pub(super) struct Blocker {
    defaults: bool,
    /// Trimmed, lower-cased patterns, each with whether it is a glob.
    patterns: Vec<(String, bool)>,
}

impl Blocker {
    pub(super) fn new(rules: &Rules) -> Self {
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

    pub(super) fn blocks(&self, value: &str) -> bool {
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

/// Most identifiers `maxIdentifiers` may allow a profile (its default): the profile's row holds
/// them all (`profile_members`), and D1 refuses rows over 2 MB. An identifier of 256 bytes, all
/// control characters, is about 1.6 KB of JSON.
pub const MAX_PROFILE_IDENTIFIERS: usize = 1000;

/// A mistake in identity configuration. Each variant has a stable [`IdentityConfigError::code`]
/// and, where there is one, names the field ([`IdentityConfigError::field`]).
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityConfigError {
    /// The configuration is not a JSON object.
    #[error("identity rules must be a JSON object")]
    NotAnObject,
    /// A top-level field that does not exist.
    #[error("identity rules: unknown field {field}")]
    UnknownField { field: String },
    /// A field has the wrong type or an out-of-range value.
    #[error("identity rules: {field} {problem}")]
    Invalid {
        /// The field, e.g. `limits.email` or `priority[2]`.
        field: String,
        problem: &'static str,
    },
    /// An identifier type name that does not exist.
    #[error("identity rules: {field}: unknown identifier type {name:?}")]
    UnknownIdType { field: String, name: String },
    /// A type listed twice in `priority`.
    #[error("identity rules: {field}: {name} is listed more than once")]
    DuplicatePriority {
        /// The field of the second listing.
        field: String,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::{anon, event, link, uid};
    use crate::identity::{identifiers_of, partition};
    use serde_json::json;

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
        let e = err(json!({"maxIdentifiers": MAX_PROFILE_IDENTIFIERS + 1}));
        assert_eq!(e.field(), Some("maxIdentifiers"));
        assert!(e.to_string().contains("at most 1000"));
        let e = err(json!({"hashPii": "yes"}));
        assert_eq!(e.field(), Some("hashPii"));
        assert!(e.to_string().contains("hashPii"));
    }
}
