//! Placement: a pure function from the fleet's nodes and one workload's needs to a decision.
//!
//! [`place`] filters every node through the hard rules (online, not cordoned, architecture,
//! labels and region, storage class, 24/7 for always-on work, spread away from given nodes and
//! providers, and capacity: a node's envelope is never over-committed), counting each rejection
//! by its reason, then scores what is left: reliability first, then price, then the share of
//! the node that would stay free (spreading load), with the node id as the final tie-break so
//! the same input always gives the same answer. Only the nodes whose score can still reach
//! the best one are scored in full (see [`place`]); the tests hold it to the plain scan. No
//! I/O and no clock: the caller passes everything in, which is what makes it fast (see
//! `benches/scheduler.rs`) and testable with properties.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the scheduler knows about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub id: String,
    /// The provider who owns it (spread rules keep copies on different providers).
    pub provider: String,
    pub online: bool,
    /// Cordoned nodes take no new work.
    pub cordoned: bool,
    pub arch: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    /// Storage classes offered (e.g. `ssd`, `hdd`).
    pub storage_classes: Vec<String>,
    /// Offers 24/7 (no availability windows).
    pub always_available: bool,
    /// What the envelope offers in total.
    pub capacity: Resources,
    /// What placed workloads already reserve.
    pub reserved: Resources,
    /// Fraction of the last period the node was up, 0..=1.
    pub reliability: f64,
    /// The provider's asking price, per core-hour in the fleet's smallest unit.
    pub price: u64,
}

/// CPU (millicores), memory and disk (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

impl Resources {
    fn plus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_add(o.disk_bytes),
        }
    }

    /// The first resource of `self` that `need` does not fit in, if any.
    fn short_of(self, need: Resources) -> Option<Reason> {
        if need.cpu_millis > self.cpu_millis {
            Some(Reason::Cpu)
        } else if need.memory_bytes > self.memory_bytes {
            Some(Reason::Memory)
        } else if need.disk_bytes > self.disk_bytes {
            Some(Reason::Disk)
        } else {
            None
        }
    }

    fn minus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(o.disk_bytes),
        }
    }
}

/// The workload class, as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    AlwaysOn,
    Batch,
}

/// One workload's needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub needs: Resources,
    pub class: Class,
    /// Required architecture (`x86_64`, `aarch64`); `None`: any.
    pub arch: Option<String>,
    pub region: Option<String>,
    /// Every label given must match.
    pub labels: BTreeMap<String, String>,
    pub storage_class: Option<String>,
    /// Nodes that hold other copies of the same data (replicas, backups): never these…
    pub avoid_nodes: Vec<String>,
    /// …nor any node of these providers.
    pub avoid_providers: Vec<String>,
}

/// Why a node was not chosen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Offline,
    Cordoned,
    Arch,
    Region,
    Labels,
    StorageClass,
    /// Always-on work needs a node offering 24/7.
    NotAlwaysOn,
    /// Holds a copy already, or belongs to a provider that does.
    Spread,
    Cpu,
    Memory,
    Disk,
}

impl Reason {
    /// Every reason, in declaration order (`ALL[r as usize] == r`).
    pub const ALL: [Reason; 11] = [
        Reason::Offline,
        Reason::Cordoned,
        Reason::Arch,
        Reason::Region,
        Reason::Labels,
        Reason::StorageClass,
        Reason::NotAlwaysOn,
        Reason::Spread,
        Reason::Cpu,
        Reason::Memory,
        Reason::Disk,
    ];

    /// True for the capacity reasons (the answer is 409/503 naming the resource).
    pub fn is_capacity(self) -> bool {
        matches!(self, Reason::Cpu | Reason::Memory | Reason::Disk)
    }

    /// Its name as serialized (`not_always_on`, `storage_class`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Offline => "offline",
            Reason::Cordoned => "cordoned",
            Reason::Arch => "arch",
            Reason::Region => "region",
            Reason::Labels => "labels",
            Reason::StorageClass => "storage_class",
            Reason::NotAlwaysOn => "not_always_on",
            Reason::Spread => "spread",
            Reason::Cpu => "cpu",
            Reason::Memory => "memory",
            Reason::Disk => "disk",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scheduler's answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// The chosen node, or `None` when no node can take the workload.
    pub node: Option<String>,
    pub score: f64,
    /// How many nodes were turned away, per reason.
    pub rejected: BTreeMap<Reason, u32>,
}

impl Decision {
    /// For a decision without a node: the capacity reason that turned most nodes away, if the
    /// nodes that passed every other rule were all short of something.
    pub fn short_resource(&self) -> Option<Reason> {
        self.rejected
            .iter()
            .filter(|(r, _)| r.is_capacity())
            .max_by_key(|(r, n)| (**n, std::cmp::Reverse(**r)))
            .map(|(r, _)| *r)
    }
}

/// The first hard rule `node` breaks for `req`, if any.
pub fn check(node: &NodeView, req: &Request) -> Result<(), Reason> {
    Rules::new(req).check(node)
}

/// `req`'s hard rules, prepared once per decision so that the per-node check only looks at
/// what the request actually constrains (no label, storage class or spread lookups when it
/// names none).
struct Rules<'a> {
    req: &'a Request,
    arch: Option<&'a str>,
    region: Option<&'a str>,
    labels: bool,
    storage_class: Option<&'a str>,
    always_on: bool,
    spread: bool,
    needs: Resources,
}

impl<'a> Rules<'a> {
    fn new(req: &'a Request) -> Self {
        Rules {
            req,
            arch: req.arch.as_deref(),
            region: req.region.as_deref(),
            labels: !req.labels.is_empty(),
            storage_class: req.storage_class.as_deref(),
            always_on: req.class == Class::AlwaysOn,
            spread: !req.avoid_nodes.is_empty() || !req.avoid_providers.is_empty(),
            needs: req.needs,
        }
    }

