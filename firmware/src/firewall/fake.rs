//! [`FakeFirewall`]: records each node's last rule set; can be told to fail.

use super::{Firewall, FirewallError, Guarded};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct FakeFirewall {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    rules: BTreeMap<String, Vec<Guarded>>,
    fail: Option<String>,
    syncs: usize,
}

impl FakeFirewall {
    pub fn new() -> Self {
        Self::default()
    }

    /// The workloads the node's rules guard now (sorted), `None` when never synced or cleared.
    pub fn guarded(&self, node_id: &str) -> Option<Vec<Guarded>> {
        self.state.lock().unwrap().rules.get(node_id).cloned()
    }

    /// Makes every later call fail with `reason` (`None`: succeed again).
    pub fn fail_with(&self, reason: Option<&str>) {
        self.state.lock().unwrap().fail = reason.map(str::to_string);
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> usize {
        self.state.lock().unwrap().syncs
    }
}

impl Firewall for FakeFirewall {
    fn sync(&self, node_id: &str, guarded: &[Guarded]) -> Result<(), FirewallError> {
        let mut s = self.state.lock().unwrap();
        if let Some(reason) = &s.fail {
            return Err(FirewallError::Refused {
                tool: "fake".into(),
                reason: reason.clone(),
            });
        }
        let mut g = guarded.to_vec();
        g.sort();
        g.dedup();
        s.rules.insert(node_id.to_string(), g);
        s.syncs += 1;
        Ok(())
    }

    fn clear(&self, node_id: &str) -> Result<(), FirewallError> {
        let mut s = self.state.lock().unwrap();
        s.rules.remove(node_id);
        Ok(())
    }
}
