//! # seam-core
//!
//! The pure logic shared by Seam's browser SDK (`seam-sdk`) and edge collector (`seam-edge`):
//! the event model and its validation, request decoding, ID and time formats, write plans, the
//! consent model (GCM v2 merge rules, TCF map, GPC) and the SDK's durable outbox and retry policy.
//!
//! Nothing here touches a platform: no web-sys, no worker, no clock, no randomness. Time and
//! random bytes come in as arguments; functions return values or plans (lists of writes) that
//! the caller executes. That keeps every rule natively testable and identical on both sides.

pub mod auth;
pub mod consent;
pub mod draft;
pub mod enrich;
pub mod event;
pub mod graph_plan;
pub mod id;
pub mod identity;
pub mod ingest;
pub mod jsontext;
pub mod outbox;
pub mod plan;
pub mod profile;
pub mod source;
pub mod time;

/// Library name reported in `context.library.name`.
pub const LIBRARY_NAME: &str = "seam.js";
/// This crate's version, reported in `context.library.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
