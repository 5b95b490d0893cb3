//! Batches of node messages through every check and one store transaction.

use super::*;
use crate::store::{NewNode, TokenRow};
use lattice_wire::msg::{Event, Hello, Inventory, Status, Usage, Will};
use lattice_wire::{Envelope, IdentityKey};

struct Node {
    id: &'static str,
    key: IdentityKey,
}

/// An in-memory store with nodes n-1 and n-2 registered under real keys.
async fn fleet() -> (Ingest, Store, Arc<Metrics>, [Node; 2]) {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store
        .insert_token(&TokenRow {
            id: "t1".into(),
            secret_hash: "hash1".into(),
            owner: None,
            max_uses: 5,
            uses: 0,
            expires_ms: u64::MAX / 2,
            created_ms: 1,
        })
        .await
        .unwrap();
    let nodes = ["n-1", "n-2"].map(|id| Node {
        id,
        key: IdentityKey::generate(),
    });
    for n in &nodes {
        let new = NewNode {
            id: n.id.into(),
            identity_key: n.key.public().to_string(),
            encryption_key: format!("enc-{}", n.id),
            broker_secret_hash: "h".into(),
            inventory: "{}".into(),
        };
        store.register_node("hash1", &new, 1).await.unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    let ingest = Ingest::new(store.clone(), metrics.clone());
    (ingest, store, metrics, nodes)
}

/// `message` from `node` on its channel, signed with `signer`.
fn publish(
    node: &Node,
    signer: &IdentityKey,
    epoch: u64,
    counter: u64,
    message: Message,
) -> (String, Vec<u8>) {
    let kind = message.kind();
    let h = Envelope {
        sender: Sender::Node(node.id.into()),
        recipient: None,
        epoch,
        counter,
        timestamp_ms: lattice_wire::now_ms(),
        kind,
        sealed: false,
    };
    (
        topic::topic(node.id, kind.channel().unwrap()),
        lattice_wire::envelope::encode(&h, &message, signer, None).unwrap(),
    )
}

fn status(cpu: u32) -> Message {
    Message::Status(Status {
        applied_revision: 0,
        usage: Usage {
            cpu_percent_x100: cpu,
            ..Usage::default()
        },
        workloads: vec![],
    })
}

fn hello() -> Message {
    Message::Hello(Hello {
        firmware_version: "0.3".into(),
        inventory: Inventory::default(),
        applied_revision: 0,
    })
}

fn lag_count(m: &Metrics) -> u64 {
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix("lattice_heartbeat_lag_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn cpu(usage_json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(usage_json).unwrap();
    v["cpu_percent_x100"].as_u64().unwrap()
}

/// A forged signature among good messages is refused on its own; the others are stored in
/// order, counted, and their heartbeat lag observed.
#[tokio::test]
async fn a_forged_message_in_a_batch_costs_only_itself() {
    let (ingest, store, metrics, [a, b]) = fleet().await;
    let forger = IdentityKey::generate();
    let batch = [
        publish(&a, &a.key, 1, 1, status(100)),
        publish(&b, &forger, 1, 1, status(666)),
        publish(&a, &a.key, 1, 2, status(200)),
        publish(&b, &b.key, 1, 2, hello()),
        publish(&a, &a.key, 1, 2, status(300)),
    ];
    let results = ingest.handle_batch(&batch, 10).await;
    assert_eq!(results.len(), 5);
    assert!(results[0].as_ref().unwrap().changed);
    assert_eq!(results[1].as_ref().unwrap_err().reason, "bad_signature");
    assert!(results[2].as_ref().unwrap().changed);
    let hello_ok = results[3].as_ref().unwrap();
    assert_eq!(
        (hello_ok.node_id.as_str(), hello_ok.kind),
        ("n-2", MessageKind::Hello)
    );
    assert_eq!(results[4].as_ref().unwrap_err().reason, "replay_duplicate");
    assert_eq!(metrics.rejected_count("bad_signature"), 1);
    assert_eq!(metrics.rejected_count("replay_duplicate"), 1);
    assert_eq!(lag_count(&metrics), 2, "one lag per stored status");
    let n1 = store.node("n-1").await.unwrap().unwrap();
    assert_eq!(cpu(&n1.usage), 200);
    let n2 = store.node("n-2").await.unwrap().unwrap();
    assert!(n2.online);
    assert_eq!(
        (n2.usage.as_str(), n2.firmware_version.as_str()),
        ("", "0.3")
    );
    // The forged (epoch, counter) was not spent: the real node may still use it.
    let again = ingest
        .handle_batch(&[publish(&b, &b.key, 1, 1, status(1))], 11)
        .await;
    assert!(again[0].as_ref().unwrap().changed);
}

/// When the batch's transaction fails (one event clashes with a stored one), the messages
/// are stored one by one: the bad one is refused as a store error, the others are kept.
#[tokio::test]
async fn a_failing_message_does_not_lose_the_others() {
    let (ingest, store, metrics, [a, b]) = fleet().await;
    sqlx::query(
        "INSERT INTO node_events (node_id, epoch, counter, at_ms, kind, detail, received_ms) \
         VALUES ('n-2', 1, 5, 0, 'k', 'there before', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let clash = Message::Event(Event {
        at_ms: 3,
        kind: "k".into(),
        detail: "clash".into(),
    });
    let batch = [
        publish(&a, &a.key, 1, 1, status(100)),
        publish(&b, &b.key, 1, 5, clash),
        publish(&a, &a.key, 1, 2, status(200)),
        publish(&b, &b.key, 1, 6, status(300)),
    ];
    let results = ingest.handle_batch(&batch, 10).await;
    assert_eq!(results[1].as_ref().unwrap_err().reason, "store_error");
    for i in [0, 2, 3] {
        assert!(
            results[i].as_ref().unwrap().changed,
            "{i}: {:?}",
            results[i]
        );
    }
    assert_eq!(metrics.rejected_count("store_error"), 1);
    assert_eq!(lag_count(&metrics), 3);
    assert_eq!(cpu(&store.node("n-1").await.unwrap().unwrap().usage), 200);
    assert_eq!(cpu(&store.node("n-2").await.unwrap().unwrap().usage), 300);
    assert_eq!(store.node_events("n-2", 10).await.unwrap().len(), 1);
}

/// A will is applied after everything before it in the batch (here the hello that opened its
/// connection) and before everything after it (a status of the same connection).
#[tokio::test]
async fn a_will_keeps_its_place_in_the_batch() {
    let (ingest, store, _metrics, [a, _b]) = fleet().await;
    let will = Message::Will(Will {
        reason: "gone".into(),
    });
    let batch = [
        publish(&a, &a.key, 2, 1, hello()),
        publish(&a, &a.key, 2, 0, will),
        publish(&a, &a.key, 2, 2, status(100)),
        publish(&a, &a.key, 3, 1, hello()),
        publish(
            &a,
            &a.key,
            2,
            0,
            Message::Will(Will {
                reason: "old".into(),
            }),
        ),
    ];
    let results = ingest.handle_batch(&batch, 10).await;
    let changed: Vec<bool> = results
        .iter()
        .map(|r| r.as_ref().unwrap().changed)
        .collect();
    assert_eq!(changed, [true, true, true, true, false]);
    let n = store.node("n-1").await.unwrap().unwrap();
    assert!(n.online, "a will of an older connection knocked it offline");
    assert_eq!(n.conn_epoch, 3);
}
