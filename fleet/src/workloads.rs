//! The workload frame (issue 5, item 2): a kind is a template (image, limits per plan, class)
//! turned into node targets by the fleet. The first kind is `container`: any stateless HTTP or
//! TCP service from an image in the fleet's registry, with a port, env and a plan.
//!
//! [`deploy`] validates the request, asks the [scheduler](crate::scheduler) for a node, stores
//! the workload with its placement and rewrites that node's target (the link sends it and
//! re-sends until the node acknowledges). [`delete`] removes it from its node's target (the node
//! removes its container, network and volumes) and from the store. [`view`] joins a workload
//! with what its node last reported.
//!
//! Capacity: until nodes report their envelope, a node offers half of its CPUs and half of its
//! memory (latticed's default envelope). Region, labels, storage classes, 24/7-ness and price
//! come from the provider's offer ([`crate::offers`]); reliability is the node's uptime since it
//! registered ([`NodeRow::reliability`]).

use crate::audit::{self, Action};
use crate::gateway::upstream::NodeRegistry;
use crate::offers::{NodeOffer, Placement};
use crate::scheduler::{self, Class, NodeView, Reason, Request, Resources};
use crate::store::{
    NextVersion, NodeRow, NodeState, Store, StoreError, WorkloadEvent, WorkloadRow, Write,
};
use lattice_wire::msg::{
    Inventory, RestartPolicy, UpstreamSpec, WorkloadClass, WorkloadSpec, WorkloadState,
    WorkloadStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kinds the fleet can deploy.
pub const KINDS: &[&str] = &["container", "s3"];

/// Names a workload may not have (they would shadow the fleet's own host names).
pub const RESERVED_NAMES: &[&str] = &[
    "api",
    "admin",
    "console",
    "fleet",
    "gateway",
    "lattice",
    "localhost",
    "www",
    "registry",
];

/// A plan: what a workload of that size gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub name: &'static str,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub pids_max: u32,
}

pub const PLANS: &[Plan] = &[
    // For the smallest services (a webhook, a static page, a sidecar): ten fit in a node that
    // donates one core.
    Plan {
        name: "micro",
        cpu_millis: 100,
        memory_bytes: 64 << 20,
        pids_max: 64,
    },
    Plan {
        name: "small",
        cpu_millis: 250,
        memory_bytes: 256 << 20,
        pids_max: 256,
    },
    Plan {
        name: "medium",
        cpu_millis: 500,
        memory_bytes: 512 << 20,
        pids_max: 512,
    },
    Plan {
        name: "large",
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
        pids_max: 1024,
    },
];

/// `POST /api/v1/workloads`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub kind: String,
    pub name: String,
    /// `small` (default), `medium` or `large`.
    #[serde(default)]
    pub plan: Option<String>,
    /// `container`: image reference pinned by digest (`registry/repo@sha256:…`). Other kinds
    /// bring their own.
    #[serde(default)]
    pub image: String,
    /// The port the service listens on.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Command (entrypoint and arguments); empty: the image's own.
    #[serde(default)]
    pub command: Vec<String>,
    /// Only nodes in this region (the providers' offers name regions).
    #[serde(default)]
    pub region: Option<String>,
    /// Only nodes whose offer carries every one of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `s3`: buckets that exist when the workload first runs (S3's naming rules, at most
    /// 100). The server creates any that are missing at each start and never deletes one.
    #[serde(default)]
    pub buckets: Vec<String>,
    /// `container`: other workloads of the same account this one connects to, wherever they
    /// run (through the node's tunnel and the gateway; ADR 0011).
    #[serde(default)]
    pub upstreams: Vec<UpstreamRequest>,
}

/// One upstream asked for at deploy: `workload`'s `port`, found by the container at the
/// `IP:PORT` in variable `env`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRequest {
    /// The name of another workload of the same account.
    pub workload: String,
    /// One of its ports (default: its first).
    #[serde(default)]
    pub port: Option<u16>,
    /// The variable (default: the workload's name in capitals, `-` as `_`, then `_ADDR`).
    #[serde(default)]
    pub env: Option<String>,
}

impl DeployRequest {
    /// Where it may run, as asked.
    pub fn placement(&self) -> Placement {
        Placement {
            region: self.region.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// What is stored as the `container` kind's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSettings {
    pub image: String,
    pub port: Option<u16>,
    pub env: BTreeMap<String, String>,
    pub command: Vec<String>,
    /// Where it may run (kept for moves).
    #[serde(default, skip_serializing_if = "is_anywhere")]
    pub placement: Placement,
    /// Its upstreams, resolved to workload ids at deploy ([`resolve_upstreams`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamSpec>,
}

fn is_anywhere(p: &Placement) -> bool {
    *p == Placement::default()
}

/// Where a stored workload may run (its kind's settings; anywhere when they say nothing).
pub fn placement_of(w: &WorkloadRow) -> Placement {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        placement: Placement,
    }
    serde_json::from_str::<Only>(&w.settings)
        .map(|o| o.placement)
        .unwrap_or_default()
}

/// Why a deploy or delete was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    /// No node can take it: the reason names the resource that was short, or the rule.
    #[error("{0}")]
    NoCapacity(String),
    /// This fleet is not configured for it (e.g. `s3` without `--s3-image`).
    #[error("{0}")]
    Unavailable(String),
    /// Something else is changing it (a move or an update in progress): try again later.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A name: 1 to 32 of `a-z 0-9 -`, starting with a letter, not ending with `-`, not reserved
/// (it becomes a DNS label of the workload's address).
pub fn check_name(name: &str) -> Result<(), FrameError> {
    let bad = |why: &str| Err(FrameError::Invalid(format!("name {name:?}: {why}")));
    if name.is_empty() || name.len() > 32 {
        return bad("must be 1 to 32 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("may hold only lower-case letters, digits and '-'");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return bad("must start with a letter");
    }
    if name.ends_with('-') {
        return bad("must not end with '-'");
    }
    if name.contains("--") {
        return bad("must not hold '--' (it separates the name from the account in its address)");
    }
    if RESERVED_NAMES.contains(&name) {
        return bad("is reserved");
    }
    Ok(())
}

/// The plan named (`small` when none).
pub fn plan(name: Option<&str>) -> Result<Plan, FrameError> {
    let n = name.unwrap_or("small");
    PLANS.iter().copied().find(|p| p.name == n).ok_or_else(|| {
        let known: Vec<&str> = PLANS.iter().map(|p| p.name).collect();
        FrameError::Invalid(format!("unknown plan {n:?} (plans: {})", known.join(", ")))
    })
}

/// Checks a deploy request; returns its plan and settings.
pub fn check_request(req: &DeployRequest) -> Result<(Plan, ContainerSettings), FrameError> {
    if !KINDS.contains(&req.kind.as_str()) {
        return Err(FrameError::Invalid(format!(
            "unknown kind {:?} (kinds: {})",
            req.kind,
            KINDS.join(", ")
        )));
    }
    check_name(&req.name)?;
    let plan = plan(req.plan.as_deref())?;
    if req.image.is_empty() {
        return Err(FrameError::Invalid(
            "kind container needs an image (--image REF, pinned by digest)".into(),
        ));
    }
    if !req.image.contains("@sha256:") {
        return Err(FrameError::Invalid(format!(
            "image {:?} must be pinned by digest (registry/repo@sha256:…)",
            req.image
        )));
    }
    if req.port == Some(0) {
        return Err(FrameError::Invalid("port must be 1 to 65535".into()));
    }
    if !req.buckets.is_empty() {
        return Err(FrameError::Invalid(
            "buckets are for kind s3; a container makes its own storage".into(),
        ));
    }
    for k in req.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(FrameError::Invalid(format!("env name {k:?} is not valid")));
        }
    }
    let placement = req.placement();
    Ok((
        plan,
        ContainerSettings {
            image: req.image.clone(),
            port: req.port,
            env: req.env.clone(),
            command: req.command.clone(),
            placement,
            upstreams: Vec::new(),
        },
    ))
}

