//! Nodes' lifecycle and node loss (issue 5, item 5).
//!
//! Operators, and providers for their own nodes, **cordon** a node (it takes no new work; what
//! runs keeps running), **uncordon** it, **drain** it (cordon, then move every movable workload
//! to another node, each new copy running before the old one is removed) or **decommission** it
//! (drain, then revoke it once nothing is left on it). A node offline (or revoked) past the
//! grace period is **lost**: its stateless workloads are placed on other nodes at once, and
//! their routes follow (the gateway's route table is built from the targets).
//!
//! One background task ([`run`]) does the work from what the store says, one [`round`] a
//! second, so a restarted fleet carries on where the last one stopped: every change of a
//! placement is a compare-and-set with its event in one transaction
//! ([`Store::move_workload`]), and the targets are rebuilt from the placements when the task
//! starts ([`reconcile_targets`]). What cannot move says why, once, as a workload event.

use crate::api::AppState;
use crate::audit::{self, Action};
use crate::gateway::upstream::NodeRegistry;
use crate::kinds::{s3, s3_replication};
use crate::link::Link;
use crate::scheduler::Resources;
use crate::store::{NodeRow, Placement, Store, StoreError, WorkloadRow};
use crate::workloads::{self, Relocation};
use lattice_wire::msg::WorkloadSpec;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The default grace period before an offline node's workloads are rescheduled.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// After a move, the old node keeps the workload this long before its target drops it: the
/// gateway (which re-reads the routes every second) has switched to the new copy by then.
pub const ROUTE_SWITCH: Duration = Duration::from_secs(3);

/// A move (drain, update) whose new copy is not running after this long is given up: an image
/// pull that hangs, a node that never starts it. The old copy keeps serving meanwhile.
pub const MOVE_DEADLINE: Duration = Duration::from_secs(600);

/// After a move fails, the drain waits this long before trying that workload again.
pub const RETRY_MOVE_AFTER: Duration = Duration::from_secs(30);

/// What a round changed: targets to send now, and old nodes to retarget after
/// [`ROUTE_SWITCH`].
#[derive(Debug, Default)]
pub struct Changes {
    pub retargeted: Vec<String>,
    pub retarget_later: Vec<String>,
}

/// Where a node is in its life, as stored in `nodes.lifecycle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeLifecycle {
    /// Takes new work.
    Active,
    /// Takes no new work; what runs stays.
    Cordoned,
    /// Cordoned, and its movable workloads are moving to other nodes.
    Draining,
    /// Draining; revoked once nothing is left on it.
    Decommissioning,
    /// Revoked and out of placement for good.
    Decommissioned,
}

impl NodeLifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeLifecycle::Active => "active",
            NodeLifecycle::Cordoned => "cordoned",
            NodeLifecycle::Draining => "draining",
            NodeLifecycle::Decommissioning => "decommissioning",
            NodeLifecycle::Decommissioned => "decommissioned",
        }
    }

    /// The stored text; anything unknown is taken as cordoned (no new work on a node whose
    /// state is not understood).
    pub fn parse(s: &str) -> NodeLifecycle {
        match s {
            "active" => NodeLifecycle::Active,
            "draining" => NodeLifecycle::Draining,
            "decommissioning" => NodeLifecycle::Decommissioning,
            "decommissioned" => NodeLifecycle::Decommissioned,
            _ => NodeLifecycle::Cordoned,
        }
    }

    fn drains(self) -> bool {
        matches!(
            self,
            NodeLifecycle::Draining | NodeLifecycle::Decommissioning
        )
    }
}

impl std::fmt::Display for NodeLifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator or provider asks of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Cordon,
    Uncordon,
    Drain,
    Decommission,
}

impl Op {
    pub fn audit_action(self) -> Action {
        match self {
            Op::Cordon => Action::NodeCordoned,
            Op::Uncordon => Action::NodeUncordoned,
            Op::Drain => Action::NodeDrainStarted,
            Op::Decommission => Action::NodeDecommissionStarted,
        }
    }
}

/// The state `op` takes a node to. Every op is idempotent; a revoked node can no longer be
/// changed. Uncordon also stops a drain or decommission (moves already started finish).
pub fn transition(from: NodeLifecycle, revoked: bool, op: Op) -> Result<NodeLifecycle, String> {
    use NodeLifecycle::*;
    if from == Decommissioned {
        return Err("the node was decommissioned (revoked); register a new node instead".into());
    }
    if revoked {
        return Err("the node is revoked; it takes no work and cannot be changed".into());
    }
    Ok(match (op, from) {
        (Op::Cordon, Active) => Cordoned,
        (Op::Cordon, other) => other,
        (Op::Uncordon, _) => Active,
        (Op::Drain, Decommissioning) => Decommissioning,
        (Op::Drain, _) => Draining,
        (Op::Decommission, _) => Decommissioning,
    })
}

