//! Storage: executes core's write plans on D1.

pub mod d1;
