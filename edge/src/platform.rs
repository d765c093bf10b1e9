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
