//! An in-memory container engine shared by several nodes, applying the reconciler's actions
//! the way Docker would (names unique per node and workload, images needed to create).

use crate::reconcile::plan::Action;
use crate::runtime::{ContainerStatus, Health, Observed, RuntimeError};
use std::collections::HashSet;

#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// (node id, container).
    pub(crate) containers: Vec<(String, Observed)>,
    /// Images a pull would find.
    pub(crate) pullable: HashSet<String>,
    /// Images present locally.
    pub(crate) present: HashSet<String>,
    next_id: u64,
    /// Successful create and start calls.
    pub(crate) creates: u32,
    pub(crate) starts: u32,
    /// When set, every start fails with this reason (e.g. the engine's security profile).
    pub(crate) refuse_start: Option<String>,
}

impl Model {
    /// What `list_owned(node)` returns.
    pub(crate) fn observed(&self, node: &str) -> Vec<Observed> {
        self.containers
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Adds a container directly (another node's, or one left by an earlier run).
    pub(crate) fn insert(
        &mut self,
        node: &str,
        workload: &str,
        hash: &str,
        status: ContainerStatus,
    ) -> String {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        self.containers.push((
            node.to_string(),
            Observed {
                container_id: id.clone(),
                workload_id: workload.to_string(),
                spec_hash: hash.to_string(),
                status,
                started_at: format!("t{}", self.next_id),
            },
        ));
        id
    }

    fn find(&mut self, node: &str, id: &str) -> Result<&mut Observed, RuntimeError> {
        match self
            .containers
            .iter_mut()
            .find(|(_, o)| o.container_id == id)
        {
            Some((n, o)) => {
                assert_eq!(n, node, "node {node} acted on {id}, which belongs to {n}");
                Ok(o)
            }
            None => Err(RuntimeError::Container {
                container: id.to_string(),
                reason: "no such container".into(),
            }),
        }
    }

    /// Performs `action` for `node`, as the real engine would.
    pub(crate) fn apply(&mut self, node: &str, action: &Action) -> Result<(), RuntimeError> {
        let busy = |id: &str, what: &str| RuntimeError::Container {
            container: id.to_string(),
            reason: what.to_string(),
        };
        match action {
            Action::EnsureImage { image, .. } => {
                if !self.pullable.contains(image) {
                    return Err(RuntimeError::ImageMissing {
                        image: image.clone(),
                        reason: "not found in the registry".into(),
                    });
                }
                self.present.insert(image.clone());
            }
            Action::Create { spec, spec_hash } => {
                if !self.present.contains(&spec.image) {
                    return Err(RuntimeError::ImageMissing {
                        image: spec.image.clone(),
                        reason: "no such image".into(),
                    });
                }
                let taken = self
                    .containers
                    .iter()
                    .any(|(n, o)| n == node && o.workload_id == spec.id);
                if taken {
                    return Err(busy(&spec.id, "name already in use"));
                }
                self.insert(node, &spec.id, spec_hash, ContainerStatus::Created);
                self.creates += 1;
            }
            Action::Start { container_id, .. } => {
                if let Some(reason) = &self.refuse_start {
                    return Err(RuntimeError::Container {
                        container: container_id.clone(),
                        reason: reason.clone(),
                    });
                }
                let c = self.find(node, container_id)?;
                if !matches!(c.status, ContainerStatus::Running { .. }) {
                    c.status = ContainerStatus::Running {
                        health: Health::Unknown,
                    };
                }
                self.starts += 1;
            }
            Action::Stop { container_id, .. } => {
                let c = self.find(node, container_id)?;
                c.status = ContainerStatus::Exited {
                    code: 0,
                    oom_killed: false,
                };
            }
            Action::Remove { observed, .. } => {
                self.find(node, &observed.container_id)?;
                self.containers
                    .retain(|(_, o)| o.container_id != observed.container_id);
            }
            Action::Pause { container_id, .. } => {
                let c = self.find(node, container_id)?;
                match c.status {
                    ContainerStatus::Running { .. } => c.status = ContainerStatus::Paused,
                    _ => return Err(busy(container_id, "not running")),
                }
            }
            Action::Unpause { container_id, .. } => {
                let c = self.find(node, container_id)?;
                match c.status {
                    ContainerStatus::Paused => {
                        c.status = ContainerStatus::Running {
                            health: Health::Unknown,
                        }
                    }
                    _ => return Err(busy(container_id, "not paused")),
                }
            }
        }
        Ok(())
    }
}

/// A reconciler for one node driving a [`Model`], with a hand-moved clock.
pub(crate) struct Sim {
    pub(crate) node: String,
    pub(crate) r: crate::reconcile::Reconciler,
    pub(crate) m: Model,
    pub(crate) now: u64,
}

impl Sim {
    pub(crate) fn new(node: &str, m: Model) -> Sim {
        Sim {
            node: node.to_string(),
            r: crate::reconcile::Reconciler::new(node),
            m,
            now: 1_000_000,
        }
    }

    /// One step, every action applied and fed back; returns the actions.
    pub(crate) fn round(&mut self, batch_allowed: bool) -> Vec<Action> {
        let observed = self.m.observed(&self.node);
        let actions = self.r.step(self.now, &observed, batch_allowed);
        for a in &actions {
            let result = self.m.apply(&self.node, a);
            self.r.on_result(a, result, self.now);
        }
        actions
    }

    pub(crate) fn statuses(&self) -> Vec<lattice_wire::msg::WorkloadStatus> {
        self.r.statuses(&self.m.observed(&self.node))
    }

    /// The one state of workload `id`.
    pub(crate) fn state(&self, id: &str) -> lattice_wire::msg::WorkloadState {
        match self.statuses().into_iter().find(|s| s.id == id) {
            Some(s) => s.state,
            None => panic!("no status for {id}"),
        }
    }
}
