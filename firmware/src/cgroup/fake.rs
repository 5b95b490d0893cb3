//! A [`CgroupManager`] that only records what it was asked, for unit tests of the supervisor
//! (like youki's `TestManager`). It validates limits as the real managers do, and can be told
//! to fail the next call.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::limits::check_cpu_percent;
use super::{envelope_name, CgroupError, CgroupManager, EnvelopeLimits, EnvelopeStats};

/// One call made to a [`FakeManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Ensure(EnvelopeLimits),
    SetCpuPercent(u32),
    Stats,
    AddProcess(u32),
    Procs,
    Remove,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    fail_next: Option<String>,
    limits: Option<EnvelopeLimits>,
    stats: EnvelopeStats,
    procs: Vec<u32>,
}

/// Records calls; holds the limits last applied and the stats a test put there.
#[derive(Debug)]
pub struct FakeManager {
    parent: String,
    state: Mutex<State>,
}

impl FakeManager {
    pub fn new(node_id: &str) -> Result<Self, CgroupError> {
        Ok(Self {
            parent: format!("/{}", envelope_name(node_id)?),
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The next call (whichever it is) fails with [`CgroupError::Injected`].
    pub fn fail_next(&self, message: impl Into<String>) {
        self.state().fail_next = Some(message.into());
    }

    /// What [`CgroupManager::stats`] returns from now on.
    pub fn set_stats(&self, stats: EnvelopeStats) {
        self.state().stats = stats;
    }

    /// The limits in force (after `ensure` and `set_cpu_percent`), `None` before `ensure` or
    /// after `remove`.
    pub fn limits(&self) -> Option<EnvelopeLimits> {
        self.state().limits
    }

    /// Records `call`; fails it if a failure was injected.
    fn record(&self, call: Call, name: &'static str) -> Result<MutexGuard<'_, State>, CgroupError> {
        let mut state = self.state();
        state.calls.push(call);
        match state.fail_next.take() {
            Some(message) => Err(CgroupError::Injected {
                call: name,
                message,
            }),
            None => Ok(state),
        }
    }
}

impl CgroupManager for FakeManager {
    fn ensure(&self, limits: &EnvelopeLimits) -> Result<(), CgroupError> {
        let mut state = self.record(Call::Ensure(*limits), "ensure")?;
        limits.validate()?;
        state.limits = Some(*limits);
        Ok(())
    }

    fn set_cpu_percent(&self, pct: u32) -> Result<(), CgroupError> {
        let mut state = self.record(Call::SetCpuPercent(pct), "set_cpu_percent")?;
        check_cpu_percent(pct)?;
        if let Some(limits) = state.limits.as_mut() {
            limits.cpu_percent = pct;
        }
        Ok(())
    }

    fn stats(&self) -> Result<EnvelopeStats, CgroupError> {
        Ok(self.record(Call::Stats, "stats")?.stats)
    }

    fn docker_parent(&self) -> String {
        self.parent.clone()
    }

    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        self.record(Call::AddProcess(pid), "add_process")?
            .procs
            .push(pid);
        Ok(())
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        Ok(self.record(Call::Procs, "procs")?.procs.clone())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let mut state = self.record(Call::Remove, "remove")?;
        state.limits = None;
        state.procs.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_and_fails_once_on_demand() {
        let fake = FakeManager::new("n-f").unwrap();
        let limits = EnvelopeLimits::new(50, 1 << 30, 100).unwrap();
        fake.ensure(&limits).unwrap();
        fake.fail_next("disk on fire");
        let err = fake.set_cpu_percent(20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "injected failure in set_cpu_percent: disk on fire"
        );
        assert_eq!(fake.limits(), Some(limits), "failed call changed nothing");
        fake.set_cpu_percent(20).unwrap();
        fake.add_process(9).unwrap();
        assert_eq!(fake.procs().unwrap(), vec![9]);
        fake.remove().unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                Call::Ensure(limits),
                Call::SetCpuPercent(20),
                Call::SetCpuPercent(20),
                Call::AddProcess(9),
                Call::Procs,
                Call::Remove,
            ]
        );
        assert_eq!(fake.limits(), None);
        assert_eq!(fake.docker_parent(), "/lattice-n-f");
    }

    #[test]
    fn validates_like_the_real_managers() {
        let fake = FakeManager::new("n-f").unwrap();
        let err = fake.set_cpu_percent(0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid envelope limits: cpu_percent 0 is outside 1..=100"
        );
        let stats = EnvelopeStats {
            pids_current: 3,
            ..EnvelopeStats::default()
        };
        fake.set_stats(stats);
        assert_eq!(fake.stats().unwrap(), stats);
        assert!(FakeManager::new("a/b").is_err());
    }
}
