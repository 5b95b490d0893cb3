use super::*;

/// A fresh SQLite store in memory.
async fn sqlite() -> Store {
    Store::open("sqlite::memory:").await.unwrap()
}

/// A fresh PostgreSQL database on the test cluster that `scripts/test-postgres` starts
/// (`LATTICE_TEST_POSTGRES` = its admin URL). Outside CI, without it, the PostgreSQL variants
/// say so and pass; in CI (`CI` set) its absence is a failure.
async fn postgres() -> Option<Store> {
    Some(Store::open(&postgres_url().await?).await.unwrap())
}

/// A new, empty database on the test cluster; its URL.
async fn postgres_url() -> Option<String> {
    let Ok(admin) = std::env::var("LATTICE_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "LATTICE_TEST_POSTGRES is not set: scripts/test starts PostgreSQL and sets it"
        );
        eprintln!("SKIPPED: LATTICE_TEST_POSTGRES not set (run scripts/test-postgres)");
        return None;
    };
    use sqlx::Connection;
    let name = format!("lattice_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test cluster");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    match admin.rsplit_once('/') {
        Some((base, _)) => Some(format!("{base}/{name}")),
        None => panic!("LATTICE_TEST_POSTGRES has no database part: {admin}"),
    }
}

/// Two fleet replicas on one PostgreSQL never decide placements at once.
#[tokio::test]
async fn placement_is_one_at_a_time_across_replicas() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    let held = a.placement_guard().await.unwrap();
    let wait = std::time::Duration::from_millis(500);
    assert!(
        tokio::time::timeout(wait, b.placement_guard())
            .await
            .is_err(),
        "the other replica placed while this one held the lock"
    );
    drop(held);
    let again = tokio::time::timeout(std::time::Duration::from_secs(10), b.placement_guard()).await;
    assert!(again.is_ok(), "released with its session");
}

/// The placement lock's PostgreSQL session goes back to the pool once unlocked (one lock per
/// placement must not cost a connection each), and a wait given up does not leave it held.
#[tokio::test]
async fn placement_sessions_are_pooled_and_a_wait_given_up_keeps_nothing() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    let ten = std::time::Duration::from_secs(10);
    // More placements than the pool has connections (16).
    for _ in 0..40 {
        let g = tokio::time::timeout(ten, a.placement_guard())
            .await
            .expect("the lock or a connection was kept")
            .unwrap();
        drop(g);
    }
    let held = a.placement_guard().await.unwrap();
    let wait = std::time::Duration::from_millis(300);
    assert!(tokio::time::timeout(wait, b.placement_guard())
        .await
        .is_err());
    drop(held);
    let again = tokio::time::timeout(ten, a.placement_guard()).await;
    assert!(again.is_ok(), "a wait given up kept the lock");
    drop(again);
    let other = tokio::time::timeout(ten, b.placement_guard()).await;
    assert!(other.is_ok(), "the other replica places again");
}

/// SQLite on a file: reads run on their own connections (ADR 0012), which see every committed
/// write at once, do not wait for a write transaction in progress, and cannot write.
#[tokio::test]
async fn sqlite_readers_see_commits_and_do_not_wait_for_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fleet.db").display());
    let s = Store::open(&url).await.unwrap();
    s.insert_token(&token("t1", "hash1", 2, 10_000))
        .await
        .unwrap();
    s.register_node("hash1", &new_node("n-1", "k1"), 5)
        .await
        .unwrap();
    assert!(s.node("n-1").await.unwrap().is_some(), "a commit is seen");
    // A write transaction in progress holds the one writer connection.
    let mut tx = s.pool().begin().await.unwrap();
    sqlx::query("UPDATE nodes SET offer = 'x' WHERE id = 'n-1'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), s.nodes())
        .await
        .expect("a read waited for the writer's transaction")
        .unwrap();
    assert_ne!(read[0].offer, "x", "an uncommitted write was read");
    tx.commit().await.unwrap();
    assert_eq!(s.node("n-1").await.unwrap().unwrap().offer, "x");
    assert!(
        sqlx::query("DELETE FROM nodes")
            .execute(s.reader())
            .await
            .is_err(),
        "a reader wrote"
    );
}

