//! Routes. Each is decode -> core -> execute plan -> encode.

pub mod health;
pub mod ingest;
pub mod preflight;
pub mod profiles;
