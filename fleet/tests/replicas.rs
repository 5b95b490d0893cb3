//! Several fleet replicas on one PostgreSQL (issue 8, item 3): one leader, elected through a
//! PostgreSQL advisory lock, runs the lifecycle timers; SIGKILLed, another replica takes over
//! within seconds, and what the leader did is done once across the takeover (no workload
//! placed twice, one event per rescheduling).
//!
//! No nodes: each replica here runs its own embedded broker, and a node talks to one broker.
//! The nodes and the workload are written into the store directly; node loss is what the
//! lifecycle task acts on.

mod common;

use common::*;
use lattice_fleet::store::{Store, WorkloadRow};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `lattice_fleet_leader` gauge of the fleet at `url` (`None` while it does not answer).
fn leader_gauge(url: &str) -> Option<i64> {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "3"])
        .arg(format!("{url}/metrics"))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("lattice_fleet_leader "))
        .and_then(|v| v.trim().parse().ok())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An online node with room for work; `seen_ms` far ahead keeps the heartbeat timer off it.
async fn add_node(db: &mut sqlx::PgConnection, id: &str) {
    let inventory = r#"{"hostname":"h","cpu_model":"c","cpu_count":4,"memory_bytes":8589934592,"disk_total_bytes":107374182400,"disk_free_bytes":107374182400,"kernel":"k","arch":"x86_64"}"#;
    sqlx::query(
        "INSERT INTO nodes (id, owner, token_id, identity_key, encryption_key, broker_secret_hash, \
         inventory, registered_ms, online, last_seen_ms) VALUES ($1, 'p', 't', $2, 'x', 'x', $3, $4, 1, $5)",
    )
    .bind(id)
    .bind(format!("identity-{id}"))
    .bind(inventory)
    .bind(now_ms())
    .bind(now_ms() + 3_600_000)
    .execute(db)
    .await
    .unwrap();
}

/// The node went silent a minute ago: lost at once with a 2 s grace period.
async fn lose_node(db: &mut sqlx::PgConnection, id: &str) {
    sqlx::query(
        "UPDATE nodes SET online = 0, offline_reason = 'test', last_seen_ms = $2, registered_ms = $2 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(now_ms() - 60_000)
    .execute(db)
    .await
    .unwrap();
}

#[test]
fn the_leader_killed_another_replica_takes_over_and_work_is_done_once() {
    let Some(url) = fresh_postgres("lattice_replicas") else {
        return;
    };
    use sqlx::Connection;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--database", url.as_str(), "--node-lost-grace-secs", "2"];
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let a = Fleet::start("fleet", &a_data, free_port(), free_port(), &args);
    // One fleet: the replicas share its key, operator credential and broker secret.
    std::fs::create_dir_all(&b_data).unwrap();
    for f in ["fleet.key", "operator.token", "fleet-broker.secret"] {
        std::fs::copy(a_data.join(f), b_data.join(f)).unwrap();
    }
    let b = Fleet::start("fleet", &b_data, free_port(), free_port(), &args);
    let mut replicas = [Some(a), Some(b)];
    let gauges = |r: &[Option<Fleet>; 2]| -> Vec<Option<i64>> {
        r.iter()
            .map(|f| f.as_ref().and_then(|f| leader_gauge(&f.url)))
            .collect()
    };
    let leader = wait_for(15, "exactly one leader", || match gauges(&replicas)[..] {
        [Some(1), Some(0)] => Some(0),
        [Some(0), Some(1)] => Some(1),
        _ => None,
    });
    // It stays that way.
    std::thread::sleep(Duration::from_secs(2));
    let g = gauges(&replicas);
    assert_eq!(g[leader], Some(1), "{g:?}");
    assert_eq!(g[1 - leader], Some(0), "{g:?}");

    let store = rt.block_on(Store::open(&url)).unwrap();
    let mut db = rt.block_on(sqlx::PgConnection::connect(&url)).unwrap();
    rt.block_on(async {
        for n in ["n-a", "n-b", "n-c"] {
            add_node(&mut db, n).await;
        }
        let w = WorkloadRow {
            id: "w-1".into(),
            account_id: "acct".into(),
            name: "web".into(),
            kind: "container".into(),
            plan: "small".into(),
            settings: r#"{"image":"busybox","port":8080,"env":{},"command":[]}"#.into(),
            node_id: Some("n-a".into()),
            moving_to: None,
            cpu_millis: 250,
            memory_bytes: 1 << 20,
            disk_bytes: 0,
            created_ms: 1,
            updated_ms: 1,
            next: None,
        };
        assert!(store.insert_workload(&w, "placed").await.unwrap());
        lose_node(&mut db, "n-a").await;
    });
    let rescheduled = |store: &Store| -> Vec<String> {
        rt.block_on(store.workload_events("w-1"))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "rescheduled")
            .map(|e| e.detail)
            .collect()
    };
    let placed_on = |store: &Store| -> String {
        let all = rt.block_on(store.workloads(None)).unwrap();
        assert_eq!(all.len(), 1, "one workload: {all:?}");
        all[0].node_id.clone().unwrap()
    };
    let first = wait_for(20, "the leader reschedules off n-a", || {
        let on = placed_on(&store);
        (on != "n-a").then_some(on)
    });
    assert_eq!(rescheduled(&store).len(), 1);
    let leader_log = replicas[leader].as_ref().unwrap().log_text();
    let follower_log = replicas[1 - leader].as_ref().unwrap().log_text();
    assert!(leader_log.contains("rescheduled off a lost node"));
    assert!(leader_log.contains("leadership gained"));
    assert!(
        !follower_log.contains("rescheduled off a lost node"),
        "only the leader runs the lifecycle task"
    );

    // SIGKILL the leader: the other replica leads within a few seconds.
    let killed_at = Instant::now();
    replicas[leader].as_mut().unwrap().kill9();
    replicas[leader] = None;
    let next = 1 - leader;
    wait_for(10, "the other replica to lead", || {
        (gauges(&replicas)[next] == Some(1)).then_some(())
    });
    let failover = killed_at.elapsed();
    eprintln!("failover took {failover:?}");
    assert!(failover < Duration::from_secs(10), "{failover:?}");

    // The new leader rebuilds from the store and does not redo what was done.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rescheduled(&store).len(), 1, "{:?}", rescheduled(&store));
    assert_eq!(placed_on(&store), first);

    // And it does leader work: the workload's new node is lost too.
    rt.block_on(lose_node(&mut db, &first));
    let second = wait_for(20, "the new leader reschedules", || {
        let on = placed_on(&store);
        (on != first).then_some(on)
    });
    assert_ne!(second, "n-a", "not onto a lost node");
    std::thread::sleep(Duration::from_secs(3));
    let events = rescheduled(&store);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(placed_on(&store), second);
    let nodes = rt.block_on(store.nodes()).unwrap();
    let holding: Vec<&str> = nodes
        .iter()
        .filter(|n| n.target.contains("w-1"))
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(
        holding,
        [second.as_str()],
        "only its node's target holds it"
    );
    let log = replicas[next].as_ref().unwrap().log_text();
    assert!(log.contains("leadership gained"), "{log}");
    assert!(log.contains("rescheduled off a lost node"), "{log}");
}
