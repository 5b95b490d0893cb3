//! Unit tests of the reconciler's phases, restart rules, backoff and statuses.

use super::model::Sim;
use super::{spec, Model};
use crate::reconcile::plan::{delay_ms, Action};
use crate::reconcile::spec_hash;
use crate::runtime::{ContainerStatus, Health, RuntimeError};
use lattice_wire::msg::{RestartPolicy, WorkloadClass, WorkloadSpec, WorkloadState};

const NODE: &str = "n-1";

fn sim(specs: Vec<WorkloadSpec>) -> Sim {
    let mut m = Model::default();
    for s in &specs {
        m.pullable.insert(s.image.clone());
    }
    let mut sim = Sim::new(NODE, m);
    sim.r.set_target(specs);
    sim
}

fn verbs(actions: &[Action]) -> Vec<&'static str> {
    actions.iter().map(Action::verb).collect()
}

fn running() -> ContainerStatus {
    ContainerStatus::Running {
        health: Health::Unknown,
    }
}

fn exited(code: i64, oom_killed: bool) -> ContainerStatus {
    ContainerStatus::Exited { code, oom_killed }
}

/// Sets workload `id`'s only container to `status`.
fn set_status(s: &mut Sim, id: &str, status: ContainerStatus) {
    for (_, o) in
        s.m.containers
            .iter_mut()
            .filter(|(_, o)| o.workload_id == id)
    {
        o.status = status.clone();
    }
}

#[test]
fn a_new_workload_goes_image_create_start_one_phase_per_step() {
    let mut s = sim(vec![spec("w-a")]);
    assert_eq!(s.state("w-a"), WorkloadState::Creating);
    assert_eq!(verbs(&s.round(true)), ["ensure-image"]);
    assert_eq!(verbs(&s.round(true)), ["create"]);
    assert_eq!(s.state("w-a"), WorkloadState::Creating);
    assert_eq!(verbs(&s.round(true)), ["start"]);
    assert_eq!(s.state("w-a"), WorkloadState::Running);
    assert!(s.round(true).is_empty());
    assert_eq!((s.m.creates, s.m.starts), (1, 1));
    assert_eq!(s.statuses()[0].restarts, 0);
}

#[test]
fn a_restarted_reconciler_adopts_running_containers_without_any_action() {
    let mut s = sim(vec![spec("w-a"), spec("w-b")]);
    for _ in 0..4 {
        s.round(true);
    }
    let before = s.m.observed(NODE);
    let mut fresh = Sim::new(NODE, s.m.clone());
    fresh.r.set_target(vec![spec("w-a"), spec("w-b")]);
    assert!(fresh.round(true).is_empty());
    assert_eq!(
        fresh.m.observed(NODE),
        before,
        "ids and start times unchanged"
    );
    assert_eq!(fresh.state("w-b"), WorkloadState::Running);
}

#[test]
fn health_maps_to_healthy_and_unhealthy() {
    let mut s = sim(vec![spec("w-a")]);
    let h = spec_hash(&spec("w-a"));
    s.m.insert(
        NODE,
        "w-a",
        &h,
        ContainerStatus::Running {
            health: Health::Healthy,
        },
    );
    assert_eq!(s.state("w-a"), WorkloadState::Healthy);
    set_status(
        &mut s,
        "w-a",
        ContainerStatus::Running {
            health: Health::Unhealthy,
        },
    );
    assert_eq!(s.state("w-a"), WorkloadState::Unhealthy);
    assert!(
        s.round(true).is_empty(),
        "unhealthy is reported, not acted on"
    );
}

#[test]
fn a_changed_spec_stops_and_removes_then_recreates() {
    let mut s = sim(vec![spec("w-a")]);
    let old = s.m.insert(NODE, "w-a", "old-hash", running());
    let actions = s.round(true);
    assert_eq!(verbs(&actions), ["stop", "remove"]);
    assert!(actions
        .iter()
        .all(|a| a.container_id() == Some(old.as_str())));
    // The replaced container's volumes (the workload's data) stay for the new one.
    assert!(actions
        .iter()
        .all(|a| !matches!(a, Action::Remove { purge: true, .. })));
    assert_eq!(verbs(&s.round(true)), ["ensure-image"]);
    assert_eq!(verbs(&s.round(true)), ["create"]);
    assert_eq!(verbs(&s.round(true)), ["start"]);
    let now = s.m.observed(NODE);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].spec_hash, spec_hash(&spec("w-a")));
}

