//! Routes. Each is decode -> core -> execute plan -> encode; none calls another.

pub mod admin;
pub mod console;
pub mod decide;
pub mod demo;
pub mod destinations;
pub mod events;
pub mod export;
pub mod health;
pub mod hooks;
pub mod import;
pub mod ingest;
pub mod journeys;
pub mod overview;
pub mod preflight;
pub mod preview;
pub mod privacy;
pub mod profiles;
pub mod render;
pub mod segments;
