//! Property tests: for random desired sets and random leftovers (this node's and another
//! node's containers on the same engine), the plan only touches this node's listed
//! containers, never replaces or duplicates a running matching container, and converges.

use super::model::Sim;
use super::{spec, Model};
use crate::reconcile::plan::Action;
use crate::reconcile::spec_hash;
use crate::runtime::{ContainerStatus, Health};
use lattice_wire::msg::{RestartPolicy, WorkloadClass, WorkloadSpec};
use proptest::prelude::*;
use std::collections::HashSet;

const NODE: &str = "n-1";
const OTHER: &str = "n-2";

fn arb_spec() -> impl Strategy<Value = WorkloadSpec> {
    (0..6u8, 0..2u8, 0..3u8, any::<bool>()).prop_map(|(id, image, restart, batch)| {
        let mut w = spec(&format!("w-{id}"));
        w.image = format!("img-{image}");
        w.restart = [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ][usize::from(restart)];
        if batch {
            w.class = WorkloadClass::Batch;
        }
        w
    })
}

fn arb_status() -> impl Strategy<Value = ContainerStatus> {
    prop_oneof![
        Just(ContainerStatus::Running {
            health: Health::Unknown
        }),
        Just(ContainerStatus::Running {
            health: Health::Unhealthy
        }),
        Just(ContainerStatus::Paused),
        Just(ContainerStatus::Created),
        (0..3i64, any::<bool>())
            .prop_map(|(code, oom_killed)| ContainerStatus::Exited { code, oom_killed }),
        Just(ContainerStatus::Other("dead".into())),
    ]
}

/// A leftover container: (on this node?, workload index, made from the desired spec?, status).
fn arb_leftover() -> impl Strategy<Value = (bool, u8, bool, ContainerStatus)> {
    (any::<bool>(), 0..8u8, any::<bool>(), arb_status())
}

/// The engine with `leftovers`; a leftover "made from the desired spec" carries the hash of
/// the first desired spec with its id, if any.
fn engine(desired: &[WorkloadSpec], leftovers: &[(bool, u8, bool, ContainerStatus)]) -> Model {
    let mut m = Model::default();
    m.pullable = ["img-0", "img-1"].iter().map(|s| s.to_string()).collect();
    for (ours, w, matching, status) in leftovers {
        let id = format!("w-{w}");
        let hash = desired
            .iter()
            .find(|d| d.id == id)
            .filter(|_| *matching)
            .map_or_else(|| "stale".to_string(), spec_hash);
        m.insert(if *ours { NODE } else { OTHER }, &id, &hash, status.clone());
    }
    m
}

fn is_running(s: &ContainerStatus) -> bool {
    matches!(s, ContainerStatus::Running { .. })
}

proptest! {
    #[test]
    fn one_step_touches_only_listed_containers_and_spares_running_matching_ones(
        desired in proptest::collection::vec(arb_spec(), 0..5),
        leftovers in proptest::collection::vec(arb_leftover(), 0..10),
    ) {
        let m = engine(&desired, &leftovers);
        let mut s = Sim::new(NODE, m);
        s.r.set_target(desired.clone());
        let observed = s.m.observed(NODE);
        let listed: HashSet<&str> = observed.iter().map(|o| o.container_id.as_str()).collect();
        let actions = s.r.step(s.now, &observed, true);
        let first: Vec<&WorkloadSpec> = desired
            .iter()
            .filter({ let mut seen = HashSet::new(); move |d| seen.insert(d.id.clone()) })
            .collect();
        for a in &actions {
            if let Some(id) = a.container_id() {
                prop_assert!(listed.contains(id), "{a:?} names an unlisted container");
            }
            if let Action::Create { spec, .. } = a {
                prop_assert!(
                    !observed.iter().any(|o| o.workload_id == spec.id),
                    "create while a container of {} exists", spec.id
                );
            }
        }
        // Adoption: a running container of the desired spec is never stopped, removed,
        // restarted or joined by another.
        for d in first {
            let hash = spec_hash(d);
            let adopted = observed
                .iter()
                .filter(|o| o.workload_id == d.id && o.spec_hash == hash && is_running(&o.status))
                .collect::<Vec<_>>();
            if let Some(keep) = adopted.first() {
                let touched = actions.iter().any(|a| a.container_id() == Some(&keep.container_id));
                prop_assert!(!touched, "touched adopted {}", keep.container_id);
                let recreated = actions
                    .iter()
                    .any(|a| matches!(a, Action::Create { spec, .. } if spec.id == d.id));
                prop_assert!(!recreated, "second container for {}", d.id);
            }
        }
    }

    #[test]
    fn converges_to_the_target_and_a_restart_adopts_it(
        desired in proptest::collection::vec(arb_spec(), 0..5),
        leftovers in proptest::collection::vec(arb_leftover(), 0..10),
    ) {
        let m = engine(&desired, &leftovers);
        let foreign = m.observed(OTHER);
        let mut s = Sim::new(NODE, m);
        s.r.set_target(desired.clone());
        let mut quiet = false;
        for _ in 0..40 {
            // Settled: nothing to do now, and nothing waiting for a backoff to pass.
            quiet = s.round(true).is_empty() && s.r.next_deadline(s.now).is_none();
            if quiet {
                break;
            }
            s.now += 5_000;
        }
        prop_assert!(quiet, "no fixed point after 40 steps");
        prop_assert_eq!(s.m.observed(OTHER), foreign, "another node's containers changed");
        let mut seen = HashSet::new();
        let first: Vec<&WorkloadSpec> =
            desired.iter().filter(|d| seen.insert(d.id.clone())).collect();
        let ours = s.m.observed(NODE);
        prop_assert_eq!(ours.len(), first.len(), "one container per desired workload: {:?}", ours);
        for d in &first {
            let c = ours.iter().find(|o| o.workload_id == d.id);
            prop_assert!(c.is_some(), "{} has no container", d.id);
            let c = c.unwrap();
            prop_assert_eq!(&c.spec_hash, &spec_hash(d));
            let settled = matches!(
                (&c.status, d.restart),
                (ContainerStatus::Running { .. }, _)
                    | (ContainerStatus::Exited { .. }, RestartPolicy::Never)
                    | (
                        ContainerStatus::Exited { code: 0, oom_killed: false },
                        RestartPolicy::OnFailure
                    )
            );
            prop_assert!(settled, "{} left {:?}", d.id, c.status);
        }
        // latticed restarts with an empty memory: nothing to do, nothing restarted.
        let before = s.m.clone();
        let mut fresh = Sim::new(NODE, s.m.clone());
        fresh.r.set_target(desired);
        prop_assert!(fresh.round(true).is_empty());
        prop_assert_eq!(fresh.m.containers, before.containers);
    }
}
