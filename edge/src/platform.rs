//! The only place the Worker reads the clock, draws random bytes or sleeps. A request reads the
//! clock once (`app`) and passes the time down; background work that runs later reads it again
//! here.

use std::time::Duration;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    worker::Date::now().as_millis() as i64
}

/// Random bytes from the platform's CSPRNG. Workers always provide `crypto.getRandomValues`;
/// `Math.random` only guards the impossible case so an ID is never all zeros.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        for b in &mut bytes {
            *b = (worker::js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes
}

/// Wall-clock marks of a request's phases, for a `Server-Timing` header. The clock moves only
/// at I/O, so a phase's time is what it waited on storage.
pub struct Spans {
    last: i64,
    marks: Vec<(&'static str, i64)>,
}

impl Spans {
    /// Starts timing now.
    pub fn start() -> Self {
        Spans {
            last: now_ms(),
            marks: Vec::new(),
        }
    }

    /// Ends the phase `name` now.
    pub fn mark(&mut self, name: &'static str) {
        let now = now_ms();
        self.marks.push((name, now - self.last));
        self.last = now;
    }

    /// Appends `other`'s phases.
    pub fn extend(&mut self, other: Spans) {
        self.marks.extend(other.marks);
        self.last = self.last.max(other.last);
    }

    /// `name;dur=ms, ...`.
    pub fn header(&self) -> String {
        self.marks
            .iter()
            .map(|(name, ms)| format!("{name};dur={ms}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Waits `ms` milliseconds without blocking the isolate.
pub async fn sleep(ms: u64) {
    worker::Delay::from(Duration::from_millis(ms)).await;
}

/// Logs an error to the Worker's console (stderr in native tests, where there is no console).
pub fn log_error(message: &str) {
    #[cfg(target_arch = "wasm32")]
    worker::console_error!("{message}");
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{message}");
}
