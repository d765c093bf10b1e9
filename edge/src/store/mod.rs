//! Storage: executes core's write plans on D1, reads configuration and profiles from it, and
//! publishes KV snapshots.

pub mod d1;
pub mod identity;
pub mod keys;
pub mod personalisation;
pub mod privacy;
pub mod profiles;
pub mod sources;
