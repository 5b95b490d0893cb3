//! The reconciler's async shell: lists this node's containers, asks the [`Reconciler`] what to
//! do, does it with the [`ContainerRuntime`], feeds the results back and publishes statuses.
//!
//! It runs a round every [`TICK`] (sooner when a backoff expires), at once on a new target or
//! a change of the batch window, and again straight away while a round made progress (each
//! round moves every workload one phase on, so a new workload runs after a few quick rounds).
//! It does nothing before the first target: a restarted latticed must not remove what its
//! previous run left running before it knows what is wanted. When the engine cannot be
//! reached it keeps its memory, removes nothing, retries with backoff (1 s to 30 s) and
//! re-adopts what it finds once the engine answers again.

use super::plan::{Action, Reconciler};
use crate::backoff::Backoff;
use crate::runtime::{ContainerRuntime, Observed, RuntimeError};
use crate::shutdown::Shutdown;
use futures_util::stream::{self, StreamExt};
use lattice_wire::msg::{Target, WorkloadStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The period of the reconcile loop when nothing else wakes it.
pub const TICK: Duration = Duration::from_secs(2);
/// Rounds run back to back while they make progress, before waiting for the next tick.
const QUICK_ROUNDS: u32 = 8;
/// Workloads acted on at once within a round.
pub const PARALLEL: usize = 8;

/// A cheap, cloneable handle on a running reconcile loop.
#[derive(Debug, Clone)]
pub struct ReconcileHandle {
    target: Arc<watch::Sender<Option<Target>>>,
    batch_allowed: Arc<watch::Sender<bool>>,
    statuses: watch::Receiver<Vec<WorkloadStatus>>,
}

impl ReconcileHandle {
    /// Makes `target` the desired state; the loop acts on it at once.
    pub fn set_target(&self, target: Target) {
        self.target.send_replace(Some(target));
    }

    /// Whether batch work may run now (the provider's availability windows); outside them
    /// running batch containers are paused, and resumed when allowed again.
    pub fn set_batch_allowed(&self, allowed: bool) {
        self.batch_allowed.send_if_modified(|v| {
            let changed = *v != allowed;
            *v = allowed;
            changed
        });
    }

    /// The largest CPU limit (millicores) of the current target's workloads: the envelope's
    /// CPU cap must not go below it (cgroup v1 refuses a child quota above its parent's).
    pub fn largest_cpu_millis(&self) -> u32 {
        self.target
            .borrow()
            .as_ref()
            .and_then(|t| t.workloads.iter().map(|w| w.cpu_millis).max())
            .unwrap_or(0)
    }

    /// The last published status of every desired workload.
    pub fn statuses(&self) -> Vec<WorkloadStatus> {
        self.statuses.borrow().clone()
    }

    /// Follows the published statuses (e.g. to wait for a state in tests).
    pub fn subscribe(&self) -> watch::Receiver<Vec<WorkloadStatus>> {
        self.statuses.clone()
    }
}

/// Starts the reconcile loop for `node_id` on the current tokio runtime. Containers are
/// created under `cgroup_parent`. The loop ends when `shutdown` fires or every handle is
/// dropped; containers are left as they are (the next run adopts them).
pub fn spawn<R: ContainerRuntime + 'static>(
    runtime: Arc<R>,
    node_id: String,
    cgroup_parent: String,
    shutdown: Shutdown,
) -> ReconcileHandle {
    let (target_tx, target_rx) = watch::channel(None);
    let (batch_tx, batch_rx) = watch::channel(true);
    let (status_tx, status_rx) = watch::channel(Vec::new());
    let shell = Shell {
        runtime,
        reconciler: Reconciler::new(node_id.clone()),
        node_id,
        cgroup_parent,
        status_tx,
        epoch: Instant::now(),
        engine_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        engine_down: None,
    };
    tokio::spawn(shell.run(target_rx, batch_rx, shutdown));
    ReconcileHandle {
        target: Arc::new(target_tx),
        batch_allowed: Arc::new(batch_tx),
        statuses: status_rx,
    }
}

/// An action and how it went.
type Done = (Action, Result<(), RuntimeError>);

/// How a round's actions went.
enum Outcome {
    /// At least one action succeeded: worth another round at once.
    Progress,
    /// Nothing to do, or only failures (held back by their backoff).
    Idle,
    /// The engine went away mid-round.
    EngineLost(String),
}

struct Shell<R> {
    runtime: Arc<R>,
    reconciler: Reconciler,
    node_id: String,
    cgroup_parent: String,
    status_tx: watch::Sender<Vec<WorkloadStatus>>,
    epoch: Instant,
    engine_backoff: Backoff,
    /// Why the engine could not be reached, while it cannot.
    engine_down: Option<String>,
}