    /// The rules in their order of precedence: the first one broken is the reason counted.
    #[inline(always)]
    fn check(&self, node: &NodeView) -> Result<(), Reason> {
        if !node.online {
            return Err(Reason::Offline);
        }
        if node.cordoned {
            return Err(Reason::Cordoned);
        }
        if self.arch.is_some_and(|a| a != node.arch) {
            return Err(Reason::Arch);
        }
        if self.region.is_some_and(|r| r != node.region) {
            return Err(Reason::Region);
        }
        if self.labels
            && self
                .req
                .labels
                .iter()
                .any(|(k, v)| node.labels.get(k) != Some(v))
        {
            return Err(Reason::Labels);
        }
        if self
            .storage_class
            .is_some_and(|c| !node.storage_classes.iter().any(|s| s == c))
        {
            return Err(Reason::StorageClass);
        }
        if self.always_on && !node.always_available {
            return Err(Reason::NotAlwaysOn);
        }
        if self.spread
            && (self.req.avoid_nodes.contains(&node.id)
                || self.req.avoid_providers.contains(&node.provider))
        {
            return Err(Reason::Spread);
        }
        if let Some(short) = node.capacity.minus(node.reserved).short_of(self.needs) {
            return Err(short);
        }
        // Reserved beyond capacity already (capacity shrank): nothing more fits.
        match node.capacity.short_of(node.reserved.plus(self.needs)) {
            Some(short) => Err(short),
            None => Ok(()),
        }
    }
}

/// Higher is better: reliability weighs most, then a lower price, then the share of the node
/// left free after placing (prefers emptier nodes, spreading load).
pub fn score(node: &NodeView, req: &Request, cheapest: u64, dearest: u64) -> f64 {
    let free_after = node.capacity.minus(node.reserved.plus(req.needs));
    let frac = |free: u64, cap: u64| {
        if cap == 0 {
            0.0
        } else {
            free as f64 / cap as f64
        }
    };
    let free = (frac(free_after.cpu_millis, node.capacity.cpu_millis)
        + frac(free_after.memory_bytes, node.capacity.memory_bytes))
        / 2.0;
    let price = if dearest > cheapest {
        1.0 - (node.price - cheapest) as f64 / (dearest - cheapest) as f64
    } else {
        1.0
    };
    100.0 * node.reliability.clamp(0.0, 1.0) + 20.0 * price + 10.0 * free
}

/// Places one workload. Deterministic: the same nodes and request give the same decision,
/// whatever the order of `nodes`.
///
/// The decision is the node that fits with the highest [`score`], the smallest id among equal
/// scores. One pass checks every node (it must: every rejection is counted) and keeps the
/// reliability and price of those that fit; the score of most of them is then never
/// computed, because the part it is known to have (reliability and price) plus the most the
/// free share can add (10) stays below the known part of another node.
pub fn place(nodes: &[NodeView], req: &Request) -> Decision {
    let rules = Rules::new(req);
    // Counted in an array (a map update per rejected node costs more than the check).
    let mut counts = [0u32; Reason::ALL.len()];
    let mut fit: Vec<Fit> = Vec::with_capacity(nodes.len());
    let mut cheapest = u64::MAX;
    let mut dearest = 0;
    let mut unordered = false;
    for n in nodes {
        match rules.check(n) {
            Ok(()) => {
                let reliability = n.reliability.clamp(0.0, 1.0);
                unordered |= reliability.is_nan();
                cheapest = cheapest.min(n.price);
                dearest = dearest.max(n.price);
                fit.push(Fit {
                    node: n,
                    reliability,
                    price: n.price,
                });
            }
            Err(r) => counts[r as usize] += 1,
        }
    }
    let rejected: BTreeMap<Reason, u32> = Reason::ALL
        .iter()
        .zip(counts)
        .filter(|(_, c)| *c > 0)
        .map(|(r, c)| (*r, c))
        .collect();
    let best = if unordered {
        // A NaN reliability makes scores incomparable: keep the plain scan's answer.
        best_in_order(fit.iter().map(|f| f.node), req, cheapest, dearest)
    } else {
        best_bounded(&fit, req, cheapest, dearest)
    };
    match best {
        Some((score, n)) => Decision {
            node: Some(n.id.clone()),
            score,
            rejected,
        },
        None => Decision {
            node: None,
            score: 0.0,
            rejected,
        },
    }
}

/// A node that passed the hard rules, with what bounds its score.
struct Fit<'a> {
    node: &'a NodeView,
    /// Clamped to 0..=1, as [`score`] does.
    reliability: f64,
    price: u64,
}

/// Whether `(s, n)` beats the best so far: a higher score, or the same score and a smaller id.
fn beats(s: f64, n: &NodeView, best: Option<(f64, &NodeView)>) -> bool {
    match best {
        None => true,
        Some((b, bn)) => s > b || (s == b && n.id < bn.id),
    }
}

/// The plain scan: every node in order, scored unless its reliability alone rules it out.
fn best_in_order<'a>(
    fit: impl Iterator<Item = &'a NodeView>,
    req: &Request,
    cheapest: u64,
    dearest: u64,
) -> Option<(f64, &'a NodeView)> {
    let mut best: Option<(f64, &NodeView)> = None;
    for n in fit {
        if let Some((b, _)) = best {
            // Price and free share add at most 30 to reliability's part: a node that cannot
            // reach the best score so far is not scored.
            if 100.0 * n.reliability.clamp(0.0, 1.0) + 30.0 < b - 1e-9 {
                continue;
            }
        }
        let s = score(n, req, cheapest, dearest);
        if beats(s, n, best) {
            best = Some((s, n));
        }
    }
    best
}