#[test]
fn containers_of_workloads_not_in_the_target_are_removed_and_others_nodes_never_seen() {
    let mut s = sim(vec![]);
    s.m.insert(NODE, "w-gone", "h", running());
    s.m.insert(NODE, "w-old", "h", exited(0, false));
    s.m.insert(
        NODE,
        "w-busy",
        "h",
        ContainerStatus::Other("removing".into()),
    );
    let foreign = s.m.insert("n-2", "w-gone", "h", running());
    let actions = s.round(true);
    assert_eq!(verbs(&actions), ["stop", "remove", "remove"]);
    // Workloads that left the target go with their network and volumes.
    assert!(actions
        .iter()
        .filter(|a| matches!(a, Action::Remove { .. }))
        .all(|a| matches!(a, Action::Remove { purge: true, .. })));
    let left: Vec<_> =
        s.m.containers
            .iter()
            .map(|(_, o)| o.workload_id.as_str())
            .collect();
    assert_eq!(left, ["w-busy", "w-gone"]);
    assert!(s
        .m
        .containers
        .iter()
        .any(|(_, o)| o.container_id == foreign));
}

#[test]
fn duplicates_and_dead_containers_of_a_workload_are_removed_keeping_the_best() {
    let mut s = sim(vec![spec("w-a")]);
    let h = spec_hash(&spec("w-a"));
    s.m.insert(NODE, "w-a", &h, exited(1, false));
    let keep = s.m.insert(NODE, "w-a", &h, running());
    s.m.insert(NODE, "w-a", &h, ContainerStatus::Other("dead".into()));
    assert_eq!(verbs(&s.round(true)), ["remove", "remove"]);
    let left = s.m.observed(NODE);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].container_id, keep);
    assert!(s.round(true).is_empty());
}

/// Runs workload `w` to a running container, then sets it exited with `code`/`oom`.
fn crashed(w: WorkloadSpec, code: i64, oom: bool) -> Sim {
    let mut s = sim(vec![w.clone()]);
    for _ in 0..3 {
        s.round(true);
    }
    set_status(&mut s, &w.id, exited(code, oom));
    s
}

#[test]
fn always_restarts_any_exit_with_doubling_backoff_counted_in_restarts() {
    let mut s = crashed(spec("w-a"), 0, false);
    assert_eq!(s.state("w-a"), WorkloadState::Exited { code: 0 });
    for (n, wait) in [1_000u64, 2_000, 4_000, 8_000].into_iter().enumerate() {
        assert!(
            s.round(true).is_empty(),
            "restart {n} not before its backoff"
        );
        assert_eq!(s.r.next_deadline(s.now), Some(s.now + wait));
        s.now += wait - 1;
        assert!(s.round(true).is_empty());
        s.now += 1;
        assert_eq!(verbs(&s.round(true)), ["start"]);
        assert_eq!(s.state("w-a"), WorkloadState::Running);
        assert_eq!(s.statuses()[0].restarts, n as u32 + 1);
        set_status(&mut s, "w-a", exited(2, false));
    }
}

