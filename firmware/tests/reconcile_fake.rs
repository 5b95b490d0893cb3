//! The reconcile loop against an in-memory container engine, on tokio's paused clock: what a
//! node does with a target, a restart of latticed, crashes, OOM kills, missing images, removed
//! workloads and an engine that goes away for a while, with the crate's [`FakeRuntime`] as
//! the engine.

use lattice_wire::msg::{RestartPolicy, Target, WorkloadSpec, WorkloadState, WorkloadStatus};
use latticed::agent::Applier;
use latticed::reconcile::{self, ReconcileApplier, ReconcileHandle};
use latticed::runtime::fake::{CallKind, FakeContainer, FakeRuntime};
use latticed::runtime::{ContainerStatus, Health};
use latticed::shutdown::{self, ShutdownTrigger};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const NODE: &str = "n-1";
const IMAGE: &str = "127.0.0.1:5000/app@sha256:aa";

fn spec(id: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.to_string(),
        name: id.to_string(),
        image: IMAGE.to_string(),
        command: vec![],
        env: vec![],
        volumes: vec![],
        cpu_millis: 250,
        memory_bytes: 32 << 20,
        pids_max: 32,
        health: None,
        restart: RestartPolicy::Always,
        class: Default::default(),
        egress: false,
        capabilities: vec![],
        ports: vec![],
        upstreams: Vec::new(),
    }
}

fn target(revision: u64, workloads: Vec<WorkloadSpec>) -> Target {
    Target {
        revision,
        workloads,
        heartbeat_secs: 30,
    }
}

/// An engine holding another node's running `w-a` (which must never be touched).
fn engine() -> (Arc<FakeRuntime>, FakeContainer) {
    let rt = Arc::new(FakeRuntime::new());
    let running = ContainerStatus::Running {
        health: Health::Unknown,
    };
    let id = rt.add_container("n-2", &spec("w-a"), "h", running);
    let foreign = rt.container(&id).unwrap();
    (rt, foreign)
}

fn start(rt: &Arc<FakeRuntime>) -> (ReconcileHandle, ShutdownTrigger) {
    let (trigger, shutdown) = shutdown::channel();
    let handle = reconcile::spawn(rt.clone(), NODE.into(), "/lattice-n-1".into(), shutdown);
    (handle, trigger)
}

/// `node`'s containers, with ids, specs and start times.
fn containers(rt: &FakeRuntime, node: &str) -> Vec<FakeContainer> {
    rt.containers()
        .into_iter()
        .filter(|c| c.node_id == node)
        .collect()
}

fn id_of(rt: &FakeRuntime, workload: &str) -> String {
    rt.container_of(NODE, workload).unwrap().id
}

/// Calls other than listing and image checks, since the last `take_calls`.
fn mutations(rt: &FakeRuntime) -> Vec<CallKind> {
    let calls = rt.calls();
    let kinds = calls.iter().map(|c| c.kind());
    kinds
        .filter(|k| !matches!(k, CallKind::ListOwned | CallKind::EnsureImage))
        .collect()
}

/// When calls of `kind` were made during the next `span` (to the nearest 5 ms).
async fn call_times(rt: &FakeRuntime, kind: CallKind, span: Duration) -> Vec<Instant> {
    let end = Instant::now() + span;
    let (mut seen, mut times) = (rt.count(kind), vec![]);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = rt.count(kind);
        times.extend(std::iter::repeat_n(Instant::now(), now - seen));
        seen = now;
    }
    times
}

/// Waits (on the paused clock) until `ok` holds for the statuses; panics after `limit`.
async fn wait_for(h: &ReconcileHandle, limit: Duration, ok: impl Fn(&[WorkloadStatus]) -> bool) {
    let deadline = Instant::now() + limit;
    while !ok(&h.statuses()) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting; statuses: {:?}",
            h.statuses()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_of(statuses: &[WorkloadStatus], id: &str) -> Option<WorkloadState> {
    statuses
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.state.clone())
}

fn all_running(statuses: &[WorkloadStatus], n: usize) -> bool {
    statuses.len() == n && statuses.iter().all(|s| s.state == WorkloadState::Running)
}

