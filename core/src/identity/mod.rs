//! The identity graph: which identifiers belong to the same person, decided deterministically.
//!
//! # Identifiers
//!
//! Every stored event contributes a [`Link`]: the [`Identifier`]s it carries plus its ordering key
//! `(timestamp_ms, message_id)`. [`identifiers_of`] reads them from the validated
//! [`Event`](crate::collect::event::Event):
//!
//! | identifier type        | read from                                                           |
//! |------------------------|---------------------------------------------------------------------|
//! | [`IdType::UserId`]     | `userId`; `previousId` of an `alias` unless it looks anonymous¹      |
//! | [`IdType::Email`]      | `traits.email` (identify only), `context.traits.email`              |
//! | [`IdType::Phone`]      | `traits.phone` (identify only), `context.traits.phone`              |
//! | [`IdType::External`]   | `context.externalIds[]` with `collection` `"users"` or missing²      |
//! | [`IdType::CookieId`]   | `context.seam.cookieId` (the collector's cookie, before 2026-12-06)³ |
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
//! ³ Since 2026-12-06 the collector's sealed ID cookie replaces a browser event's
//!   `anonymousId` instead (`collect::cookie`). From a browser (a proof marker), an anonymous ID
//!   counts only as the event's own `anonymousId`: one named as an alias's `previousId` or in
//!   `context.externalIds` is dropped, since anonymous IDs are not secret.
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
//! SHA-256 of their normalised value (salted: [`pii_hash`]); stored event bodies hold a value of
//! neither kind as `unusable:` and its hash in letters (`privacy::hash_pii_fields`).
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
//! ([`ProfileId::salted`] of its best identifier: highest priority, then smallest text)
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
//!
//! # The parts
//!
//! Identifiers and their text form, normalisation and hashing (`identifier.rs`); the rules and
//! their configuration (`rules.rs`); what an event carries (`extract.rs`); links, profiles and
//! conflicts (`graph.rs`); what incremental stitching reads and reports (`stitching.rs`); the
//! partition engine and its two entry points, [`partition`] and [`stitch`] (`resolve.rs`). The
//! identity graph's write plans ([`graph_plan`]) and profiles' read model ([`profile`]) build on
//! them.

pub mod census;
mod extract;
mod graph;
pub mod graph_plan;
mod identifier;
pub mod profile;
pub mod resolution;
mod resolve;
mod rules;
pub mod spread;
mod stitching;
#[cfg(test)]
pub(crate) mod test_support;

pub use extract::{claims_of, identifiers_of, mentioned_identifiers, Proof, PROOF_FIELD};
pub use graph::{Conflict, ConflictReason, Link, Partition, Profile, ProfileId};
pub use identifier::{contact_value, pii_hash, IdClass, IdType, Identifier};
pub(crate) use identifier::{is_sha256_hex, sha256_hex};
pub use resolve::{partition, stitch};
pub use rules::{IdentityConfigError, Rules};
pub use stitching::{component_links, Merge, StitchPlan};

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
