use super::*;
use crate::msg::*;
use proptest::prelude::*;

fn header(sender: Sender, kind: MessageKind, counter: u64) -> Envelope {
    Envelope {
        sender,
        recipient: None,
        epoch: 1,
        counter,
        timestamp_ms: 1_700_000_000_000,
        kind,
        sealed: false,
    }
}

fn status() -> Message {
    Message::Status(Status {
        applied_revision: 3,
        usage: Usage {
            cpu_percent_x100: 1234,
            ..Usage::default()
        },
        workloads: vec![],
    })
}

fn target() -> Message {
    Message::Target(Target {
        revision: 9,
        workloads: vec![WorkloadSpec {
            id: "w1".into(),
            name: "db".into(),
            image: "registry/pg@sha256:00".into(),
            command: vec![],
            env: vec![("PGPASSWORD".into(), "s3cret".into())],
            volumes: vec![VolumeSpec {
                name: "data".into(),
                mount_path: "/var/lib/postgresql".into(),
                size_bytes: 1 << 30,
            }],
            cpu_millis: 500,
            memory_bytes: 1 << 28,
            pids_max: 128,
            health: Some(HealthCheck {
                command: vec!["pg_isready".into()],
                interval_secs: 5,
                timeout_secs: 2,
                retries: 3,
            }),
            restart: RestartPolicy::OnFailure,
            class: WorkloadClass::AlwaysOn,
            egress: false,
            capabilities: vec!["CHOWN".into()],
            ports: vec![5432],
            upstreams: vec![UpstreamSpec {
                name: UpstreamSpec::name_for("w-2", 9000),
                workload: "w-2".into(),
                port: 9000,
                env: "REPLICA".into(),
            }],
        }],
        heartbeat_secs: 10,
    })
}

#[test]
fn signed_message_round_trips() {
    let node = IdentityKey::generate();
    let h = header(Sender::Node("n-1".into()), MessageKind::Status, 5);
    let bytes = encode(&h, &status(), &node, None).unwrap();
    let opened = decode(&bytes).unwrap().open(&node.public(), None).unwrap();
    assert_eq!(opened.message, status());
    assert_eq!(opened.header.counter, 5);
    assert_eq!(opened.version, PROTOCOL_VERSION);
}

#[test]
fn another_key_cannot_speak_for_a_node() {
    let a = IdentityKey::generate();
    let b = IdentityKey::generate();
    let h = header(Sender::Node("n-a".into()), MessageKind::Status, 1);
    let forged = encode(&h, &status(), &b, None).unwrap();
    let err = decode(&forged)
        .unwrap()
        .open(&a.public(), None)
        .unwrap_err();
    assert_eq!(err.reason(), "bad_signature");
}

#[test]
fn any_flipped_byte_is_refused() {
    let k = IdentityKey::generate();
    let h = header(Sender::Node("n-1".into()), MessageKind::Status, 1);
    let bytes = encode(&h, &status(), &k, None).unwrap();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let res = decode(&b).and_then(|u| u.open(&k.public(), None));
        assert!(res.is_err(), "flip at byte {i} was accepted");
    }
}

#[test]
fn sealed_target_opens_only_for_its_recipient() {
    let fleet = IdentityKey::generate();
    let node_a = EncryptionKey::generate();
    let node_b = EncryptionKey::generate();
    let mut h = header(Sender::Fleet, MessageKind::Target, 1);
    h.recipient = Some("n-a".into());
    let bytes = encode(&h, &target(), &fleet, Some(&node_a.public())).unwrap();
    // The secret is not visible in the bytes on the wire.
    assert!(!bytes.windows(6).any(|w| w == b"s3cret"));
    let opened = decode(&bytes)
        .unwrap()
        .open(&fleet.public(), Some(&node_a))
        .unwrap();
    assert_eq!(opened.message, target());
    let err = decode(&bytes)
        .unwrap()
        .open(&fleet.public(), Some(&node_b))
        .unwrap_err();
    assert_eq!(err.reason(), "decrypt_failed");
}

#[test]
fn secrets_cannot_be_sent_in_the_clear() {
    let fleet = IdentityKey::generate();
    let h = header(Sender::Fleet, MessageKind::Target, 1);
    assert_eq!(
        encode(&h, &target(), &fleet, None).unwrap_err().reason(),
        "not_sealed"
    );
}

#[test]
fn unknown_version_is_named() {
    let k = IdentityKey::generate();
    let h = header(Sender::Node("n-1".into()), MessageKind::Status, 1);
    let mut bytes = encode(&h, &status(), &k, None).unwrap();
    // Version 1 is encoded as a single varint byte; 0x7f is version 127.
    bytes[0] = 0x7f;
    assert_eq!(
        decode(&bytes).unwrap_err(),
        WireError::UnsupportedVersion(127)
    );
}

/// Version 2 changed only targets: a version-1 node's messages still open, a version-1
/// fleet's target is refused by name instead of being read with its fields shifted.
#[test]
fn the_previous_version_opens_except_for_targets() {
    let k = IdentityKey::generate();
    let h = header(Sender::Node("n-1".into()), MessageKind::Status, 1);
    let old = encode_version(PROTOCOL_VERSION - 1, &h, &status(), &k, None).unwrap();
    let opened = decode(&old).unwrap().open(&k.public(), None).unwrap();
    assert_eq!(opened.version, PROTOCOL_VERSION - 1);
    assert_eq!(opened.message, status());
    let node = EncryptionKey::generate();
    let h = header(Sender::Fleet, MessageKind::Target, 2);
    let old = encode_version(
        PROTOCOL_VERSION - 1,
        &h,
        &target(),
        &k,
        Some(&node.public()),
    )
    .unwrap();
    assert_eq!(
        decode(&old)
            .unwrap()
            .open(&k.public(), Some(&node))
            .unwrap_err(),
        WireError::UnsupportedVersion(PROTOCOL_VERSION - 1)
    );
    let new = encode(&h, &target(), &k, Some(&node.public())).unwrap();
    assert_eq!(
        decode(&new)
            .unwrap()
            .open(&k.public(), Some(&node))
            .unwrap()
            .message,
        target()
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert_eq!(decode(&big).unwrap_err().reason(), "oversized");
}

#[test]
fn header_kind_must_match_body() {
    let k = IdentityKey::generate();
    let h = header(Sender::Node("n-1".into()), MessageKind::Hello, 1);
    assert_eq!(
        encode(&h, &status(), &k, None).unwrap_err().reason(),
        "kind_mismatch"
    );
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let k = IdentityKey::generate();
        if let Ok(u) = decode(&bytes) {
            let _ = u.open(&k.public(), None);
        }
    }

    #[test]
    fn events_round_trip(kind in ".{0,40}", detail in ".{0,200}", counter in any::<u64>(), epoch in any::<u64>()) {
        let k = IdentityKey::generate();
        let msg = Message::Event(Event { at_ms: 1, kind, detail });
        let mut h = header(Sender::Node("n-x".into()), MessageKind::Event, counter);
        h.epoch = epoch;
        let bytes = encode(&h, &msg, &k, None).unwrap();
        let opened = decode(&bytes).unwrap().open(&k.public(), None).unwrap();
        prop_assert_eq!(opened.message, msg);
        prop_assert_eq!(opened.header, h);
    }
}