#[test]
fn backoff_is_capped_at_a_minute_and_resets_after_five_minutes_running() {
    assert_eq!(
        (0..9).map(delay_ms).collect::<Vec<_>>(),
        [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    );
    assert_eq!(delay_ms(u32::MAX), 60_000);
    let mut s = crashed(spec("w-a"), 1, false);
    for _ in 0..3 {
        s.round(true);
        s.now += 60_000;
        s.round(true);
        set_status(&mut s, "w-a", exited(1, false));
    }
    s.round(true);
    assert_eq!(s.r.next_deadline(s.now), Some(s.now + 8_000));
    s.now += 8_000;
    s.round(true);
    s.round(true); // sees it running
    s.now += 300_000;
    s.round(true); // running five minutes: reset
    set_status(&mut s, "w-a", exited(1, false));
    s.round(true);
    assert_eq!(s.r.next_deadline(s.now), Some(s.now + 1_000));
}

#[test]
fn on_failure_restarts_failures_and_oom_only_and_never_stays_exited() {
    let mut w = spec("w-a");
    w.restart = RestartPolicy::OnFailure;
    let mut clean = crashed(w.clone(), 0, false);
    let mut failed = crashed(w.clone(), 3, false);
    let mut oom = crashed(w.clone(), 137, true);
    w.restart = RestartPolicy::Never;
    let mut never = crashed(w, 1, false);
    for s in [&mut clean, &mut failed, &mut oom, &mut never] {
        s.round(true);
        s.now += 1_000;
    }
    assert!(clean.round(true).is_empty());
    assert!(never.round(true).is_empty());
    assert_eq!(clean.state("w-a"), WorkloadState::Exited { code: 0 });
    assert_eq!(never.state("w-a"), WorkloadState::Exited { code: 1 });
    assert_eq!(oom.state("w-a"), WorkloadState::OomKilled);
    assert_eq!(verbs(&failed.round(true)), ["start"]);
    assert_eq!(verbs(&oom.round(true)), ["start"]);
    assert_eq!(oom.statuses()[0].restarts, 1);
}

#[test]
fn a_missing_image_is_reported_and_retried_with_backoff_not_in_a_loop() {
    let mut s = sim(vec![spec("w-a")]);
    s.m.pullable.clear();
    assert_eq!(verbs(&s.round(true)), ["ensure-image"]);
    assert_eq!(
        s.state("w-a"),
        WorkloadState::ImageMissing {
            reason: "not found in the registry".into()
        }
    );
    let mut pulls = vec![];
    for _ in 0..200 {
        s.now += 250;
        if !s.round(true).is_empty() {
            pulls.push(s.now);
        }
    }
    let gaps: Vec<u64> = pulls.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(gaps, [2_000, 4_000, 8_000, 16_000]);
    s.m.pullable.insert(spec("w-a").image);
    s.now += 60_000;
    assert_eq!(verbs(&s.round(true)), ["ensure-image"]);
    assert_eq!(verbs(&s.round(true)), ["create"]);
    assert_eq!(s.state("w-a"), WorkloadState::Creating);
}

#[test]
fn a_rejected_spec_fails_without_retrying_until_the_spec_changes() {
    let mut s = sim(vec![spec("w-a")]);
    s.round(true);
    let create = s.r.step(s.now, &[], true);
    assert_eq!(verbs(&create), ["create"]);
    let reason = "capability NET_ADMIN is not allowed".to_string();
    let err = RuntimeError::Rejected {
        workload: "w-a".into(),
        reason: reason.clone(),
    };
    s.r.on_result(&create[0], Err(err), s.now);
    assert_eq!(s.state("w-a"), WorkloadState::Failed { reason });
    s.now += 3_600_000;
    assert!(s.round(true).is_empty());
    let mut fixed = spec("w-a");
    fixed.capabilities.clear();
    fixed.env.push(("B".into(), "2".into()));
    s.r.set_target(vec![fixed]);
    assert_eq!(
        verbs(&s.round(true)),
        ["create"],
        "image still known present"
    );
}

#[test]
fn engine_unavailable_results_change_nothing() {
    let mut s = sim(vec![spec("w-a")]);
    let a = s.r.step(s.now, &[], true);
    s.r.on_result(&a[0], Err(RuntimeError::Unavailable("down".into())), s.now);
    assert_eq!(s.state("w-a"), WorkloadState::Creating);
    assert_eq!(
        s.r.step(s.now, &[], true),
        a,
        "retried at once when the engine is back"
    );
}

#[test]
fn batch_work_pauses_outside_windows_and_resumes_inside() {
    let mut batch = spec("w-b");
    batch.class = WorkloadClass::Batch;
    let mut s = sim(vec![spec("w-a"), batch]);
    for _ in 0..2 {
        s.round(false);
    }
    assert_eq!(
        verbs(&s.round(false)),
        ["start"],
        "always-on starts, batch waits"
    );
    assert_eq!(s.state("w-b"), WorkloadState::Paused);
    assert_eq!(s.state("w-a"), WorkloadState::Running);
    assert_eq!(verbs(&s.round(true)), ["start"]);
    assert_eq!(s.state("w-b"), WorkloadState::Running);
    let paused = s.round(false);
    assert_eq!(verbs(&paused), ["pause"]);
    assert_eq!(paused[0].workload(), "w-b");
    assert_eq!(s.state("w-b"), WorkloadState::Paused);
    assert!(s.round(false).is_empty());
    assert_eq!(verbs(&s.round(true)), ["unpause"]);
    assert_eq!(s.state("w-b"), WorkloadState::Running);
}

#[test]
fn set_target_keeps_the_first_of_duplicate_ids_and_forgets_removed_workloads() {
    let mut s = sim(vec![spec("w-a")]);
    let mut other = spec("w-a");
    other.name = "other".into();
    s.r.set_target(vec![spec("w-a"), other]);
    assert_eq!(s.statuses().len(), 1);
    s.round(true);
    let create = s.r.step(s.now, &[], true);
    assert!(matches!(&create[0], Action::Create { spec, .. } if spec.name == "web"));
    s.r.set_target(vec![]);
    assert!(s.statuses().is_empty());
    assert_eq!(s.r.next_deadline(0), None);
}

#[test]
fn a_container_that_cannot_start_is_failed_with_the_engines_reason_until_it_starts() {
    let mut s = sim(vec![spec("w-a")]);
    s.m.refuse_start = Some("AppArmor profile could not be loaded".into());
    assert_eq!(verbs(&s.round(true)), ["ensure-image"]);
    assert_eq!(verbs(&s.round(true)), ["create"]);
    assert_eq!(verbs(&s.round(true)), ["start"]);
    match s.state("w-a") {
        WorkloadState::Failed { reason } => {
            assert!(
                reason.contains("AppArmor profile could not be loaded"),
                "{reason}"
            )
        }
        other => panic!("expected Failed with the engine's reason, got {other:?}"),
    }
    // Retried after its backoff; once the engine lets it start, the reason is gone.
    s.m.refuse_start = None;
    s.now += 60_000;
    assert_eq!(verbs(&s.round(true)), ["start"]);
    assert_eq!(s.state("w-a"), WorkloadState::Running);
}
