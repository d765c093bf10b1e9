//! The SDK's side of delivery: events as it records them and the durable outbox that sends them.
//! `no_std`: the browser SDK links all of it.

pub mod draft;
pub mod outbox;
