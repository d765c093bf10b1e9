//! # seam-core
//!
//! The pure logic shared by Seam's browser SDK (`seam-sdk`) and edge collector (`seam-edge`).
//! Nothing here touches a platform: no web-sys, no worker, no clock, no randomness. Time and
//! random bytes come in as arguments; functions return values or plans (lists of writes) that
//! the caller executes. That keeps every rule natively testable and identical on both sides.
//!
//! The folders follow the architecture:
//!
//! - [`format`](mod@format): IDs, ISO-8601 time, JSON text writing.
//! - [`delivery`]: the SDK's event drafts, durable outbox and retry policy.
//! - [`consent`]: the consent model (GCM v2 merge rules, TCF map, GPC), read by SDK and edge.
//! - [`plan`]: SQL write plans as data, which every edge-side domain returns.
//! - [`collect`]: write-key auth, sources, the event model and its validation, request decoding,
//!   enrichment and the edge's consent policy.
//! - [`identity`]: the identity graph and its stitching, the graph's write plans, profiles.
//! - [`personalise`]: the per-profile pipeline and its parts: computed traits, segments,
//!   recommendations and their candidate cache, slots, refresh spacing
//!   (`docs/personalisation.md`).
//! - [`archive`]: raw events as gzipped NDJSON objects for R2, partitioned by day and source.
//! - [`privacy`]: suppression, erasure, consent history and audit plans, retention, admin access.
//!
//! Without the default `std` feature the crate is `no_std` + `alloc` and holds only what the
//! browser SDK links (`format`, `delivery`, `consent`): the SDK ships without std's panic and
//! formatting machinery. Everything else is edge-side and needs `std`.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

#[cfg(feature = "std")]
pub mod activate;
#[cfg(feature = "std")]
pub mod archive;
pub mod consent;
pub mod delivery;
pub mod format;
#[cfg(feature = "std")]
pub mod plan;

#[cfg(feature = "std")]
pub mod collect;
#[cfg(feature = "std")]
pub mod identity;
#[cfg(feature = "std")]
pub mod journey;
#[cfg(feature = "std")]
pub mod personalise;
#[cfg(feature = "std")]
pub mod privacy;

/// Library name reported in `context.library.name`.
pub const LIBRARY_NAME: &str = "seam.js";
/// This crate's version, reported in `context.library.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
