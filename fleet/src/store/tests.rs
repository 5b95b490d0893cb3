use super::*;

async fn store() -> Store {
    Store::open("sqlite::memory:").await.unwrap()
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

#[tokio::test]
async fn registration_spends_the_token_and_keeps_the_owner() {
    let s = store().await;
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

#[tokio::test]
async fn expired_unknown_tokens_and_duplicate_keys_change_nothing() {
    let s = store().await;
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

async fn registered() -> Store {
    let s = store().await;
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
    }
}

#[tokio::test]
async fn replays_change_nothing_and_old_status_never_overrides_new() {
    let s = registered().await;
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
}

#[tokio::test]
async fn will_applies_only_to_the_current_connection() {
    let s = registered().await;
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
    // A reconnect (newer epoch) brings it back; the old will cannot knock it offline again.
    s.ingest("n-1", 4, 1, hello(0), 20).await.unwrap();
    assert!(!s.accept_will("n-1", 3, "lost").await.unwrap());
    assert!(s.node("n-1").await.unwrap().unwrap().online);
}

#[tokio::test]
async fn silent_nodes_go_offline_and_targets_are_tracked() {
    let s = registered().await;
    s.ingest("n-1", 1, 1, status(0, "u"), 1_000).await.unwrap();
    assert_eq!(s.node_counts().await.unwrap(), (1, 0));
    // A new node's target is revision 1 (empty), not yet acknowledged.
    assert_eq!(s.unacknowledged_targets().await.unwrap().len(), 1);
    assert_eq!(s.set_target("n-1", "[]").await.unwrap(), 2);
    assert_eq!(s.unacknowledged_targets().await.unwrap().len(), 1);
    s.ingest("n-1", 1, 2, status(2, "u"), 1_500).await.unwrap();
    assert!(s.unacknowledged_targets().await.unwrap().is_empty());
    assert!(s.mark_silent_offline(1_000).await.unwrap().is_empty());
    assert_eq!(
        s.mark_silent_offline(2_000).await.unwrap(),
        vec!["n-1".to_string()]
    );
    assert_eq!(s.node_counts().await.unwrap(), (0, 1));
}

#[tokio::test]
async fn events_keep_delivery_order() {
    let s = registered().await;
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

#[tokio::test]
async fn fleet_epochs_never_repeat() {
    let s = store().await;
    let a = s.next_fleet_epoch(1).await.unwrap();
    let b = s.next_fleet_epoch(2).await.unwrap();
    assert!(b > a);
}

#[test]
fn database_passwords_are_redacted() {
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
}
