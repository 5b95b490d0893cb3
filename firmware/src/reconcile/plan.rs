//! The reconciler's decisions, free of I/O and of clocks: what to do to bring the observed
//! containers toward the desired workloads, given the time as an input.
//!
//! Each desired workload goes through phases, at most one step forward per [`Reconciler::step`]:
//! stale containers (another spec hash, duplicates, dead) are stopped and removed first; with
//! none left and no container of the current spec, the image is ensured, then the container
//! created (only once its image is known present), then started. A running container made from
//! the desired spec is left alone, which is what adoption after a restart of latticed relies
//! on: an empty memory plus a running matching container yields no action at all.
//!
//! Failures feed back through [`Reconciler::on_result`] and hold the workload back with
//! exponential backoff (1 s doubling to 60 s); exits are restarted per [`RestartPolicy`] with
//! the same backoff, which resets once the container has run for five minutes. A rejected spec
//! (e.g. an unknown capability) is not retried until the spec changes.

pub use super::action::Action;
use super::hash::spec_hash;
pub(super) use super::memory::Memory;
pub use super::memory::{delay_ms, BACKOFF_BASE_MS, BACKOFF_CAP_MS, STABLE_RUN_MS};
use crate::runtime::{ContainerStatus, Observed, RuntimeError};
use lattice_wire::msg::{RestartPolicy, WorkloadClass, WorkloadSpec};
use std::collections::{HashMap, HashSet};

/// A desired workload and the hash its container must carry.
#[derive(Debug, Clone)]
pub(super) struct Desired {
    pub(super) spec: WorkloadSpec,
    pub(super) hash: String,
}

/// The reconciler's state: the desired workloads and a memory per workload.
#[derive(Debug, Clone)]
pub struct Reconciler {
    node_id: String,
    pub(super) desired: Vec<Desired>,
    pub(super) memory: HashMap<String, Memory>,
    /// As given to the last step (true before the first).
    pub(super) batch_allowed: bool,
}

impl Reconciler {
    /// A reconciler for `node_id` that wants nothing yet: the shell only steps it once a
    /// target was set, so a fresh start never removes what the previous run left running.
    pub fn new(node_id: impl Into<String>) -> Self {
        Reconciler {
            node_id: node_id.into(),
            desired: Vec::new(),
            memory: HashMap::new(),
            batch_allowed: true,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Replaces the desired workloads. Duplicate ids keep their first spec. A workload whose
    /// spec changed starts its backoff and errors over; its restart count stays, and so does
    /// the knowledge that its image is present if the image did not change.
    pub fn set_target(&mut self, workloads: Vec<WorkloadSpec>) {
        let mut seen = HashSet::new();
        self.desired = workloads
            .into_iter()
            .filter(|w| seen.insert(w.id.clone()))
            .map(|spec| Desired {
                hash: spec_hash(&spec),
                spec,
            })
            .collect();
        for d in &self.desired {
            let mem = self.memory.entry(d.spec.id.clone()).or_default();
            if mem.hash != d.hash {
                *mem = Memory {
                    hash: d.hash.clone(),
                    restarts: mem.restarts,
                    image_ready: mem.image_ready.take().filter(|i| *i == d.spec.image),
                    ..Memory::default()
                };
            }
        }
        self.memory.retain(|id, _| seen.contains(id));
    }

    /// The actions that move `observed` (this node's containers only) toward the target at
    /// `now_ms`. `batch_allowed` is false outside the provider's availability windows.
    pub fn step(&mut self, now_ms: u64, observed: &[Observed], batch_allowed: bool) -> Vec<Action> {
        self.batch_allowed = batch_allowed;
        let mut actions = Vec::new();
        for d in &self.desired {
            let mem = self.memory.entry(d.spec.id.clone()).or_default();
            let mine: Vec<&Observed> = observed
                .iter()
                .filter(|o| o.workload_id == d.spec.id)
                .collect();
            let held = d.spec.class == WorkloadClass::Batch && !batch_allowed;
            plan_workload(d, &mine, mem, now_ms, held, &mut actions);
        }
        for o in observed {
            if !self.desired.iter().any(|d| d.spec.id == o.workload_id) {
                retire(o, true, &mut actions);
            }
        }
        actions
    }

    /// Feeds back how an action went. `Unavailable` changes nothing: the engine being away
    /// says nothing about the workload (the shell backs off as a whole).
    pub fn on_result(&mut self, action: &Action, result: Result<(), RuntimeError>, now_ms: u64) {
        let Some(mem) = self.memory.get_mut(action.workload()) else {
            return;
        };
        match result {
            Ok(()) => match action {
                Action::EnsureImage { image, .. } => {
                    mem.image_ready = Some(image.clone());
                    mem.image_missing = None;
                    mem.last_error = None;
                }
                Action::Create { .. } => {
                    mem.attempt = 0;
                    mem.not_before = 0;
                    mem.last_error = None;
                }
                Action::Start { .. } => {
                    if mem.restart_pending {
                        mem.restarts = mem.restarts.saturating_add(1);
                        mem.restart_pending = false;
                    }
                    mem.last_error = None;
                }
                Action::Pause { .. } | Action::Unpause { .. } => mem.last_error = None,
                Action::Stop { .. } | Action::Remove { .. } => {}
            },
            Err(RuntimeError::Unavailable(_)) => {}
            Err(RuntimeError::ImageMissing { reason, .. }) => {
                mem.image_ready = None;
                mem.image_missing = Some(reason.clone());
                mem.fail(now_ms, reason);
            }
            // The spec itself was refused: retrying the same spec cannot help.
            Err(RuntimeError::Rejected { reason, .. })
                if matches!(
                    action,
                    Action::EnsureImage { .. } | Action::Create { .. } | Action::Start { .. }
                ) =>
            {
                mem.rejected = Some(reason)
            }
            Err(e @ RuntimeError::Rejected { .. }) => mem.fail(now_ms, e.to_string()),
            Err(e @ RuntimeError::Container { .. }) => mem.fail(now_ms, e.to_string()),
        }
    }

    /// The earliest instant after `now_ms` at which a held-back workload may move again.
    pub fn next_deadline(&self, now_ms: u64) -> Option<u64> {
        self.memory
            .values()
            .map(|m| m.not_before)
            .filter(|t| *t > now_ms)
            .min()
    }
}

/// Orders a workload's containers: the best one to keep first.
fn rank(status: &ContainerStatus) -> u8 {
    match status {
        ContainerStatus::Running { .. } => 0,
        ContainerStatus::Paused => 1,
        ContainerStatus::Created => 2,
        ContainerStatus::Exited { .. } => 3,
        ContainerStatus::Other(_) => 4,
    }
}

/// The container of `d`'s current spec to keep, if any.
pub(super) fn keeper<'a>(d: &Desired, mine: &[&'a Observed]) -> Option<&'a Observed> {
    mine.iter()
        .copied()
        .filter(|o| o.spec_hash == d.hash && !is_dead(o))
        .min_by_key(|o| rank(&o.status))
}