/// Runs each store test on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::sqlite().await).await
            })*
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $name() {
                if let Some(s) = super::postgres().await {
                    super::$name(s).await
                }
            })*
        }
    };
}

on_both!(
    registration_spends_the_token_and_keeps_the_owner,
    expired_unknown_tokens_and_duplicate_keys_change_nothing,
    replays_change_nothing_and_old_status_never_overrides_new,
    will_applies_only_to_the_current_connection,
    silent_nodes_go_offline_and_targets_are_tracked,
    events_keep_delivery_order,
    fleet_epochs_never_repeat,
    concurrent_duplicates_are_accepted_once,
    gateway_ports_are_stable_and_unique,
    gateway_traffic_adds_up,
    downtime_adds_up_into_reliability,
    concurrent_target_rewrites_each_read_what_they_replace,
    s3_replicas_are_stored_reported_relinked_and_promoted,
    a_batch_has_the_outcomes_of_one_by_one,
    a_failed_batch_stores_nothing_and_its_items_can_be_retried,
    overlapping_batches_at_once_accept_each_message_once,
);

fn s3_row(id: &str, name: &str, settings: &str, at: u64) -> WorkloadRow {
    WorkloadRow {
        id: id.into(),
        account_id: "a".into(),
        name: name.into(),
        kind: "s3".into(),
        plan: "small".into(),
        settings: settings.into(),
        node_id: Some("n-1".into()),
        moving_to: None,
        cpu_millis: 250,
        memory_bytes: 1,
        disk_bytes: 2,
        created_ms: at,
        updated_ms: at,
        next: None,
    }
}

