//! Placement changes (drain moves, rescheduling) are compare-and-set, on both backends: a
//! second fleet process, or a restarted one, acting on what it saw earlier changes nothing.

use super::super::*;
use super::{postgres, sqlite};

on_both!(moves_apply_only_to_the_placement_seen_and_record_one_event);

fn workload(id: &str, node: &str) -> WorkloadRow {
    WorkloadRow {
        id: id.into(),
        account_id: "acct".into(),
        name: id.into(),
        kind: "container".into(),
        plan: "small".into(),
        settings: "{}".into(),
        node_id: Some(node.into()),
        moving_to: None,
        cpu_millis: 250,
        memory_bytes: 1,
        disk_bytes: 0,
        created_ms: 1,
        updated_ms: 1,
    }
}

async fn kinds(s: &Store, id: &str) -> Vec<String> {
    s.workload_events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

async fn moves_apply_only_to_the_placement_seen_and_record_one_event(s: Store) {
    assert!(s
        .insert_workload(&workload("w-1", "n-a"), "placed")
        .await
        .unwrap());
    let start = Placement::StartMove { to: "n-b" };
    assert!(s
        .move_workload("w-1", ("n-a", None), start, 2, ("moving", "to n-b"))
        .await
        .unwrap());
    // The same step again (another process, or a restart, that saw the old placement).
    assert!(!s
        .move_workload("w-1", ("n-a", None), start, 3, ("moving", "to n-b"))
        .await
        .unwrap());
    // While moving it is in both nodes' targets.
    for n in ["n-a", "n-b"] {
        assert_eq!(s.workloads_on(n).await.unwrap().len(), 1, "{n}");
    }
    let finish = Placement::FinishMove { to: "n-b" };
    assert!(s
        .move_workload("w-1", ("n-a", Some("n-b")), finish, 4, ("moved", "on n-b"))
        .await
        .unwrap());
    assert!(!s
        .move_workload("w-1", ("n-a", Some("n-b")), finish, 5, ("moved", "on n-b"))
        .await
        .unwrap());
    let w = s.workload("acct", "w-1").await.unwrap().unwrap();
    assert_eq!((w.node_id.as_deref(), w.moving_to), (Some("n-b"), None));
    assert!(s.workloads_on("n-a").await.unwrap().is_empty());

    // Rescheduling off a lost node: once, whoever tries second.
    let to_c = Placement::Reschedule { to: "n-c" };
    let to_a = Placement::Reschedule { to: "n-a" };
    assert!(s
        .move_workload("w-1", ("n-b", None), to_c, 6, ("rescheduled", "n-b lost"))
        .await
        .unwrap());
    assert!(!s
        .move_workload("w-1", ("n-b", None), to_a, 7, ("rescheduled", "n-b lost"))
        .await
        .unwrap());
    assert_eq!(
        s.workload("acct", "w-1")
            .await
            .unwrap()
            .unwrap()
            .node_id
            .as_deref(),
        Some("n-c")
    );
    assert_eq!(
        kinds(&s, "w-1").await,
        ["created", "moving", "moved", "rescheduled"]
    );
    // A deleted workload is not resurrected by a late move.
    s.delete_workload("w-1").await.unwrap();
    assert!(!s
        .move_workload("w-1", ("n-c", None), to_a, 8, ("rescheduled", "late"))
        .await
        .unwrap());
    assert!(s.workload_events("w-1").await.unwrap().is_empty());
}
