//! # seam-core
//!
//! The pure logic shared by Seam's browser SDK (`seam-sdk`) and edge collector (`seam-edge`):
//! the event model and its validation, request decoding, ID and time formats, write plans, the
//! consent model (GCM v2 merge rules, TCF map, GPC), the SDK's durable outbox and retry policy,
//! admin access, privacy and retention plans, and personalisation (computed traits, segments,
//! recommendations: `docs/personalisation.md`, and the spacing of their refreshes).
//!
//! Nothing here touches a platform: no web-sys, no worker, no clock, no randomness. Time and
//! random bytes come in as arguments; functions return values or plans (lists of writes) that
//! the caller executes. That keeps every rule natively testable and identical on both sides.
//!
//! Without the default `std` feature the crate is `no_std` + `alloc` and holds only what the
//! browser SDK needs (`consent` model, `draft`, `id`, `jsontext`, `outbox`, `time`): the SDK ships
//! without std's panic and formatting machinery.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

#[cfg(feature = "std")]
pub mod access;
#[cfg(feature = "std")]
pub mod auth;
#[cfg(feature = "std")]
pub mod candidates;
#[cfg(feature = "std")]
pub mod coalesce;
#[cfg(feature = "std")]
pub mod computed;
pub mod consent;
#[cfg(feature = "std")]
pub mod decide;
pub mod draft;
#[cfg(feature = "std")]
pub mod enrich;
#[cfg(feature = "std")]
pub mod event;
#[cfg(feature = "std")]
pub mod graph_plan;
pub mod id;
#[cfg(feature = "std")]
pub mod identity;
#[cfg(feature = "std")]
pub mod ingest;
#[cfg(feature = "std")]
pub mod ingest_plan;
pub mod jsontext;
pub mod outbox;
#[cfg(feature = "std")]
pub mod personalise;
#[cfg(feature = "std")]
pub mod plan;
#[cfg(feature = "std")]
pub mod privacy;
#[cfg(feature = "std")]
pub mod profile;
#[cfg(feature = "std")]
pub mod recommend;
#[cfg(feature = "std")]
pub mod refresh;
#[cfg(feature = "std")]
pub mod resolution;
#[cfg(feature = "std")]
pub mod retention;
#[cfg(feature = "std")]
pub mod segment;
#[cfg(feature = "std")]
pub mod slot;
#[cfg(feature = "std")]
pub mod source;
pub mod time;

/// Library name reported in `context.library.name`.
pub const LIBRARY_NAME: &str = "seam.js";
/// This crate's version, reported in `context.library.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
