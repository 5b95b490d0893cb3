//! Placement: a pure function from the fleet's nodes and one workload's needs to a decision.
//!
//! [`place`] filters every node through the hard rules (online, not cordoned, architecture,
//! labels and region, storage class, 24/7 for always-on work, spread away from given nodes and
//! providers, and capacity: a node's envelope is never over-committed), counting each rejection
//! by its reason, then scores what is left: reliability first, then price, then the share of
//! the node that would stay free (spreading load), with the node id as the final tie-break so
//! the same input always gives the same answer. No I/O and no clock: the caller passes
//! everything in, which is what makes it fast (see `benches/scheduler.rs`) and testable with
//! properties.

use serde::Serialize;
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

/// CPU, memory and disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
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
        .or_else(|| {
            // Reserved beyond capacity already (capacity shrank): nothing more fits.
            node.capacity.short_of(node.reserved.plus(req.needs))
        })
    {
        return Err(short);
    }
    Ok(())
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
pub fn place(nodes: &[NodeView], req: &Request) -> Decision {
    // Counted in an array (a map update per rejected node costs more than the check).
    let mut counts = [0u32; Reason::ALL.len()];
    let mut fit: Vec<&NodeView> = Vec::with_capacity(nodes.len());
    for n in nodes {
        match check(n, req) {
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
            // Price and free share add at most 30 to reliability's part: a node that cannot
            // reach the best score so far is not scored (most nodes, in a large fleet).
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

    /// Node ids are unique in a fleet.
    fn unique(mut nodes: Vec<NodeView>) -> Vec<NodeView> {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        nodes
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
