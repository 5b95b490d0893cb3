use super::*;
use lattice_wire::envelope::{encode, Envelope};
use lattice_wire::{EncryptionKey, IdentityKey, MessageKind};

fn keys() -> NodeKeys {
    NodeKeys {
        identity: IdentityKey::generate(),
        encryption: EncryptionKey::generate(),
    }
}

fn registered(k: &NodeKeys) -> Registered {
    Registered {
        node_id: "n-42".into(),
        broker_password: "pw".into(),
        broker_urls: vec!["mqtt://127.0.0.1:1883".into()],
        heartbeat_secs: 10,
        identity: k.identity.public(),
        encryption: k.encryption.public(),
    }
}

fn body(signer: &IdentityKey, sender: Sender, msg: &Message, k: &NodeKeys) -> Vec<u8> {
    let header = Envelope {
        sender,
        recipient: Some("n-42".into()),
        epoch: 1,
        counter: 0,
        timestamp_ms: lattice_wire::now_ms(),
        kind: msg.kind(),
        sealed: true,
    };
    let env = encode(&header, msg, signer, Some(&k.encryption.public())).unwrap();
    serde_json::to_vec(&RegisterResponse {
        envelope: URL_SAFE_NO_PAD.encode(env),
    })
    .unwrap()
}

#[test]
fn accepts_a_sealed_answer_signed_by_the_pinned_fleet_key() {
    let fleet = IdentityKey::generate();
    let k = keys();
    let msg = Message::Registered(registered(&k));
    let r = open_response(&body(&fleet, Sender::Fleet, &msg, &k), &fleet.public(), &k).unwrap();
    assert_eq!(r, registered(&k));
}

#[test]
fn refuses_an_answer_signed_by_another_key() {
    let fleet = IdentityKey::generate();
    let k = keys();
    let msg = Message::Registered(registered(&k));
    let b = body(&IdentityKey::generate(), Sender::Fleet, &msg, &k);
    let err = open_response(&b, &fleet.public(), &k).unwrap_err();
    assert!(
        matches!(err, RegisterError::Envelope(WireError::BadSignature(_))),
        "{err}"
    );
}

#[test]
fn refuses_swapped_keys_wrong_sender_and_wrong_kind() {
    let fleet = IdentityKey::generate();
    let k = keys();
    let mut swapped = registered(&k);
    swapped.identity = IdentityKey::generate().public();
    let b = body(&fleet, Sender::Fleet, &Message::Registered(swapped), &k);
    let err = open_response(&b, &fleet.public(), &k).unwrap_err();
    assert!(
        matches!(err, RegisterError::KeysSwapped("identity key")),
        "{err}"
    );

    let msg = Message::Registered(registered(&k));
    let b = body(&fleet, Sender::Node("n-42".into()), &msg, &k);
    let err = open_response(&b, &fleet.public(), &k).unwrap_err();
    assert!(matches!(err, RegisterError::WrongSender(_)), "{err}");

    let target = Message::Target(lattice_wire::msg::Target::default());
    let b = body(&fleet, Sender::Fleet, &target, &k);
    let err = open_response(&b, &fleet.public(), &k).unwrap_err();
    assert!(matches!(err, RegisterError::WrongKind("target")), "{err}");
    assert_eq!(MessageKind::Target.as_str(), "target");
}

#[test]
fn refuses_an_answer_for_another_recipient_or_garbage() {
    let fleet = IdentityKey::generate();
    let k = keys();
    let mut other = registered(&k);
    other.node_id = "n-43".into();
    let b = body(&fleet, Sender::Fleet, &Message::Registered(other), &k);
    let err = open_response(&b, &fleet.public(), &k).unwrap_err();
    assert!(matches!(err, RegisterError::WrongRecipient { .. }), "{err}");
    for garbage in [
        &b"not json"[..],
        br#"{"envelope":"!!"}"#,
        br#"{"envelope":"AAAA"}"#,
    ] {
        assert!(open_response(garbage, &fleet.public(), &k).is_err());
    }
}
