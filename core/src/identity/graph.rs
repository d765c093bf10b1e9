//! The graph and what resolving it produces: links (one per event), profiles named by their
//! best identifier, and the conflicts of refused unions.

use std::fmt;

use sha2::{Digest, Sha256};

use super::extract::{claims_of, identifiers_of};
use super::identifier::{IdType, Identifier};
use super::rules::Rules;
use super::{PROFILE_ID_HEX_CHARS, PROFILE_ID_PREFIX};
use crate::collect::event::Event;
use crate::format::encode::hex_digit;

/// One event's contribution to the graph: its identifiers and its ordering key.
///
/// Field order makes the derived `Ord` the processing order: `(timestamp_ms, message_id,
/// identifiers, claimed)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// The event's (skew-corrected) time.
    pub timestamp_ms: i64,
    /// The event's `messageId`.
    pub message_id: String,
    /// The identifiers it carries.
    pub identifiers: Vec<Identifier>,
    /// Those of `identifiers` the sender only claims (a device ID from a browser source): a
    /// claim may bring identifiers seen for the first time into a profile but never joins two
    /// that exist.
    pub claimed: Vec<Identifier>,
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
            claimed: Vec::new(),
        }
    }

    /// The same link with `claimed` (each must also be in `identifiers`) marked as claims.
    pub fn with_claimed(mut self, mut claimed: Vec<Identifier>) -> Self {
        claimed.retain(|c| self.identifiers.contains(c));
        claimed.sort();
        claimed.dedup();
        self.claimed = claimed;
        self
    }

    /// Whether `id` is only claimed by this link.
    pub fn is_claimed(&self, id: &Identifier) -> bool {
        self.claimed.contains(id)
    }

    /// The link an event contributes ([`identifiers_of`] plus its ordering key), its claims
    /// marked ([`claims_of`]).
    pub fn from_event(event: &Event, rules: &Rules) -> Self {
        let identifiers = identifiers_of(event, rules);
        let claimed = claims_of(event, &identifiers);
        Self::new(event.timestamp_ms, event.message_id.clone(), identifiers).with_claimed(claimed)
    }
}

/// A canonical profile ID: `prof_` + the first 20 hex digits of the SHA-256 of the text form of
/// the profile's best identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileId(String);

impl ProfileId {
    /// The ID of a profile whose best identifier is `best`, unsalted.
    pub fn for_identifier(best: &Identifier) -> Self {
        Self::salted(best, None)
    }

    /// The ID of a profile whose best identifier is `best`, with the deployment's secret salt
    /// ([`Rules::profile_salt`]) when it has one.
    pub fn salted(best: &Identifier, salt: Option<&str>) -> Self {
        let mut hasher = Sha256::new();
        if let Some(salt) = salt {
            hasher.update(salt.as_bytes());
            hasher.update(b"\n");
        }
        hasher.update(best.to_string().as_bytes());
        let digest = hasher.finalize();
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
    /// Only a claim joins the two: an identifier the sender merely claims belongs to a profile
    /// that already exists.
    Unproven,
}

impl ConflictReason {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TypeLimit(IdType::UserId) => "user_id_conflict",
            Self::TypeLimit(_) => "identifier_limit",
            Self::MaxIdentifiers => "max_identifiers",
            Self::MaxMerges => "max_merges",
            Self::Unproven => "unverified_claim",
        }
    }
}

/// A link that could not join everything it carries.
#[allow(missing_docs)] // the fields say what they hold
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::partition;
    use crate::identity::test_support::{anon, link, uid};

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
    fn a_salted_profile_id_cannot_be_computed_from_the_user_id() {
        let rules = Rules {
            profile_salt: Some("deployment secret".into()),
            ..Rules::default()
        };
        let p = partition(&[link(1, "m", &[uid("u1"), anon("x")])], &rules);
        assert_ne!(p.profiles[0].id, ProfileId::for_identifier(&uid("u1")));
        assert_eq!(
            p.profiles[0].id,
            ProfileId::salted(&uid("u1"), Some("deployment secret"))
        );
        assert!(p.profiles[0].id.as_str().starts_with("prof_"));
    }
}