/// Far more than the rounding error of the bounds (scores are at most 130, an f64 carries 16
/// digits): a node is skipped only when it is certainly below another.
const SLACK: f64 = 1e-6;

/// The best of `fit` (no NaN reliability), scoring only the nodes whose score can reach the
/// best one: the same answer as [`best_in_order`], as every skipped node scores strictly less
/// than some other node.
fn best_bounded<'a>(
    fit: &[Fit<'a>],
    req: &Request,
    cheapest: u64,
    dearest: u64,
) -> Option<(f64, &'a NodeView)> {
    // 100 × reliability + 20 × price share: the score without the free share (0..=10), to
    // within rounding, by a multiplication instead of `score`'s division.
    let per_unit = if dearest > cheapest {
        20.0 / (dearest - cheapest) as f64
    } else {
        0.0
    };
    let known = |f: &Fit| 100.0 * f.reliability + 20.0 - (f.price - cheapest) as f64 * per_unit;
    // Some node scores at least the highest known part.
    let floor = fit.iter().map(known).fold(f64::NEG_INFINITY, f64::max);
    let mut best: Option<(f64, &NodeView)> = None;
    for f in fit {
        let reach = known(f) + 10.0 + SLACK;
        if reach < floor || best.is_some_and(|(b, _)| reach < b) {
            continue;
        }
        let s = score(f.node, req, cheapest, dearest);
        if beats(s, f.node, best) {
            best = Some((s, f.node));
        }
    }
    best
}

/// What [`explain`] says about one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeVerdict {
    pub node: String,
    pub provider: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A node's verdict: it fits, with its [`score`] (`chosen` for the node [`place`] picks), or
/// it breaks a hard rule, the first one in [`place`]'s order of precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Fits {
        score: f64,
        chosen: bool,
    },
    Rejected {
        reason: Reason,
        /// For `cpu`, `memory` and `disk`: the figures that made it fail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shortfall: Option<Shortfall>,
        /// The same for people: `needs 256 MiB memory, 128 MiB free (…)`, `arch aarch64, the
        /// workload needs x86_64`.
        detail: String,
    },
}

impl Verdict {
    /// The reason it was turned away, if it was.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Verdict::Fits { .. } => None,
            Verdict::Rejected { reason, .. } => Some(*reason),
        }
    }
}

/// One resource a node is short of: CPU in millicores, memory and disk in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shortfall {
    /// What the workload needs.
    pub needed: u64,
    /// What the node's envelope has left: capacity minus reserved (0 when the reservations
    /// exceed the capacity, as after the envelope shrank).
    pub free: u64,
    pub capacity: u64,
    pub reserved: u64,
}

/// The decision of [`place`], node by node (the detail behind its counts): for every node of
/// `nodes`, in their order, its [`Verdict`]. It agrees with [`place`] exactly: the node marked
/// `chosen` is the one [`place`] decides on (with the same score), and counting the rejected
/// verdicts by reason gives [`Decision::rejected`]. Slower than [`place`] (every fitting node
/// is scored, every rejection described): for an operator's question, not for placement.
pub fn explain(nodes: &[NodeView], req: &Request) -> Vec<NodeVerdict> {
    let rules = Rules::new(req);
    let checked: Vec<Result<(), Reason>> = nodes.iter().map(|n| rules.check(n)).collect();
    let fit_prices = || {
        nodes
            .iter()
            .zip(&checked)
            .filter(|(_, c)| c.is_ok())
            .map(|(n, _)| n.price)
    };
    let cheapest = fit_prices().min().unwrap_or(0);
    let dearest = fit_prices().max().unwrap_or(0);
    // Every fitting node scored, in order: its score, or why it does not fit.
    let scored: Vec<Result<f64, Reason>> = nodes
        .iter()
        .zip(checked)
        .map(|(n, c)| c.map(|()| score(n, req, cheapest, dearest)))
        .collect();
    // The best as `place` ranks them: the plain scan, which `place` is held to by its tests.
    let mut best: Option<(f64, &NodeView)> = None;
    let mut chosen = None;
    for (i, (n, s)) in nodes.iter().zip(&scored).enumerate() {
        if let Ok(s) = s {
            if beats(*s, n, best) {
                best = Some((*s, n));
                chosen = Some(i);
            }
        }
    }
    nodes
        .iter()
        .zip(scored)
        .enumerate()
        .map(|(i, (n, scored))| NodeVerdict {
            node: n.id.clone(),
            provider: n.provider.clone(),
            verdict: match scored {
                Ok(score) => Verdict::Fits {
                    score,
                    chosen: chosen == Some(i),
                },
                Err(reason) => rejected(n, req, reason),
            },
        })
        .collect()
}

