//! Identifiers: their types and rank classes, the text form that is their storage key, and
//! normalisation (with optional hashing) so that one person's value is one identifier however a
//! client wrote it.

use std::fmt;

use sha2::{Digest, Sha256};

use super::rules::Rules;

/// The rank classes of identifier types: [`IdType`] without the external type's name.
#[allow(missing_docs)] // the variants say what they are
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdClass {
    UserId,
    Email,
    Phone,
    External,
    /// The collector's first-party cookie ID.
    CookieId,
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

    pub(super) fn default_rank(self) -> usize {
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
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    pub kind: IdType,
    /// The value, already normalised (see the module docs).
    pub value: String,
}

/// The hash `hashPii` stores for a normalised email or phone: SHA-256 of the deployment's
/// secret salt, a newline and the value, or of the value alone without a salt.
pub fn pii_hash(value: &str, rules: &Rules) -> String {
    match &rules.pii_salt {
        Some(salt) => sha256_hex(format!("{salt}\n{value}").as_bytes()),
        None => sha256_hex(value.as_bytes()),
    }
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
            pii_hash(&value, rules)
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

/// An email or phone claimed in a free-text field, as the identity graph keeps it unhashed:
/// with an `@` an email, else a phone; a SHA-256 hex value (a body whose contacts the
/// collector hashed) as it is, lower-cased. No block list: erasure compares it with a
/// person's own values, which never are blocked ones.
pub fn contact_value(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    if is_sha256_hex(trimmed) {
        return Some(trimmed.to_ascii_lowercase());
    }
    let class = if trimmed.contains('@') {
        IdClass::Email
    } else {
        IdClass::Phone
    };
    normalize_value(class, trimmed)
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

pub(crate) fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::format::encode::hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::{anon, cookie, email, uid};
    use proptest::prelude::*;

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
        fn identifier_text_form_round_trips(id in arb_identifier()) {
            prop_assert_eq!(Identifier::parse(&id.to_string()), Some(id));
        }
    }
}