/// The node-side spec of a stored workload.
pub fn spec(w: &WorkloadRow) -> Result<WorkloadSpec, StoreError> {
    if w.kind == "s3" {
        let p = plan(Some(&w.plan)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        return crate::kinds::s3::spec(w, p);
    }
    let s: ContainerSettings = serde_json::from_str(&w.settings)
        .map_err(|e| StoreError::Corrupt(format!("workload {} settings: {e}", w.id)))?;
    let p = plan(Some(&w.plan)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(WorkloadSpec {
        id: w.id.clone(),
        name: w.name.clone(),
        image: s.image,
        command: s.command,
        env: s.env.into_iter().collect(),
        volumes: vec![],
        cpu_millis: p.cpu_millis,
        memory_bytes: p.memory_bytes,
        pids_max: p.pids_max,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::AlwaysOn,
        egress: false,
        capabilities: vec![],
        ports: s.port.into_iter().collect(),
        upstreams: s.upstreams,
    })
}

/// The variable an upstream to `workload` is found in unless one is named: `DB_ADDR` for
/// `db`, `MY_API_ADDR` for `my-api`.
pub fn default_upstream_env(workload: &str) -> String {
    format!("{}_ADDR", workload.to_ascii_uppercase().replace('-', "_"))
}

/// Resolves a deploy's upstreams against `account`'s own workloads (another account's name
/// is as unknown as a missing one): each must exist and listen on the port asked for (its
/// first by default); variables must be valid, distinct, and not also in `env`.
pub async fn resolve_upstreams(
    store: &Store,
    account: &str,
    req: &DeployRequest,
) -> Result<Vec<UpstreamSpec>, FrameError> {
    const MAX: usize = 16;
    if req.upstreams.len() > MAX {
        return Err(FrameError::Invalid(format!(
            "{} upstreams asked for; at most {MAX}",
            req.upstreams.len()
        )));
    }
    let mut out: Vec<UpstreamSpec> = Vec::new();
    for u in &req.upstreams {
        if u.workload == req.name {
            return Err(FrameError::Invalid(format!(
                "upstream {:?}: a workload cannot be its own upstream",
                u.workload
            )));
        }
        let Some(other) = store.workload(account, &u.workload).await? else {
            return Err(FrameError::Invalid(format!(
                "upstream {:?}: you have no workload of that name",
                u.workload
            )));
        };
        if crate::kinds::s3::primary_id(&other).is_some() {
            // A write to a replica would be lost at the primary's next change of that key.
            return Err(FrameError::Invalid(format!(
                "upstream {:?}: it is an S3 replica, which only its primary writes to",
                u.workload
            )));
        }
        let ports = spec(&other)?.ports;
        let port = match u.port {
            Some(p) if ports.contains(&p) => p,
            Some(p) => {
                return Err(FrameError::Invalid(format!(
                    "upstream {:?}: it does not listen on port {p} (its ports: {ports:?})",
                    u.workload
                )))
            }
            None => *ports.first().ok_or_else(|| {
                FrameError::Invalid(format!(
                    "upstream {:?}: it declares no port to connect to",
                    u.workload
                ))
            })?,
        };
        let env = u
            .env
            .clone()
            .unwrap_or_else(|| default_upstream_env(&u.workload));
        if !UpstreamSpec::valid_env(&env) {
            return Err(FrameError::Invalid(format!(
                "upstream {:?}: variable name {env:?} is not [A-Za-z_][A-Za-z0-9_]*",
                u.workload
            )));
        }
        if req.env.contains_key(&env) || out.iter().any(|o| o.env == env) {
            return Err(FrameError::Invalid(format!(
                "upstream {:?}: variable {env} is set twice",
                u.workload
            )));
        }
        out.push(UpstreamSpec {
            name: UpstreamSpec::name_for(&other.id, port),
            workload: other.id.clone(),
            port,
            env,
        });
    }
    Ok(out)
}

/// The spec `node` runs for `w`: during a rolling update the node it is moving to runs the
/// new version, the node it is on the old one. `rewrite`: the fleet's registry as nodes reach
/// it (`FleetConfig::node_registry`, ADR 0011), if the fleet is set up for it.
pub fn spec_on(
    w: &WorkloadRow,
    node: &str,
    rewrite: Option<&NodeRegistry>,
) -> Result<WorkloadSpec, StoreError> {
    let mut spec = if w.next.is_some() && w.moving_to.as_deref() == Some(node) {
        spec(&w.as_next())
    } else {
        spec(w)
    }?;
    // The image reference a node is handed: the fleet registry's digest-pinned images at the
    // node's registry proxy when the fleet is set up for it, else unchanged.
    spec.image = crate::gateway::upstream::node_image_ref(&spec.image, rewrite);
    Ok(spec)
}

/// The scheduler's view of the fleet's nodes, with what placed workloads reserve (a workload
/// being moved reserves on both nodes; during an update, the new version's plan on the node
/// it is moving to). Nodes not `active` are cordoned; reliability is each node's uptime since it
/// registered, at `now_ms`.
pub fn node_views(nodes: &[NodeRow], placed: &[WorkloadRow], now_ms: u64) -> Vec<NodeView> {
    let mut reserved: BTreeMap<&str, Resources> = BTreeMap::new();
    for w in placed {
        for n in w.node_id.iter() {
            let r = reserved.entry(n.as_str()).or_default();
            r.cpu_millis += w.cpu_millis;
            r.memory_bytes += w.memory_bytes;
            r.disk_bytes += w.disk_bytes;
        }
        let next = w.as_next();
        for n in w.moving_to.iter() {
            let r = reserved.entry(n.as_str()).or_default();
            r.cpu_millis += next.cpu_millis;
            r.memory_bytes += next.memory_bytes;
            r.disk_bytes += next.disk_bytes;
        }
    }
    nodes
        .iter()
        .filter(|n| !n.revoked)
        .map(|n| {
            let inv: Option<Inventory> = serde_json::from_str(&n.inventory).ok();
            let (cpus, memory, disk, arch) = inv
                .map(|i| {
                    (
                        u64::from(i.cpu_count),
                        i.memory_bytes,
                        i.disk_free_bytes,
                        i.arch,
                    )
                })
                .unwrap_or_default();
            let reserved = reserved.get(n.id.as_str()).copied().unwrap_or_default();
            let offer = NodeOffer::parse(&n.offer);
            NodeView {
                id: n.id.clone(),
                provider: n.owner.clone().unwrap_or_else(|| n.id.clone()),
                online: n.online,
                cordoned: n.lifecycle != crate::lifecycle::NodeLifecycle::Active.as_str(),
                arch,
                region: offer.region,
                labels: offer.labels,
                storage_classes: offer.storage_classes,
                always_available: offer.always_available,
                capacity: Resources {
                    cpu_millis: cpus * 1000 / 2,
                    memory_bytes: memory / 2,
                    // The node's free space no longer holds the volumes it already made
                    // (they are allocated in full), so they are added back: half of what
                    // Lattice could have on that disk, not half of what is left.
                    disk_bytes: (disk + reserved.disk_bytes) / 2,
                },
                reserved,
                reliability: n.reliability(now_ms),
                price: offer.price,
            }
        })
        .collect()
}

/// Rewrites `node`'s target from the workloads placed on it (images as [`spec_on`] hands them
/// with `rewrite`); the link delivers it.
pub async fn retarget(
    store: &Store,
    node: &str,
    rewrite: Option<&NodeRegistry>,
) -> Result<u64, StoreError> {
    let mut tx = store.write().await?;
    let written = retarget_in(&mut tx, node, rewrite).await?;
    tx.commit().await?;
    Ok(written.target_revision)
}

/// [`retarget`] as a step of write `tx` (committed with the change it follows from); the
/// node's row as written.
pub async fn retarget_in(
    tx: &mut Write,
    node: &str,
    rewrite: Option<&NodeRegistry>,
) -> Result<NodeRow, StoreError> {
    // In one transaction with the read of what it is built from (Store::rewrite_target): a
    // writer that read the placements before another change committed (a PATCH on one
    // replica, the leader's delayed retarget) can no longer write the older list last.
    tx.rewrite_target(node, |placed| {
        let specs = placed
            .iter()
            .map(|w| spec_on(w, node, rewrite))
            .collect::<Result<Vec<_>, _>>()?;
        serde_json::to_string(&specs)
            .map_err(|e| StoreError::Corrupt(format!("target of {node}: {e}")))
    })
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("no node {node} to retarget")))
}

