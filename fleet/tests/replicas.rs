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

#[path = "common/partition.rs"]
mod partition;

/// The timestamps (RFC 3339, UTC: they compare as strings) of the log lines containing `what`.
fn log_times(log: &str, what: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            // Colours, when the log has them, wrap the timestamp.
            let mut plain = String::new();
            let mut chars = l.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    chars.by_ref().find(|c| c.is_ascii_alphabetic());
                } else {
                    plain.push(c);
                }
            }
            plain.split_whitespace().next().map(str::to_string)
        })
        .collect()
}

/// Seconds since midnight UTC of a log timestamp (`2026-11-27T15:56:50.123456Z`).
fn secs_of_day(ts: &str) -> f64 {
    let time = ts.split_once('T').unwrap().1.trim_end_matches('Z');
    let mut parts = time.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

/// How long after `at` (seconds since midnight UTC) the log timestamp `ts` is.
fn logged_after(at: f64, ts: &str) -> Duration {
    Duration::from_secs_f64((secs_of_day(ts) - at).rem_euclid(86_400.0))
}

/// When, and the leader gauges of replicas a and b then.
type Sample = (Instant, Option<i64>, Option<i64>);

/// `POST /api/v1/tokens` with the operator credential: (status, body, how long it took).
fn create_token_raw(url: &str, operator: &str, owner: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
        ])
        .args(["-H", &format!("Authorization: Bearer {operator}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", &format!(r#"{{"owner":"{owner}"}}"#)])
        .arg(format!("{url}/api/v1/tokens"))
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string(), took)
}

/// The owners of the provisioning tokens, as replica `f` lists them.
fn token_owners(f: &Fleet) -> Option<Vec<String>> {
    let (ok, out, _) = f.cli(&["tokens", "list", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).ok().filter(|_| ok)?;
    let mut owners: Vec<String> = list
        .iter()
        .filter_map(|t| t["owner"].as_str().map(str::to_string))
        .collect();
    owners.sort();
    Some(owners)
}

/// Issue 8's fault "a replica partitioned from the database": the leader's PostgreSQL traffic
/// is cut in the kernel (packets dropped both ways, nothing closed). It stops leading within
/// CHECK_EVERY + CHECK_TIMEOUT, its writes fail with a 503 naming the database instead of
/// hanging, the other replica takes over once PostgreSQL has dropped the silent sessions (and
/// the lock with them), what it writes meanwhile is kept, and after the partition heals the
/// cut-off replica serves again as a follower. Never two leaders.
#[test]
fn the_leader_partitioned_from_the_database_stops_leading_and_comes_back_a_follower() {
    use lattice_fleet::leader::{CHECK_EVERY, CHECK_TIMEOUT, SERVER_DROPS_SILENT_AFTER};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let Some(url) = fresh_postgres("lattice_partition") else {
        return;
    };
    let Some((pg_port, _)) = url
        .strip_prefix("postgres://")
        .and_then(|u| u.split_once("@127.0.0.1:"))
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(port, db)| Some((port.parse::<u16>().ok()?, db)))
    else {
        eprintln!("SKIPPED: the partition needs PostgreSQL on 127.0.0.1 ({url})");
        return;
    };
    let Some(mut net) = partition::Partition::new_or_skip(free_port(), pg_port) else {
        return;
    };
    // Replica a reaches the database only through the port that can be cut.
    let a_db = url.replacen(
        &format!("127.0.0.1:{pg_port}/"),
        &format!("127.0.0.1:{}/", net.port),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let a = Fleet::start(
        "fleet",
        &a_data,
        free_port(),
        free_port(),
        &["--database", &a_db],
    );
    wait_for(15, "replica a to lead", || {
        (leader_gauge(&a.url) == Some(1)).then_some(())
    });
    std::fs::create_dir_all(&b_data).unwrap();
    for f in ["fleet.key", "operator.token", "fleet-broker.secret"] {
        std::fs::copy(a_data.join(f), b_data.join(f)).unwrap();
    }
    let b = Fleet::start(
        "fleet",
        &b_data,
        free_port(),
        free_port(),
        &["--database", &url],
    );
    wait_for(15, "replica b to follow", || {
        (leader_gauge(&b.url) == Some(0)).then_some(())
    });
    let operator = std::fs::read_to_string(a_data.join("operator.token")).unwrap();
    let operator = operator.trim().to_string();
    let (code, body, _) = create_token_raw(&a.url, &operator, "before");
    assert_eq!(code, 201, "{body}");

    // Both gauges, all along: never two leaders.
    let samples: Arc<Mutex<Vec<Sample>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let (samples, stop) = (samples.clone(), stop.clone());
        let (a_url, b_url) = (a.url.clone(), b.url.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ga = leader_gauge(&a_url);
                let gb = leader_gauge(&b_url);
                samples.lock().unwrap().push((Instant::now(), ga, gb));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    net.cut();
    let cut = Instant::now();
    let cut_of_day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .rem_euclid(86_400.0);
    let write = {
        let (a_url, operator) = (a.url.clone(), operator.clone());
        std::thread::spawn(move || create_token_raw(&a_url, &operator, "cut-off"))
    };
    let health = {
        let a_url = a.url.clone();
        std::thread::spawn(move || {
            let out = Command::new("curl")
                .args(["-sk", "--max-time", "60", "-w", " %{http_code}"])
                .arg(format!("{a_url}/healthz"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let stopped = wait_for(20, "the cut-off leader to stop leading", || {
        (leader_gauge(&a.url) == Some(0)).then(|| cut.elapsed())
    });
    let took_over = wait_for(30, "replica b to take over", || {
        (leader_gauge(&b.url) == Some(1)).then(|| cut.elapsed())
    });
    let (code, body, took) = write.join().unwrap();
    eprintln!(
        "partition: a stopped leading after {stopped:?}, b led after {took_over:?}, \
         a's write failed after {took:?} ({code} {body})"
    );
    // The gauge is read about once a second while the database does not answer (the log
    // below gives the exact time).
    assert!(
        stopped <= CHECK_EVERY + CHECK_TIMEOUT + Duration::from_secs(4),
        "{stopped:?}"
    );
    assert!(
        took_over <= SERVER_DROPS_SILENT_AFTER + CHECK_EVERY + Duration::from_secs(5),
        "{took_over:?}"
    );
    assert_eq!(code, 503, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "unavailable", "{body}");
    assert!(
        err["message"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(health.join().unwrap(), "store unavailable 503");
    // The healthy replica serves writes meanwhile.
    for i in 0..3 {
        b.cli_ok(&["tokens", "create", "--owner", &format!("during-{i}")]);
    }

    net.heal();
    let healed = Instant::now();
    let expected = ["before", "during-0", "during-1", "during-2"];
    wait_for(40, "replica a to serve again", || {
        (token_owners(&a).as_deref() == Some(&expected.map(String::from)[..])).then_some(())
    });
    eprintln!(
        "partition healed: a served again after {:?}",
        healed.elapsed()
    );
    let (code, body, _) = create_token_raw(&a.url, &operator, "after");
    assert_eq!(code, 201, "{body}");
    let all = ["after", "before", "during-0", "during-1", "during-2"].map(String::from);
    assert_eq!(
        token_owners(&b).unwrap(),
        all,
        "the failed write was not stored"
    );
    // A follower now: a few more rounds of samples, all with b alone leading.
    let back = Instant::now();
    wait_for(20, "samples after the partition healed", || {
        let s = samples.lock().unwrap();
        (s.iter().filter(|(t, ..)| *t > back).count() >= 5).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    observer.join().unwrap();
    let samples = samples.lock().unwrap();
    assert!(
        !samples
            .iter()
            .any(|(_, ga, gb)| *ga == Some(1) && *gb == Some(1)),
        "two leaders: {samples:?}"
    );
    let after: Vec<_> = samples
        .iter()
        .filter(|(t, ..)| *t > back)
        .map(|(_, ga, gb)| (*ga, *gb))
        .collect();
    assert!(after.iter().all(|g| *g == (Some(0), Some(1))), "{after:?}");

    // The logs agree: a lost before b gained, and a did not lead again.
    let (a_log, b_log) = (a.log_text(), b.log_text());
    let a_gained = log_times(&a_log, "leadership gained");
    let a_lost = log_times(&a_log, "leadership lost");
    let b_gained = log_times(&b_log, "leadership gained");
    assert_eq!(a_gained.len(), 1, "{a_log}");
    assert_eq!(a_lost.len(), 1, "{a_log}");
    assert_eq!(b_gained.len(), 1, "{b_log}");
    assert!(
        a_lost[0] < b_gained[0],
        "a lost {a_lost:?}, b gained {b_gained:?}"
    );
    let (lost, gained) = (
        logged_after(cut_of_day, &a_lost[0]),
        logged_after(cut_of_day, &b_gained[0]),
    );
    eprintln!("logged: a lost leadership {lost:?} after the cut, b gained it after {gained:?}");
    assert!(
        lost <= CHECK_EVERY + CHECK_TIMEOUT + Duration::from_secs(1),
        "{lost:?}"
    );
    assert!(
        // (The last check may have been a second before the cut; the cut is recorded
        // after iptables returns.)
        gained >= SERVER_DROPS_SILENT_AFTER - CHECK_EVERY - Duration::from_secs(1),
        "the lock was freed before the cut-off leader could know: {gained:?}"
    );
    // What the operator guide says an operator sees.
    assert!(a_log.contains("no answer within 3s"), "{a_log}");
    assert!(a_log.contains("cannot try the leader lock"), "{a_log}");
}
