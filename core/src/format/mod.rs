//! Text formats both sides must write identically: IDs, ISO-8601 time, hand-written JSON
//! text, hex and percent-encoding. `no_std`: the browser SDK links all of it.

pub mod ascii;
pub mod encode;
pub mod id;
pub mod jsontext;
pub mod time;