/// Asks the scheduler for a node with room for `needs`, never one of `avoid`. The error says
/// why none fits (the short resource, or the rules that turned nodes away).
/// The scheduler's request for a workload needing `needs` within `within`, kept off the
/// nodes in `avoid` (what [`place`] asks, and what the placement detail explains).
pub fn request(needs: Resources, within: &Placement, avoid: &[String]) -> Request {
    Request {
        needs,
        class: Class::AlwaysOn,
        arch: None,
        region: within.region.clone(),
        labels: within.labels.clone(),
        storage_class: None,
        avoid_nodes: avoid.to_vec(),
        avoid_providers: vec![],
    }
}

pub fn place(
    nodes: &[NodeRow],
    placed: &[WorkloadRow],
    needs: Resources,
    within: &Placement,
    avoid: &[String],
    now_ms: u64,
) -> Result<(String, f64), String> {
    place_request(nodes, placed, &request(needs, within, avoid), now_ms)
}

/// Places an S3 replica for a primary placed on `primary_node` (`placed` holds the primary's
/// reservation): on a node of another provider (issue 6; the scheduler's spread rule), else on
/// another node of the same provider. The node, its score and whether it is another
/// provider's; the error says why no node can take it.
pub fn place_replica(
    nodes: &[NodeRow],
    placed: &[WorkloadRow],
    needs: Resources,
    within: &Placement,
    primary_node: &str,
    now_ms: u64,
) -> Result<(String, f64, bool), String> {
    let mut req = request(needs, within, &[primary_node.to_string()]);
    let provider = nodes
        .iter()
        .find(|n| n.id == primary_node)
        .map(|n| n.owner.clone().unwrap_or_else(|| n.id.clone()));
    req.avoid_providers = provider.into_iter().collect();
    if let Ok((node, score)) = place_request(nodes, placed, &req, now_ms) {
        return Ok((node, score, true));
    }
    req.avoid_providers.clear();
    place_request(nodes, placed, &req, now_ms).map(|(node, score)| (node, score, false))
}