/// The S3 replica's store operations (issue 6) behave alike on both engines.
async fn s3_replicas_are_stored_reported_relinked_and_promoted(s: Store) {
    let p = s3_row("w-p", "files", r#"{"replica":"w-r"}"#, 1);
    let r = s3_row("w-r", "files--replica", r#"{"replica_of":"w-p"}"#, 1);
    // All or nothing: a taken name stores none of them.
    assert!(s.insert_workloads(&[(&p, "p")]).await.unwrap());
    let taken = s3_row("w-x", "files", "{}", 1);
    assert!(!s
        .insert_workloads(&[(&r, "replica"), (&taken, "x")])
        .await
        .unwrap());
    assert!(s.workload_by_id("w-r").await.unwrap().is_none());
    assert!(s.insert_workloads(&[(&r, "r")]).await.unwrap());
    assert!(s.workload("a", "files--replica").await.unwrap().is_some());

    // Reports: the newest read wins, never an older one; none for a workload not stored.
    s.record_replication("w-p", "new", 20).await.unwrap();
    s.record_replication("w-p", "older", 10).await.unwrap();
    assert_eq!(
        s.replication("w-p").await.unwrap(),
        Some(("new".to_string(), 20))
    );
    s.record_replication("w-gone", "x", 30).await.unwrap();
    assert_eq!(s.replication("w-gone").await.unwrap(), None);

    // Relinking is a compare-and-set on the primary.
    let stale = s3_row("w-p", "files", "{}", 0);
    assert!(!s
        .relink_replica(&stale, "{}", None, Some("w-r"), 5, ("replica_dropped", "x"))
        .await
        .unwrap());
    assert!(s.workload_by_id("w-r").await.unwrap().is_some());
    let r2 = s3_row("w-r2", "files--replica", r#"{"replica_of":"w-p"}"#, 5);
    // The new replica's name is the old one's: dropping the old in the same step frees it.
    assert!(s
        .relink_replica(
            &p,
            r#"{"replica":"w-r2"}"#,
            Some((&r2, "placed")),
            Some("w-r"),
            5,
            ("replica_placed", "y"),
        )
        .await
        .unwrap());
    assert!(s.workload_by_id("w-r").await.unwrap().is_none());
    let p = s.workload_by_id("w-p").await.unwrap().unwrap();
    assert_eq!(
        (p.settings.as_str(), p.updated_ms),
        (r#"{"replica":"w-r2"}"#, 5)
    );

    // Promotion: the replica takes the name and the history; the primary and its report go.
    assert!(s
        .promote_replica(&p, &r2, "{}", 9, ("promoted", "lag 0"))
        .await
        .unwrap());
    let now = s.workload("a", "files").await.unwrap().unwrap();
    assert_eq!((now.id.as_str(), now.settings.as_str()), ("w-r2", "{}"));
    assert!(s.workload_by_id("w-p").await.unwrap().is_none());
    assert_eq!(s.replication("w-p").await.unwrap(), None);
    let kinds: Vec<String> = s
        .workload_events("w-r2")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&"replica_placed".to_string()) && kinds.last().unwrap() == "promoted",
        "{kinds:?}"
    );
    // Done twice (another fleet process): the second changes nothing.
    assert!(!s
        .promote_replica(&p, &r2, "{}", 10, ("promoted", "again"))
        .await
        .unwrap());
    assert_eq!(s.delete_workloads(&["w-r2", "w-none"]).await.unwrap(), 1);
}

fn token(id: &str, hash: &str, max_uses: u64, expires_ms: u64) -> TokenRow {
    TokenRow {
        id: id.into(),
        secret_hash: hash.into(),
        owner: Some("alice".into()),
        max_uses,
        uses: 0,
        expires_ms,
        created_ms: 1,
    }
}

fn new_node(id: &str, key: &str) -> NewNode {
    NewNode {
        id: id.into(),
        identity_key: key.into(),
        encryption_key: format!("enc-{key}"),
        broker_secret_hash: "h".into(),
        inventory: "{}".into(),
    }
}

async fn registration_spends_the_token_and_keeps_the_owner(s: Store) {
    s.insert_token(&token("t1", "hash1", 1, 10_000))
        .await
        .unwrap();
    let n = s
        .register_node("hash1", &new_node("n-1", "k1"), 5)
        .await
        .unwrap();
    assert_eq!(n.owner.as_deref(), Some("alice"));
    assert_eq!(s.tokens().await.unwrap()[0].uses, 1);
    let err = s
        .register_node("hash1", &new_node("n-2", "k2"), 6)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Token(TokenProblem::UsedUp)),
        "{err}"
    );
    assert_eq!(s.nodes().await.unwrap().len(), 1);
}

async fn expired_unknown_tokens_and_duplicate_keys_change_nothing(s: Store) {
    s.insert_token(&token("t1", "hash1", 5, 100)).await.unwrap();
    let err = s
        .register_node("hash1", &new_node("n-1", "k1"), 100)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Token(TokenProblem::Expired)));
    let err = s
        .register_node("nope", &new_node("n-1", "k1"), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Token(TokenProblem::Unknown)));
    s.register_node("hash1", &new_node("n-1", "k1"), 1)
        .await
        .unwrap();
    let err = s
        .register_node("hash1", &new_node("n-2", "k1"), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateIdentity(ref id) if id == "n-1"));
    assert_eq!(
        s.tokens().await.unwrap()[0].uses,
        1,
        "refused registrations spend nothing"
    );
}

async fn registered(s: Store) -> Store {
    s.insert_token(&token("t1", "hash1", 5, u64::MAX / 2))
        .await
        .unwrap();
    s.register_node("hash1", &new_node("n-1", "k1"), 1)
        .await
        .unwrap();
    s
}

fn status(rev: u64, cpu: &str) -> Effect {
    Effect::Status {
        usage_json: cpu.into(),
        applied_revision: rev,
        workloads_json: format!("[\"{cpu}\"]"),
    }
}

