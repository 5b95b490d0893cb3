//! Replay protection: a per-sender sliding window over (epoch, counter).
//!
//! Every sender persists an epoch that it bumps before each connection and counts messages
//! from 0 within it, so (epoch, counter) never repeats. The receiver keeps, per sender, the
//! newest epoch it has seen, the highest counter in it, and a 64-bit bitmap of which of the 64
//! counters below that were seen. It refuses anything already seen, anything older than the
//! window, and anything from an older epoch. Out-of-order delivery within the window (several
//! fleet processes, QoS 1 redelivery) is accepted once.
//!
//! The window is plain data so the fleet can keep it in its store and update it in the same
//! transaction as the message's effects.

use serde::{Deserialize, Serialize};

/// Counters this far below the highest one seen are still accepted once.
pub const WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplayWindow {
    pub epoch: u64,
    /// Highest counter accepted in `epoch` (meaningless while `bitmap == 0`).
    pub top: u64,
    /// Bit i set: counter `top - i` was accepted.
    pub bitmap: u64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("epoch {got} is older than the current epoch {current}")]
    StaleEpoch { got: u64, current: u64 },
    #[error("counter {counter} in epoch {epoch} was already accepted")]
    Duplicate { epoch: u64, counter: u64 },
    #[error("counter {counter} is older than the window (top {top})")]
    TooOld { counter: u64, top: u64 },
}

impl ReplayError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReplayError::StaleEpoch { .. } => "replay_stale_epoch",
            ReplayError::Duplicate { .. } => "replay_duplicate",
            ReplayError::TooOld { .. } => "replay_too_old",
        }
    }
}

impl ReplayWindow {
    /// Checks (epoch, counter) without changing anything.
    pub fn check(&self, epoch: u64, counter: u64) -> Result<(), ReplayError> {
        self.clone_accept(epoch, counter).map(|_| ())
    }

    /// Accepts (epoch, counter) if it is fresh, recording it; refuses it otherwise.
    pub fn accept(&mut self, epoch: u64, counter: u64) -> Result<(), ReplayError> {
        *self = self.clone_accept(epoch, counter)?;
        Ok(())
    }

    fn clone_accept(&self, epoch: u64, counter: u64) -> Result<ReplayWindow, ReplayError> {
        let fresh_epoch = self.bitmap == 0 && self.epoch <= epoch;
        if epoch > self.epoch || fresh_epoch {
            return Ok(ReplayWindow {
                epoch,
                top: counter,
                bitmap: 1,
            });
        }
        if epoch < self.epoch {
            return Err(ReplayError::StaleEpoch {
                got: epoch,
                current: self.epoch,
            });
        }
        if counter > self.top {
            let shift = counter - self.top;
            let bitmap = if shift >= WINDOW {
                1
            } else {
                (self.bitmap << shift) | 1
            };
            return Ok(ReplayWindow {
                epoch,
                top: counter,
                bitmap,
            });
        }
        let age = self.top - counter;
        if age >= WINDOW {
            return Err(ReplayError::TooOld {
                counter,
                top: self.top,
            });
        }
        if self.bitmap & (1 << age) != 0 {
            return Err(ReplayError::Duplicate { epoch, counter });
        }
        Ok(ReplayWindow {
            bitmap: self.bitmap | (1 << age),
            ..*self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn accepts_in_order_and_refuses_duplicates() {
        let mut w = ReplayWindow::default();
        for c in 0..10 {
            w.accept(1, c).unwrap();
        }
        assert_eq!(
            w.accept(1, 5),
            Err(ReplayError::Duplicate {
                epoch: 1,
                counter: 5
            })
        );
    }

    #[test]
    fn accepts_out_of_order_inside_the_window_once() {
        let mut w = ReplayWindow::default();
        w.accept(3, 10).unwrap();
        w.accept(3, 7).unwrap();
        w.accept(3, 9).unwrap();
        assert!(w.accept(3, 7).is_err());
        w.accept(3, 8).unwrap();
    }

    #[test]
    fn refuses_older_than_window_and_older_epochs() {
        let mut w = ReplayWindow::default();
        w.accept(2, 100).unwrap();
        assert_eq!(
            w.accept(2, 100 - WINDOW),
            Err(ReplayError::TooOld {
                counter: 100 - WINDOW,
                top: 100
            })
        );
        w.accept(3, 0).unwrap();
        assert_eq!(
            w.accept(2, 101),
            Err(ReplayError::StaleEpoch { got: 2, current: 3 })
        );
    }

    #[test]
    fn check_does_not_record() {
        let w = ReplayWindow::default();
        w.check(1, 1).unwrap();
        w.check(1, 1).unwrap();
    }

    proptest! {
        /// Whatever order and duplication, no (epoch, counter) is ever accepted twice.
        #[test]
        fn never_accepts_the_same_pair_twice(seq in proptest::collection::vec((0u64..4, 0u64..200), 0..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = HashSet::new();
            for (e, c) in seq {
                if w.accept(e, c).is_ok() {
                    prop_assert!(seen.insert((e, c)), "accepted {:?} twice", (e, c));
                }
            }
        }

        /// A strictly increasing sequence is always accepted in full.
        #[test]
        fn accepts_every_fresh_increasing_sequence(mut cs in proptest::collection::vec(0u64..1_000_000, 1..200)) {
            cs.sort();
            cs.dedup();
            let mut w = ReplayWindow::default();
            for c in cs {
                prop_assert!(w.accept(7, c).is_ok());
            }
        }
    }
}
