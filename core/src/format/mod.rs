//! Text formats both sides must write identically: IDs, ISO-8601 time and hand-written JSON
//! text. `no_std`: the browser SDK links all of it.

pub mod id;
pub mod jsontext;
pub mod time;
