//! The host owner first, end to end: batch work paused outside the provider's windows (the
//! reconcile loop on the in-memory engine, the events the agent would send), and the
//! envelope's CPU cap lowered on the machine's real cgroup hierarchy while processes outside
//! Lattice keep the CPU busy.

use lattice_wire::msg::{RestartPolicy, Target, WorkloadClass, WorkloadSpec, WorkloadState};
use latticed::agent::Applier;
use latticed::cgroup::{self, detect, CgroupManager, Envelope, EnvelopeLimits};
use latticed::owner::{self, AvailabilityConfig, HostLoadConfig, OwnerSettings};
use latticed::reconcile::ReconcileApplier;
use latticed::runtime::fake::FakeRuntime;
use latticed::shutdown;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn batch(id: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        name: id.into(),
        image: "127.0.0.1:5000/app@sha256:aa".into(),
        command: vec![],
        env: vec![],
        volumes: vec![],
        cpu_millis: 100,
        memory_bytes: 32 << 20,
        pids_max: 32,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::Batch,
        egress: false,
        capabilities: vec![],
        ports: vec![],
        upstreams: Vec::new(),
    }
}

fn settings(windows: Vec<String>, threshold: u32) -> OwnerSettings {
    OwnerSettings::validate(
        &AvailabilityConfig {
            time_zone: "UTC".into(),
            windows,
        },
        &HostLoadConfig {
            threshold_percent: threshold,
            min_cpu_percent: 5,
            sample_secs: 1,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn batch_work_is_paused_outside_the_windows_and_the_fleet_is_told() {
    // A window two days from now: certainly not now.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .weekday()
        .to_monday_zero_offset() as usize;
    let elsewhere = format!("{} 00:00-01:00", DAYS[(today + 2) % 7]);

    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("127.0.0.1:5000/app@sha256:aa");
    let (_trigger, shutdown) = shutdown::channel();
    let mut applier = ReconcileApplier::spawn(
        rt.clone(),
        "n-1".into(),
        "/lattice-n-1".into(),
        shutdown.clone(),
    );
    let mut always_on = batch("w-db");
    always_on.class = WorkloadClass::AlwaysOn;
    applier
        .apply(&Target {
            revision: 1,
            workloads: vec![batch("w-build"), always_on],
            heartbeat_secs: 30,
        })
        .unwrap();
    let envelope = Arc::new(cgroup::FakeManager::new("n-1").unwrap());
    owner::spawn(
        settings(vec![elsewhere.clone()], 0),
        50,
        envelope,
        applier.handle().clone(),
        applier.events().clone(),
        shutdown,
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states: Vec<(String, WorkloadState)> = applier
            .workloads()
            .into_iter()
            .map(|s| (s.id, s.state))
            .collect();
        let paused = states
            .iter()
            .any(|(id, s)| id == "w-build" && *s == WorkloadState::Paused);
        let db_running = states
            .iter()
            .any(|(id, s)| id == "w-db" && *s == WorkloadState::Running);
        if paused && db_running {
            break;
        }
        assert!(Instant::now() < deadline, "not paused: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = applier.take_events();
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "batch_paused" && d.contains("outside")),
        "{events:?}"
    );
    assert!(applier.take_events().is_empty(), "events are drained once");
}

/// Root and a cgroup hierarchy latticed manages itself (not systemd's), or why not.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if detect::systemd_booted() {
        return Some("systemd owns the hierarchy".into());
    }
    detect::detect()
        .err()
        .map(|e| format!("no cgroup hierarchy: {e}"))
}

struct Burners(Vec<Child>);

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Remove(Arc<Envelope>);

impl Drop for Remove {
    fn drop(&mut self) {
        for _ in 0..20 {
            if self.0.remove().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test]
async fn the_envelope_cpu_cap_drops_while_the_owner_keeps_the_cpu_busy() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let node = format!("t-owner-{:08x}", rand::random::<u32>());
    let envelope = Arc::new(cgroup::for_node(&node, None).expect("envelope"));
    let _remove = Remove(envelope.clone());
    envelope
        .ensure(&EnvelopeLimits::new(80, 256 << 20, 64).unwrap())
        .expect("ensure");
    let quota_before = envelope_quota(&envelope);

    // The owner's own work: a busy loop per CPU, outside the envelope.
    let cpus = latticed::cgroup::online_cpus();
    let _burners = Burners(
        (0..cpus)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("sh")
            })
            .collect(),
    );

    let rt = Arc::new(FakeRuntime::new());
    let (_trigger, shutdown) = shutdown::channel();
    let applier = ReconcileApplier::spawn(
        rt,
        node.clone(),
        format!("/lattice-{node}"),
        shutdown.clone(),
    );
    owner::spawn(
        settings(vec![], 30),
        80,
        envelope.clone(),
        applier.handle().clone(),
        applier.events().clone(),
        shutdown,
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    loop {
        events.extend(applier.events().drain());
        let lowered = events.iter().any(|(k, _)| k == "cpu_cap_lowered");
        if lowered && envelope_quota(&envelope) < quota_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cap not lowered (quota {} before, {} now); events {events:?}",
            quota_before,
            envelope_quota(&envelope)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, detail) = events.iter().find(|(k, _)| k == "cpu_cap_lowered").unwrap();
    assert!(detail.starts_with("80% -> 40%"), "{detail}");
}

/// The envelope's CPU quota in microseconds per period, read from the kernel's files.
fn envelope_quota(env: &Envelope) -> u64 {
    let text = match env {
        Envelope::V1(m) => {
            std::fs::read_to_string(m.dir("cpu").unwrap().join("cpu.cfs_quota_us")).unwrap()
        }
        Envelope::V2(m) => std::fs::read_to_string(m.dir().join("cpu.max")).unwrap(),
        other => panic!("not a filesystem envelope: {other:?}"),
    };
    text.split_whitespace()
        .next()
        .and_then(|q| q.parse().ok())
        .unwrap_or(u64::MAX)
}
