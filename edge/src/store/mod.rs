//! Storage: the only code that touches D1 and KV. It executes core's plans, holds the few
//! queries that are not plans, and publishes KV snapshots. Nothing here knows about routes.

pub mod archive_index;
pub mod archived;
pub mod audiences;
pub mod audit;
pub mod config;
pub mod d1;
pub mod decisions;
pub mod deliveries;
pub mod destinations;
pub mod documents;
pub mod events;
pub mod identity;
pub mod imports;
pub mod journeys;
pub mod keys;
pub mod personalisation;
pub mod privacy;
pub mod profiles;
pub mod retention;
pub mod shards;
pub mod snapshots;
pub mod sources;
pub mod sweep;
