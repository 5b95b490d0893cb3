//! The CPU governor: lowers the envelope's CPU cap while the provider's own processes need the
//! CPU and gives it back once they are quiet. Pure: fed one load sample at a time, it says
//! what the cap should be.
//!
//! Policy: "other load" is the machine's busy CPU minus what the envelope used, in percent of
//! the whole machine. Above `threshold` the cap is halved at once (never below `min`), on each
//! sample while it stays high: the owner notices slowness within seconds, so lowering is fast.
//! Below `threshold - HYSTERESIS` for `QUIET_SAMPLES` samples in a row, the cap goes back up by
//! a quarter of the configured cap per sample: raising is slow so a bursty owner does not make
//! it swing.

/// Points below the threshold that count as quiet.
pub const HYSTERESIS: f64 = 10.0;
/// Quiet samples in a row before the cap is raised.
pub const QUIET_SAMPLES: u32 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Governor {
    configured: u32,
    min: u32,
    threshold: f64,
    cap: u32,
    quiet: u32,
    /// The lowest the cap may go now: `min`, or more while a workload needs more.
    floor: u32,
}

/// A change the governor asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub from: u32,
    pub to: u32,
    /// The other load that caused it, percent of the machine.
    pub other_load: f64,
}

impl Governor {
    /// `configured`: the provider's cap (percent of the machine); `min`: the lowest it may
    /// go; `threshold`: other load (percent of the machine) above which it is lowered.
    pub fn new(configured: u32, min: u32, threshold: u32) -> Governor {
        let min = min.clamp(1, configured.max(1));
        Governor {
            configured,
            min,
            threshold: f64::from(threshold),
            cap: configured,
            quiet: 0,
            floor: min,
        }
    }

    /// The cap may not go below `pct` (the largest workload's own CPU limit, in percent of the
    /// machine): on cgroup v1 the kernel refuses to start a container whose quota is above the
    /// envelope's. Raises the cap at once if it is below; never above the configured cap.
    pub fn set_floor(&mut self, pct: u32) -> Option<Change> {
        self.floor = pct.clamp(self.min, self.configured.max(self.min));
        let from = self.cap;
        if self.cap < self.floor {
            self.cap = self.floor;
        }
        (self.cap != from).then_some(Change {
            from,
            to: self.cap,
            other_load: f64::NAN,
        })
    }

    /// The cap in force now.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// One sample: `host_busy` and `envelope_busy` in percent of the whole machine over the
    /// same interval. Returns the change to make, if any.
    pub fn sample(&mut self, host_busy: f64, envelope_busy: f64) -> Option<Change> {
        let other = (host_busy - envelope_busy).clamp(0.0, 100.0);
        let from = self.cap;
        if other > self.threshold {
            self.quiet = 0;
            self.cap = (self.cap / 2).max(self.floor);
        } else if other < self.threshold - HYSTERESIS {
            self.quiet += 1;
            if self.quiet >= QUIET_SAMPLES && self.cap < self.configured {
                let step = (self.configured / 4).max(1);
                self.cap = (self.cap + step).min(self.configured);
            }
        } else {
            self.quiet = 0;
        }
        (self.cap != from).then_some(Change {
            from,
            to: self.cap,
            other_load: other,
        })
    }

    /// The kernel refused `change` (e.g. cgroup v1 will not put the envelope below a
    /// container's own quota): stay where we were.
    pub fn refused(&mut self, change: Change) {
        self.cap = change.from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_busy_owner_halves_the_cap_at_once_down_to_the_minimum() {
        let mut g = Governor::new(80, 10, 50);
        let c = g.sample(90.0, 20.0).unwrap(); // other = 70
        assert_eq!((c.from, c.to), (80, 40));
        assert!((c.other_load - 70.0).abs() < 1e-9);
        assert_eq!(g.sample(90.0, 20.0).unwrap().to, 20);
        assert_eq!(g.sample(90.0, 20.0).unwrap().to, 10);
        assert_eq!(g.sample(90.0, 20.0), None); // at the minimum
    }

    #[test]
    fn lattice_own_load_never_lowers_the_cap() {
        let mut g = Governor::new(80, 10, 50);
        for _ in 0..10 {
            assert_eq!(g.sample(85.0, 80.0), None);
        }
        assert_eq!(g.cap(), 80);
    }

    #[test]
    fn the_cap_comes_back_slowly_after_quiet_samples() {
        let mut g = Governor::new(80, 10, 50);
        g.sample(100.0, 0.0);
        g.sample(100.0, 0.0);
        assert_eq!(g.cap(), 20);
        assert_eq!(g.sample(10.0, 5.0), None);
        assert_eq!(g.sample(10.0, 5.0), None);
        assert_eq!(g.sample(10.0, 5.0).unwrap().to, 40);
        assert_eq!(g.sample(10.0, 5.0).unwrap().to, 60);
        // In the hysteresis band: hold, and the quiet count starts again.
        assert_eq!(g.sample(45.0, 0.0), None);
        assert_eq!(g.sample(10.0, 5.0), None);
        assert_eq!(g.sample(10.0, 5.0), None);
        assert_eq!(g.sample(10.0, 5.0).unwrap().to, 80);
        assert_eq!(g.sample(10.0, 5.0), None);
    }

    #[test]
    fn the_cap_never_goes_below_the_largest_workload() {
        let mut g = Governor::new(80, 5, 50);
        assert_eq!(g.set_floor(30), None);
        for _ in 0..5 {
            g.sample(100.0, 0.0);
        }
        assert_eq!(g.cap(), 30);
        // A bigger workload arrives: the cap goes up to it at once.
        let c = g.set_floor(50).unwrap();
        assert_eq!((c.from, c.to), (30, 50));
        // Never above the provider's cap, never below the minimum.
        assert_eq!(g.set_floor(95).unwrap().to, 80);
        g.set_floor(0);
        g.sample(100.0, 0.0);
        assert_eq!(g.cap(), 40);
    }

    #[test]
    fn a_refused_change_is_undone() {
        let mut g = Governor::new(50, 5, 30);
        let c = g.sample(60.0, 0.0).unwrap();
        g.refused(c);
        assert_eq!(g.cap(), 50);
    }

    proptest! {
        #[test]
        fn the_cap_stays_between_the_minimum_and_the_configured_cap(
            configured in 1u32..=100,
            min in 0u32..=100,
            threshold in 0u32..=100,
            samples in proptest::collection::vec((0.0f64..=100.0, 0.0f64..=100.0), 0..60),
        ) {
            let mut g = Governor::new(configured, min, threshold);
            let floor = min.clamp(1, configured);
            for (host, env) in samples {
                let before = g.cap();
                if let Some(c) = g.sample(host, env) {
                    prop_assert_eq!(c.from, before);
                    prop_assert_ne!(c.from, c.to);
                }
                prop_assert!(g.cap() >= floor && g.cap() <= configured);
            }
        }
    }
}
