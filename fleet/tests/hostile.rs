//! The broker is not trusted: a node holding its own real broker credential, connected with a
//! real MQTT client, subscribes to everything and tries to speak for another node. Everything it
//! tries is refused, logged with its reason, counted in /metrics, and changes nothing stored.

mod common;

use common::*;
use lattice_wire::msg::{Message, Status, Usage};
use lattice_wire::topic::{topic, Channel};
use lattice_wire::{EncryptionKey, Envelope, IdentityKey, IdentityPublic, MessageKind, Sender};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::time::Duration;

struct Stolen {
    id: String,
    secret: String,
    identity: IdentityKey,
    encryption: EncryptionKey,
}

fn read_node(dir: &std::path::Path, id: String) -> Stolen {
    Stolen {
        id,
        secret: std::fs::read_to_string(dir.join("broker.secret"))
            .unwrap()
            .trim()
            .to_string(),
        identity: IdentityKey::from_bytes(&std::fs::read(dir.join("identity.key")).unwrap())
            .unwrap(),
        encryption: EncryptionKey::from_bytes(&std::fs::read(dir.join("encryption.key")).unwrap())
            .unwrap(),
    }
}

fn forged_status(sender: &str, signer: &IdentityKey, epoch: u64, counter: u64) -> Vec<u8> {
    let msg = Message::Status(Status {
        applied_revision: 999,
        usage: Usage {
            cpu_percent_x100: 9999,
            ..Usage::default()
        },
        workloads: vec![],
    });
    let h = Envelope {
        sender: Sender::Node(sender.into()),
        recipient: None,
        epoch,
        counter,
        timestamp_ms: lattice_wire::now_ms(),
        kind: MessageKind::Status,
        sealed: false,
    };
    lattice_wire::envelope::encode(&h, &msg, signer, None).unwrap()
}

async fn metrics(f: &Fleet, key: &IdentityPublic) -> String {
    let c = lattice_wire::pin::pinned_http_client(key, Duration::from_secs(10)).unwrap();
    c.get(format!("{}/metrics", f.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn rejected(metrics: &str, reason: &str) -> u64 {
    let needle = format!("lattice_messages_rejected_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_node_with_real_credentials_cannot_speak_for_or_read_another() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::start(
        "fleet",
        &dir.path().join("fleet"),
        free_port(),
        free_port(),
        &[],
    );
    let a = Node::start(&dir.path().join("a"), &f.provisioning("alice"));
    let mut b = Node::start(&dir.path().join("b"), &f.provisioning("mallory"));
    let a_id = wait_for(20, "a registered", || a.node_id());
    let b_id = wait_for(20, "b registered", || b.node_id());
    wait_for(20, "a online", || {
        (f.node(&a_id)["online"] == true).then_some(())
    });
    // Mallory takes B's credentials and keys and drives the MQTT client herself.
    b.kill9();
    let mallory = read_node(&b.data, b_id.clone());
    let fleet_key = IdentityPublic::parse(
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(b.data.join("registration.json")).unwrap(),
        )
        .unwrap()["fleet_key"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let (host, port) = f
        .mqtts
        .trim_start_matches("mqtts://")
        .rsplit_once(':')
        .unwrap();
    let port: u16 = port.parse().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fleet/fleet.db").display());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut opts = MqttOptions::new(&mallory.id, host, port);
        opts.set_credentials(&mallory.id, &mallory.secret);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            lattice_wire::pin::pinned_client_config(&fleet_key),
        )));
        let (client, mut el) = AsyncClient::new(opts, 100);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("attacker link: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                }
            }
        });
        // No topic ACLs: she can subscribe to everything.
        client
            .subscribe("lattice/v1/nodes/#", QoS::AtLeastOnce)
            .await
            .unwrap();

        // 1. Capture a genuine status of A and replay it.
        let a_status = topic(&a_id, Channel::Status);
        let genuine = loop {
            let (t, p) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if t == a_status {
                break p;
            }
        };
        // Make sure A's node sees its target: the fleet will send A a sealed target now.
        let store = lattice_fleet::store::Store::open(&db).await.unwrap();
        store.set_target(&a_id, "[]").await.unwrap();
        let target_topic = topic(&a_id, Channel::Target);
        let captured_target = loop {
            let (t, p) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if t == target_topic {
                break p;
            }
        };
        // A's target is sealed to A: Mallory's key cannot open it.
        let err = lattice_wire::envelope::decode(&captured_target)
            .unwrap()
            .open(&fleet_key, Some(&mallory.encryption))
            .unwrap_err();
        assert_eq!(err.reason(), "decrypt_failed");

        let before = metrics(&f, &fleet_key).await;
        let publish = |t: String, p: Vec<u8>| {
            let c = client.clone();
            async move { c.publish(t, QoS::AtLeastOnce, false, p).await.unwrap() }
        };
        publish(a_status.clone(), genuine).await; // replay
        publish(
            a_status.clone(),
            forged_status(&a_id, &mallory.identity, u64::MAX / 2, 1),
        )
        .await; // forged signature
        publish(
            a_status.clone(),
            forged_status(&b_id, &mallory.identity, u64::MAX / 2, 2),
        )
        .await; // B's own, on A's topic
        publish(a_status.clone(), b"\x01\x02garbage".to_vec()).await; // malformed
        let mut future_version = forged_status(&a_id, &mallory.identity, 1, 1);
        future_version[0] = 0x7f;
        publish(a_status.clone(), future_version).await; // unknown protocol version
                                                         // Not a node topic (a node id may not contain '.').
        publish(
            "lattice/v1/nodes/n.bad/status".into(),
            forged_status(&a_id, &mallory.identity, 1, 3),
        )
        .await;
        publish(
            a_status.clone(),
            vec![0u8; lattice_wire::MAX_MESSAGE_BYTES + 1],
        )
        .await; // oversized

        let want = [
            "replay_duplicate",
            "bad_signature",
            "sender_mismatch",
            "malformed",
            "unsupported_version",
            "bad_topic",
            "oversized",
        ];
        let mut after = String::new();
        for _ in 0..50 {
            after = metrics(&f, &fleet_key).await;
            if want
                .iter()
                .all(|r| rejected(&after, r) > rejected(&before, r))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for r in want {
            assert!(
                rejected(&after, r) > rejected(&before, r),
                "no rejection counted for {r}:\n{after}"
            );
        }
        // Nothing forged reached A's stored state.
        let a_row = store.node(&a_id).await.unwrap().unwrap();
        // Compare the field itself: a real reading's other numbers (bytes,
        // timestamps) may contain the digits 9999 by chance.
        let stored_cpu = serde_json::from_str::<serde_json::Value>(&a_row.usage)
            .ok()
            .and_then(|u| u["cpu_percent_x100"].as_u64());
        assert_ne!(
            stored_cpu,
            Some(9999),
            "forged usage stored: {}",
            a_row.usage
        );
        assert_ne!(a_row.applied_revision, 999);
    });
    let log = f.log_text();
    assert!(
        log.contains("refused node message"),
        "refusals are logged with their reason"
    );
    assert!(
        !log.contains(&mallory.secret),
        "a broker secret reached the log"
    );
}