impl<R: ContainerRuntime> Shell<R> {
    async fn run(
        mut self,
        mut target_rx: watch::Receiver<Option<Target>>,
        mut batch_rx: watch::Receiver<bool>,
        mut shutdown: Shutdown,
    ) {
        let mut has_target = false;
        // `changed()` below marks the value seen, so remember that it did.
        let mut new_target = true;
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let fresh = if std::mem::take(&mut new_target) {
                target_rx.borrow_and_update().clone()
            } else {
                None
            };
            if let Some(target) = fresh {
                tracing::info!(
                    node_id = %self.node_id,
                    revision = target.revision,
                    workloads = target.workloads.len(),
                    "reconciling toward target"
                );
                self.reconciler.set_target(target.workloads);
                has_target = true;
            }
            let batch_allowed = *batch_rx.borrow_and_update();
            let wait = if has_target {
                self.rounds(batch_allowed).await
            } else {
                TICK
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = target_rx.changed() => match changed {
                    Ok(()) => new_target = true,
                    Err(_) => return,
                },
                changed = batch_rx.changed() => if changed.is_err() { return },
                () = shutdown.wait() => return,
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn publish(&self, statuses: Vec<WorkloadStatus>) {
        self.status_tx.send_if_modified(|old| {
            let changed = *old != statuses;
            *old = statuses;
            changed
        });
    }

    /// Runs rounds while they make progress; returns how long to wait before the next one.
    async fn rounds(&mut self, batch_allowed: bool) -> Duration {
        for _ in 0..QUICK_ROUNDS {
            let observed = match self.runtime.list_owned(&self.node_id).await {
                Ok(observed) => observed,
                Err(e) => return self.engine_lost(e.to_string()),
            };
            if self.engine_down.take().is_some() {
                tracing::info!(
                    containers = observed.len(),
                    "container engine reachable again; re-adopting"
                );
            }
            self.engine_backoff.reset();
            let actions = self
                .reconciler
                .step(self.now_ms(), &observed, batch_allowed);
            let outcome = self.perform(actions, &observed).await;
            self.publish(self.reconciler.statuses(&observed));
            match outcome {
                Outcome::Progress => continue,
                Outcome::Idle => break,
                Outcome::EngineLost(reason) => return self.engine_lost(reason),
            }
        }
        let now = self.now_ms();
        self.reconciler.next_deadline(now).map_or(TICK, |t| {
            TICK.min(Duration::from_millis(t.saturating_sub(now)))
        })
    }

    /// Keeps every memory and container; reports the workloads as unknown; backs off.
    fn engine_lost(&mut self, reason: String) -> Duration {
        let delay = self.engine_backoff.next_delay();
        if self.engine_down.is_none() {
            tracing::warn!(
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "container engine unreachable; removing nothing, will retry: {reason}"
            );
        }
        self.publish(self.reconciler.statuses_engine_down(&reason));
        self.engine_down = Some(reason);
        delay
    }

    /// Does a round's actions: each workload's in plan order, different workloads side by
    /// side (at most [`PARALLEL`] at once: a pull or a slow create of one workload does not
    /// hold up the others), then feeds every result back in plan order.
    async fn perform(&mut self, actions: Vec<Action>, observed: &[Observed]) -> Outcome {
        let mut groups: Vec<Vec<Action>> = Vec::new();
        for action in actions {
            if let Some(id) = action.container_id() {
                if !observed.iter().any(|o| o.container_id == id) {
                    // The plan only names listed containers; never touch anything else.
                    tracing::error!(
                        workload = action.workload(),
                        container = id,
                        "refusing to act on an unlisted container"
                    );
                    continue;
                }
            }
            match groups
                .iter_mut()
                .find(|g| g[0].workload() == action.workload())
            {
                Some(g) => g.push(action),
                None => groups.push(vec![action]),
            }
        }
        let this = &*self;
        let mut done: Vec<(usize, Vec<Done>)> = stream::iter(groups.into_iter().enumerate())
            .map(|(i, group)| async move {
                let mut out = Vec::with_capacity(group.len());
                for action in group {
                    tracing::info!(
                        workload = action.workload(),
                        container = action.container_id(),
                        action = action.verb(),
                        "reconcile"
                    );
                    let result = this.execute(&action).await;
                    out.push((action, result));
                }
                (i, out)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        done.sort_by_key(|(i, _)| *i);

        let mut outcome = Outcome::Idle;
        for (action, result) in done.into_iter().flat_map(|(_, g)| g) {
            match &result {
                Ok(()) => {
                    if !matches!(outcome, Outcome::EngineLost(_)) {
                        outcome = Outcome::Progress;
                    }
                }
                Err(e @ RuntimeError::Unavailable(_)) => {
                    outcome = Outcome::EngineLost(e.to_string());
                }
                Err(e) => tracing::warn!(
                    workload = action.workload(),
                    action = action.verb(),
                    "failed: {e}"
                ),
            }
            let now = self.now_ms();
            self.reconciler.on_result(&action, result, now);
        }
        outcome
    }

    async fn execute(&self, action: &Action) -> Result<(), RuntimeError> {
        let rt = &self.runtime;
        match action {
            Action::EnsureImage { image, .. } => rt.ensure_image(image).await,
            Action::Create { spec, spec_hash } => {
                let id = rt
                    .create(&self.node_id, spec, spec_hash, &self.cgroup_parent)
                    .await?;
                tracing::info!(workload = %spec.id, container = %id, "created");
                Ok(())
            }
            Action::Start { container_id, .. } => rt.start(container_id).await,
            Action::Stop { container_id, .. } => rt.stop(container_id).await,
            Action::Remove { observed, purge } => rt.remove(&self.node_id, observed, *purge).await,
            Action::Pause { container_id, .. } => rt.pause(container_id).await,
            Action::Unpause { container_id, .. } => rt.unpause(container_id).await,
        }
    }
}
