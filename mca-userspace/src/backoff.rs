//! How MCA waits before trying again a stream that failed (a fan-out's watch of one cluster,
//! a list cache's reflector): each failure in a row doubles the wait up to a bound, a success
//! starts again from the first, and every wait is spread over half to one and a half times
//! itself, so the sidecars of many pods that lost the same API server do not come back in
//! step. (Health probes back off in their own terms: multiples of their interval, see
//! [`crate::cluster::Health`].)

use std::time::Duration;

/// A jittered exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    last: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling up to `last`.
    pub const fn new(first: Duration, last: Duration) -> Self {
        Self {
            first,
            last,
            next: first,
        }
    }

    /// The wait before the next attempt, jittered; the one after is twice as long.
    pub fn next(&mut self) -> Duration {
        self.next_with(fastrand::f64())
    }

    /// [`Self::next`] with `jitter` in `[0, 1)` in place of a random one.
    fn next_with(&mut self, jitter: f64) -> Duration {
        let wait = self.next.mul_f64(0.5 + jitter.clamp(0.0, 1.0));
        self.next = (self.next * 2).min(self.last);
        wait
    }

    /// The wait the next attempt has before jitter (for logs).
    pub fn current(&self) -> Duration {
        self.next
    }

    /// After a success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_its_bound_and_starts_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let waits: Vec<u128> = (0..4).map(|_| backoff.next_with(0.5).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.current(), Duration::from_millis(250));
    }

    #[test]
    fn jitter_spreads_a_wait_over_half_to_one_and_a_half_times_it() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(backoff.clone().next_with(0.0), Duration::from_secs(1));
        assert_eq!(backoff.clone().next_with(1.0), Duration::from_secs(3));
        assert_eq!(backoff.clone().next_with(7.0), Duration::from_secs(3));
        for _ in 0..100 {
            let wait = backoff.clone().next();
            assert!((Duration::from_secs(1)..=Duration::from_secs(3)).contains(&wait));
        }
    }
}