async fn replays_change_nothing_and_old_status_never_overrides_new(s: Store) {
    let s = registered(s).await;
    assert_eq!(
        s.ingest("n-1", 1, 5, status(1, "new"), 10).await.unwrap(),
        IngestOutcome::Applied
    );
    // Same (epoch, counter) again: refused.
    assert!(matches!(
        s.ingest("n-1", 1, 5, status(9, "replay"), 11)
            .await
            .unwrap(),
        IngestOutcome::Replayed(_)
    ));
    // Fresh but older (arrived out of order): accepted once, changes nothing.
    assert_eq!(
        s.ingest("n-1", 1, 4, status(0, "old"), 12).await.unwrap(),
        IngestOutcome::Stale
    );
    let n = s.node("n-1").await.unwrap().unwrap();
    assert_eq!((n.usage.as_str(), n.applied_revision), ("new", 1));
    assert_eq!(
        n.workloads, "[\"new\"]",
        "workload states follow the newest status only"
    );
}

async fn will_applies_only_to_the_current_connection(s: Store) {
    let s = registered(s).await;
    let hello = |rev| Effect::Hello {
        inventory_json: "{}".into(),
        firmware_version: "0.1".into(),
        applied_revision: rev,
    };
    s.ingest("n-1", 3, 1, hello(0), 10).await.unwrap();
    assert!(s.node("n-1").await.unwrap().unwrap().online);
    // A will from an older connection does nothing.
    assert!(!s.accept_will("n-1", 2, "lost").await.unwrap());
    assert!(s.node("n-1").await.unwrap().unwrap().online);
    assert!(s.accept_will("n-1", 3, "connection lost").await.unwrap());
    let n = s.node("n-1").await.unwrap().unwrap();
    assert!(!n.online);
    assert_eq!(n.offline_reason, "connection lost");
    // A status from a newer connection whose hello was lost still moves the connection
    // epoch forward, so that connection's will is honoured.
    s.ingest("n-1", 5, 2, status(0, "u"), 15).await.unwrap();
    assert!(s
        .accept_will("n-1", 5, "lost after a lost hello")
        .await
        .unwrap());
    // A reconnect (newer epoch) brings it back; the old will cannot knock it offline again.
    s.ingest("n-1", 6, 1, hello(0), 20).await.unwrap();
    assert!(!s.accept_will("n-1", 3, "lost").await.unwrap());
    assert!(!s.accept_will("n-1", 5, "lost").await.unwrap());
    assert!(s.node("n-1").await.unwrap().unwrap().online);
}

async fn silent_nodes_go_offline_and_targets_are_tracked(s: Store) {
    let s = registered(s).await;
    s.ingest("n-1", 1, 1, status(0, "u"), 1_000).await.unwrap();
    assert_eq!(s.node_counts().await.unwrap(), (1, 0));
    // A new node's target is revision 1 (empty), not yet acknowledged.
    assert_eq!(s.unacknowledged_targets().await.unwrap().len(), 1);
    assert_eq!(s.set_target("n-1", "[]").await.unwrap(), 2);
    // A writer that read revision 2 before another one wrote 3 does not write its older list.
    assert_eq!(s.set_target_if("n-1", "[\"b\"]", 2).await.unwrap(), Some(3));
    assert_eq!(s.set_target_if("n-1", "[\"a\"]", 2).await.unwrap(), None);
    assert_eq!(s.node("n-1").await.unwrap().unwrap().target, "[\"b\"]");
    assert_eq!(s.set_target("n-1", "[]").await.unwrap(), 4);
    assert_eq!(s.unacknowledged_targets().await.unwrap().len(), 1);
    s.ingest("n-1", 1, 2, status(4, "u"), 1_500).await.unwrap();
    assert!(s.unacknowledged_targets().await.unwrap().is_empty());
    assert!(s.mark_silent_offline(1_000).await.unwrap().is_empty());
    assert_eq!(
        s.mark_silent_offline(2_000).await.unwrap(),
        vec!["n-1".to_string()]
    );
    assert_eq!(s.node_counts().await.unwrap(), (0, 1));
}

