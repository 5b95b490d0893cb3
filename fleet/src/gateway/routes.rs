//! The route table, derived from the fleet's targets and nothing else; pure, no I/O.
//!
//! A workload is reachable only at the node the fleet placed it on (its target), so a node can
//! never attract traffic for a workload it was not given: the gateway opens streams only to
//! the node whose target holds the workload, and that node checks its own target again.
//!
//! * HTTP(S): `{workload name}--{account id}.{apps domain}` → the workload's **first** declared
//!   port. Names are per account, so the account is part of the host; one DNS label (not
//!   `name.account.domain`) so that one `*.{apps domain}` certificate covers every workload.
//!   A workload no account owns (an operator's raw target) is `{name}.{apps domain}`.
//! * TCP: every declared port of every workload gets its own gateway port (stable, stored).

use lattice_wire::msg::WorkloadSpec;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Where one route leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub node: String,
    pub workload: String,
    /// The workload's name (its host label).
    pub name: String,
    /// The declared port the stream is opened to.
    pub port: u16,
}

/// A node as the route table needs it.
#[derive(Debug, Clone)]
pub struct NodeTargets {
    pub id: String,
    pub revoked: bool,
    /// The workloads of its target (JSON text as stored).
    pub target: String,
}

/// Every route of the fleet at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Lower-case host name → route.
    http: HashMap<String, Route>,
    /// Every (workload, declared port), for TCP port assignment.
    tcp: BTreeMap<(String, u16), Route>,
    /// (declaring node, upstream name) → (workload, port) it leads to: the upstreams of the
    /// workloads in each node's target ([`RouteTable::upstream`]).
    upstreams: HashMap<(String, String), (String, u16)>,
    /// The ports of internal workloads (S3 replicas): reached only as another workload's
    /// upstream, never from outside (no host, no TCP gateway port).
    internal: BTreeMap<(String, u16), Route>,
    /// Problems found while building (duplicate names, unreadable targets), for the log.
    pub problems: Vec<String>,
}

impl RouteTable {
    /// Builds the table for `apps_domain` from every node's target. Revoked nodes get no
    /// routes. When two workloads share a name, the one on the node with the smaller id keeps
    /// the host (until accounts put the tenant in the name) and the clash is reported.
    pub fn build(apps_domain: &str, nodes: &[NodeTargets]) -> RouteTable {
        Self::build_placed(apps_domain, nodes, &HashMap::new())
    }

    /// Like [`RouteTable::build`], where a workload in two nodes' targets (while it moves, or
    /// after a fleet stopped halfway through rescheduling it) is routed to the node it is
    /// placed on (`placed`: workload id → node id). Still only nodes whose target holds it.
    pub fn build_placed(
        apps_domain: &str,
        nodes: &[NodeTargets],
        placed: &HashMap<String, String>,
    ) -> RouteTable {
        Self::build_owned(apps_domain, nodes, placed, &HashMap::new(), &HashSet::new())
    }