/// Who holds a node's state after a change to `to` by an operator (`by_operator`) or its
/// provider, given who held it (`held_by`). An operator's hold stays until an operator lifts
/// it: the provider may take the node further out of placement, not back in.
pub fn holder(held_by: &str, by_operator: bool, to: NodeLifecycle) -> Result<&'static str, String> {
    if by_operator {
        return Ok(if to == NodeLifecycle::Active {
            ""
        } else {
            "operator"
        });
    }
    if held_by == "operator" {
        if to == NodeLifecycle::Active {
            return Err(
                "an operator took this node out of placement; only an operator can put it back"
                    .into(),
            );
        }
        return Ok("operator");
    }
    Ok(if to == NodeLifecycle::Active {
        ""
    } else {
        "provider"
    })
}

/// A workload still on a node, as `GET /api/v1/nodes/{id}/lifecycle` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeWorkload {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// `staying` (the node is not draining), `moving` (a new copy is starting elsewhere),
    /// `waiting` (not moved yet) or `blocked` (cannot move: see `detail`).
    pub status: String,
    pub detail: String,
}

/// A node's lifecycle and what is still on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeLifecycleView {
    pub node: String,
    /// `active`, `cordoned`, `draining`, `decommissioning` or `decommissioned`.
    pub lifecycle: String,
    pub online: bool,
    pub revoked: bool,
    /// Workloads placed on the node.
    pub workloads: Vec<NodeWorkload>,
}

impl NodeLifecycleView {
    /// Nothing is moving or waiting to move: a drain is as done as it can be (what is left is
    /// blocked, with the reason).
    pub fn settled(&self) -> bool {
        self.workloads
            .iter()
            .all(|w| w.status == "blocked" || w.status == "staying")
    }
}

/// The view of `node`.
pub async fn view(store: &Store, node: &NodeRow) -> Result<NodeLifecycleView, StoreError> {
    let state = NodeLifecycle::parse(&node.lifecycle);
    let mut out = Vec::new();
    for w in store
        .workloads_on(&node.id)
        .await?
        .into_iter()
        .filter(|w| w.node_id.as_deref() == Some(&node.id))
    {
        let (status, detail) = if let Some(to) = &w.moving_to {
            ("moving", format!("starting on {to}; runs here until then"))
        } else if let Relocation::NotMovable(why) = workloads::relocation(&w.kind) {
            if state.drains() {
                ("blocked", format!("not movable: {why}"))
            } else {
                ("staying", String::new())
            }
        } else if !state.drains() {
            ("staying", String::new())
        } else {
            match store.workload_events(&w.id).await?.last() {
                Some(e) if e.kind == "cannot_move" => ("blocked", e.detail.clone()),
                _ => ("waiting", String::new()),
            }
        };
        out.push(NodeWorkload {
            id: w.id,
            name: w.name,
            kind: w.kind,
            status: status.into(),
            detail,
        });
    }
    Ok(NodeLifecycleView {
        node: node.id.clone(),
        lifecycle: state.as_str().into(),
        online: node.online,
        revoked: node.revoked,
        workloads: out,
    })
}

/// Fault injection for the tests: `LATTICE_FAILPOINT=NAME` makes the process exit at the point
/// named, as a crash would (nothing after it runs).
fn failpoint(name: &str) {
    if std::env::var("LATTICE_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint reached: exiting");
        std::process::exit(86);
    }
}

/// What a workload holds on its node (its plan's CPU and memory, its volumes' disk).
pub(crate) fn needs(w: &WorkloadRow) -> Resources {
    Resources {
        cpu_millis: w.cpu_millis,
        memory_bytes: w.memory_bytes,
        disk_bytes: w.disk_bytes,
    }
}

/// Appends an event unless the workload's last event is the same (blocked work is retried
/// every round; its reason is recorded once, and again when it changes).
async fn event_once(
    store: &Store,
    w: &WorkloadRow,
    now: u64,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let last = store.workload_events(&w.id).await?.pop();
    if last.is_some_and(|e| e.kind == kind && e.detail == detail) {
        return Ok(());
    }
    tracing::info!(workload = %w.id, name = %w.name, kind, detail, "workload event");
    store.workload_event(&w.id, now, kind, detail).await
}

