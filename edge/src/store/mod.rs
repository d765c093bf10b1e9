//! Storage: executes core's write plans on D1 and reads configuration from it.

pub mod d1;
pub mod sources;