fn place_request(
    nodes: &[NodeRow],
    placed: &[WorkloadRow],
    request: &Request,
    now_ms: u64,
) -> Result<(String, f64), String> {
    let decision = scheduler::place(&node_views(nodes, placed, now_ms), request);
    match decision.node {
        Some(node) => Ok((node, decision.score)),
        None => Err(match decision.short_resource() {
            Some(Reason::Cpu) => "not enough CPU on any node".to_string(),
            Some(Reason::Memory) => "not enough memory on any node".to_string(),
            Some(Reason::Disk) => "not enough disk on any node".to_string(),
            _ if nodes.is_empty() => "no nodes have registered".to_string(),
            _ => {
                let why: Vec<String> = decision
                    .rejected
                    .iter()
                    .map(|(r, n)| {
                        format!(
                            "{n} {}",
                            serde_json::to_value(r)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                format!("no node can take it (rejected: {})", why.join(", "))
            }
        }),
    }
}

/// How a kind's workload gets off a node that is drained or lost: the hook stateful kinds
/// (S3, PostgreSQL: their own issues) fill with a restore from backup or a replica promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relocation {
    /// Stateless: start it on another node (a fresh copy; nothing to carry over).
    Restart,
    /// Cannot move (yet): why.
    NotMovable(String),
}

/// The relocation of a workload of `kind`.
pub fn relocation(kind: &str) -> Relocation {
    match kind {
        "container" => Relocation::Restart,
        other => Relocation::NotMovable(format!(
            "kind {other:?} keeps state on its node; its restore or replica promotion is not built yet"
        )),
    }
}

/// Deploys a workload for `account`: checked, placed, stored (with its audit row). Returns it
/// and the rows of the nodes whose target it rewrote, as written (for sending them).
pub async fn deploy(
    store: &Store,
    account: &str,
    req: &DeployRequest,
    kinds: &crate::kinds::KindConfig,
    rewrite: Option<&NodeRegistry>,
    now_ms: u64,
) -> Result<(WorkloadRow, Vec<NodeRow>), FrameError> {
    req.placement().check().map_err(FrameError::Invalid)?;
    let (plan, settings, disk_bytes) = if req.kind == "s3" {
        let (plan, s) = crate::kinds::s3::prepare(req, kinds.s3_image.as_deref())?;
        let disk = s.volume_bytes;
        (plan, serde_json::to_string(&s), disk)
    } else {
        let (plan, mut s) = check_request(req)?;
        s.upstreams = resolve_upstreams(store, account, req).await?;
        (plan, serde_json::to_string(&s), 0)
    };
    let settings = settings.map_err(|e| FrameError::Invalid(e.to_string()))?;
    if store.workload(account, &req.name).await?.is_some() {
        return Err(FrameError::Exists(format!(
            "a workload named {:?} exists already",
            req.name
        )));
    }
    // From reading the reservations to storing this one, no other placement runs.
    let placing = store.placement_guard().await?;
    let nodes = store.nodes_for_placement().await?;
    let placed = store.reservations().await?;
    let needs = Resources {
        cpu_millis: u64::from(plan.cpu_millis),
        memory_bytes: plan.memory_bytes,
        disk_bytes,
    };
    let (node, score) =
        place(&nodes, &placed, needs, &req.placement(), &[], now_ms).map_err(|why| {
            FrameError::NoCapacity(format!(
                "cannot place {:?} (plan {}): {why}",
                req.name, plan.name
            ))
        })?;
    let mut row = WorkloadRow {
        id: new_id(),
        account_id: account.to_string(),
        name: req.name.clone(),
        kind: req.kind.clone(),
        plan: plan.name.to_string(),
        settings,
        node_id: Some(node.clone()),
        moving_to: None,
        cpu_millis: u64::from(plan.cpu_millis),
        memory_bytes: plan.memory_bytes,
        disk_bytes,
        created_ms: now_ms,
        updated_ms: now_ms,
        next: None,
    };
    let mut detail = format!("placed on {node} (score {score:.1})");
    let replica = if req.kind == "s3" {
        let mut with_primary = placed.clone();
        with_primary.push(row.clone());
        match place_replica(
            &nodes,
            &with_primary,
            needs,
            &req.placement(),
            &node,
            now_ms,
        ) {
            Ok((to, score, other_provider)) => {
                let (r, why) = replica_row(&mut row, to, now_ms)?;
                let whose = if other_provider {
                    "another provider's node"
                } else {
                    "the same provider's node: no other provider's node can take it"
                };
                detail = format!(
                    "{detail}; replica {} on {why} (score {score:.1}), {whose}",
                    r.name
                );
                let event = format!(
                    "replica of {:?} placed on {why} (score {score:.1})",
                    row.name
                );
                Some((r, event))
            }
            Err(why) => {
                detail =
                    format!("{detail}; no replica ({why}): the objects are kept on this node only");
                None
            }
        }
    } else {
        None
    };
    let mut rows = vec![(&row, detail.as_str())];
    if let Some((r, event)) = &replica {
        rows.push((r, event.as_str()));
    }
    // The rows with their audit row in one transaction; the nodes' new targets in the next,
    // once the placement lock is given back: the next placement need not wait for them to
    // be built (with the rewrite under the lock, deploys on a saturated machine queued
    // longer for it; docs/benchmarks.md).
    let audit = audit::entry(
        account,
        Action::WorkloadCreated,
        &row.id,
        &format!("kind={} plan={} name={}", row.kind, row.plan, row.name),
    );
    let mut tx = store.write().await?;
    if !tx.insert_workloads(&rows).await? {
        return Err(FrameError::Exists(format!(
            "a workload named {:?} exists already",
            req.name
        )));
    }
    tx.audit(&audit).await?;
    tx.commit().await?;
    // Its reservation is stored: the next placement sees it.
    drop(placing);
    audit::log(&audit);
    let mut targets = vec![node.as_str()];
    targets.extend(replica.as_ref().and_then(|(r, _)| r.node_id.as_deref()));
    let mut tx = store.write().await?;
    let written = retarget_all_in(&mut tx, targets, rewrite).await?;
    tx.commit().await?;
    Ok((row, written))
}

/// [`retarget_in`] for each of `nodes`, in id order and once each (on PostgreSQL each node's
/// row stays locked until `tx` ends: two writes never wait for each other's second node); the
/// nodes' rows as written.
async fn retarget_all_in(
    tx: &mut Write,
    mut nodes: Vec<&str>,
    rewrite: Option<&NodeRegistry>,
) -> Result<Vec<NodeRow>, StoreError> {
    nodes.sort_unstable();
    nodes.dedup();
    let mut written = Vec::with_capacity(nodes.len());
    for node in nodes {
        written.push(retarget_in(tx, node, rewrite).await?);
    }
    Ok(written)
}

/// A new workload id.
fn new_id() -> String {
    format!("w-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// The replica of S3 primary `primary` (not stored yet), placed on `node`: links the two
/// (the primary's settings name the replica, which is then its upstream). Also returns `node`.
pub fn replica_row(
    primary: &mut WorkloadRow,
    node: String,
    now_ms: u64,
) -> Result<(WorkloadRow, String), FrameError> {
    let mut s = crate::kinds::s3::settings(primary)?;
    let id = new_id();
    s.replica = Some(id.clone());
    let replica = WorkloadRow {
        settings: s.for_replica(&primary.id).to_json(&id)?,
        id,
        name: crate::kinds::s3::replica_name(&primary.name),
        node_id: Some(node.clone()),
        created_ms: now_ms,
        updated_ms: now_ms,
        ..primary.clone()
    };
    primary.settings = s.to_json(&primary.id)?;
    Ok((replica, node))
}

/// Deletes `account`'s workload `name` everywhere: off its node's target, out of the store
/// (with its audit row). Returns it and the rows of the nodes whose target it rewrote.
pub async fn delete(
    store: &Store,
    account: &str,
    name: &str,
    rewrite: Option<&NodeRegistry>,
) -> Result<(WorkloadRow, Vec<NodeRow>), FrameError> {
    let w = store
        .workload(account, name)
        .await?
        .ok_or_else(|| FrameError::NotFound(format!("no workload named {name:?}")))?;
    if crate::kinds::s3::primary_id(&w).is_some() {
        let primary = name
            .strip_suffix(crate::kinds::s3::REPLICA_SUFFIX)
            .unwrap_or("its primary");
        return Err(FrameError::Invalid(format!(
            "workload {name:?} is the replica of {primary:?}: it goes when {primary:?} is deleted"
        )));
    }
    // An S3 primary's replica goes with it.
    let replica = match crate::kinds::s3::replica_id(&w) {
        Some(id) => store.workload_by_id(&id).await?,
        None => None,
    };
    let mut ids = vec![w.id.clone()];
    // Both nodes of a move in progress hold it.
    let mut nodes: Vec<&str> = w
        .node_id
        .iter()
        .chain(w.moving_to.iter())
        .map(String::as_str)
        .collect();
    if let Some(r) = &replica {
        ids.push(r.id.clone());
        nodes.extend(
            r.node_id
                .iter()
                .chain(r.moving_to.iter())
                .map(String::as_str),
        );
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    // The rows, their nodes' new targets and the audit row in one transaction.
    let audit = audit::entry(
        account,
        Action::WorkloadDeleted,
        &w.id,
        &format!("name={}", w.name),
    );
    let mut tx = store.write().await?;
    tx.delete_workloads(&ids).await?;
    let written = retarget_all_in(&mut tx, nodes, rewrite).await?;
    tx.audit(&audit).await?;
    tx.commit().await?;
    audit::log(&audit);
    Ok((w, written))
}

/// `PATCH /api/v1/workloads/{name}`: what to change; what is left out stays as it is.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// Another plan (resize).
    #[serde(default)]
    pub plan: Option<String>,
    /// A new image version, pinned by digest.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// A new command (entrypoint and arguments); an empty list: the image's own.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Environment variables to add or replace.
    #[serde(default)]
    pub set_env: BTreeMap<String, String>,
    /// Environment variables to remove (one not set is no error).
    #[serde(default)]
    pub unset_env: Vec<String>,
    /// How the new version replaces the old one (default `auto`).
    #[serde(default)]
    pub strategy: Strategy,
}

impl UpdateRequest {
    fn is_empty(&self) -> bool {
        self.plan.is_none()
            && self.image.is_none()
            && self.port.is_none()
            && self.command.is_none()
            && self.set_env.is_empty()
            && self.unset_env.is_empty()
    }
}

/// How an update replaces a workload's running version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Rolling when another node has room, otherwise in place (an event says why).
    #[default]
    Auto,
    /// The new version starts on another node; the old one serves until it runs, and stays
    /// if it fails. Refused (409) when no other node has room.
    Rolling,
    /// Replaced where it runs: the old version stops before the new one starts.
    InPlace,
}

/// What an update changes, for events and the audit log (env values are never named: they
/// may hold secrets).
pub fn describe_change(
    old_plan: &str,
    old: &ContainerSettings,
    new_plan: &str,
    new: &ContainerSettings,
) -> String {
    let mut parts = Vec::new();
    if old_plan != new_plan {
        parts.push(format!("plan {old_plan} -> {new_plan}"));
    }
    if old.image != new.image {
        parts.push(format!("image {} -> {}", old.image, new.image));
    }
    if old.port != new.port {
        let p = |p: Option<u16>| p.map_or("none".to_string(), |p| p.to_string());
        parts.push(format!("port {} -> {}", p(old.port), p(new.port)));
    }
    if old.command != new.command {
        parts.push("command changed".into());
    }
    let set: Vec<&str> = new
        .env
        .iter()
        .filter(|(k, v)| old.env.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    let unset: Vec<&str> = old
        .env
        .keys()
        .filter(|k| !new.env.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !set.is_empty() {
        parts.push(format!("env set: {}", set.join(", ")));
    }
    if !unset.is_empty() {
        parts.push(format!("env unset: {}", unset.join(", ")));
    }
    parts.join("; ")
}

/// The plan and settings `req` asks for, checked like a deploy.
pub fn apply_update(
    w: &WorkloadRow,
    req: &UpdateRequest,
) -> Result<(Plan, ContainerSettings), FrameError> {
    if w.kind != "container" {
        return Err(FrameError::Invalid(format!(
            "workload {:?} is of kind {}, which keeps its data on its node: changing it is not \
             built yet (only kind container can be updated)",
            w.name, w.kind
        )));
    }
    if req.is_empty() {
        return Err(FrameError::Invalid(
            "nothing to change: give a plan, image, port, command, set_env or unset_env".into(),
        ));
    }
    let mut s: ContainerSettings = serde_json::from_str(&w.settings)
        .map_err(|e| StoreError::Corrupt(format!("workload {} settings: {e}", w.id)))?;
    if let Some(i) = &req.image {
        s.image = i.clone();
    }
    if req.port.is_some() {
        s.port = req.port;
    }
    if let Some(c) = &req.command {
        s.command = c.clone();
    }
    for k in &req.unset_env {
        s.env.remove(k);
    }
    s.env
        .extend(req.set_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(u) = s.upstreams.iter().find(|u| s.env.contains_key(&u.env)) {
        return Err(FrameError::Invalid(format!(
            "env {} is where this workload finds its upstream {}; it cannot be set too",
            u.env, u.workload
        )));
    }
    let upstreams = std::mem::take(&mut s.upstreams);
    let asked = DeployRequest {
        kind: w.kind.clone(),
        name: w.name.clone(),
        plan: Some(req.plan.clone().unwrap_or_else(|| w.plan.clone())),
        image: s.image,
        port: s.port,
        env: s.env,
        command: s.command,
        region: s.placement.region,
        labels: s.placement.labels,
        buckets: vec![],
        upstreams: vec![],
    };
    // Upstreams are kept as they were resolved at deploy.
    check_request(&asked).map(|(plan, mut settings)| {
        settings.upstreams = upstreams;
        (plan, settings)
    })
}

/// Whether `w`'s node has room for it with `needs` instead of what it reserves now.
fn room_in_place(
    nodes: &[NodeRow],
    placed: &[WorkloadRow],
    w: &WorkloadRow,
    needs: Resources,
) -> Result<(), String> {
    let others: Vec<WorkloadRow> = placed.iter().filter(|p| p.id != w.id).cloned().collect();
    let views = node_views(nodes, &others, 0);
    let Some(v) = views
        .iter()
        .find(|v| w.node_id.as_deref() == Some(v.id.as_str()))
    else {
        return Ok(());
    };
    let free = |cap: u64, used: u64| cap.saturating_sub(used);
    if needs.cpu_millis > free(v.capacity.cpu_millis, v.reserved.cpu_millis) {
        return Err(format!("not enough CPU on node {}", v.id));
    }
    if needs.memory_bytes > free(v.capacity.memory_bytes, v.reserved.memory_bytes) {
        return Err(format!("not enough memory on node {}", v.id));
    }
    Ok(())
}

/// What [`update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// The request asked for what runs already.
    Unchanged,
    /// The new version is starting on `to`; the old one serves until it runs.
    Rolling { to: String, change: String },
    /// Replaced where it runs.
    InPlace { change: String },
}

/// Changes `account`'s workload `name` (resize, new configuration, new image version): rolling
/// onto another node when the strategy and the fleet allow, otherwise in place. Returns the
/// workload as stored after the change, what was done, and the rows of the nodes whose target
/// it rewrote, as written (for sending them).
pub async fn update(
    store: &Store,
    account: &str,
    name: &str,
    req: &UpdateRequest,
    rewrite: Option<&NodeRegistry>,
    now_ms: u64,
) -> Result<(WorkloadRow, Updated, Vec<NodeRow>), FrameError> {
    // Held from reading the workload: this process's changes of one workload apply one after
    // the other, in the order they came, each to the latest version (each request names what
    // to change, not a whole version); changes of other workloads run beside them.
    let _one = store.workload_guard(&format!("{account}/{name}")).await;
    // Only a change that may place takes the placement lock: onto another node (rolling), or
    // another plan where it runs (a resize needs the room). An in-place change of env, image,
    // port or command keeps the plan, so it reserves what it holds already.
    let may_place = req.plan.is_some() || req.strategy != Strategy::InPlace;
    let _placing = if may_place {
        Some(store.placement_guard().await?)
    } else {
        None
    };
    let changed_meanwhile = || {
        FrameError::Busy(format!(
            "workload {name:?} was changed meanwhile; look at it again and retry"
        ))
    };
    // Another fleet process (or this one's lifecycle task) may change it between the read and
    // the compare-and-set: an in-place change is then made again on what it wrote.
    for _ in 0..UPDATE_ATTEMPTS {
        let w = store
            .workload(account, name)
            .await?
            .ok_or_else(|| FrameError::NotFound(format!("no workload named {name:?}")))?;
        let (plan, new) = apply_update(&w, req)?;
        if let Some(to) = &w.moving_to {
            let what = if w.next.is_some() {
                "an update"
            } else {
                "a move"
            };
            return Err(FrameError::Busy(format!(
                "workload {name:?} is in the middle of {what} (to node {to}); try again once it \
                 is done"
            )));
        }
        let old: ContainerSettings = serde_json::from_str(&w.settings).unwrap_or_default();
        if plan.name == w.plan && new == old {
            return Ok((w, Updated::Unchanged, Vec::new()));
        }
        let change = describe_change(&w.plan, &old, plan.name, &new);
        let next = NextVersion {
            plan: plan.name.to_string(),
            settings: serde_json::to_string(&new)
                .map_err(|e| FrameError::Invalid(e.to_string()))?,
            cpu_millis: u64::from(plan.cpu_millis),
            memory_bytes: plan.memory_bytes,
        };
        // The change, its node's new target and the audit row in one transaction.
        let audited = |what: &str| {
            audit::entry(
                account,
                Action::WorkloadChanged,
                &w.id,
                &format!("name={} {what}", w.name),
            )
        };
        if !may_place {
            let here = w.node_id.as_deref().unwrap_or("no node yet");
            let detail = format!("in place on {here}: {change}");
            let audit = audited(&format!("in place: {change}"));
            let mut tx = store.write().await?;
            if !tx
                .update_in_place(&w, &next, now_ms, ("updated", &detail))
                .await?
            {
                continue;
            }
            let written = retarget_all_in(
                &mut tx,
                w.node_id.iter().map(String::as_str).collect(),
                rewrite,
            )
            .await?;
            tx.audit(&audit).await?;
            tx.commit().await?;
            audit::log(&audit);
            let mut w = w;
            w.plan = next.plan;
            w.settings = next.settings;
            w.cpu_millis = next.cpu_millis;
            w.memory_bytes = next.memory_bytes;
            w.updated_ms = now_ms;
            return Ok((w, Updated::InPlace { change }, written));
        }
        let needs = Resources {
            cpu_millis: next.cpu_millis,
            memory_bytes: next.memory_bytes,
            disk_bytes: w.disk_bytes,
        };
        let nodes = store.nodes_for_placement().await?;
        let placed = store.reservations().await?;
        let mut fallback = String::new();
        if let (Some(from), false) = (&w.node_id, req.strategy == Strategy::InPlace) {
            match place(
                &nodes,
                &placed,
                needs,
                &new.placement,
                std::slice::from_ref(from),
                now_ms,
            ) {
                Ok((to, _)) => {
                    let detail = format!(
                        "to {to}: {change}; the old version serves on {from} until the new one \
                         runs"
                    );
                    let audit = audited(&format!("rolling to {to}: {change}"));
                    let mut tx = store.write().await?;
                    if !tx
                        .start_update(&w, &to, &next, now_ms, ("updating", &detail))
                        .await?
                    {
                        return Err(changed_meanwhile());
                    }
                    let written = vec![retarget_in(&mut tx, &to, rewrite).await?];
                    tx.audit(&audit).await?;
                    tx.commit().await?;
                    audit::log(&audit);
                    let w = store
                        .workload(account, name)
                        .await?
                        .ok_or_else(changed_meanwhile)?;
                    return Ok((w, Updated::Rolling { to, change }, written));
                }
                Err(why) if req.strategy == Strategy::Rolling => {
                    return Err(FrameError::NoCapacity(format!(
                        "cannot roll out {name:?} (plan {}): no node besides {from} can take \
                         it: {why}; strategy in_place replaces it where it runs",
                        plan.name
                    )));
                }
                Err(why) => {
                    fallback = format!(
                        " (no other node can take a rolling update: {why}; the old version \
                         stops before the new one starts)"
                    );
                }
            }
        }
        room_in_place(&nodes, &placed, &w, needs).map_err(|why| {
            FrameError::NoCapacity(format!(
                "cannot resize {name:?} to plan {}: {why}",
                plan.name
            ))
        })?;
        let here = w.node_id.as_deref().unwrap_or("no node yet");
        let detail = format!("in place on {here}: {change}{fallback}");
        let audit = audited(&format!("in place: {change}"));
        let mut tx = store.write().await?;
        if !tx
            .update_in_place(&w, &next, now_ms, ("updated", &detail))
            .await?
        {
            return Err(changed_meanwhile());
        }
        let written = retarget_all_in(
            &mut tx,
            w.node_id.iter().map(String::as_str).collect(),
            rewrite,
        )
        .await?;
        tx.audit(&audit).await?;
        tx.commit().await?;
        audit::log(&audit);
        let w = store
            .workload(account, name)
            .await?
            .ok_or_else(changed_meanwhile)?;
        return Ok((w, Updated::InPlace { change }, written));
    }
    Err(changed_meanwhile())
}

/// How many times [`update`] makes an in-place change again when the workload changed between
/// its read and its write.
const UPDATE_ATTEMPTS: usize = 10;

/// The new version of a workload during a rolling update.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NextView {
    pub plan: String,
    pub image: String,
    pub port: Option<u16>,
}

/// A workload as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadView {
    pub name: String,
    pub kind: String,
    pub plan: String,
    /// pending, scheduled, starting, running, degraded or failed.
    pub state: String,
    /// Why, when degraded or failed.
    pub reason: Option<String>,
    pub node: Option<String>,
    /// A move in progress (drain, update): the node it is starting on; `node` serves until
    /// it runs.
    pub moving_to: Option<String>,
    /// During a rolling update: the new version starting on `moving_to`.
    #[serde(default)]
    pub next: Option<NextView>,
    pub image: String,
    pub port: Option<u16>,
    /// Its HTTPS address through the gateway, when the fleet knows the gateway's.
    #[serde(default)]
    pub endpoint: Option<String>,
    pub restarts: u32,
    pub created_ms: u64,
    /// Oldest first: all it keeps (the newest 100) when shown alone, the newest 10 in a list.
    pub events: Vec<WorkloadEvent>,
    /// An S3 primary's replica and its replication lag (shown alone; not in a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::kinds::s3_replication::ReplicationView>,
    /// The workloads it reaches (its upstreams; shown alone, not in a list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamView>,
}

/// One upstream of a workload as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpstreamView {
    /// The other workload's name (`null` once it is deleted: the upstream then refuses).
    pub workload: Option<String>,
    pub port: u16,
    /// The variable the container finds `IP:PORT` in.
    pub env: String,
}

/// The lifecycle state of a workload from its placement and its node's last report. On a
/// node that is offline (or revoked) it is `degraded` with the node's reason, unless it had
/// failed already.
pub fn lifecycle(w: &WorkloadRow, node: Option<&NodeRow>) -> (&'static str, Option<String>, u32) {
    lifecycle_on(w, node.map(NodeState::from).as_ref())
}

/// [`lifecycle`] from the node's [`NodeState`] (what views read: not the node's whole row).
pub fn lifecycle_on(
    w: &WorkloadRow,
    node: Option<&NodeState>,
) -> (&'static str, Option<String>, u32) {
    let Some(node) = node else {
        return ("pending", None, 0);
    };
    let offline =
        (!node.online).then(|| format!("node {} offline: {}", node.id, node.offline_reason));
    let statuses: Vec<WorkloadStatus> = serde_json::from_str(&node.workloads).unwrap_or_default();
    let Some(st) = statuses.into_iter().find(|s| s.id == w.id) else {
        if let Some(why) = offline {
            return ("degraded", Some(why), 0);
        }
        return ("scheduled", None, 0);
    };
    let (state, reason) = match st.state {
        WorkloadState::Creating => ("starting", None),
        WorkloadState::Running | WorkloadState::Healthy => ("running", None),
        WorkloadState::Paused => ("degraded", Some("paused outside the node's windows".into())),
        WorkloadState::Unhealthy => ("degraded", Some("health check failing".into())),
        WorkloadState::Exited { code } => ("failed", Some(format!("exited with code {code}"))),
        WorkloadState::OomKilled => ("failed", Some("killed: out of memory".into())),
        WorkloadState::ImageMissing { reason } => {
            ("failed", Some(format!("image missing: {reason}")))
        }
        WorkloadState::Failed { reason } => ("failed", Some(reason)),
    };
    if let Some(why) = offline.filter(|_| state != "failed") {
        return ("degraded", Some(why), st.restarts);
    }
    (state, reason, st.restarts)
}

/// Joins a workload with its node's report and its events.
pub async fn view(store: &Store, w: &WorkloadRow) -> Result<WorkloadView, StoreError> {
    let (node, events) = store.workload_view_parts(w).await?;
    view_of(w, node.as_ref(), events)
}

/// [`view`] with its node's state known already (the node's row a write just left): only
/// its events are read.
pub async fn view_with_node(
    store: &Store,
    w: &WorkloadRow,
    node: NodeState,
) -> Result<WorkloadView, StoreError> {
    let events = store.workload_events(&w.id).await?;
    view_of(w, Some(&node), events)
}

/// The workload `name` of `account` with its view (`None`: no such workload), read on one
/// connection.
pub async fn show(
    store: &Store,
    account: &str,
    name: &str,
) -> Result<Option<(WorkloadRow, WorkloadView)>, StoreError> {
    let Some((w, node, events)) = store.workload_with_view_parts(account, name).await? else {
        return Ok(None);
    };
    let mut v = view_of(&w, node.as_ref(), events)?;
    if w.kind == "container" {
        let s: ContainerSettings = serde_json::from_str(&w.settings).unwrap_or_default();
        for u in s.upstreams {
            let other = store.workload_by_id(&u.workload).await?;
            v.upstreams.push(UpstreamView {
                workload: other
                    .filter(|o| o.account_id == w.account_id)
                    .map(|o| o.name),
                port: u.port,
                env: u.env,
            });
        }
    }
    if let Some(replica) = crate::kinds::s3::replica_id(&w) {
        let replica = store.workload_by_id(&replica).await?;
        let last = store.replication(&w.id).await?;
        let (report, read_ms) = match last {
            Some((json, at)) => (
                crate::kinds::s3_replication::parse(json.as_bytes()).ok(),
                Some(at),
            ),
            None => (None, None),
        };
        v.replication = Some(crate::kinds::s3_replication::ReplicationView {
            replica: replica.as_ref().map_or_else(
                || crate::kinds::s3::replica_name(&w.name),
                |r| r.name.clone(),
            ),
            replica_node: replica.and_then(|r| r.node_id),
            report,
            read_ms,
        });
    }
    Ok(Some((w, v)))
}

/// How many of each workload's events a list carries: the newest (a show carries all the
/// store keeps, 100). Read from the database are only those: a list of 30 workloads with a
/// full history was 3,000 event rows (the API bench's costliest request).
pub const LISTED_EVENTS: usize = 10;

/// An account's workloads (every account's for `None`) with their views, with three queries
/// in all on one connection (the workloads, nodes, their newest [`LISTED_EVENTS`] events), not
/// three per workload: what `GET /api/v1/workloads` lists.
pub async fn views(
    store: &Store,
    account: Option<&str>,
) -> Result<Vec<(WorkloadRow, WorkloadView)>, StoreError> {
    let crate::store::Listed {
        rows,
        nodes,
        mut events,
    } = store.workloads_listed(account, LISTED_EVENTS).await?;
    rows.into_iter()
        .map(|w| {
            let node = w.node_id.as_ref().and_then(|id| nodes.get(id));
            let v = view_of(&w, node, events.remove(&w.id).unwrap_or_default())?;
            Ok((w, v))
        })
        .collect()
}

/// A workload's view from its row, its node's state and its events.
fn view_of(
    w: &WorkloadRow,
    node: Option<&NodeState>,
    events: Vec<WorkloadEvent>,
) -> Result<WorkloadView, StoreError> {
    let (state, reason, restarts) = lifecycle_on(w, node);
    let s = if w.kind == "s3" {
        ContainerSettings {
            image: crate::kinds::s3::settings(w)?.image,
            port: Some(crate::kinds::s3::PORT),
            ..Default::default()
        }
    } else {
        serde_json::from_str(&w.settings).unwrap_or_default()
    };
    Ok(WorkloadView {
        name: w.name.clone(),
        kind: w.kind.clone(),
        plan: w.plan.clone(),
        state: state.to_string(),
        reason,
        node: w.node_id.clone(),
        moving_to: w.moving_to.clone(),
        next: w.next.as_ref().map(|_| {
            let n: ContainerSettings =
                serde_json::from_str(&w.as_next().settings).unwrap_or_default();
            NextView {
                plan: w.as_next().plan,
                image: n.image,
                port: n.port,
            }
        }),
        image: s.image,
        port: s.port,
        endpoint: None,
        restarts,
        created_ms: w.created_ms,
        events,
        replication: None,
        upstreams: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> DeployRequest {
        DeployRequest {
            kind: "container".into(),
            name: name.into(),
            plan: None,
            image: "127.0.0.1:5000/app@sha256:aa".into(),
            port: Some(8080),
            env: BTreeMap::new(),
            command: vec![],
            ..Default::default()
        }
    }

    /// An online, active node with `inventory` (JSON), registered at 0.
    fn node_row(id: &str, inventory: String) -> NodeRow {
        NodeRow {
            id: id.into(),
            owner: None,
            token_id: String::new(),
            identity_key: String::new(),
            encryption_key: String::new(),
            broker_secret_hash: String::new(),
            inventory,
            firmware_version: String::new(),
            registered_ms: 0,
            revoked: false,
            online: true,
            offline_reason: String::new(),
            conn_epoch: 0,
            last_seen_ms: 0,
            usage: String::new(),
            applied_revision: 0,
            target_revision: 0,
            target: String::new(),
            workloads: String::new(),
            lifecycle: "active".into(),
            lifecycle_by: String::new(),
            offer: String::new(),
            down_ms: 0,
        }
    }

    #[test]
    fn plans_grow_in_every_resource_and_micro_fits_ten_to_a_core() {
        for pair in PLANS.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.cpu_millis < b.cpu_millis
                    && a.memory_bytes < b.memory_bytes
                    && a.pids_max < b.pids_max,
                "{a:?} is not smaller than {b:?}"
            );
        }
        let micro = plan(Some("micro")).unwrap();
        assert!(10 * micro.cpu_millis <= 1000, "{micro:?}");
        assert_eq!(plan(None).unwrap().name, "small", "the default stays small");
        let err = plan(Some("nano")).unwrap_err().to_string();
        assert!(err.contains("plans: micro, small, medium, large"), "{err}");
    }

    #[test]
    fn a_nodes_own_volumes_are_not_counted_twice_against_its_disk() {
        let gib = 1u64 << 30;
        let inventory = |free: u64| {
            serde_json::to_string(&Inventory {
                hostname: "h".into(),
                cpu_model: "c".into(),
                cpu_count: 8,
                memory_bytes: 64 * gib,
                disk_total_bytes: 200 * gib,
                disk_free_bytes: free,
                kernel: "k".into(),
                arch: "x86_64".into(),
            })
            .unwrap()
        };
        let node = node_row("n-1", inventory(50 * gib));
        // A 50 GiB volume made on a disk that had 100 GiB free: it now reports 50 GiB free.
        let big = WorkloadRow {
            id: "w-s3".into(),
            account_id: "a".into(),
            name: "files".into(),
            kind: "s3".into(),
            plan: "large".into(),
            settings: "{}".into(),
            node_id: Some("n-1".into()),
            moving_to: None,
            cpu_millis: 250,
            memory_bytes: gib,
            disk_bytes: 50 * gib,
            created_ms: 0,
            next: None,
            updated_ms: 0,
        };
        let views = node_views(&[node], &[big], 0);
        assert_eq!(views[0].capacity.disk_bytes, 50 * gib);
        // So a workload needing no disk, or a little, still fits.
        let need = Resources {
            cpu_millis: 250,
            memory_bytes: gib,
            disk_bytes: 0,
        };
        let request = scheduler::Request {
            needs: need,
            class: scheduler::Class::AlwaysOn,
            arch: None,
            region: None,
            labels: BTreeMap::new(),
            storage_class: None,
            avoid_nodes: vec![],
            avoid_providers: vec![],
        };
        let d = scheduler::place(&views, &request);
        assert_eq!(d.node.as_deref(), Some("n-1"), "{d:?}");
    }

    #[test]
    fn the_node_that_stayed_up_is_preferred_to_a_cheaper_one_that_did_not() {
        let inv = serde_json::to_string(&Inventory {
            hostname: "h".into(),
            cpu_model: "c".into(),
            cpu_count: 4,
            memory_bytes: 8 << 30,
            disk_total_bytes: 100 << 30,
            disk_free_bytes: 50 << 30,
            kernel: "k".into(),
            arch: "x86_64".into(),
        })
        .unwrap();
        let day = 86_400_000;
        let mut flaky = node_row("n-flaky", inv.clone());
        flaky.down_ms = day / 2;
        flaky.offer = r#"{"price":1}"#.into();
        let mut steady = node_row("n-steady", inv);
        steady.offer = r#"{"price":100}"#.into();
        let views = node_views(&[flaky.clone(), steady.clone()], &[], day);
        assert!((views[0].reliability - 0.5).abs() < 1e-9);
        assert_eq!(views[1].reliability, 1.0);
        let needs = Resources {
            cpu_millis: 250,
            memory_bytes: 1 << 20,
            disk_bytes: 0,
        };
        let (node, _) = place(
            &[flaky, steady],
            &[],
            needs,
            &Placement::default(),
            &[],
            day,
        )
        .unwrap();
        assert_eq!(node, "n-steady");
    }

    #[test]
    fn names_kinds_plans_and_images_are_checked_with_the_reason() {
        for (name, why) in [
            ("", "1 to 32"),
            (&"a".repeat(33)[..], "1 to 32"),
            ("Web", "lower-case"),
            ("web_1", "lower-case"),
            ("1web", "start with a letter"),
            ("web-", "end with"),
            ("files--replica", "'--'"),
            ("api", "reserved"),
        ] {
            let e = check_request(&req(name)).unwrap_err().to_string();
            assert!(e.contains(why), "{name:?}: {e}");
        }
        let mut r = req("web");
        r.kind = "vm".into();
        assert!(check_request(&r)
            .unwrap_err()
            .to_string()
            .contains("unknown kind \"vm\""));
        let mut r = req("web");
        r.plan = Some("huge".into());
        assert!(check_request(&r)
            .unwrap_err()
            .to_string()
            .contains("small, medium, large"));
        let mut r = req("web");
        r.image = "busybox:latest".into();
        assert!(check_request(&r)
            .unwrap_err()
            .to_string()
            .contains("pinned by digest"));
        let (p, s) = check_request(&req("web-1")).unwrap();
        assert_eq!((p.name, s.port), ("small", Some(8080)));
    }

    #[test]
    fn a_stored_workload_becomes_the_spec_the_node_runs() {
        let (p, s) = check_request(&req("web")).unwrap();
        let w = WorkloadRow {
            id: "w-1".into(),
            account_id: "a".into(),
            name: "web".into(),
            kind: "container".into(),
            plan: p.name.into(),
            settings: serde_json::to_string(&s).unwrap(),
            node_id: Some("n-1".into()),
            moving_to: None,
            cpu_millis: 250,
            memory_bytes: 256 << 20,
            disk_bytes: 0,
            next: None,
            created_ms: 1,
            updated_ms: 1,
        };
        let spec = spec(&w).unwrap();
        assert_eq!(spec.id, "w-1");
        assert_eq!(spec.ports, vec![8080]);
        assert_eq!((spec.cpu_millis, spec.memory_bytes), (250, 256 << 20));
        assert!(!spec.egress, "containers get no egress unless asked");
    }
}
