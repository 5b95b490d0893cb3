//! The node's rules as `iptables-restore` input, without I/O. Declaring a chain in a
//! `--noflush` restore creates it or empties it, so one restore replaces the node's whole rule
//! set atomically and leaves every other chain as it was.

use super::{chains, Guarded, DENIED_RANGES};
use std::fmt::Write as _;

/// How rejected packets are answered: at once (the workload sees "host unreachable" instead of
/// a timeout), without saying more than that.
pub const REJECT: &str = "REJECT --reject-with icmp-admin-prohibited";

/// A jump from a built-in or Docker chain into one of the node's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// The chain the jump is inserted into (first position).
    pub from: &'static str,
    pub to: String,
}

/// The two jumps the node's chains need: `DOCKER-USER` → forward chain, `INPUT` → input chain.
pub fn jumps(node_id: &str) -> [Jump; 2] {
    let c = chains(node_id);
    [
        Jump {
            from: "DOCKER-USER",
            to: c.forward,
        },
        Jump {
            from: "INPUT",
            to: c.input,
        },
    ]
}

fn comment(node_id: &str, workload_id: &str, what: &str) -> String {
    // Ids are Docker-name characters (checked by the runtime before any object is made), so
    // they need no quoting beyond the double quotes iptables-restore understands.
    format!("-m comment --comment \"lattice node={node_id} workload={workload_id} {what}\"")
}

