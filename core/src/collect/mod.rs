//! The collector's front half: who may send ([`auth`], [`source`]), what an event is
//! ([`event`]), decoding a request into per-event outcomes ([`ingest`]) and what the edge adds to
//! and removes from each event before storing it ([`enrich`]), and how far a browser's identity
//! claims are proven ([`proof`]); the collector's ID cookie ([`cookie`]); events held for D1
//! ([`deferred`]).

pub mod auth;
pub mod cookie;
pub mod deferred;
pub mod enrich;
pub mod event;
pub mod import;
pub mod ingest;
pub mod ingest_plan;
pub mod live;
pub mod proof;
pub mod source;
