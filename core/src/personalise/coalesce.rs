//! Per-key spacing of background work: at most one run per key every `spacing_ms`, with the
//! work that arrives in between folded into one trailing run.
//!
//! Why: each ingest request refreshes its profile's derived state (a D1 write batch and a KV
//! put). A busy profile (a fast shopper, a server-side import) would otherwise write its state
//! and its KV key once per request; KV accepts one write per second per key. The first request
//! of a burst runs at once, so a lone event still shows on the next page immediately; the rest
//! of the burst waits for the spacing and runs once with everything that arrived.
//!
//! Pure: the caller passes the clock, sleeps when told to, and runs what it is handed.

use std::collections::HashMap;

/// Work that can absorb later work for the same key (their union, run once).
pub trait Absorb {
    /// Folds `later` into `self`.
    fn absorb(&mut self, later: Self);
}

/// What the caller of [`Coalescer::offer`] does next.
#[derive(Debug, PartialEq)]
pub enum Offer<T> {
    /// Run this now, then call [`Coalescer::finished`].
    Run(T),
    /// Sleep this many milliseconds, then call [`Coalescer::claim`]: this caller owns the
    /// trailing run.
    Wait(i64),
    /// Folded into a trailing run another caller owns: nothing to do.
    Joined,
}

/// What the owner of a trailing run does after waiting.
#[derive(Debug, PartialEq)]
pub enum Claim<T> {
    /// Run this now, then call [`Coalescer::finished`].
    Run(T),
    /// Not yet (the spacing has not passed, or a run is still going): sleep, then claim again.
    Wait(i64),
}

struct Slot<T> {
    running: bool,
    /// When the next run may start.
    next_at: i64,
    /// Work waiting for the trailing run.
    pending: Option<T>,
}

/// How long an owner sleeps when a run is still going at its claim.
const POLL_MS: i64 = 25;

/// The spacing state of every key an isolate has seen recently.
pub struct Coalescer<T> {
    spacing_ms: i64,
    /// Keys kept before idle ones are dropped.
    capacity: usize,
    slots: HashMap<String, Slot<T>>,
}

impl<T: Absorb> Coalescer<T> {
    /// Runs at most once per `spacing_ms` per key; remembers about `capacity` keys.
    pub fn new(spacing_ms: i64, capacity: usize) -> Self {
        Coalescer {
            spacing_ms,
            capacity,
            slots: HashMap::new(),
        }
    }

    /// Offers `work` for `key` at `now`.
    pub fn offer(&mut self, key: &str, work: T, now: i64) -> Offer<T> {
        if self.slots.len() >= self.capacity && !self.slots.contains_key(key) {
            // Idle keys whose spacing has passed carry no information: drop them.
            self.slots
                .retain(|_, s| s.running || s.pending.is_some() || s.next_at > now);
        }
        let slot = self.slots.entry(key.to_owned()).or_insert(Slot {
            running: false,
            next_at: now,
            pending: None,
        });
        if let Some(pending) = &mut slot.pending {
            pending.absorb(work);
            return Offer::Joined;
        }
        if !slot.running && now >= slot.next_at {
            slot.running = true;
            slot.next_at = now + self.spacing_ms;
            return Offer::Run(work);
        }
        slot.pending = Some(work);
        Offer::Wait((slot.next_at - now).max(POLL_MS))
    }

    /// The trailing run's owner, after its wait.
    pub fn claim(&mut self, key: &str, now: i64) -> Claim<T> {
        let spacing = self.spacing_ms;
        let Some(slot) = self.slots.get_mut(key) else {
            return Claim::Wait(POLL_MS);
        };
        if slot.running || now < slot.next_at {
            return Claim::Wait((slot.next_at - now).max(POLL_MS));
        }
        match slot.pending.take() {
            Some(work) => {
                slot.running = true;
                slot.next_at = now + spacing;
                Claim::Run(work)
            }
            // Only the owner takes the pending work, so this cannot happen; waiting is harmless.
            None => Claim::Wait(POLL_MS),
        }
    }

    /// A run for `key` ended (well or not).
    pub fn finished(&mut self, key: &str) {
        if let Some(slot) = self.slots.get_mut(key) {
            slot.running = false;
        }
    }

    /// Keys with a run going or waiting.
    pub fn busy(&self) -> usize {
        self.slots
            .values()
            .filter(|s| s.running || s.pending.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Absorb for Vec<u32> {
        fn absorb(&mut self, later: Self) {
            self.extend(later);
        }
    }

    #[test]
    fn a_lone_request_runs_at_once() {
        let mut c = Coalescer::new(1000, 10);
        assert_eq!(c.offer("p1", vec![1], 0), Offer::Run(vec![1]));
        c.finished("p1");
        // Another key is independent.
        assert_eq!(c.offer("p2", vec![2], 10), Offer::Run(vec![2]));
    }

    #[test]
    fn a_burst_runs_once_more_with_everything_that_arrived_after_the_first() {
        let mut c = Coalescer::new(1000, 10);
        assert_eq!(c.offer("p1", vec![1], 0), Offer::Run(vec![1]));
        assert_eq!(c.offer("p1", vec![2], 100), Offer::Wait(900));
        assert_eq!(c.offer("p1", vec![3], 200), Offer::Joined);
        assert_eq!(c.offer("p1", vec![4], 300), Offer::Joined);
        c.finished("p1");
        assert_eq!(c.claim("p1", 1000), Claim::Run(vec![2, 3, 4]));
        // While the trailing run goes, the next arrival starts the next trailing run.
        assert_eq!(c.offer("p1", vec![5], 1100), Offer::Wait(900));
        c.finished("p1");
        assert_eq!(c.claim("p1", 2000), Claim::Run(vec![5]));
        c.finished("p1");
        assert_eq!(c.busy(), 0);
        // After a quiet spacing, a request runs at once again.
        assert_eq!(c.offer("p1", vec![6], 3000), Offer::Run(vec![6]));
    }

    #[test]
    fn the_trailing_run_waits_for_a_slow_run_to_end() {
        let mut c = Coalescer::new(1000, 10);
        assert_eq!(c.offer("p1", vec![1], 0), Offer::Run(vec![1]));
        assert_eq!(c.offer("p1", vec![2], 500), Offer::Wait(500));
        // The first run takes longer than the spacing: no two runs for a key overlap.
        assert_eq!(c.claim("p1", 1000), Claim::Wait(POLL_MS));
        c.finished("p1");
        assert_eq!(c.claim("p1", 1300), Claim::Run(vec![2]));
    }

    #[test]
    fn idle_keys_are_dropped_when_full_but_waiting_work_is_kept() {
        let mut c = Coalescer::new(1000, 2);
        assert_eq!(c.offer("a", vec![1], 0), Offer::Run(vec![1]));
        c.finished("a");
        assert_eq!(c.offer("b", vec![2], 0), Offer::Run(vec![2]));
        assert_eq!(c.offer("b", vec![3], 10), Offer::Wait(990));
        // "a" is idle and past its spacing at 5000; "b" still owes a run.
        assert_eq!(c.offer("c", vec![4], 5000), Offer::Run(vec![4]));
        assert!(!c.slots.contains_key("a"));
        c.finished("b");
        assert_eq!(c.claim("b", 5000), Claim::Run(vec![3]));
    }
}
