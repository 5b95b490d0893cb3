//! Placement, explained (operators only; issue 5: "detail per node on request"): for an
//! existing workload or a would-be one, the scheduler's decision now (the chosen node and its
//! score, the counts of rejected nodes per reason) and its verdict on every node (its score,
//! or the rule it broke with the figures: needed against free CPU, memory or disk). Node ids,
//! providers and capacities are the fleet's, not a tenant's: consumers and providers get 403,
//! before anything is looked up.

use super::{ApiError, AppState, Principal};
use crate::offers::Placement;
use crate::scheduler::{self, NodeVerdict, Reason, Request, Resources, Verdict};
use crate::store::{NodeRow, WorkloadRow};
use crate::workloads;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The scheduler's decision and its verdict on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlacementExplanation {
    /// The workload explained (`None`: a would-be request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Its account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The node it runs on now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node: Option<String>,
    pub kind: String,
    pub plan: String,
    /// What it needs (CPU in millicores, memory and disk in bytes).
    pub needs: Resources,
    /// Where it may run (region, labels), as its owner asked.
    pub placement: Placement,
    /// The node the scheduler chooses now; `None`: no node can take it.
    pub chosen: Option<String>,
    /// The chosen node's score (0 without one).
    pub score: f64,
    /// How many nodes were turned away, per reason.
    pub rejected: BTreeMap<Reason, u32>,
    /// Every node (revoked ones aside): the chosen one first, then the others that fit (best
    /// score first), then those turned away (by reason, then id).
    pub nodes: Vec<NodeVerdict>,
}

/// `POST /api/v1/placement`: a would-be deploy, as the scheduler sees it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// `container` (default) or `s3` (its volume counts as disk).
    #[serde(default)]
    pub kind: Option<String>,
    /// `micro`, `small` (default), `medium` or `large`.
    #[serde(default)]
    pub plan: Option<String>,
    /// Only nodes in this region.
    #[serde(default)]
    pub region: Option<String>,
    /// Only nodes whose offer carries every one of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ExplainQuery {
    /// The workload's account; needed only when several accounts have a workload of that
    /// name.
    pub account: Option<String>,
}

/// The request `workloads::place` makes for `needs` within `within` (a new placement: no node
/// to avoid).
fn request(needs: Resources, within: &Placement) -> Request {
    workloads::request(needs, within, &[])
}

/// Places `req` on the fleet `nodes` holding the reservations of `placed`, node by node.
fn explanation(
    nodes: &[NodeRow],
    placed: &[WorkloadRow],
    req: &Request,
    now_ms: u64,
) -> (scheduler::Decision, Vec<NodeVerdict>) {
    let views = workloads::node_views(nodes, placed, now_ms);
    let decision = scheduler::place(&views, req);
    let mut verdicts = scheduler::explain(&views, req);
    verdicts.sort_by(|a, b| {
        let rank = |v: &NodeVerdict| match &v.verdict {
            Verdict::Fits { chosen: true, .. } => (0, 0.0, None),
            Verdict::Fits { score, .. } => (1, -score, None),
            Verdict::Rejected { reason, .. } => (2, 0.0, Some(*reason)),
        };
        let (ra, sa, wa) = rank(a);
        let (rb, sb, wb) = rank(b);
        ra.cmp(&rb)
            .then(sa.total_cmp(&sb))
            .then(wa.cmp(&wb))
            .then_with(|| a.node.cmp(&b.node))
    });
    (decision, verdicts)
}

/// Why the scheduler would place one workload where it would, node by node: the decision it
/// makes for it now, as if it were deployed again (its own reservation left out, so the node
/// it runs on is judged as any other).
#[utoipa::path(get, path = "/api/v1/workloads/{name}/placement", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name"), ExplainQuery),
    responses((status = 200, body = PlacementExplanation),
        (status = 400, description = "several accounts have a workload of that name (give ?account=ID), or a bad query", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, description = "not an operator", body = super::ErrorBody),
        (status = 404, description = "no such workload", body = super::ErrorBody)))]
