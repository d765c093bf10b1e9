//! # seam-core
//!
//! The pure logic shared by Seam's browser SDK (`seam-sdk`) and edge collector (`seam-edge`):
//! the event model and its validation, request decoding, ID and time formats, write plans, and
//! personalisation (computed traits, segments, recommendations: `docs/personalisation.md`).
//!
//! Nothing here touches a platform: no web-sys, no worker, no clock, no randomness. Time and
//! random bytes come in as arguments; functions return values or plans (lists of writes) that
//! the caller executes. That keeps every rule natively testable and identical on both sides.

pub mod access;
pub mod auth;
pub mod computed;
pub mod consent;
pub mod enrich;
pub mod event;
pub mod graph_plan;
pub mod id;
pub mod identity;
pub mod ingest;
pub mod outbox;
pub mod personalise;
pub mod plan;
pub mod privacy;
pub mod profile;
pub mod recommend;
pub mod retention;
pub mod segment;
pub mod source;
pub mod time;

/// Library name reported in `context.library.name`.
pub const LIBRARY_NAME: &str = "seam.js";
/// This crate's version, reported in `context.library.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
