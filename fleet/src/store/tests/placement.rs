//! Placement changes (drain moves, rescheduling) are compare-and-set, on both backends: a
//! second fleet process, or a restarted one, acting on what it saw earlier changes nothing.

use super::super::*;
use super::{postgres, sqlite};

on_both!(
    moves_apply_only_to_the_placement_seen_and_record_one_event,
    an_update_becomes_the_workload_when_its_move_finishes_and_is_dropped_when_cancelled,
    a_workload_keeps_its_newest_events_and_lists_read_them_at_once,
);

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
        next: None,
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

async fn an_update_becomes_the_workload_when_its_move_finishes_and_is_dropped_when_cancelled(
    s: Store,
) {
    assert!(s
        .insert_workload(&workload("w-1", "n-a"), "placed")
        .await
        .unwrap());
    let next = NextVersion {
        plan: "medium".into(),
        settings: r#"{"v":2}"#.into(),
        cpu_millis: 500,
        memory_bytes: 2,
    };
    let seen = s.workload("acct", "w-1").await.unwrap().unwrap();
    // Made from other settings than those stored (another change landed first): refused.
    let stale = WorkloadRow {
        settings: r#"{"v":0}"#.into(),
        ..seen.clone()
    };
    assert!(!s
        .start_update(&stale, "n-b", &next, 2, ("updating", "to n-b"))
        .await
        .unwrap());
    assert!(!s
        .update_in_place(&stale, &next, 2, ("updated", "in place"))
        .await
        .unwrap());
    assert!(s
        .start_update(&seen, "n-b", &next, 2, ("updating", "to n-b"))
        .await
        .unwrap());
    // Once: a second start (another process) and an in-place change both see it moving.
    assert!(!s
        .start_update(&seen, "n-c", &next, 3, ("updating", "to n-c"))
        .await
        .unwrap());
    assert!(!s
        .update_in_place(&seen, &next, 3, ("updated", "in place"))
        .await
        .unwrap());
    let w = s.workload("acct", "w-1").await.unwrap().unwrap();
    assert_eq!(w.next.as_ref(), Some(&next));
    assert_eq!((w.plan.as_str(), w.settings.as_str()), ("small", "{}"));
    assert_eq!(w.as_next().plan, "medium");

    // Cancelled (the new version failed): dropped, the old one stays as it was.
    assert!(s
        .move_workload(
            "w-1",
            ("n-a", Some("n-b")),
            Placement::CancelMove,
            4,
            ("update_failed", "on n-b: exited")
        )
        .await
        .unwrap());
    let w = s.workload("acct", "w-1").await.unwrap().unwrap();
    assert_eq!(
        (w.next, w.moving_to, w.plan.as_str()),
        (None, None, "small")
    );

    // Finished: the new version is the workload's, with its reservation.
    assert!(s
        .start_update(&seen, "n-b", &next, 5, ("updating", "to n-b"))
        .await
        .unwrap());
    assert!(s
        .move_workload(
            "w-1",
            ("n-a", Some("n-b")),
            Placement::FinishMove { to: "n-b" },
            6,
            ("updated", "on n-b")
        )
        .await
        .unwrap());
    let w = s.workload("acct", "w-1").await.unwrap().unwrap();
    assert_eq!(w.node_id.as_deref(), Some("n-b"));
    assert_eq!(
        (
            w.plan.as_str(),
            w.settings.as_str(),
            w.cpu_millis,
            w.memory_bytes
        ),
        ("medium", r#"{"v":2}"#, 500, 2)
    );
    assert_eq!(w.next, None);

    // In place, only while it is where the caller saw it.
    let third = NextVersion {
        plan: "large".into(),
        ..next
    };
    assert!(!s
        .update_in_place(&seen, &third, 7, ("updated", "stale"))
        .await
        .unwrap());
    let now = s.workload("acct", "w-1").await.unwrap().unwrap();
    assert!(s
        .update_in_place(&now, &third, 7, ("updated", "in place"))
        .await
        .unwrap());
    assert_eq!(
        s.workload("acct", "w-1").await.unwrap().unwrap().plan,
        "large"
    );
    assert_eq!(
        kinds(&s, "w-1").await,
        [
            "created",
            "updating",
            "update_failed",
            "updating",
            "updated",
            "updated"
        ]
    );
}

async fn a_workload_keeps_its_newest_events_and_lists_read_them_at_once(s: Store) {
    for id in ["w-1", "w-2"] {
        assert!(s
            .insert_workload(&workload(id, "n-a"), "placed")
            .await
            .unwrap());
    }
    let extra = super::super::workloads::KEPT_EVENTS as u64 + 20;
    for i in 0..extra {
        s.workload_event("w-1", 10 + i, "tick", &format!("{i}"))
            .await
            .unwrap();
    }
    let events = s.workload_events("w-1").await.unwrap();
    assert_eq!(events.len(), super::super::workloads::KEPT_EVENTS);
    assert_eq!(events.last().unwrap().detail, format!("{}", extra - 1));
    assert_eq!(
        events.first().unwrap().detail,
        "20",
        "the oldest went first"
    );
    let all = s
        .workload_events_of(&["w-1", "w-2", "w-none"])
        .await
        .unwrap();
    assert_eq!(all["w-1"], events);
    assert_eq!(all["w-2"].len(), 1);
    assert_eq!(all["w-2"][0].kind, "created");
    assert!(!all.contains_key("w-none"));
    // What a list reads: only the newest of each, oldest first.
    let newest = s
        .newest_workload_events_of(&["w-1", "w-2", "w-none"], 10)
        .await
        .unwrap();
    assert_eq!(newest["w-1"], events[events.len() - 10..]);
    assert_eq!(newest["w-2"], all["w-2"]);
    assert!(!newest.contains_key("w-none"));
}