/// The `iptables-restore --noflush` input that makes the node's chains hold exactly the rules
/// for `guarded` (sorted, so the same set always gives the same text).
pub fn restore_script(node_id: &str, guarded: &[Guarded]) -> String {
    let c = chains(node_id);
    let mut sorted: Vec<&Guarded> = guarded.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut s = String::from("*filter\n");
    let _ = writeln!(s, ":{} - [0:0]", c.forward);
    let _ = writeln!(s, ":{} - [0:0]", c.input);
    for g in &sorted {
        for (range, what) in DENIED_RANGES {
            let _ = writeln!(
                s,
                "-A {} -i {} -d {range} {} -j {REJECT}",
                c.forward,
                g.bridge,
                comment(node_id, &g.workload_id, &format!("deny {what}")),
            );
        }
        let _ = writeln!(
            s,
            "-A {} -i {} -m conntrack --ctstate ESTABLISHED,RELATED {} -j RETURN",
            c.input,
            g.bridge,
            comment(node_id, &g.workload_id, "replies to the host"),
        );
        if let Some(u) = g.upstreams.filter(|u| u.count > 0) {
            let last = u.first.saturating_add(u.count - 1);
            let _ = writeln!(
                s,
                "-A {} -i {} -d {}/32 -p tcp -m tcp --dport {}:{last} -m socket {} -j ACCEPT",
                c.input,
                g.bridge,
                u.gateway,
                u.first,
                comment(node_id, &g.workload_id, "its upstreams"),
            );
        }
        let _ = writeln!(
            s,
            "-A {} -i {} {} -j {REJECT}",
            c.input,
            g.bridge,
            comment(node_id, &g.workload_id, "deny the host"),
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// The input that removes the node's chains (after the jumps to them are gone).
pub fn clear_script(node_id: &str) -> String {
    let c = chains(node_id);
    format!(
        "*filter\n:{f} - [0:0]\n:{i} - [0:0]\n-X {f}\n-X {i}\nCOMMIT\n",
        f = c.forward,
        i = c.input
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::bridge_name;

    fn g(node: &str, w: &str, egress: bool) -> Guarded {
        Guarded {
            workload_id: w.into(),
            bridge: bridge_name(node, w),
            egress,
            upstreams: None,
        }
    }

    #[test]
    fn names_fit_the_kernel_limits_and_differ_per_node_and_workload() {
        let a = chains("n-0123456789abcdef0123456789abcdef");
        assert!(a.forward.len() <= 28 && a.input.len() <= 28, "{a:?}");
        assert_ne!(a, chains("n-0123456789abcdef0123456789abcdee"));
        let b = bridge_name("n-1", "w-1");
        assert_eq!(b.len(), 15, "{b}");
        assert_ne!(b, bridge_name("n-2", "w-1"));
        assert_ne!(b, bridge_name("n-1", "w-2"));
        // No ambiguity from concatenation.
        assert_ne!(bridge_name("n-1", "2w"), bridge_name("n-12", "w"));
    }

    #[test]
    fn every_workload_is_kept_from_every_private_range_and_from_the_host() {
        let node = "n-a";
        let s = restore_script(node, &[g(node, "w-web", true), g(node, "w-db", false)]);
        let c = chains(node);
        for w in ["w-web", "w-db"] {
            let br = bridge_name(node, w);
            for (range, _) in DENIED_RANGES {
                let rule = format!("-A {} -i {br} -d {range} ", c.forward);
                assert!(s.contains(&rule), "missing {rule} in\n{s}");
            }
            // The host: replies first, then everything else rejected.
            let accept = s
                .find(&format!("-A {} -i {br} -m conntrack", c.input))
                .expect("reply rule");
            let reject = s
                .find(&format!("-A {} -i {br} -m comment", c.input))
                .expect("reject rule");
            assert!(accept < reject);
            assert!(s.contains(&format!("node={node} workload={w}")));
        }
        for private in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
        ] {
            assert!(DENIED_RANGES.iter().any(|(r, _)| *r == private));
        }
        assert!(s.starts_with("*filter\n") && s.ends_with("COMMIT\n"));
    }

    #[test]
    fn the_script_only_names_the_nodes_own_chains() {
        let node = "n-a";
        let s = restore_script(node, &[g(node, "w-1", true)]);
        let c = chains(node);
        for line in s
            .lines()
            .filter(|l| l.starts_with('-') || l.starts_with(':'))
        {
            assert!(
                line.contains(&c.forward) || line.contains(&c.input),
                "{line} touches another chain"
            );
        }
        // An empty set still declares (and so empties) both chains.
        let empty = restore_script(node, &[]);
        assert_eq!(empty.lines().count(), 4, "{empty}");
    }

    #[test]
    fn same_set_same_text() {
        let node = "n-a";
        let a = restore_script(node, &[g(node, "w-1", true), g(node, "w-2", false)]);
        let b = restore_script(
            node,
            &[
                g(node, "w-2", false),
                g(node, "w-1", true),
                g(node, "w-1", true),
            ],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn jumps_go_from_docker_user_and_input() {
        let [f, i] = jumps("n-a");
        assert_eq!((f.from, i.from), ("DOCKER-USER", "INPUT"));
        assert_eq!(f.to, chains("n-a").forward);
        assert!(clear_script("n-a").contains(&format!("-X {}", chains("n-a").input)));
    }

    #[test]
    fn a_workload_reaches_only_its_own_upstream_ports_on_the_host() {
        let node = "n-a";
        let mut web = g(node, "w-web", false);
        web.upstreams = Some(crate::firewall::UpstreamPorts {
            gateway: "10.201.0.1".parse().unwrap(),
            first: 7700,
            count: 2,
        });
        let s = restore_script(node, &[web.clone(), g(node, "w-db", false)]);
        let allow = format!(
            "-A {} -i {} -d 10.201.0.1/32 -p tcp -m tcp --dport 7700:7701",
            chains(node).input,
            web.bridge
        );
        let lines: Vec<&str> = s.lines().collect();
        let at = lines.iter().position(|l| l.starts_with(&allow)).expect(&s);
        // Only where a socket is bound to that very address (latticed's listener): a host
        // service on every address at those ports is not matched (`-m socket` ignores
        // wildcard sockets), and falls to "deny the host".
        assert!(lines[at].contains("-m socket "), "{}", lines[at]);
        assert!(!lines[at].contains("--nowildcard"), "{}", lines[at]);
        assert!(lines[at].ends_with("-j ACCEPT"), "{}", lines[at]);
        // Before that bridge's "deny the host", and only for that bridge.
        let deny = lines
            .iter()
            .position(|l| l.contains(&web.bridge) && l.contains("deny the host"))
            .unwrap();
        assert!(at < deny);
        assert_eq!(s.matches("--dport").count(), 1, "{s}");
    }
}