/// Appends an event unless the workload's kept history already holds one with the same kind
/// and detail: for conditions re-checked every round whose events may interleave (a primary
/// that cannot be promoted while its replica's node is also lost), where [`event_once`]'s
/// "unless it is the last one" would append both every round and push the history out.
async fn event_unless_said(
    store: &Store,
    w: &WorkloadRow,
    now: u64,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let said = store.workload_events(&w.id).await?;
    if said.iter().any(|e| e.kind == kind && e.detail == detail) {
        return Ok(());
    }
    tracing::info!(workload = %w.id, name = %w.name, kind, detail, "workload event");
    store.workload_event(&w.id, now, kind, detail).await
}

/// Rebuilds every node's target from the placements where they differ, for nodes that hold or
/// held fleet workloads (targets set by hand, as some tests do, are left alone). Run at start:
/// a fleet that stopped between a placement change and the targets it implies finishes here.
pub async fn reconcile_targets(
    store: &Store,
    rewrite: Option<&NodeRegistry>,
) -> Result<Vec<String>, StoreError> {
    let nodes = store.nodes().await?;
    let placed = store.workloads(None).await?;
    let known: HashSet<&str> = placed.iter().map(|w| w.id.as_str()).collect();
    let mut changed = Vec::new();
    for n in nodes.iter().filter(|n| !n.revoked) {
        let mine: Vec<&WorkloadRow> = placed
            .iter()
            .filter(|w| {
                w.node_id.as_deref() == Some(&n.id) || w.moving_to.as_deref() == Some(&n.id)
            })
            .collect();
        let stored: Vec<WorkloadSpec> = serde_json::from_str(&n.target).unwrap_or_default();
        if mine.is_empty() && !stored.iter().any(|s| known.contains(s.id.as_str())) {
            continue;
        }
        let mut mine = mine;
        mine.sort_by(|a, b| a.id.cmp(&b.id));
        let specs = mine
            .into_iter()
            .map(|w| workloads::spec_on(w, &n.id, rewrite))
            .collect::<Result<Vec<_>, _>>()?;
        let json = serde_json::to_string(&specs)
            .map_err(|e| StoreError::Corrupt(format!("target of {}: {e}", n.id)))?;
        if json != n.target {
            store.set_target(&n.id, &json).await?;
            changed.push(n.id.clone());
        }
    }
    Ok(changed)
}

