//! Segments (audiences): a small declarative JSON rule language over traits, computed traits and
//! event counts in time windows, validated once when loaded, evaluated per event (or at decision
//! time) with `now` passed in, and diffed against stored memberships into entered/exited
//! transitions and the internal `Segment Entered` / `Segment Exited` events.
//!
//! ```json
//! {"segments": [
//!   {"name": "high_value", "rule": {"gt": [{"computed": "lifetime_value"}, 500]}},
//!   {"name": "interested_in", "forEach": {"computed": "category_views"},
//!    "rule": {"gte": [{"each": "value"}, 3]}}
//! ]}
//! ```
//!
//! Rules: `and`/`or` (lists), `not`, `eq` `ne` `gt` `gte` `lt` `lte` (`[a, b]`), `in`
//! (`[a, list]`), `exists` (present and not null/empty), `within_days` / `within_hours` /
//! `within_minutes` (`[time, n]`: the time is at most n units before `now`). Operands:
//! `{"trait": "address.city"}`, `{"computed": "orders_count"}`,
//! `{"count": {"event": "Order Completed", "within_hours": 1}}`, `{"each": "key"|"value"}`
//! (in `forEach` segments), `{"value": <any>}`, or a plain JSON literal.
//!
//! The parts: the rule language and its validation (`config.rs`), evaluation and what time alone
//! can change (`eval.rs`), and memberships, their transitions and writes (`membership.rs`).

pub mod audience;
mod config;
mod eval;
mod membership;

pub use config::{
    event_condition, profile_condition, Cmp, Operand, Rule, SegmentConfigError, SegmentDef,
    SegmentSet,
};
pub use eval::{evaluate, holds_for, holds_for_event, time_of, Clock, Subject};
pub(crate) use membership::version_guard;
pub use membership::{
    current, diff, membership_writes, recorded_writes, timed_transition_events, transition_events,
    Membership, MembershipDiff, Memberships, Transition,
};

/// Deepest rule nesting accepted.
pub const MAX_DEPTH: usize = 8;
/// Most nodes (rules and operands) in one segment's rule.
pub const MAX_NODES: usize = 100;
/// Most segments one configuration may declare.
pub const MAX_SEGMENTS: usize = 200;
/// Most memberships one `forEach` segment yields per profile.
pub const MAX_EACH: usize = 20;
/// Exited membership records kept per profile (oldest exits dropped first).
pub const MAX_EXITED: usize = 100;
/// Name of the internal event emitted on entering a segment.
pub const SEGMENT_ENTERED: &str = "Segment Entered";
/// Name of the internal event emitted on leaving a segment.
pub const SEGMENT_EXITED: &str = "Segment Exited";

const MINUTE_MS: f64 = 60_000.0;
