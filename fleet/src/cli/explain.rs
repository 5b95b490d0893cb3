//! `lattice workload explain [NAME] [--json]` (operators): why the scheduler places a workload
//! where it does, node by node: the chosen node and its score, the counts of rejected nodes
//! per reason, and a table of every node's score or the rule it broke, with the figures.

use super::client::Client;
use crate::api::PlacementExplanation;
use crate::scheduler::{bytes, Verdict};
use std::fmt::Write;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// An existing workload (any account's); without it, a would-be deploy described by
    /// --kind, --plan, --region and --label.
    pub name: Option<String>,
    /// The workload's account, when several accounts have a workload of that name.
    #[arg(long, requires = "name")]
    pub account: Option<String>,
    /// Would-be deploy: container (default) or s3.
    #[arg(long, conflicts_with = "name")]
    pub kind: Option<String>,
    /// Would-be deploy: micro, small (default), medium or large.
    #[arg(long, conflicts_with = "name")]
    pub plan: Option<String>,
    /// Would-be deploy: only nodes in this region.
    #[arg(long, conflicts_with = "name")]
    pub region: Option<String>,
    /// Would-be deploy, repeatable: only nodes whose offer carries this label (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE", conflicts_with = "name")]
    pub labels: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(c: &Client, a: ExplainArgs) -> anyhow::Result<()> {
    let e: PlacementExplanation = match &a.name {
        Some(name) => {
            let mut path = format!("/api/v1/workloads/{name}/placement");
            if let Some(account) = &a.account {
                path.push_str(&format!("?account={account}"));
            }
            c.get(&path).await?
        }
        None => {
            let body = serde_json::json!({
                "kind": a.kind, "plan": a.plan, "region": a.region,
                "labels": super::deploy::pairs("--label", a.labels)?,
            });
            c.post("/api/v1/placement", &body).await?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", render(&e));
    }
    Ok(())
}

/// The explanation for people: what was placed, the decision, then one line per node.
pub fn render(e: &PlacementExplanation) -> String {
    let mut out = String::new();
    let what = match (&e.workload, &e.account_id) {
        (Some(w), Some(a)) => format!("{w} (account {a})"),
        (Some(w), None) => w.clone(),
        _ => "would-be workload".to_string(),
    };
    let mut within = String::new();
    if let Some(r) = &e.placement.region {
        within.push_str(&format!(", region {r}"));
    }
    for (k, v) in &e.placement.labels {
        within.push_str(&format!(", label {k}={v}"));
    }
    let _ = writeln!(
        out,
        "{what}: {} plan {}{within}, needs {}m CPU, {} memory, {} disk",
        e.kind,
        e.plan,
        e.needs.cpu_millis,
        bytes(e.needs.memory_bytes),
        bytes(e.needs.disk_bytes)
    );
    if e.workload.is_some() {
        let _ = writeln!(
            out,
            "runs on:  {}",
            e.current_node.as_deref().unwrap_or("- (not placed)")
        );
    }
    let _ = match &e.chosen {
        Some(n) => writeln!(out, "chosen:   {n} (score {:.2})", e.score),
        None => writeln!(out, "chosen:   none (no node can take it)"),
    };
    let rejected: Vec<String> = e.rejected.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let _ = writeln!(
        out,
        "rejected: {}",
        if rejected.is_empty() {
            "none".to_string()
        } else {
            rejected.join(", ")
        }
    );
    if e.nodes.is_empty() {
        let _ = writeln!(out, "no nodes");
        return out;
    }
    let w_node = e
        .nodes
        .iter()
        .map(|n| n.node.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let w_prov = e
        .nodes
        .iter()
        .map(|n| n.provider.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = writeln!(
        out,
        "{:<w_node$}  {:<w_prov$}  {:<8}  SCORE OR REASON",
        "NODE", "PROVIDER", "VERDICT"
    );
    for n in &e.nodes {
        let (verdict, why) = match &n.verdict {
            Verdict::Fits { score, chosen } => (
                if *chosen { "chosen" } else { "fits" },
                format!("{score:.2}"),
            ),
            Verdict::Rejected { reason, detail, .. } if detail == reason.as_str() => {
                ("rejected", detail.clone())
            }
            Verdict::Rejected { reason, detail, .. } => ("rejected", format!("{reason}: {detail}")),
        };
        let _ = writeln!(
            out,
            "{:<w_node$}  {:<w_prov$}  {verdict:<8}  {why}",
            n.node, n.provider
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offers::Placement;
    use crate::scheduler::{NodeVerdict, Reason, Resources, Shortfall};

    fn verdict(node: &str, verdict: Verdict) -> NodeVerdict {
        NodeVerdict {
            node: node.into(),
            provider: format!("prov-{node}"),
            verdict,
        }
    }

    fn explanation() -> PlacementExplanation {
        PlacementExplanation {
            workload: Some("web".into()),
            account_id: Some("acct-1".into()),
            current_node: Some("n-b".into()),
            kind: "container".into(),
            plan: "large".into(),
            needs: Resources {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                disk_bytes: 0,
            },
            placement: Placement {
                region: Some("eu".into()),
                labels: Default::default(),
            },
            chosen: Some("n-a".into()),
            score: 128.753,
            rejected: [(Reason::Offline, 1), (Reason::Memory, 1)].into(),
            nodes: vec![
                verdict(
                    "n-a",
                    Verdict::Fits {
                        score: 128.753,
                        chosen: true,
                    },
                ),
                verdict(
                    "n-b",
                    Verdict::Fits {
                        score: 120.0,
                        chosen: false,
                    },
                ),
                verdict(
                    "n-c",
                    Verdict::Rejected {
                        reason: Reason::Offline,
                        shortfall: None,
                        detail: "offline".into(),
                    },
                ),
                verdict(
                    "n-dd",
                    Verdict::Rejected {
                        reason: Reason::Memory,
                        shortfall: Some(Shortfall {
                            needed: 1 << 30,
                            free: 1 << 29,
                            capacity: 2 << 30,
                            reserved: 3 << 29,
                        }),
                        detail:
                            "needs 1 GiB memory, 512 MiB free (capacity 2 GiB, reserved 1.5 GiB)"
                                .into(),
                    },
                ),
            ],
        }
    }

    #[test]
    fn the_table_shows_each_nodes_verdict_with_its_score_or_reason_and_figures() {
        assert_eq!(
            render(&explanation()),
            "\
web (account acct-1): container plan large, region eu, needs 1000m CPU, 1 GiB memory, 0 B disk
runs on:  n-b
chosen:   n-a (score 128.75)
rejected: 1 offline, 1 memory
NODE  PROVIDER   VERDICT   SCORE OR REASON
n-a   prov-n-a   chosen    128.75
n-b   prov-n-b   fits      120.00
n-c   prov-n-c   rejected  offline
n-dd  prov-n-dd  rejected  memory: needs 1 GiB memory, 512 MiB free (capacity 2 GiB, reserved 1.5 GiB)
"
        );
    }

    #[test]
    fn a_would_be_workload_no_node_can_take_says_so() {
        let mut e = explanation();
        e.workload = None;
        e.account_id = None;
        e.current_node = None;
        e.chosen = None;
        e.score = 0.0;
        e.nodes.clear();
        e.rejected.clear();
        let text = render(&e);
        assert!(
            text.starts_with("would-be workload: container plan large"),
            "{text}"
        );
        assert!(!text.contains("runs on"), "{text}");
        assert!(
            text.contains("chosen:   none (no node can take it)\n"),
            "{text}"
        );
        assert!(text.contains("rejected: none\nno nodes\n"), "{text}");
    }
}