/// Starts moves off a draining node for every workload placed on it that is not moving yet.
async fn drain_node(
    s: &AppState,
    node: &NodeRow,
    nodes: &[NodeRow],
    placed: &mut [WorkloadRow],
    now: u64,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let (store, rewrite) = (&s.store, s.node_registry.as_ref());
    for i in 0..placed.len() {
        let w = placed[i].clone();
        if w.node_id.as_deref() != Some(&node.id) || w.moving_to.is_some() {
            continue;
        }
        let state = NodeLifecycle::parse(&node.lifecycle);
        if let Some(primary) = s3::primary_id(&w) {
            // A replica moves by being replaced: dropped here, a new one is placed on another
            // node (this one is cordoned) and gets a full copy from the primary.
            if let Some(p) = placed.iter().find(|p| p.id == primary).cloned() {
                let why = format!("its node {} is {state}", node.id);
                drop_replica(s, &p, &w, &why, now, changes).await?;
                placed[i].node_id = None;
            }
            continue;
        }
        match workloads::relocation(&w.kind) {
            Relocation::NotMovable(why) => {
                let detail = format!("node {} is {state}; not movable: {why}", node.id);
                event_once(store, &w, now, "not_movable", &detail).await?;
            }
            Relocation::Restart => {
                let retry_ms = RETRY_MOVE_AFTER.as_millis() as u64;
                let last = store.workload_events(&w.id).await?.pop();
                if last.is_some_and(|e| e.kind == "move_failed" && e.at_ms + retry_ms > now) {
                    continue;
                }
                let within = workloads::placement_of(&w);
                match workloads::place(
                    nodes,
                    placed,
                    needs(&w),
                    &within,
                    std::slice::from_ref(&node.id),
                    now,
                ) {
                    Ok((to, _)) => {
                        let detail = format!(
                            "to {to}: node {} is {state}; it serves on {} until it runs on {to}",
                            node.id, node.id
                        );
                        if store
                            .move_workload(
                                &w.id,
                                (&node.id, None),
                                Placement::StartMove { to: &to },
                                now,
                                ("moving", &detail),
                            )
                            .await?
                        {
                            tracing::info!(workload = %w.id, from = %node.id, %to, "moving");
                            placed[i].moving_to = Some(to.clone());
                            workloads::retarget(store, &to, rewrite).await?;
                            changes.retargeted.push(to);
                        }
                    }
                    Err(why) => {
                        let detail = format!("node {} is {state}; cannot move: {why}", node.id);
                        event_once(store, &w, now, "cannot_move", &detail).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Places the workloads of a lost node on other nodes at once (nothing runs there to wait for).
async fn relocate_lost(
    s: &AppState,
    node: &NodeRow,
    nodes: &[NodeRow],
    placed: &mut [WorkloadRow],
    grace: Duration,
    now: u64,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let (store, rewrite) = (&s.store, s.node_registry.as_ref());
    let why = if node.revoked {
        format!("node {} lost: revoked", node.id)
    } else {
        format!(
            "node {} lost: offline ({}) for more than the {} s grace period",
            node.id,
            node.offline_reason,
            grace.as_secs()
        )
    };
    for i in 0..placed.len() {
        let w = placed[i].clone();
        if w.node_id.as_deref() != Some(&node.id) || w.moving_to.is_some() {
            continue;
        }
        if let Some(replica) = s3::replica_id(&w) {
            // Promoted, or why not said: either way nothing else is done for it (an `s3`
            // workload is not restarted elsewhere without its data).
            promote_replica(s, &w, &replica, node, nodes, placed, &why, now, changes).await?;
            continue;
        }
        if let Some(primary) = s3::primary_id(&w) {
            // The primary keeps serving; its journal holds what the replica misses until this
            // node is back (or the primary is deleted). A revoked node will not be back: the
            // replica is dropped and replaced (`ensure_replicas`).
            if let Some(p) = placed.iter().find(|p| p.id == primary && !node.revoked) {
                let detail = format!(
                    "{why}: its replica {} is there; the primary keeps serving and keeps the \
                     changes for the replica until that node is back",
                    w.name
                );
                event_unless_said(&s.store, p, now, "replica_lost", &detail).await?;
            }
            continue;
        }
        match workloads::relocation(&w.kind) {
            Relocation::NotMovable(r) => {
                event_once(
                    store,
                    &w,
                    now,
                    "not_movable",
                    &format!("{why}; not movable: {r}"),
                )
                .await?;
            }
            Relocation::Restart => {
                match workloads::place(
                    nodes,
                    placed,
                    needs(&w),
                    &workloads::placement_of(&w),
                    &[],
                    now,
                ) {
                    Ok((to, _)) => {
                        let detail = format!("from {} to {to}: {why}", node.id);
                        if store
                            .move_workload(
                                &w.id,
                                (&node.id, None),
                                Placement::Reschedule { to: &to },
                                now,
                                ("rescheduled", &detail),
                            )
                            .await?
                        {
                            tracing::warn!(workload = %w.id, from = %node.id, %to, "rescheduled off a lost node");
                            placed[i].node_id = Some(to.clone());
                            failpoint("reschedule-committed");
                            workloads::retarget(store, &to, rewrite).await?;
                            workloads::retarget(store, &node.id, rewrite).await?;
                            changes.retargeted.extend([to, node.id.clone()]);
                        }
                    }
                    Err(e) => {
                        let detail = format!("{why}; cannot reschedule: {e}");
                        event_once(store, &w, now, "cannot_reschedule", &detail).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Promotes S3 primary `w`'s replica (workload `replica_id`) when `w`'s node is lost: the
/// replica takes the primary's name (so its address: the gateway routes by name), and the
/// consumer is told, in the promoted workload's events, the replication lag last read from the
/// primary. Promotion deletes the primary (its node drops it if it ever comes back), so it is
/// done only when the replica is known to be close behind ([`s3_replication::promotable`]):
/// on an online node, the last report read while the lost node was still heard from, the
/// replica reachable, no damaged journal, the lag within bounds; and never while the lost
/// node's tunnel is still connected (its shipper could still write to the replica). Otherwise
/// the reason is said once and the primary waits for its node.
#[allow(clippy::too_many_arguments)]
async fn promote_replica(
    s: &AppState,
    w: &WorkloadRow,
    replica_id: &str,
    lost: &NodeRow,
    nodes: &[NodeRow],
    placed: &mut [WorkloadRow],
    why: &str,
    now: u64,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let store = &s.store;
    let refuse = |reason: String| {
        let detail =
            format!("{why}; its replica cannot take over: {reason}; it waits for its node");
        async move { event_unless_said(store, w, now, "cannot_promote", &detail).await }
    };
    let Some(ri) = placed.iter().position(|r| r.id == replica_id) else {
        return refuse("the replica is gone".into()).await;
    };
    let replica = placed[ri].clone();
    let Some(to) = replica.node_id.clone() else {
        return refuse("the replica is not placed".into()).await;
    };
    let usable = nodes
        .iter()
        .any(|n| n.id == to && n.online && !n.revoked && replica.moving_to.is_none());
    if !usable {
        return refuse(format!("its node {to} is not online")).await;
    }
    let tunnel_up = s.tunnels.get().is_some_and(|t| t.is_connected(&lost.id));
    if tunnel_up && !lost.revoked {
        return refuse(format!(
            "node {}'s tunnel is still connected, so the primary may still be writing",
            lost.id
        ))
        .await;
    }
    let last = store.replication(&w.id).await?;
    let report = last
        .as_ref()
        .and_then(|(json, at)| Some((s3_replication::parse(json.as_bytes()).ok()?, *at)));
    // A revoked node will never come back: its replica is the best copy there will be.
    let heard = lost.last_seen_ms.max(lost.registered_ms);
    if !lost.revoked {
        if let Err(reason) =
            s3_replication::promotable(report.as_ref().map(|(r, at)| (r, *at)), heard)
        {
            return refuse(reason).await;
        }
    }
    let lag = s3_replication::lag_at_loss(report.as_ref().map(|(r, at)| (r, *at)), now);
    let promoted = s3::settings(&replica)?.promoted(&s3::settings(w)?);
    let settings = promoted.to_json(&replica.id)?;
    let detail = format!(
        "{why}: the replica on node {to} now serves {:?} at the same address, with no replica of its own; {lag}",
        w.name
    );
    if !store
        .promote_replica(w, &replica, &settings, now, ("promoted", &detail))
        .await?
    {
        return Ok(());
    }
    tracing::warn!(workload = %w.id, replica = %replica.id, from = %lost.id, %to, "S3 replica promoted off a lost node");
    placed[ri].name = w.name.clone();
    placed[ri].settings = settings;
    placed[ri].updated_ms = now;
    // The primary's row is gone: nothing more is done for it in this round.
    if let Some(p) = placed.iter_mut().find(|p| p.id == w.id) {
        p.node_id = None;
    }
    let rewrite = s.node_registry.as_ref();
    workloads::retarget(store, &to, rewrite).await?;
    workloads::retarget(store, &lost.id, rewrite).await?;
    changes.retargeted.extend([to, lost.id.clone()]);
    Ok(())
}

/// Finishes (the new copy runs) or gives up (it failed, or its node went away) each move in
/// progress. A move that carries an update makes the new version the workload's when it
/// finishes; when it is given up the old version keeps serving and the new one is dropped.
async fn settle_moves(
    s: &AppState,
    nodes: &[NodeRow],
    placed: &[WorkloadRow],
    now: u64,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let (store, rewrite) = (&s.store, s.node_registry.as_ref());
    for w in placed {
        let (Some(from), Some(to)) = (&w.node_id, &w.moving_to) else {
            continue;
        };
        let dest = nodes.iter().find(|n| &n.id == to);
        let (state, reason, _) = workloads::lifecycle(w, dest);
        let (failed, stays) = if w.next.is_some() {
            (
                "update_failed",
                format!("the old version keeps serving on {from}"),
            )
        } else {
            ("move_failed", format!("stays on {from}"))
        };
        let outcome = match dest {
            None => Some((failed, format!("node {to} is gone; {stays}"))),
            Some(d) if d.revoked => Some((failed, format!("node {to} was revoked; {stays}"))),
            Some(d) if !d.online => Some((
                failed,
                format!("node {to} went offline ({}); {stays}", d.offline_reason),
            )),
            // Its last report predates the target that holds this move (the same id may have
            // run there before, or failed there a minute ago): wait for the report that
            // acknowledges it. Statuses carry the applied revision with the workloads' states.
            Some(d)
                if d.applied_revision < d.target_revision
                    && now
                        < w.updated_ms
                            .saturating_add(MOVE_DEADLINE.as_millis() as u64) =>
            {
                continue
            }
            _ if state == "running" => None,
            _ if state == "failed" || state == "degraded" => Some((
                failed,
                format!(
                    "on {to}: {}; {stays}",
                    reason.unwrap_or_else(|| state.to_string())
                ),
            )),
            // `updated_ms` is when the move started (only placement changes write it).
            _ if now
                >= w.updated_ms
                    .saturating_add(MOVE_DEADLINE.as_millis() as u64) =>
            {
                Some((
                    failed,
                    format!(
                        "not running on {to} after {} s (still {state}); {stays}",
                        MOVE_DEADLINE.as_secs()
                    ),
                ))
            }
            _ => continue,
        };
        match outcome {
            None => {
                let (kind, detail) = if w.next.is_some() {
                    (
                        "updated",
                        format!("the new version runs on {to}; the old one removed from {from}"),
                    )
                } else {
                    ("moved", format!("running on {to}; removed from {from}"))
                };
                let seen = (from.as_str(), Some(to.as_str()));
                if store
                    .move_workload(
                        &w.id,
                        seen,
                        Placement::FinishMove { to },
                        now,
                        (kind, &detail),
                    )
                    .await?
                {
                    tracing::info!(workload = %w.id, %from, %to, "moved");
                    changes.retarget_later.push(from.clone());
                }
            }
            Some((kind, detail)) => {
                let seen = (from.as_str(), Some(to.as_str()));
                if store
                    .move_workload(&w.id, seen, Placement::CancelMove, now, (kind, &detail))
                    .await?
                {
                    tracing::warn!(workload = %w.id, %from, %to, %detail, "move given up");
                    workloads::retarget(store, to, rewrite).await?;
                    changes.retargeted.push(to.clone());
                }
            }
        }
    }
    Ok(())
}

/// Whether `node` is due to be revoked once empty: decommissioning, or decommissioned by a
/// fleet that stopped before it revoked it.
fn finishes_decommission(node: &NodeRow) -> bool {
    match NodeLifecycle::parse(&node.lifecycle) {
        NodeLifecycle::Decommissioning => true,
        NodeLifecycle::Decommissioned => !node.revoked,
        _ => false,
    }
}

/// Revokes a decommissioning node once nothing is placed on it or moving off it. The state
/// changes first, compare-and-set: a node uncordoned meanwhile is not revoked.
async fn finish_decommission(s: &AppState, node: &NodeRow) -> Result<(), StoreError> {
    if NodeLifecycle::parse(&node.lifecycle) == NodeLifecycle::Decommissioning
        && !s
            .store
            .set_node_lifecycle(
                &node.id,
                (&node.lifecycle, &node.lifecycle_by),
                NodeLifecycle::Decommissioned.as_str(),
                &node.lifecycle_by,
            )
            .await?
    {
        return Ok(());
    }
    s.store.revoke_node(&node.id).await?;
    audit::record(
        &s.store,
        "fleet",
        Action::NodeRevoked,
        &node.id,
        "decommissioned: drained",
    )
    .await?;
    s.ingest.forget(&node.id);
    if let Err(e) = s.accounts.revoke_node(&node.id).await {
        // Every fleet start disables the accounts of revoked nodes again.
        tracing::error!(node = %node.id, error = %e, "decommissioned node revoked in the store, not on the broker");
    }
    tracing::info!(node = %node.id, "node decommissioned");
    Ok(())
}

/// Drains one node now (the API calls this so its answer already shows the moves).
pub async fn drain_now(s: &AppState, node_id: &str, now: u64) -> Result<(), StoreError> {
    let _placing = s.store.placement_guard().await?;
    let nodes = s.store.nodes().await?;
    let Some(node) = nodes.iter().find(|n| n.id == node_id) else {
        return Ok(());
    };
    let mut placed = s.store.workloads(None).await?;
    drain_node(s, node, &nodes, &mut placed, now, &mut Changes::default()).await
}

/// One pass: settle moves, drain draining nodes, finish decommissions, relocate lost nodes'
/// workloads. `watching_since` (ms): when this process began watching the nodes (its start,
/// or when it became leader). A node is lost only once the grace has passed since then too:
/// a fleet that was down for longer than the grace must not take every node's silence during
/// its own absence for node loss and move every workload at once.
pub async fn round(
    s: &AppState,
    grace: Duration,
    watching_since: u64,
    now: u64,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    // Moves and rescheduling place workloads: no deploy or update may place meanwhile.
    let _placing = s.store.placement_guard().await?;
    let nodes = s.store.nodes().await?;
    let placed = s.store.workloads(None).await?;
    settle_moves(s, &nodes, &placed, now, changes).await?;

    let mut placed = s.store.workloads(None).await?;
    // Only nodes holding work need a look (and decommissioning ones, to finish them).
    let occupied: HashSet<String> = placed
        .iter()
        .flat_map(|w| w.node_id.iter().chain(w.moving_to.iter()).cloned())
        .collect();
    let grace_ms = grace.as_millis() as u64;
    for n in &nodes {
        let state = NodeLifecycle::parse(&n.lifecycle);
        if !occupied.contains(&n.id) {
            if finishes_decommission(n) {
                finish_decommission(s, n).await?;
            }
            continue;
        }
        let lost = n.revoked
            || (!n.online
                && n.last_seen_ms
                    .max(n.registered_ms)
                    .max(watching_since)
                    .saturating_add(grace_ms)
                    <= now);
        if lost {
            relocate_lost(s, n, &nodes, &mut placed, grace, now, changes).await?;
        } else if state.drains() {
            drain_node(s, n, &nodes, &mut placed, now, changes).await?;
        }
        let empty = !placed
            .iter()
            .any(|w| w.node_id.as_deref() == Some(&n.id) || w.moving_to.as_deref() == Some(&n.id));
        if finishes_decommission(n) && empty {
            finish_decommission(s, n).await?;
        }
    }
    ensure_replicas(s, &nodes, &placed, now, changes).await?;
    Ok(())
}

/// Unlinks S3 primary `primary` from its replica `replica` and deletes the replica, in one
/// compare-and-set on the primary with its event (`why`: the reason); [`ensure_replicas`]
/// places a new one. Both nodes get their targets.
async fn drop_replica(
    s: &AppState,
    primary: &WorkloadRow,
    replica: &WorkloadRow,
    why: &str,
    now: u64,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let (store, rewrite) = (&s.store, s.node_registry.as_ref());
    let unlinked = s3::S3Settings {
        replica: None,
        ..s3::settings(primary)?
    };
    let json = unlinked.to_json(&primary.id)?;
    let detail = format!(
        "replica {} dropped: {why}; a new one is placed when a node can take it",
        replica.name
    );
    if !store
        .relink_replica(
            primary,
            &json,
            None,
            Some(&replica.id),
            now,
            ("replica_dropped", &detail),
        )
        .await?
    {
        return Ok(());
    }
    tracing::warn!(workload = %primary.id, replica = %replica.id, %why, "S3 replica dropped");
    for node in primary.node_id.iter().chain(replica.node_id.iter()) {
        workloads::retarget(store, node, rewrite).await?;
        changes.retargeted.push(node.clone());
    }
    Ok(())
}

/// Gives every S3 primary on a working node a replica: one that has none (its deploy found no
/// room, it was deployed before replicas, or it was promoted) gets one when a node can take
/// it; one whose replica's node was revoked (it will not come back) has that replica dropped,
/// and gets a new one at the next round. The primary restarts with the new replica's address
/// and id, and the server makes a full copy to it. Each change is a compare-and-set on the
/// primary with its event.
async fn ensure_replicas(
    s: &AppState,
    nodes: &[NodeRow],
    placed: &[WorkloadRow],
    now: u64,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let (store, rewrite) = (&s.store, s.node_registry.as_ref());
    let working = |id: &str| nodes.iter().any(|n| n.id == id && n.online && !n.revoked);
    let mut placed = placed.to_vec();
    for i in 0..placed.len() {
        let mut w = placed[i].clone();
        if w.kind != "s3" || w.moving_to.is_some() {
            continue;
        }
        let Ok(settings) = s3::settings(&w) else {
            continue;
        };
        let Some(node) = w.node_id.clone().filter(|n| working(n)) else {
            continue;
        };
        if settings.replica_of.is_some() {
            continue;
        }
        if let Some(rid) = &settings.replica {
            let replica = placed.iter().find(|r| r.id == *rid).cloned();
            let revoked = |r: &WorkloadRow| {
                r.node_id
                    .as_deref()
                    .is_none_or(|rn| nodes.iter().find(|n| n.id == rn).is_none_or(|n| n.revoked))
            };
            match replica {
                Some(r) if revoked(&r) => {
                    let why = format!(
                        "its node {} was revoked",
                        r.node_id.as_deref().unwrap_or("-")
                    );
                    drop_replica(s, &w, &r, &why, now, changes).await?;
                }
                Some(_) => {}
                None => {
                    // A link to a replica that is not stored (a fleet stopped half-way): unlink.
                    let gone = WorkloadRow {
                        id: rid.clone(),
                        name: s3::replica_name(&w.name),
                        node_id: None,
                        ..w.clone()
                    };
                    drop_replica(s, &w, &gone, "it is not stored", now, changes).await?;
                }
            }
            continue;
        }
        let within = crate::offers::Placement::default();
        match workloads::place_replica(nodes, &placed, needs(&w), &within, &node, now) {
            Ok((to, score, other_provider)) => {
                let (replica, to) = workloads::replica_row(&mut w, to, now)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let whose = if other_provider {
                    "another provider's node"
                } else {
                    "the same provider's node: no other provider's node can take it"
                };
                let detail = format!(
                    "replica {} placed on {to} (score {score:.1}), {whose}; the server restarts to ship a full copy to it",
                    replica.name
                );
                let first = format!("replica of {:?} placed on {to} (score {score:.1})", w.name);
                let primary = &placed[i];
                if store
                    .relink_replica(
                        primary,
                        &w.settings,
                        Some((&replica, &first)),
                        None,
                        now,
                        ("replica_placed", &detail),
                    )
                    .await?
                {
                    tracing::info!(workload = %w.id, replica = %replica.id, %to, "S3 replica placed");
                    workloads::retarget(store, &to, rewrite).await?;
                    workloads::retarget(store, &node, rewrite).await?;
                    changes.retargeted.extend([to, node]);
                    // The next placement in this round sees its reservation.
                    placed.push(replica);
                }
            }
            Err(why) => {
                let detail =
                    format!("no replica ({why}): the objects are kept on node {node} only");
                event_unless_said(store, &w, now, "no_replica", &detail).await?;
            }
        }
    }
    Ok(())
}

/// Sends the nodes their new targets now (when a link is given) rather than at the link's next
/// re-send.
async fn send(s: &AppState, link: Option<&Link>, ids: &[String]) {
    let Some(link) = link else { return };
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    for id in ids {
        match s.store.node(&id).await {
            Ok(Some(n)) if n.online && !n.revoked => link.send_target(&n).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %id, error = %e, "cannot read node to send its target"),
        }
    }
}

/// The background task: reconciles targets once, then runs a [`round`] every second and
/// sends the targets it changed through `link`.
pub async fn run(state: Arc<AppState>, grace: Duration, link: Option<Link>) {
    match reconcile_targets(&state.store, state.node_registry.as_ref()).await {
        Ok(changed) if !changed.is_empty() => {
            tracing::info!(nodes = ?changed, "targets rebuilt from the placements")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot reconcile targets"),
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut later: Vec<(tokio::time::Instant, String)> = Vec::new();
    let watching_since = lattice_wire::now_ms();
    loop {
        tick.tick().await;
        let mut changes = Changes::default();
        let now = lattice_wire::now_ms();
        if let Err(e) = round(&state, grace, watching_since, now, &mut changes).await {
            tracing::warn!(error = %e, "node lifecycle round failed");
        }
        let now = tokio::time::Instant::now();
        later.extend(
            changes
                .retarget_later
                .drain(..)
                .map(|n| (now + ROUTE_SWITCH, n)),
        );
        let (due, wait): (Vec<_>, Vec<_>) = later.drain(..).partition(|(at, _)| *at <= now);
        later = wait;
        for (_, node) in due {
            match workloads::retarget(&state.store, &node, state.node_registry.as_ref()).await {
                Ok(_) => changes.retargeted.push(node),
                // A later start rebuilds it (reconcile_targets); try again next round.
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot retarget");
                    later.push((now, node));
                }
            }
        }
        send(&state, link.as_ref(), &changes.retargeted).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeLifecycle::*;

    #[test]
    fn transitions_are_idempotent_and_a_revoked_node_cannot_change() {
        assert_eq!(transition(Active, false, Op::Cordon), Ok(Cordoned));
        assert_eq!(transition(Cordoned, false, Op::Cordon), Ok(Cordoned));
        assert_eq!(transition(Draining, false, Op::Cordon), Ok(Draining));
        assert_eq!(transition(Cordoned, false, Op::Uncordon), Ok(Active));
        assert_eq!(transition(Draining, false, Op::Uncordon), Ok(Active));
        assert_eq!(transition(Active, false, Op::Drain), Ok(Draining));
        assert_eq!(
            transition(Decommissioning, false, Op::Drain),
            Ok(Decommissioning)
        );
        assert_eq!(
            transition(Draining, false, Op::Decommission),
            Ok(Decommissioning)
        );
        let e = transition(Decommissioned, true, Op::Uncordon).unwrap_err();
        assert!(e.contains("decommissioned"), "{e}");
        let e = transition(Active, true, Op::Drain).unwrap_err();
        assert!(e.contains("revoked"), "{e}");
    }

    #[test]
    fn an_operators_hold_is_lifted_only_by_an_operator() {
        assert_eq!(holder("", false, Cordoned), Ok("provider"));
        assert_eq!(holder("provider", false, Active), Ok(""));
        assert_eq!(holder("", true, Cordoned), Ok("operator"));
        // The provider may go further, and the hold stays the operator's.
        assert_eq!(holder("operator", false, Draining), Ok("operator"));
        assert_eq!(holder("operator", false, Decommissioning), Ok("operator"));
        let e = holder("operator", false, Active).unwrap_err();
        assert!(e.contains("only an operator"), "{e}");
        assert_eq!(holder("operator", true, Active), Ok(""));
        // An operator changing a provider's state takes the hold.
        assert_eq!(holder("provider", true, Draining), Ok("operator"));
    }

    #[test]
    fn unknown_stored_states_take_no_new_work() {
        for s in [Active, Cordoned, Draining, Decommissioning, Decommissioned] {
            assert_eq!(NodeLifecycle::parse(s.as_str()), s);
        }
        assert_eq!(NodeLifecycle::parse("paused?"), Cordoned);
    }

    #[test]
    fn containers_move_and_other_kinds_say_why_not() {
        assert_eq!(workloads::relocation("container"), Relocation::Restart);
        let Relocation::NotMovable(why) = workloads::relocation("postgres") else {
            panic!("a stateful kind must not be restarted empty elsewhere");
        };
        assert!(why.contains("postgres"), "{why}");
    }
}