#[tokio::test(start_paused = true)]
async fn runs_a_target_and_a_restarted_latticed_adopts_it_without_touching_anything() {
    let (rt, foreign) = engine();
    let (h, stop) = start(&rt);
    h.set_target(target(1, vec![spec("w-a"), spec("w-b")]));
    let t0 = Instant::now();
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 2)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        (rt.count(CallKind::Create), rt.count(CallKind::Start)),
        (2, 2)
    );
    let ours = containers(&rt, NODE);
    assert_eq!(ours.len(), 2);
    assert!(ours.iter().all(|c| c.cgroup_parent == "/lattice-n-1"));

    // SIGKILL and restart: a new loop with an empty memory on the same engine.
    stop.trigger();
    rt.take_calls();
    let (h, _stop) = start(&rt);
    h.set_target(target(1, vec![spec("w-a"), spec("w-b")]));
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 2)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        mutations(&rt),
        [],
        "adoption must not create, start or remove"
    );
    assert!(rt.count(CallKind::ListOwned) >= 10, "kept reconciling");
    assert_eq!(
        containers(&rt, NODE),
        ours,
        "container ids and start times unchanged"
    );
    assert_eq!(containers(&rt, "n-2"), [foreign]);
}

#[tokio::test(start_paused = true)]
async fn crashes_are_restarted_after_backoff_and_counted_and_oom_is_reported() {
    let (rt, _) = engine();
    let mut never = spec("w-oom");
    never.restart = RestartPolicy::Never;
    let (h, _stop) = start(&rt);
    h.set_target(target(1, vec![spec("w-a"), never]));
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 2)).await;
    rt.take_calls();

    rt.oom_kill(&id_of(&rt, "w-oom"));
    let mut took = vec![];
    for n in 1..=3u32 {
        let crashed = Instant::now();
        rt.exit(&id_of(&rt, "w-a"), 1);
        wait_for(&h, Duration::from_secs(30), |s| {
            s.iter()
                .any(|w| w.id == "w-a" && w.restarts == n && w.state == WorkloadState::Running)
        })
        .await;
        took.push(crashed.elapsed());
    }
    // Seen within one 2 s tick, then held back 1 s, 2 s, 4 s.
    for (took_n, backoff) in took.iter().zip([1u64, 2, 4]) {
        let backoff = Duration::from_secs(backoff);
        let late = backoff + Duration::from_millis(2_100);
        assert!(*took_n >= backoff && *took_n <= late, "{took:?}");
    }
    assert_eq!(
        state_of(&h.statuses(), "w-oom"),
        Some(WorkloadState::OomKilled)
    );
    assert_eq!(
        mutations(&rt),
        [CallKind::Start; 3],
        "only w-a restarted: w-oom's policy is Never"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_reported_and_retried_with_growing_gaps_until_it_appears() {
    let (rt, _) = engine();
    let mut w = spec("w-a");
    w.image = "127.0.0.1:5000/absent@sha256:bb".into();
    rt.set_image_missing(&w.image, "manifest unknown");
    let (h, _stop) = start(&rt);
    h.set_target(target(1, vec![w.clone()]));
    let pulls = call_times(&rt, CallKind::EnsureImage, Duration::from_secs(60)).await;
    let missing = WorkloadState::ImageMissing {
        reason: "manifest unknown".into(),
    };
    assert_eq!(state_of(&h.statuses(), "w-a"), Some(missing));
    let gaps: Vec<u64> = pulls
        .windows(2)
        .map(|p| (p[1] - p[0]).as_millis() as u64)
        .collect();
    assert_eq!(gaps.len(), 5, "{gaps:?}");
    for (gap, want) in gaps.iter().zip([1_000, 2_000, 4_000, 8_000, 16_000]) {
        assert!(
            gap.abs_diff(want) <= 10,
            "retries spaced by backoff: {gaps:?}"
        );
    }
    assert_eq!(rt.count(CallKind::Create), 0);

    rt.add_image(&w.image);
    wait_for(&h, Duration::from_secs(70), |s| all_running(s, 1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_rejected_spec_fails_once_and_the_rest_runs() {
    let (rt, _) = engine();
    let mut bad = spec("w-bad");
    bad.capabilities = vec!["SYS_ADMIN".into()];
    let (h, _stop) = start(&rt);
    h.set_target(target(1, vec![bad, spec("w-b")]));
    wait_for(&h, Duration::from_secs(10), |s| {
        matches!(state_of(s, "w-bad"), Some(WorkloadState::Failed { .. }))
            && state_of(s, "w-b") == Some(WorkloadState::Running)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        rt.count(CallKind::Create),
        2,
        "the rejected create is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn a_workload_dropped_from_the_target_loses_its_container_and_nothing_else() {
    let (rt, foreign) = engine();
    let (h, _stop) = start(&rt);
    h.set_target(target(1, vec![spec("w-a"), spec("w-b")]));
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 2)).await;
    let kept = rt.container_of(NODE, "w-b").unwrap();
    rt.take_calls();
    h.set_target(target(2, vec![spec("w-b")]));
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 1)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(containers(&rt, NODE), [kept]);
    assert_eq!(mutations(&rt), [CallKind::Stop, CallKind::Remove]);
    assert_eq!(
        containers(&rt, "n-2"),
        [foreign],
        "another node's w-a is not ours"
    );
}

#[tokio::test(start_paused = true)]
async fn an_engine_outage_removes_nothing_and_the_loop_re_adopts_after() {
    let (rt, _) = engine();
    let (h, _stop) = start(&rt);
    h.set_target(target(1, vec![spec("w-a")]));
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 1)).await;
    let before = rt.container_of(NODE, "w-a").unwrap();
    rt.set_unavailable(Some("connection refused"));
    rt.take_calls();
    // A new target during the outage must not make the loop remove anything either.
    h.set_target(target(2, vec![spec("w-a"), spec("w-b")]));
    wait_for(&h, Duration::from_secs(10), |s| {
        s.len() == 2
            && s.iter().all(|w| {
                w.state
                    == WorkloadState::Failed {
                        reason: "the container engine is unreachable: connection refused".into(),
                    }
            })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let lists = rt.count(CallKind::ListOwned);
    assert!(
        (4..20).contains(&lists),
        "backs off while the engine is away: {lists} lists"
    );
    rt.set_unavailable(None);
    wait_for(&h, Duration::from_secs(40), |s| all_running(s, 2)).await;
    assert_eq!(rt.count(CallKind::Remove), 0);
    assert_eq!(rt.count(CallKind::Create), 1, "only w-b is new");
    assert_eq!(
        rt.container_of(NODE, "w-a"),
        Some(before),
        "w-a adopted as it was"
    );
}

#[tokio::test(start_paused = true)]
async fn batch_work_is_paused_outside_the_window_and_resumed_inside() {
    let (rt, _) = engine();
    let mut batch = spec("w-batch");
    batch.class = lattice_wire::msg::WorkloadClass::Batch;
    let (h, _stop) = start(&rt);
    h.set_target(target(1, vec![spec("w-a"), batch]));
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 2)).await;
    h.set_batch_allowed(false);
    wait_for(&h, Duration::from_secs(1), |s| {
        state_of(s, "w-batch") == Some(WorkloadState::Paused)
    })
    .await;
    assert_eq!(state_of(&h.statuses(), "w-a"), Some(WorkloadState::Running));
    h.set_batch_allowed(true);
    wait_for(&h, Duration::from_secs(1), |s| all_running(s, 2)).await;
    assert_eq!(rt.count(CallKind::Pause), 1);
    assert_eq!(rt.count(CallKind::Unpause), 1);
}

#[tokio::test(start_paused = true)]
async fn the_applier_refuses_an_invalid_target_and_reports_statuses() {
    let (rt, _) = engine();
    let (h, _stop) = start(&rt);
    let mut applier = ReconcileApplier::new(h.clone());
    let mut bad = spec("w-a");
    bad.memory_bytes = 1 << 20;
    let err = applier
        .apply(&target(1, vec![bad, spec("w-a")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("memory_bytes") && err.contains("more than once"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        rt.count(CallKind::ListOwned),
        0,
        "no target yet: nothing looked at"
    );
    assert!(applier.workloads().is_empty());
    applier.apply(&target(2, vec![spec("w-a")])).unwrap();
    wait_for(&h, Duration::from_secs(10), |s| all_running(s, 1)).await;
    assert_eq!(applier.workloads(), h.statuses());
}