/// The verdict on `node`, turned away for `reason`, with the figures behind it.
fn rejected(node: &NodeView, req: &Request, reason: Reason) -> Verdict {
    let resource = |pick: fn(Resources) -> u64| Shortfall {
        needed: pick(req.needs),
        free: pick(node.capacity.minus(node.reserved)),
        capacity: pick(node.capacity),
        reserved: pick(node.reserved),
    };
    let shortfall = match reason {
        Reason::Cpu => Some(resource(|r| r.cpu_millis)),
        Reason::Memory => Some(resource(|r| r.memory_bytes)),
        Reason::Disk => Some(resource(|r| r.disk_bytes)),
        _ => None,
    };
    let wanted = |w: &Option<String>| w.as_deref().unwrap_or("-").to_string();
    let detail = match (reason, shortfall) {
        (Reason::Offline, _) => "offline".to_string(),
        (Reason::Cordoned, _) => {
            "cordoned, draining or decommissioning: takes no new work".to_string()
        }
        (Reason::Arch, _) => format!(
            "arch {}, the workload needs {}",
            or_none(&node.arch),
            wanted(&req.arch)
        ),
        (Reason::Region, _) => format!(
            "region {}, the workload needs {}",
            or_none(&node.region),
            wanted(&req.region)
        ),
        (Reason::Labels, _) => {
            let missing: Vec<String> = req
                .labels
                .iter()
                .filter(|(k, v)| node.labels.get(*k) != Some(*v))
                .map(|(k, v)| match node.labels.get(k) {
                    Some(has) => format!("{k}={v} (has {k}={has})"),
                    None => format!("{k}={v}"),
                })
                .collect();
            format!("lacks label {}", missing.join(", "))
        }
        (Reason::StorageClass, _) => format!(
            "offers no {} storage (offers: {})",
            wanted(&req.storage_class),
            if node.storage_classes.is_empty() {
                "none".to_string()
            } else {
                node.storage_classes.join(", ")
            }
        ),
        (Reason::NotAlwaysOn, _) => {
            "keeps availability windows; always-on work needs a node offering 24/7".to_string()
        }
        (Reason::Spread, _) if req.avoid_nodes.contains(&node.id) => {
            "holds another copy of the workload already".to_string()
        }
        (Reason::Spread, _) => format!(
            "its provider {} holds another copy of the workload",
            node.provider
        ),
        (r, Some(f)) => {
            let unit = |n: u64| match r {
                Reason::Cpu => format!("{n}m"),
                _ => bytes(n),
            };
            let what = match r {
                Reason::Cpu => "CPU",
                Reason::Memory => "memory",
                _ => "disk",
            };
            if f.reserved > f.capacity {
                format!(
                    "{what}: reserved {} beyond its capacity {}; needs {}",
                    unit(f.reserved),
                    unit(f.capacity),
                    unit(f.needed)
                )
            } else {
                format!(
                    "needs {} {what}, {} free (capacity {}, reserved {})",
                    unit(f.needed),
                    unit(f.free),
                    unit(f.capacity),
                    unit(f.reserved)
                )
            }
        }
        (r, None) => r.to_string(),
    };
    Verdict::Rejected {
        reason,
        shortfall,
        detail,
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

/// `n` bytes for people: `512 B`, `64 MiB`, `1.5 GiB` (binary units, one decimal when not
/// whole).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn node(id: &str) -> NodeView {
        NodeView {
            id: id.into(),
            provider: format!("p-{id}"),
            online: true,
            cordoned: false,
            arch: "x86_64".into(),
            region: "eu".into(),
            labels: BTreeMap::new(),
            storage_classes: vec!["ssd".into()],
            always_available: true,
            capacity: Resources {
                cpu_millis: 2000,
                memory_bytes: 4 * GIB,
                disk_bytes: 100 * GIB,
            },
            reserved: Resources::default(),
            reliability: 0.99,
            price: 10,
        }
    }

    fn req(cpu: u64, mem: u64) -> Request {
        Request {
            needs: Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
                disk_bytes: 0,
            },
            class: Class::AlwaysOn,
            arch: None,
            region: None,
            labels: BTreeMap::new(),
            storage_class: None,
            avoid_nodes: vec![],
            avoid_providers: vec![],
        }
    }

    #[test]
    fn reasons_index_their_own_table() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn every_rule_turns_nodes_away_and_is_counted() {
        let mut off = node("a");
        off.online = false;
        let mut cordoned = node("b");
        cordoned.cordoned = true;
        let mut arm = node("c");
        arm.arch = "aarch64".into();
        let mut windows = node("d");
        windows.always_available = false;
        let mut full = node("e");
        full.reserved.memory_bytes = 4 * GIB;
        let ok = node("f");
        let mut r = req(500, GIB);
        r.arch = Some("x86_64".into());
        let d = place(&[off, cordoned, arm, windows, full, ok], &r);
        assert_eq!(d.node.as_deref(), Some("f"));
        for reason in [
            Reason::Offline,
            Reason::Cordoned,
            Reason::Arch,
            Reason::NotAlwaysOn,
            Reason::Memory,
        ] {
            assert_eq!(d.rejected.get(&reason), Some(&1), "{reason:?}: {d:?}");
        }
    }

    #[test]
    fn no_capacity_names_the_short_resource() {
        let mut a = node("a");
        a.reserved.cpu_millis = 1900;
        let mut b = node("b");
        b.reserved.cpu_millis = 1800;
        let d = place(&[a, b], &req(500, GIB));
        assert_eq!(d.node, None);
        assert_eq!(d.short_resource(), Some(Reason::Cpu));
        let d = place(&[], &req(1, 1));
        assert_eq!((d.node.clone(), d.short_resource()), (None, None));
    }

    #[test]
    fn batch_work_may_go_where_always_on_may_not() {
        let mut w = node("w");
        w.always_available = false;
        let mut r = req(100, GIB);
        assert_eq!(place(&[w.clone()], &r).node, None);
        r.class = Class::Batch;
        assert_eq!(place(&[w], &r).node.as_deref(), Some("w"));
    }

    #[test]
    fn copies_spread_across_nodes_and_providers() {
        let a = node("a");
        let mut b = node("b");
        b.provider = a.provider.clone();
        let c = node("c");
        let mut r = req(100, GIB);
        r.avoid_nodes = vec!["a".into()];
        r.avoid_providers = vec![a.provider.clone()];
        let d = place(&[a, b, c], &r);
        assert_eq!(d.node.as_deref(), Some("c"));
        assert_eq!(d.rejected.get(&Reason::Spread), Some(&2));
    }

    #[test]
    fn reliable_then_cheap_then_empty_nodes_are_preferred() {
        let mut flaky = node("a");
        flaky.reliability = 0.5;
        flaky.price = 1;
        let steady = node("b");
        assert_eq!(
            place(&[flaky, steady.clone()], &req(100, GIB))
                .node
                .as_deref(),
            Some("b")
        );
        let mut dear = node("c");
        dear.price = 100;
        assert_eq!(
            place(&[dear, steady.clone()], &req(100, GIB))
                .node
                .as_deref(),
            Some("b")
        );
        let mut busy = node("d");
        busy.reserved.cpu_millis = 1500;
        assert_eq!(
            place(&[busy, steady], &req(100, GIB)).node.as_deref(),
            Some("b")
        );
    }

    fn arb_node() -> impl Strategy<Value = NodeView> {
        (
            0u32..40,
            0u32..4,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u64..4000,
            0u64..8,
            0u64..4000,
            0u64..8,
            0u32..=100,
            0u64..50,
        )
            .prop_map(
                |(
                    id,
                    prov,
                    online,
                    cordoned,
                    always,
                    cap_cpu,
                    cap_mem,
                    res_cpu,
                    res_mem,
                    rel,
                    price,
                )| {
                    let mut n = node(&format!("n{id:02}"));
                    n.provider = format!("p{prov}");
                    n.online = online;
                    n.cordoned = cordoned;
                    n.always_available = always;
                    n.capacity.cpu_millis = cap_cpu;
                    n.capacity.memory_bytes = cap_mem * GIB;
                    n.reserved.cpu_millis = res_cpu;
                    n.reserved.memory_bytes = res_mem * GIB;
                    n.reliability = f64::from(rel) / 100.0;
                    n.price = price;
                    n
                },
            )
    }

    fn arb_req() -> impl Strategy<Value = Request> {
        (
            1u64..2000,
            0u64..4,
            any::<bool>(),
            proptest::option::of(0u32..4),
        )
            .prop_map(|(cpu, mem, batch, avoid)| {
                let mut r = req(cpu, mem * GIB);
                if batch {
                    r.class = Class::Batch;
                }
                if let Some(p) = avoid {
                    r.avoid_providers = vec![format!("p{p}")];
                }
                r
            })
    }

    /// The hard rules as first written, one node at a time: what [`Rules`] must agree with.
    fn check_reference(node: &NodeView, req: &Request) -> Result<(), Reason> {
        if !node.online {
            return Err(Reason::Offline);
        }
        if node.cordoned {
            return Err(Reason::Cordoned);
        }
        if req.arch.as_ref().is_some_and(|a| *a != node.arch) {
            return Err(Reason::Arch);
        }
        if req.region.as_ref().is_some_and(|r| *r != node.region) {
            return Err(Reason::Region);
        }
        if req
            .labels
            .iter()
            .any(|(k, v)| node.labels.get(k) != Some(v))
        {
            return Err(Reason::Labels);
        }
        if req
            .storage_class
            .as_ref()
            .is_some_and(|c| !node.storage_classes.contains(c))
        {
            return Err(Reason::StorageClass);
        }
        if req.class == Class::AlwaysOn && !node.always_available {
            return Err(Reason::NotAlwaysOn);
        }
        if req.avoid_nodes.contains(&node.id) || req.avoid_providers.contains(&node.provider) {
            return Err(Reason::Spread);
        }
        if let Some(short) = node
            .capacity
            .minus(node.reserved)
            .short_of(req.needs)
            .or_else(|| node.capacity.short_of(node.reserved.plus(req.needs)))
        {
            return Err(short);
        }
        Ok(())
    }

    /// The straightforward scan `place` replaced (every node checked, every fitting node
    /// scored unless its reliability alone rules it out, in order): `place` must give exactly
    /// its decision, score bits included.
    fn place_reference(nodes: &[NodeView], req: &Request) -> Decision {
        let mut counts = [0u32; Reason::ALL.len()];
        let mut fit: Vec<&NodeView> = Vec::with_capacity(nodes.len());
        for n in nodes {
            match check_reference(n, req) {
                Ok(()) => fit.push(n),
                Err(r) => counts[r as usize] += 1,
            }
        }
        let rejected: BTreeMap<Reason, u32> = Reason::ALL
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(r, c)| (*r, c))
            .collect();
        let cheapest = fit.iter().map(|n| n.price).min().unwrap_or(0);
        let dearest = fit.iter().map(|n| n.price).max().unwrap_or(0);
        let mut best: Option<(f64, &NodeView)> = None;
        for n in fit {
            if let Some((b, _)) = best {
                if 100.0 * n.reliability.clamp(0.0, 1.0) + 30.0 < b - 1e-9 {
                    continue;
                }
            }
            let s = score(n, req, cheapest, dearest);
            let better = match best {
                None => true,
                Some((b, bn)) => s > b || (s == b && n.id < bn.id),
            };
            if better {
                best = Some((s, n));
            }
        }
        match best {
            Some((score, n)) => Decision {
                node: Some(n.id.clone()),
                score,
                rejected,
            },
            None => Decision {
                node: None,
                score: 0.0,
                rejected,
            },
        }
    }

    /// Same node, same score to the bit, same counts.
    fn same_decision(a: &Decision, b: &Decision) -> Result<(), TestCaseError> {
        prop_assert_eq!(&a.node, &b.node);
        prop_assert_eq!(
            a.score.to_bits(),
            b.score.to_bits(),
            "{} vs {}",
            a.score,
            b.score
        );
        prop_assert_eq!(&a.rejected, &b.rejected);
        Ok(())
    }

    /// Nodes that exercise every rule and every corner of the score: few distinct
    /// reliabilities and prices (ties), reliabilities outside 0..=1 and NaN, reservations
    /// beyond capacity, empty capacities, prices near `u64::MAX`, repeated ids.
    fn arb_any_node() -> impl Strategy<Value = NodeView> {
        let reliability = prop_oneof![
            8 => (0u32..=4).prop_map(|r| 0.96 + f64::from(r) / 100.0),
            4 => -0.5f64..1.5,
            1 => Just(f64::NAN),
        ];
        let price = prop_oneof![4 => 0u64..6, 1 => any::<u64>(), 1 => Just(u64::MAX)];
        let resources = |max: u64| {
            (0..max, 0..max, 0..max).prop_map(|(c, m, d)| Resources {
                cpu_millis: c,
                memory_bytes: m * GIB,
                disk_bytes: d * GIB,
            })
        };
        (
            (0u32..60, 0u32..6, any::<[bool; 3]>()),
            (0usize..2, 0usize..2, 0usize..4, 0usize..3),
            (resources(8), resources(6), reliability, price),
        )
            .prop_map(
                |(
                    (id, prov, [online, cordoned, always]),
                    (arch, region, labels, storage),
                    (capacity, reserved, reliability, price),
                )| {
                    let mut n = node(&format!("n{id:02}"));
                    n.provider = format!("p{prov}");
                    n.online = online || id % 3 != 0;
                    n.cordoned = cordoned && id % 4 == 0;
                    n.always_available = always;
                    n.arch = ["x86_64", "aarch64"][arch].into();
                    n.region = ["eu", "us"][region].into();
                    n.labels = [("gpu", "yes"), ("tier", "a"), ("tier", "b")]
                        .iter()
                        .take(labels)
                        .skip(labels.saturating_sub(2))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    n.storage_classes =
                        [vec![], vec!["ssd".into()], vec!["hdd".into(), "ssd".into()]][storage]
                            .clone();
                    n.capacity = Resources {
                        cpu_millis: capacity.cpu_millis * 500,
                        ..capacity
                    };
                    n.reserved = Resources {
                        cpu_millis: reserved.cpu_millis * 500,
                        ..reserved
                    };
                    n.reliability = reliability;
                    n.price = price;
                    n
                },
            )
    }

    fn arb_any_req() -> impl Strategy<Value = Request> {
        (
            (0u64..3000, 0u64..4, 0u64..3, any::<bool>()),
            (
                proptest::option::of(0usize..2),
                proptest::option::of(0usize..2),
                0usize..3,
                proptest::option::of(0usize..2),
            ),
            (
                proptest::collection::vec(0u32..60, 0..3),
                proptest::collection::vec(0u32..6, 0..2),
            ),
        )
            .prop_map(
                |(
                    (cpu, mem, disk, batch),
                    (arch, region, labels, storage),
                    (avoid_nodes, avoid_providers),
                )| {
                    let mut r = req(cpu, mem * GIB);
                    r.needs.disk_bytes = disk * GIB;
                    if batch {
                        r.class = Class::Batch;
                    }
                    r.arch = arch.map(|a| ["x86_64", "aarch64"][a].into());
                    r.region = region.map(|g| ["eu", "us"][g].into());
                    r.labels = [("gpu", "yes"), ("tier", "a")]
                        .iter()
                        .take(labels)
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    r.storage_class = storage.map(|c| ["ssd", "hdd"][c].into());
                    r.avoid_nodes = avoid_nodes.iter().map(|i| format!("n{i:02}")).collect();
                    r.avoid_providers = avoid_providers.iter().map(|p| format!("p{p}")).collect();
                    r
                },
            )
    }

    /// A fleet like the bench's (few distinct reliabilities and prices, so the bounds skip
    /// most nodes and ties are common), filled decision after decision: `place` and the
    /// straightforward scan agree on every decision.
    #[test]
    fn place_agrees_with_the_straightforward_scan_as_a_fleet_fills() {
        let mut s = 7u64;
        let mut next = |m: u64| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) % m
        };
        let mut nodes: Vec<NodeView> = (0..200)
            .map(|i| {
                let mut n = node(&format!("n{i:04}"));
                let cores = 1 + next(8);
                n.online = next(20) != 0;
                n.cordoned = next(100) == 0;
                n.always_available = next(3) != 0;
                n.capacity.cpu_millis = cores * 500;
                n.capacity.memory_bytes = cores * GIB;
                n.reliability = 0.8 + next(20) as f64 / 100.0;
                n.price = 5 + next(4);
                n
            })
            .collect();
        let mut placed = 0;
        for i in 0..3000u64 {
            let mut r = req(100 + (i % 4) * 100, (128 << 20) * (1 + i % 4));
            if i % 2 == 1 {
                r.class = Class::Batch;
            }
            let d = place(&nodes, &r);
            let want = place_reference(&nodes, &r);
            same_decision(&d, &want).unwrap();
            if i % 10 == 0 {
                explain_agrees(&nodes, &r, &d).unwrap();
            }
            if let Some(id) = d.node {
                let n = nodes.iter_mut().find(|n| n.id == id).unwrap();
                n.reserved = n.reserved.plus(r.needs);
                placed += 1;
            }
        }
        // The fleet filled up: the capacity rules were exercised too.
        assert!(placed < 3000, "{placed}");
    }

    /// `explain` tells the decision `d` of `place` node by node: the one node it marks chosen
    /// is `d`'s, with `d`'s score to the bit; its rejections, counted by reason, are `d`'s
    /// counts; each verdict is the node's own `check` and `score`, and a capacity rejection's
    /// figures show the shortage.
    fn explain_agrees(nodes: &[NodeView], r: &Request, d: &Decision) -> Result<(), TestCaseError> {
        let verdicts = explain(nodes, r);
        prop_assert_eq!(verdicts.len(), nodes.len());
        let mut counts: BTreeMap<Reason, u32> = BTreeMap::new();
        let mut chosen = vec![];
        let fit_prices = nodes
            .iter()
            .filter(|n| check(n, r).is_ok())
            .map(|n| n.price);
        let (lo, hi) = (
            fit_prices.clone().min().unwrap_or(0),
            fit_prices.max().unwrap_or(0),
        );
        for (n, v) in nodes.iter().zip(&verdicts) {
            prop_assert_eq!(&v.node, &n.id);
            prop_assert_eq!(&v.provider, &n.provider);
            prop_assert_eq!(v.verdict.reason(), check(n, r).err());
            match &v.verdict {
                Verdict::Fits {
                    score: s,
                    chosen: c,
                } => {
                    prop_assert_eq!(s.to_bits(), score(n, r, lo, hi).to_bits());
                    if *c {
                        chosen.push((n.id.clone(), *s));
                    }
                }
                Verdict::Rejected {
                    reason,
                    shortfall,
                    detail,
                } => {
                    *counts.entry(*reason).or_default() += 1;
                    prop_assert!(!detail.is_empty());
                    prop_assert_eq!(shortfall.is_some(), reason.is_capacity());
                    if let Some(f) = shortfall {
                        prop_assert!(
                            f.needed > f.free || f.reserved.saturating_add(f.needed) > f.capacity,
                            "{:?}",
                            f
                        );
                        prop_assert_eq!(f.free, f.capacity.saturating_sub(f.reserved));
                    }
                }
            }
        }
        prop_assert_eq!(&counts, &d.rejected);
        match &d.node {
            Some(id) => {
                prop_assert_eq!(chosen.len(), 1, "{:?}", chosen);
                prop_assert_eq!(&chosen[0].0, id);
                prop_assert_eq!(chosen[0].1.to_bits(), d.score.to_bits());
            }
            None => prop_assert!(chosen.is_empty(), "{:?}", chosen),
        }
        Ok(())
    }

    fn verdict_of<'a>(vs: &'a [NodeVerdict], id: &str) -> &'a Verdict {
        &vs.iter().find(|v| v.node == id).unwrap().verdict
    }

    fn detail_of(vs: &[NodeVerdict], id: &str) -> String {
        match verdict_of(vs, id) {
            Verdict::Rejected { detail, .. } => detail.clone(),
            v => panic!("{id} fits: {v:?}"),
        }
    }

    #[test]
    fn explain_gives_every_node_its_verdict_with_the_figures() {
        let mut off = node("a");
        off.online = false;
        let mut cordoned = node("b");
        cordoned.cordoned = true;
        let mut arm = node("c");
        arm.arch = "aarch64".into();
        let mut windows = node("d");
        windows.always_available = false;
        let mut full = node("e");
        full.reserved.memory_bytes = 3 * GIB + GIB / 2;
        let ok = node("f");
        let mut busy = node("g");
        busy.reserved.cpu_millis = 1000;
        let mut r = req(500, GIB);
        r.arch = Some("x86_64".into());
        let nodes = [off, cordoned, arm, windows, full, ok, busy];
        let d = place(&nodes, &r);
        let vs = explain(&nodes, &r);
        assert_eq!(
            vs.iter().map(|v| v.verdict.reason()).collect::<Vec<_>>(),
            [
                Some(Reason::Offline),
                Some(Reason::Cordoned),
                Some(Reason::Arch),
                Some(Reason::NotAlwaysOn),
                Some(Reason::Memory),
                None,
                None,
            ]
        );
        assert_eq!(
            *verdict_of(&vs, "f"),
            Verdict::Fits {
                score: d.score,
                chosen: true
            }
        );
        assert!(matches!(
            verdict_of(&vs, "g"),
            Verdict::Fits { score, chosen: false } if *score < d.score
        ));
        assert_eq!(
            *verdict_of(&vs, "e"),
            Verdict::Rejected {
                reason: Reason::Memory,
                shortfall: Some(Shortfall {
                    needed: GIB,
                    free: GIB / 2,
                    capacity: 4 * GIB,
                    reserved: 3 * GIB + GIB / 2,
                }),
                detail: "needs 1 GiB memory, 512 MiB free (capacity 4 GiB, reserved 3.5 GiB)"
                    .into(),
            }
        );
        assert_eq!(detail_of(&vs, "a"), "offline");
        assert_eq!(
            detail_of(&vs, "c"),
            "arch aarch64, the workload needs x86_64"
        );
        assert!(detail_of(&vs, "d").contains("24/7"));
        explain_agrees(&nodes, &r, &d).unwrap();
        // The JSON an operator reads: the verdict's fields beside the node's.
        let json = serde_json::to_value(&vs[4]).unwrap();
        assert_eq!(json["node"], "e");
        assert_eq!(json["verdict"], "rejected");
        assert_eq!(json["reason"], "memory");
        assert_eq!(json["shortfall"]["needed"], GIB);
        let json = serde_json::to_value(&vs[5]).unwrap();
        assert_eq!(
            (&json["verdict"], &json["chosen"]),
            (&"fits".into(), &true.into())
        );
        let back: Vec<NodeVerdict> =
            serde_json::from_value(serde_json::to_value(&vs).unwrap()).unwrap();
        assert_eq!(back, vs);
    }

    #[test]
    fn explain_names_what_a_node_lacks() {
        let mut us = node("region");
        us.region = "us".into();
        let mut tier = node("labels");
        tier.labels = [("tier".to_string(), "b".to_string())].into();
        let mut hdd = node("storage");
        hdd.storage_classes = vec!["hdd".into()];
        let copy = node("copy");
        let mut sibling = node("sibling");
        sibling.provider = "p-x".into();
        let mut shrunk = node("shrunk");
        shrunk.reserved.cpu_millis = 2500;
        let mut disk = node("disk");
        disk.reserved.disk_bytes = 100 * GIB - 512;
        let mut r = req(0, GIB);
        r.needs.disk_bytes = 1024;
        r.region = Some("eu".into());
        r.labels = [("tier".to_string(), "a".to_string())].into();
        r.storage_class = Some("ssd".into());
        r.avoid_nodes = vec!["copy".into()];
        r.avoid_providers = vec!["p-x".into()];
        let mut nodes = [us, tier, hdd, copy, sibling, shrunk, disk];
        for n in nodes.iter_mut().filter(|n| n.id != "labels") {
            n.labels = r.labels.clone();
        }
        let vs = explain(&nodes, &r);
        assert_eq!(detail_of(&vs, "region"), "region us, the workload needs eu");
        assert_eq!(detail_of(&vs, "labels"), "lacks label tier=a (has tier=b)");
        assert_eq!(
            detail_of(&vs, "storage"),
            "offers no ssd storage (offers: hdd)"
        );
        assert_eq!(
            detail_of(&vs, "copy"),
            "holds another copy of the workload already"
        );
        assert_eq!(
            detail_of(&vs, "sibling"),
            "its provider p-x holds another copy of the workload"
        );
        assert_eq!(
            detail_of(&vs, "shrunk"),
            "CPU: reserved 2500m beyond its capacity 2000m; needs 0m"
        );
        assert_eq!(
            detail_of(&vs, "disk"),
            "needs 1 KiB disk, 512 B free (capacity 100 GiB, reserved 100.0 GiB)"
        );
        let d = place(&nodes, &r);
        assert_eq!(d.node, None);
        explain_agrees(&nodes, &r, &d).unwrap();
        assert!(explain(&[], &r).is_empty());
    }

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 * GIB / 2), "1.5 GiB");
    }

    /// Node ids are unique in a fleet.
    fn unique(mut nodes: Vec<NodeView>) -> Vec<NodeView> {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        nodes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn place_gives_the_straightforward_scans_decision(
            nodes in proptest::collection::vec(arb_any_node(), 0..120),
            r in arb_any_req(),
        ) {
            for n in &nodes {
                prop_assert_eq!(check(n, &r), check_reference(n, &r));
            }
            same_decision(&place(&nodes, &r), &place_reference(&nodes, &r))?;
        }

        /// The detail on request: `explain` agrees with `place` on any fleet (NaN and
        /// out-of-range reliabilities, repeated ids, reservations beyond capacity included).
        #[test]
        fn explain_tells_places_decision_node_by_node(
            nodes in proptest::collection::vec(arb_any_node(), 0..120),
            r in arb_any_req(),
        ) {
            explain_agrees(&nodes, &r, &place(&nodes, &r))?;
        }

        /// Ties for certain: each node with a twin (same score, a larger id) before it and
        /// another after it; `explain` still marks `place`'s node, the smallest id.
        #[test]
        fn explain_breaks_ties_as_place_does(
            nodes in proptest::collection::vec(arb_any_node(), 1..40),
            r in arb_any_req(),
        ) {
            let twin = |prefix: &str, n: &NodeView| NodeView {
                id: format!("{prefix}{}", n.id),
                ..n.clone()
            };
            let fleet: Vec<NodeView> = nodes
                .iter()
                .map(|n| twin("u", n))
                .chain(nodes.iter().cloned())
                .chain(nodes.iter().map(|n| twin("t", n)))
                .collect();
            explain_agrees(&fleet, &r, &place(&fleet, &r))?;
        }
    }

    proptest! {
        #[test]
        fn a_choice_never_over_commits_or_breaks_a_rule(
            nodes in proptest::collection::vec(arb_node(), 0..30),
            r in arb_req(),
        ) {
            let nodes = unique(nodes);
            let d = place(&nodes, &r);
            let total: u32 = d.rejected.values().sum();
            match &d.node {
                Some(id) => {
                    let n = nodes.iter().find(|n| &n.id == id).unwrap();
                    prop_assert!(check(n, &r).is_ok());
                    prop_assert!(n.online && !n.cordoned);
                    let after = n.reserved.plus(r.needs);
                    prop_assert!(after.cpu_millis <= n.capacity.cpu_millis);
                    prop_assert!(after.memory_bytes <= n.capacity.memory_bytes);
                    if r.class == Class::AlwaysOn { prop_assert!(n.always_available); }
                    prop_assert!(!r.avoid_providers.contains(&n.provider));
                    // Every node that fits scores no higher than the chosen one.
                    let best = d.score;
                    let fit: Vec<&NodeView> = nodes.iter().filter(|n| check(n, &r).is_ok()).collect();
                    let lo = fit.iter().map(|n| n.price).min().unwrap();
                    let hi = fit.iter().map(|n| n.price).max().unwrap();
                    for f in &fit { prop_assert!(score(f, &r, lo, hi) <= best + 1e-9); }
                    prop_assert_eq!(total as usize, nodes.len() - fit.len());
                }
                None => {
                    prop_assert!(nodes.iter().all(|n| check(n, &r).is_err()));
                    prop_assert_eq!(total as usize, nodes.len());
                }
            }
        }

        #[test]
        fn the_same_input_in_any_order_gives_the_same_decision(
            nodes in proptest::collection::vec(arb_node(), 0..30),
            r in arb_req(),
            seed in any::<u64>(),
        ) {
            let nodes = unique(nodes);
            let a = place(&nodes, &r);
            let mut shuffled = nodes.clone();
            // A deterministic shuffle from the seed.
            let len = shuffled.len();
            if len > 1 {
                let mut s = seed;
                for i in (1..len).rev() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (s % (i as u64 + 1)) as usize);
                }
            }
            let b = place(&shuffled, &r);
            prop_assert_eq!(a.node, b.node);
            prop_assert_eq!(a.rejected, b.rejected);
        }
    }
}