fn is_dead(o: &Observed) -> bool {
    matches!(&o.status, ContainerStatus::Other(s) if s == "dead")
}

/// Stops (if running) and removes a container nobody wants; leaves one the engine is busy
/// removing alone.
fn retire(o: &Observed, purge: bool, actions: &mut Vec<Action>) {
    match &o.status {
        ContainerStatus::Other(s) if s == "removing" => return,
        ContainerStatus::Running { .. } => actions.push(Action::Stop {
            workload: o.workload_id.clone(),
            container_id: o.container_id.clone(),
        }),
        _ => {}
    }
    actions.push(Action::Remove {
        observed: o.clone(),
        purge,
    });
}

fn should_restart(policy: RestartPolicy, code: i64, oom_killed: bool) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != 0 || oom_killed,
        RestartPolicy::Never => false,
    }
}

fn plan_workload(
    d: &Desired,
    mine: &[&Observed],
    mem: &mut Memory,
    now: u64,
    held: bool,
    actions: &mut Vec<Action>,
) {
    let keep = keeper(d, mine);
    let ready = now >= mem.not_before;
    let stale: Vec<&Observed> = mine
        .iter()
        .copied()
        .filter(|o| Some(o.container_id.as_str()) != keep.map(|k| k.container_id.as_str()))
        .collect();
    if ready {
        stale.iter().for_each(|o| retire(o, false, actions));
    }
    let workload = || d.spec.id.clone();
    let Some(c) = keep else {
        mem.running_since = None;
        if stale.is_empty() && ready && mem.rejected.is_none() {
            actions.push(
                if mem.image_ready.as_deref() == Some(d.spec.image.as_str()) {
                    Action::Create {
                        spec: d.spec.clone(),
                        spec_hash: d.hash.clone(),
                    }
                } else {
                    Action::EnsureImage {
                        workload: workload(),
                        image: d.spec.image.clone(),
                    }
                },
            );
        }
        return;
    };
    let container_id = c.container_id.clone();
    if !matches!(c.status, ContainerStatus::Running { .. }) {
        mem.running_since = None;
    }
    if mem.rejected.is_some() {
        return;
    }
    match &c.status {
        ContainerStatus::Running { .. } => {
            mem.restart_pending = false;
            mem.image_ready = Some(d.spec.image.clone());
            let since = *mem.running_since.get_or_insert(now);
            if now.saturating_sub(since) >= STABLE_RUN_MS {
                mem.attempt = 0;
            }
            if held && ready {
                actions.push(Action::Pause {
                    workload: workload(),
                    container_id,
                });
            }
        }
        ContainerStatus::Paused if !held && ready => {
            actions.push(Action::Unpause {
                workload: workload(),
                container_id,
            });
        }
        ContainerStatus::Created if !held && ready => {
            actions.push(Action::Start {
                workload: workload(),
                container_id,
            });
        }
        ContainerStatus::Exited { code, oom_killed }
            if !held && should_restart(d.spec.restart, *code, *oom_killed) =>
        {
            if !mem.restart_pending {
                mem.restart_pending = true;
                let at = now.saturating_add(delay_ms(mem.attempt));
                mem.not_before = mem.not_before.max(at);
                mem.attempt = mem.attempt.saturating_add(1);
            }
            if now >= mem.not_before {
                actions.push(Action::Start {
                    workload: workload(),
                    container_id,
                });
            }
        }
        _ => {}
    }
}