    /// Like [`RouteTable::build_placed`], with the account owning each workload (`owners`:
    /// workload id → account id), which goes into its host name ([`host_label`]), and the
    /// workloads only other workloads reach (`internal`: ids), which get no public route.
    pub fn build_owned(
        apps_domain: &str,
        nodes: &[NodeTargets],
        placed: &HashMap<String, String>,
        owners: &HashMap<String, String>,
        internal: &HashSet<String>,
    ) -> RouteTable {
        let mut table = RouteTable::default();
        let mut nodes: Vec<&NodeTargets> = nodes.iter().filter(|n| !n.revoked).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let domain = apps_domain.trim_matches('.').to_ascii_lowercase();
        for node in nodes {
            let workloads: Vec<WorkloadSpec> = match serde_json::from_str(&node.target) {
                Ok(w) => w,
                Err(e) => {
                    table
                        .problems
                        .push(format!("node {}: unreadable target: {e}", node.id));
                    continue;
                }
            };
            for w in workloads {
                for u in &w.upstreams {
                    table.upstreams.insert(
                        (node.id.clone(), u.name.clone()),
                        (u.workload.clone(), u.port),
                    );
                }
                let Some(&first) = w.ports.first() else {
                    continue;
                };
                let route = |port| Route {
                    node: node.id.clone(),
                    workload: w.id.clone(),
                    name: w.name.clone(),
                    port,
                };
                let host = format!(
                    "{}.{domain}",
                    host_label(&w.name, owners.get(&w.id).map(String::as_str))
                );
                let preferred = placed.get(&w.id) == Some(&node.id);
                if internal.contains(&w.id) {
                    for &p in &w.ports {
                        if preferred {
                            table.internal.insert((w.id.clone(), p), route(p));
                        } else {
                            table
                                .internal
                                .entry((w.id.clone(), p))
                                .or_insert_with(|| route(p));
                        }
                    }
                    continue;
                }
                match table.http.get(&host) {
                    Some(existing) if existing.workload == w.id => {
                        if preferred {
                            table.http.insert(host, route(first));
                        }
                    }
                    Some(existing) => table.problems.push(format!(
                        "host {host}: workload {} on node {} keeps it; {} on node {} is not routed",
                        existing.workload, existing.node, w.id, node.id
                    )),
                    None => {
                        table.http.insert(host, route(first));
                    }
                }
                for &p in &w.ports {
                    if preferred {
                        table.tcp.insert((w.id.clone(), p), route(p));
                    } else {
                        table
                            .tcp
                            .entry((w.id.clone(), p))
                            .or_insert_with(|| route(p));
                    }
                }
            }
        }
        table
    }

    /// The route for an HTTP `Host` (port and trailing dot ignored, case-insensitive).
    pub fn http(&self, host: &str) -> Option<&Route> {
        self.http.get(&normalize_host(host))
    }

    /// Every (workload, port) that should have a TCP port.
    pub fn tcp_routes(&self) -> impl Iterator<Item = &Route> {
        self.tcp.values()
    }

    /// The route of a workload's declared port, for TCP.
    pub fn tcp(&self, workload: &str, port: u16) -> Option<&Route> {
        self.tcp.get(&(workload.to_owned(), port))
    }

    /// Where upstream `name`, opened by `node`, leads: only a name that a workload in that
    /// node's own target declares, and only to the node the fleet placed the other workload
    /// on. `None` for anything else (undeclared, or the other workload has no route now).
    pub fn upstream(&self, node: &str, name: &str) -> Option<&Route> {
        let (workload, port) = self.upstreams.get(&(node.to_owned(), name.to_owned()))?;
        let key = (workload.clone(), *port);
        self.tcp.get(&key).or_else(|| self.internal.get(&key))
    }

    pub fn http_hosts(&self) -> impl Iterator<Item = (&String, &Route)> {
        self.http.iter()
    }
}

/// The first label of a workload's host: `{name}--{account}` for an account's workload,
/// `{name}` for one no account owns.
pub fn host_label(name: &str, account: Option<&str>) -> String {
    match account {
        Some(a) => format!("{}--{}", name, a).to_ascii_lowercase(),
        None => name.to_ascii_lowercase(),
    }
}

/// A workload's host name under `apps_domain`.
pub fn workload_host(name: &str, account: Option<&str>, apps_domain: &str) -> String {
    format!(
        "{}.{}",
        host_label(name, account),
        apps_domain.trim_matches('.').to_ascii_lowercase()
    )
}