/// Target rewrites of one node at once (deploys, deletes, updates, the lifecycle task) each
/// build from the placements as they are when it writes, and each bumps the revision once.
async fn concurrent_target_rewrites_each_read_what_they_replace(s: Store) {
    let s = registered(s).await;
    let start = s.node("n-1").await.unwrap().unwrap().target_revision;
    let rewrites = (0..20u64).map(|i| {
        let s = s.clone();
        async move {
            let w = WorkloadRow {
                id: format!("w-{i:02}"),
                account_id: "a".into(),
                name: format!("w{i}"),
                kind: "container".into(),
                plan: "small".into(),
                settings: "{}".into(),
                node_id: Some("n-1".into()),
                moving_to: None,
                cpu_millis: 250,
                memory_bytes: 1,
                disk_bytes: 0,
                created_ms: i,
                updated_ms: i,
                next: None,
            };
            assert!(s.insert_workload(&w, "placed").await.unwrap());
            s.rewrite_target("n-1", |placed| {
                Ok(
                    serde_json::to_string(&placed.iter().map(|w| w.id.clone()).collect::<Vec<_>>())
                        .unwrap(),
                )
            })
            .await
            .unwrap()
            .unwrap()
        }
    });
    let mut revisions = futures_util::future::join_all(rewrites).await;
    revisions.sort_unstable();
    assert_eq!(revisions, (start + 1..=start + 20).collect::<Vec<_>>());
    // The last rewrite wrote every workload: none was built from a list older than another's.
    let n = s.node("n-1").await.unwrap().unwrap();
    let ids: Vec<String> = serde_json::from_str(&n.target).unwrap();
    assert_eq!(ids.len(), 20, "{ids:?}");
    assert_eq!(
        s.rewrite_target("n-x", |_| Ok("[]".into())).await.unwrap(),
        None
    );
    // What a placement reads: every reservation, and the nodes without their targets.
    let reserved = s.reservations().await.unwrap();
    assert_eq!(reserved.len(), 20);
    assert_eq!(reserved.iter().map(|w| w.cpu_millis).sum::<u64>(), 5_000);
    assert!(reserved.iter().all(|w| w.node_id.as_deref() == Some("n-1")));
    let mut full = s.nodes().await.unwrap();
    full[0].target = String::new();
    full[0].workloads = String::new();
    full[0].usage = String::new();
    assert_eq!(s.nodes_for_placement().await.unwrap(), full);
}

