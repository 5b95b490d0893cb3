//! Exponential backoff with jitter, shared by registration and the MQTT link.
//!
//! The n-th delay is `base * 2^n`, capped at `cap`, then drawn uniformly from its upper half
//! ("equal jitter"): a fleet of nodes that lost the broker at the same instant spreads its
//! reconnects out instead of arriving as one wave, while no node waits less than half the
//! nominal delay.

use std::time::Duration;

/// The state of one retry sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A sequence starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The nominal (un-jittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay to wait before the next attempt, jittered; advances the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let spread = nominal.saturating_sub(half);
        let jitter_ms = rand::random_range(0..=spread.as_millis().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Jumps straight to the cap: for failures that will not go away soon (a refused
    /// credential), so the node retries slowly instead of hammering the server.
    pub fn saturate(&mut self) {
        self.attempt = 20;
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let nominal: Vec<u64> = (0..8)
            .map(|_| {
                let n = b.nominal();
                let d = b.next_delay();
                assert!(d >= n / 2 && d <= n, "{d:?} outside [{:?}, {n:?}]", n / 2);
                n.as_secs()
            })
            .collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.nominal(), Duration::from_secs(1));
        b.saturate();
        assert_eq!(b.nominal(), Duration::from_secs(30));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        for _ in 0..100 {
            let _ = b.next_delay();
        }
    }
}