pub async fn workload(
    p: Principal,
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    q: Result<Query<ExplainQuery>, QueryRejection>,
) -> Result<Json<PlacementExplanation>, ApiError> {
    p.require_operator()?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let w = match &q.account {
        Some(account) => s.store.workload(account, &name).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no workload named {name:?} in account {account:?}"))
        })?,
        None => {
            let mut rows: Vec<WorkloadRow> = s
                .store
                .workloads(None)
                .await?
                .into_iter()
                .filter(|w| w.name == name)
                .collect();
            match rows.len() {
                0 => {
                    return Err(ApiError::NotFound(format!(
                        "no workload named {name:?} in any account"
                    )))
                }
                1 => rows.remove(0),
                _ => {
                    let accounts: Vec<&str> = rows.iter().map(|w| w.account_id.as_str()).collect();
                    return Err(ApiError::BadRequest(format!(
                        "{} accounts have a workload named {name:?} ({}): name one with ?account=ID",
                        rows.len(),
                        accounts.join(", ")
                    )));
                }
            }
        }
    };
    let needs = crate::lifecycle::needs(&w);
    let within = workloads::placement_of(&w);
    let nodes = s.store.nodes_for_placement().await?;
    let placed: Vec<WorkloadRow> = s
        .store
        .reservations()
        .await?
        .into_iter()
        .filter(|r| r.id != w.id)
        .collect();
    let (d, verdicts) = explanation(
        &nodes,
        &placed,
        &request(needs, &within),
        lattice_wire::now_ms(),
    );
    Ok(Json(PlacementExplanation {
        workload: Some(w.name.clone()),
        account_id: Some(w.account_id.clone()),
        current_node: w.node_id.clone(),
        kind: w.kind.clone(),
        plan: w.plan.clone(),
        needs,
        placement: within,
        chosen: d.node,
        score: d.score,
        rejected: d.rejected,
        nodes: verdicts,
    }))
}

/// Why the scheduler would place a would-be workload (kind, plan, region, labels) where it
/// would, node by node. Nothing is stored or reserved.
#[utoipa::path(post, path = "/api/v1/placement", security(("bearer" = [])),
    request_body = ExplainRequest,
    responses((status = 200, body = PlacementExplanation),
        (status = 400, description = "an unknown kind or plan, an invalid region or label, or a bad body (the message names it)", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, description = "not an operator", body = super::ErrorBody)))]
pub async fn would_be(
    p: Principal,
    State(s): State<Arc<AppState>>,
    body: Result<Json<ExplainRequest>, JsonRejection>,
) -> Result<Json<PlacementExplanation>, ApiError> {
    p.require_operator()?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let kind = req.kind.as_deref().unwrap_or("container");
    if !workloads::KINDS.contains(&kind) {
        return Err(ApiError::BadRequest(format!(
            "unknown kind {kind:?} (kinds: {})",
            workloads::KINDS.join(", ")
        )));
    }
    let plan = workloads::plan(req.plan.as_deref())?;
    let within = Placement {
        region: req.region.clone(),
        labels: req.labels.clone(),
    };
    within.check().map_err(ApiError::BadRequest)?;
    let needs = Resources {
        cpu_millis: u64::from(plan.cpu_millis),
        memory_bytes: plan.memory_bytes,
        disk_bytes: if kind == "s3" {
            crate::kinds::s3::volume_bytes(plan.name)
        } else {
            0
        },
    };
    let nodes = s.store.nodes_for_placement().await?;
    let placed = s.store.reservations().await?;
    let (d, verdicts) = explanation(
        &nodes,
        &placed,
        &request(needs, &within),
        lattice_wire::now_ms(),
    );
    Ok(Json(PlacementExplanation {
        workload: None,
        account_id: None,
        current_node: None,
        kind: kind.to_string(),
        plan: plan.name.to_string(),
        needs,
        placement: within,
        chosen: d.node,
        score: d.score,
        rejected: d.rejected,
        nodes: verdicts,
    }))
}