async fn events_keep_delivery_order(s: Store) {
    let s = registered(s).await;
    for (e, c) in [(1, 2), (1, 1), (2, 1)] {
        let ev = Effect::Event {
            at_ms: e * 10 + c,
            kind: "k".into(),
            detail: format!("{e}.{c}"),
        };
        s.ingest("n-1", e, c, ev, 5).await.unwrap();
    }
    let details: Vec<String> = s
        .node_events("n-1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(details, ["1.1", "1.2", "2.1"]);
}

async fn fleet_epochs_never_repeat(s: Store) {
    let a = s.next_fleet_epoch(1).await.unwrap();
    let b = s.next_fleet_epoch(2).await.unwrap();
    assert!(b > a);
    // Not below the clock: a database restored from before later epochs were handed out still
    // gives a higher one than any of them.
    let c = s.next_fleet_epoch(1_700_000_000_000).await.unwrap();
    assert_eq!(c, 1_700_000_000_000);
    assert_eq!(s.next_fleet_epoch(5).await.unwrap(), c + 1);
}

#[test]
fn database_passwords_are_redacted() {
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
}

/// Gateway TCP ports: the same (workload, port) keeps its port, others get the next free one,
/// a full range says so.
async fn gateway_ports_are_stable_and_unique(s: Store) {
    let a = s
        .gateway_port("w-a", 5432, (20000, 20001), 1)
        .await
        .unwrap();
    assert_eq!(a, Some(20000));
    assert_eq!(
        s.gateway_port("w-a", 5432, (20000, 20001), 2)
            .await
            .unwrap(),
        a
    );
    assert_eq!(
        s.gateway_port("w-b", 5432, (20000, 20001), 3)
            .await
            .unwrap(),
        Some(20001)
    );
    assert_eq!(
        s.gateway_port("w-c", 80, (20000, 20001), 4).await.unwrap(),
        None
    );
    assert_eq!(
        s.gateway_port("w-a", 5432, (20000, 20001), 5)
            .await
            .unwrap(),
        a
    );
}

async fn gateway_traffic_adds_up(s: Store) {
    use super::gateway::Traffic;
    let t = |i, o, c| Traffic {
        workload_id: "w-a".into(),
        bytes_in: i,
        bytes_out: o,
        connections: c,
    };
    s.add_gateway_traffic(&t(10, 100, 1), 1).await.unwrap();
    s.add_gateway_traffic(&t(5, u64::from(u32::MAX) * 4, 2), 2)
        .await
        .unwrap();
    assert_eq!(
        s.gateway_traffic().await.unwrap(),
        vec![t(15, 100 + u64::from(u32::MAX) * 4, 3)]
    );
}

/// Many copies of the same message applied at once (several fleet processes, QoS 1
/// redelivery): exactly one is accepted.
async fn concurrent_duplicates_are_accepted_once(s: Store) {
    let s = registered(s).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let s = s.clone();
        set.spawn(async move { s.ingest("n-1", 7, 1, status(1, "x"), 10).await.unwrap() });
    }
    let mut applied = 0;
    while let Some(r) = set.join_next().await {
        if r.unwrap() == IngestOutcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
}

mod accounts;
mod placement;

async fn downtime_adds_up_into_reliability(s: Store) {
    let s = registered(s).await;
    let reg = s.node("n-1").await.unwrap().unwrap().registered_ms;
    let hello = || Effect::Hello {
        inventory_json: "{}".into(),
        firmware_version: "t".into(),
        applied_revision: 0,
    };
    let down = |s: Store| async move { s.node("n-1").await.unwrap().unwrap().down_ms };
    // Registered, first heard of 1 s later: that second was down.
    s.ingest("n-1", 1, 1, hello(), reg + 1_000).await.unwrap();
    assert_eq!(down(s.clone()).await, 1_000);
    s.ingest("n-1", 1, 2, status(0, "u"), reg + 10_000)
        .await
        .unwrap();
    assert_eq!(down(s.clone()).await, 1_000, "online all along");
    // Its will: offline from when it was last heard of; back 20 s later on a new connection.
    assert!(s.accept_will("n-1", 1, "gone").await.unwrap());
    s.ingest("n-1", 2, 1, hello(), reg + 30_000).await.unwrap();
    assert_eq!(down(s.clone()).await, 21_000);
    let n = s.node("n-1").await.unwrap().unwrap();
    assert!((n.reliability(reg + 100_000) - 0.79).abs() < 1e-9);
    // Silent, then a status on the same connection brings it back: that outage counts too.
    s.mark_silent_offline(reg + 35_000).await.unwrap();
    s.ingest("n-1", 2, 2, status(0, "u"), reg + 40_000)
        .await
        .unwrap();
    assert_eq!(down(s.clone()).await, 31_000);
    // The fleet itself was down for part of an outage (a restart at +45 s): only the part it
    // watched counts.
    assert!(s.accept_will("n-1", 2, "gone").await.unwrap());
    s.next_fleet_epoch(reg + 45_000).await.unwrap();
    s.ingest("n-1", 3, 1, hello(), reg + 50_000).await.unwrap();
    assert_eq!(
        down(s.clone()).await,
        36_000,
        "5 s watched, not the 10 s since heard"
    );
    // An outage in progress counts up to now.
    assert!(s.accept_will("n-1", 3, "gone").await.unwrap());
    let n = s.node("n-1").await.unwrap().unwrap();
    assert!(!n.online);
    let r = n.reliability(reg + 100_000);
    assert!((r - (1.0 - 86_000.0 / 100_000.0)).abs() < 1e-9, "{r}");
    assert_eq!(n.reliability(reg), 1.0);
}

fn item(node: &str, epoch: u64, counter: u64, effect: Effect) -> IngestItem {
    IngestItem {
        node_id: node.into(),
        epoch,
        counter,
        effect,
        now_ms: 50,
    }
}

fn event(detail: &str) -> Effect {
    Effect::Event {
        at_ms: 7,
        kind: "k".into(),
        detail: detail.into(),
    }
}

/// Two registered nodes, n-1 and n-2.
async fn two_nodes(s: Store) -> Store {
    let s = registered(s).await;
    s.register_node("hash1", &new_node("n-2", "k2"), 1)
        .await
        .unwrap();
    s
}

/// One transaction for many messages of several nodes: replay windows advance message by
/// message (a duplicate within the batch is a replay), a node's effects apply in arrival order
/// (an older status after a newer one is stale), and the windows are stored.
async fn a_batch_has_the_outcomes_of_one_by_one(s: Store) {
    let s = two_nodes(s).await;
    let hello = Effect::Hello {
        inventory_json: "{\"hostname\":\"h1\"}".into(),
        firmware_version: "0.2".into(),
        applied_revision: 3,
    };
    let batch = [
        item("n-1", 1, 1, hello),
        item("n-2", 1, 1, status(0, "two")),
        item("n-1", 1, 3, status(4, "new")),
        item("n-1", 1, 3, status(9, "duplicate")),
        item("n-1", 1, 2, status(0, "older")),
        item("n-2", 1, 2, event("ev")),
        item("n-2", 1, 1, status(0, "replayed")),
    ];
    let outcomes = s.ingest_batch(&batch).await.unwrap();
    let replayed = |o: &IngestOutcome| matches!(o, IngestOutcome::Replayed(_));
    assert_eq!(outcomes.len(), batch.len());
    assert_eq!(
        outcomes[0..3],
        [
            IngestOutcome::Applied,
            IngestOutcome::Applied,
            IngestOutcome::Applied
        ]
    );
    assert!(replayed(&outcomes[3]), "{:?}", outcomes[3]);
    assert_eq!(outcomes[4], IngestOutcome::Stale);
    assert_eq!(outcomes[5], IngestOutcome::Applied);
    assert!(replayed(&outcomes[6]), "{:?}", outcomes[6]);

    let n1 = s.node("n-1").await.unwrap().unwrap();
    assert!(n1.online);
    assert_eq!(n1.firmware_version, "0.2");
    assert_eq!((n1.usage.as_str(), n1.applied_revision), ("new", 4));
    assert_eq!(n1.workloads, "[\"new\"]");
    assert_eq!(n1.last_seen_ms, 50);
    let n2 = s.node("n-2").await.unwrap().unwrap();
    assert_eq!(n2.usage, "two");
    let events = s.node_events("n-2", 10).await.unwrap();
    assert_eq!(events, [(7, "k".to_string(), "ev".to_string())]);
    // The windows were stored: what the batch accepted is a replay now, the next is fresh.
    for (node, counter) in [("n-1", 1), ("n-1", 2), ("n-1", 3), ("n-2", 2)] {
        let o = s.ingest(node, 1, counter, status(0, "again"), 60).await;
        assert!(replayed(&o.unwrap()), "{node} ({counter}) accepted twice");
    }
    let o = s.ingest("n-1", 1, 4, status(5, "next"), 60).await.unwrap();
    assert_eq!(o, IngestOutcome::Applied);
    assert!(s.ingest_batch(&[]).await.unwrap().is_empty());
}

/// A batch whose transaction fails (an event already stored under its (epoch, counter))
/// stores nothing, not even the replay windows, so each item retried on its own gets the
/// outcome it would have had, and only the bad one fails.
async fn a_failed_batch_stores_nothing_and_its_items_can_be_retried(s: Store) {
    let s = two_nodes(s).await;
    sqlx::query(
        "INSERT INTO node_events (node_id, epoch, counter, at_ms, kind, detail, received_ms) \
         VALUES ('n-2', 1, 5, 0, 'k', 'there before', 0)",
    )
    .execute(s.pool())
    .await
    .unwrap();
    let batch = [
        item("n-1", 1, 1, status(1, "first")),
        item("n-2", 1, 5, event("clash")),
        item("n-1", 1, 2, status(2, "second")),
        item("n-2", 1, 6, status(0, "two")),
    ];
    assert!(s.ingest_batch(&batch).await.is_err());
    assert_eq!(s.node("n-1").await.unwrap().unwrap().usage, "");
    assert_eq!(s.node("n-2").await.unwrap().unwrap().usage, "");
    let mut retried = Vec::new();
    for i in &batch {
        retried.push(
            s.ingest_batch(std::slice::from_ref(i))
                .await
                .map(|o| o[0].clone()),
        );
    }
    assert_eq!(retried[0].as_ref().unwrap(), &IngestOutcome::Applied);
    assert!(retried[1].is_err());
    assert_eq!(retried[2].as_ref().unwrap(), &IngestOutcome::Applied);
    assert_eq!(retried[3].as_ref().unwrap(), &IngestOutcome::Applied);
    let n1 = s.node("n-1").await.unwrap().unwrap();
    assert_eq!((n1.usage.as_str(), n1.applied_revision), ("second", 2));
    assert_eq!(s.node("n-2").await.unwrap().unwrap().usage, "two");
    let events = s.node_events("n-2", 10).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].2, "there before");
}