/// `Web.Example.:8080` → `web.example`; IPv6 literals keep their brackets.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, revoked: bool, workloads: serde_json::Value) -> NodeTargets {
        NodeTargets {
            id: id.into(),
            revoked,
            target: workloads.to_string(),
        }
    }

    fn w(id: &str, name: &str, ports: &[u16]) -> serde_json::Value {
        serde_json::json!({"id": id, "name": name, "image": "i@sha256:0", "cpu_millis": 100,
            "memory_bytes": 33554432, "ports": ports})
    }

    #[test]
    fn hosts_lead_to_the_placing_node_and_the_first_port() {
        let t = RouteTable::build(
            "lattice-apps.localhost",
            &[
                node(
                    "n-a",
                    false,
                    serde_json::json!([w("w-1", "web", &[8080, 9000])]),
                ),
                node("n-b", false, serde_json::json!([w("w-2", "db", &[5432])])),
                node("n-c", false, serde_json::json!([w("w-3", "quiet", &[])])),
            ],
        );
        let r = t.http("WEB.lattice-apps.localhost:8080").unwrap();
        assert_eq!(
            (r.node.as_str(), r.workload.as_str(), r.port),
            ("n-a", "w-1", 8080)
        );
        assert_eq!(t.http("db.lattice-apps.localhost").unwrap().node, "n-b");
        assert_eq!(t.http("quiet.lattice-apps.localhost"), None);
        assert_eq!(t.http("web.other.example"), None);
        assert_eq!(t.http("lattice-apps.localhost"), None);
        let tcp: Vec<_> = t
            .tcp_routes()
            .map(|r| (r.workload.as_str(), r.port))
            .collect();
        assert_eq!(tcp, [("w-1", 8080), ("w-1", 9000), ("w-2", 5432)]);
        assert!(t.problems.is_empty());
    }

    #[test]
    fn revoked_nodes_and_bad_targets_get_no_routes() {
        let t = RouteTable::build(
            "apps.example",
            &[
                node("n-a", true, serde_json::json!([w("w-1", "web", &[80])])),
                NodeTargets {
                    id: "n-b".into(),
                    revoked: false,
                    target: "{not json".into(),
                },
            ],
        );
        assert_eq!(t.http("web.apps.example"), None);
        assert_eq!(t.tcp_routes().count(), 0);
        assert_eq!(t.problems.len(), 1);
        assert!(t.problems[0].contains("n-b"), "{:?}", t.problems);
    }

    #[test]
    fn a_name_clash_keeps_one_route_and_is_reported() {
        let t = RouteTable::build(
            "apps.example",
            &[
                node("n-b", false, serde_json::json!([w("w-2", "web", &[80])])),
                node("n-a", false, serde_json::json!([w("w-1", "web", &[80])])),
            ],
        );
        assert_eq!(t.http("web.apps.example").unwrap().node, "n-a");
        assert_eq!(t.problems.len(), 1);
    }

    #[test]
    fn a_workload_in_two_targets_is_routed_to_where_it_is_placed() {
        // While it moves from n-b to n-a (or after a fleet stopped halfway), both targets hold
        // it: traffic goes to the node the store places it on, on every port, with no clash.
        let both = [
            node(
                "n-a",
                false,
                serde_json::json!([w("w-1", "web", &[80, 81])]),
            ),
            node(
                "n-b",
                false,
                serde_json::json!([w("w-1", "web", &[80, 81])]),
            ),
        ];
        for placed_on in ["n-a", "n-b"] {
            let placed = HashMap::from([("w-1".to_string(), placed_on.to_string())]);
            let t = RouteTable::build_placed("apps.example", &both, &placed);
            assert_eq!(t.http("web.apps.example").unwrap().node, placed_on);
            assert!(t.tcp_routes().all(|r| r.node == placed_on));
            assert!(t.problems.is_empty(), "{:?}", t.problems);
        }
        // A node whose target does not hold it never gets it, wherever the store says it is.
        let placed = HashMap::from([("w-1".to_string(), "n-c".to_string())]);
        let t = RouteTable::build_placed("apps.example", &both[1..], &placed);
        assert_eq!(t.http("web.apps.example").unwrap().node, "n-b");
    }

    #[test]
    fn an_internal_workload_is_only_its_declarers_upstream() {
        let mut primary = w("w-p", "files", &[9000]);
        primary["upstreams"] = serde_json::json!([{"name": "w-r-9000", "workload": "w-r",
            "port": 9000, "env": "LATTICE_S3_REPLICA_ADDR"}]);
        let nodes = [
            node("n-a", false, serde_json::json!([primary])),
            node(
                "n-b",
                false,
                serde_json::json!([w("w-r", "files--replica", &[9000])]),
            ),
        ];
        let owners = HashMap::from([
            ("w-p".to_string(), "a-1".to_string()),
            ("w-r".to_string(), "a-1".to_string()),
        ]);
        let internal = HashSet::from(["w-r".to_string()]);
        let t =
            RouteTable::build_owned("apps.example", &nodes, &HashMap::new(), &owners, &internal);
        // No host and no TCP gateway port for the replica...
        assert_eq!(t.http("files--replica--a-1.apps.example"), None);
        assert!(t.tcp_routes().all(|r| r.workload != "w-r"), "{t:?}");
        assert_eq!(t.tcp("w-r", 9000), None);
        assert_eq!(t.http("files--a-1.apps.example").unwrap().workload, "w-p");
        // ...but its primary's node reaches it as the upstream it declares, and nobody else.
        let up = t.upstream("n-a", "w-r-9000").unwrap();
        assert_eq!((up.node.as_str(), up.workload.as_str()), ("n-b", "w-r"));
        assert_eq!(t.upstream("n-b", "w-r-9000"), None);
        // Without the internal set it would be public: the set is what hides it.
        let t = RouteTable::build_owned(
            "apps.example",
            &nodes,
            &HashMap::new(),
            &owners,
            &HashSet::new(),
        );
        assert!(t.http("files--replica--a-1.apps.example").is_some());
    }

    #[test]
    fn two_accounts_may_both_have_a_web_and_each_gets_its_own_host() {
        let t = RouteTable::build_owned(
            "apps.example",
            &[
                node("n-a", false, serde_json::json!([w("w-1", "web", &[80])])),
                node("n-b", false, serde_json::json!([w("w-2", "web", &[81])])),
            ],
            &HashMap::new(),
            &HashMap::from([
                ("w-1".to_string(), "a-0001".to_string()),
                ("w-2".to_string(), "a-0002".to_string()),
            ]),
            &HashSet::new(),
        );
        let a = t.http("web--a-0001.apps.example").unwrap();
        let b = t.http("web--a-0002.apps.example").unwrap();
        assert_eq!((a.workload.as_str(), a.port), ("w-1", 80));
        assert_eq!((b.workload.as_str(), b.port), ("w-2", 81));
        // No bare name for an account's workload: nobody can claim "web" for everyone.
        assert_eq!(t.http("web.apps.example"), None);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(
            workload_host("Web", Some("a-0001"), "Apps.Example."),
            "web--a-0001.apps.example"
        );
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Web.Example.:443"), "web.example");
        assert_eq!(normalize_host("web.example"), "web.example");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
    }

    #[test]
    fn an_upstream_leads_only_from_the_declaring_node_to_the_placed_workload() {
        let mut web = w("w-web", "web", &[8080]);
        web["upstreams"] = serde_json::json!([
            {"name": "w-db-5432", "workload": "w-db", "port": 5432, "env": "DB"},
            {"name": "w-gone-1", "workload": "w-gone", "port": 1, "env": "GONE"},
        ]);
        let t = RouteTable::build_placed(
            "apps.test",
            &[
                node("n-a", false, serde_json::json!([web])),
                node("n-b", false, serde_json::json!([w("w-db", "db", &[5432])])),
                // A stale copy of the database on a node it is no longer placed on.
                node("n-c", false, serde_json::json!([w("w-db", "db", &[5432])])),
            ],
            &HashMap::from([("w-db".to_string(), "n-b".to_string())]),
        );
        let r = t.upstream("n-a", "w-db-5432").unwrap();
        assert_eq!(
            (r.node.as_str(), r.workload.as_str(), r.port),
            ("n-b", "w-db", 5432)
        );
        // Another node cannot use n-a's declaration; an undeclared name or a workload with no
        // route leads nowhere.
        assert!(t.upstream("n-b", "w-db-5432").is_none());
        assert!(t.upstream("n-a", "w-db-5433").is_none());
        assert!(t.upstream("n-a", "w-gone-1").is_none());
        assert!(t.upstream("n-a", "registry").is_none());
        // A revoked node's declarations are gone with its routes.
        let mut web = w("w-web", "web", &[8080]);
        web["upstreams"] = serde_json::json!([{"name": "w-db-5432", "workload": "w-db", "port": 5432, "env": "DB"}]);
        let t = RouteTable::build(
            "apps.test",
            &[
                node("n-a", true, serde_json::json!([web])),
                node("n-b", false, serde_json::json!([w("w-db", "db", &[5432])])),
            ],
        );
        assert!(t.upstream("n-a", "w-db-5432").is_none());
    }
}