/// Batches of the same messages in opposite orders applied at once (fleet replicas sharing the
/// node traffic, QoS 1 redelivery): no deadlock, no error, each message accepted once.
async fn overlapping_batches_at_once_accept_each_message_once(s: Store) {
    let s = two_nodes(s).await;
    let mut set = tokio::task::JoinSet::new();
    for counter in 1..=20 {
        let forward = vec![
            item("n-1", 1, counter, status(counter, "a")),
            item("n-2", 1, counter, status(counter, "b")),
        ];
        let backward: Vec<IngestItem> = forward.iter().rev().cloned().collect();
        for batch in [forward, backward] {
            let s = s.clone();
            set.spawn(async move { s.ingest_batch(&batch).await.unwrap() });
        }
    }
    let mut accepted = 0;
    while let Some(r) = set.join_next().await {
        accepted += r
            .unwrap()
            .iter()
            .filter(|o| !matches!(o, IngestOutcome::Replayed(_)))
            .count();
    }
    assert_eq!(
        accepted, 40,
        "each of the 40 messages accepted exactly once"
    );
    for node in ["n-1", "n-2"] {
        assert_eq!(s.node(node).await.unwrap().unwrap().applied_revision, 20);
    }
}

/// The bundled SQLite is built without its global memory statistics (`.cargo/config.toml`'s
/// `LIBSQLITE3_FLAGS`): with them, every allocation SQLite makes takes one process-wide mutex.
#[tokio::test]
async fn sqlite_is_built_without_memstatus() {
    let s = sqlite().await;
    let options: Vec<String> = sqlx::query("PRAGMA compile_options")
        .fetch_all(s.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "SQLite built without -DSQLITE_DEFAULT_MEMSTATUS=0: {options:?}"
    );
}
