use super::*;
use lattice_wire::{EncryptionKey, IdentityKey};

const NODE: &str = "n-1";

struct Fleet {
    key: IdentityKey,
    epoch: u64,
    counter: u64,
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            key: IdentityKey::generate(),
            epoch: 3,
            counter: 0,
        }
    }

    /// A target envelope as the fleet sends it, with the next counter.
    fn target(&mut self, node: &AgentState, revision: u64, heartbeat_secs: u32) -> Vec<u8> {
        let msg = Message::Target(Target {
            revision,
            workloads: vec![],
            heartbeat_secs,
        });
        self.send(node, Sender::Fleet, Some(NODE), &msg, &self.key.clone())
    }

    fn send(
        &mut self,
        node: &AgentState,
        sender: Sender,
        recipient: Option<&str>,
        msg: &Message,
        signer: &IdentityKey,
    ) -> Vec<u8> {
        let header = Envelope {
            sender,
            recipient: recipient.map(str::to_string),
            epoch: self.epoch,
            counter: self.counter,
            timestamp_ms: 0,
            kind: msg.kind(),
            sealed: true,
        };
        self.counter += 1;
        let seal_to = node.keys.encryption.public();
        envelope::encode(&header, msg, signer, Some(&seal_to)).unwrap()
    }
}

fn node(fleet: &Fleet) -> AgentState {
    AgentState::new(StateInit {
        node_id: NODE.into(),
        keys: NodeKeys {
            identity: IdentityKey::generate(),
            encryption: EncryptionKey::generate(),
        },
        fleet_pin: lattice_wire::pin::MemoryPin::shared(fleet.key.public()),
        heartbeat_secs: 10,
        heartbeat_override: None,
        applied_revision: 0,
        replay: ReplayWindow::default(),
    })
}

fn applies(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::Apply(t) => Some(t.revision),
        _ => None,
    })
}

#[test]
fn a_good_target_is_applied_persisted_and_acknowledged() {
    let mut fleet = Fleet::new();
    let mut n = node(&fleet);
    let bytes = fleet.target(&n, 5, 0);
    let actions = n.on_target(&bytes).unwrap();
    assert!(matches!(actions[0], Action::PersistReplay(w) if w.epoch == 3));
    assert_eq!(applies(&actions), Some(5));
    assert_eq!(actions.last(), Some(&Action::SendStatus));
    assert_eq!(
        n.applied_revision(),
        0,
        "applied only once the driver says so"
    );
    n.mark_applied(5);
    assert_eq!(n.applied_revision(), 5);
    let Message::Status(s) = n.status(Usage::default(), vec![]) else {
        panic!("status expected");
    };
    assert_eq!(s.applied_revision, 5);
}

#[test]
fn an_older_or_equal_revision_is_ignored_but_acknowledged() {
    let mut fleet = Fleet::new();
    let mut n = node(&fleet);
    n.mark_applied(7);
    for rev in [7, 6, 1] {
        let actions = n.on_target(&fleet.target(&n, rev, 0)).unwrap();
        assert_eq!(applies(&actions), None, "revision {rev}");
        assert!(actions.contains(&Action::SendStatus));
        assert!(matches!(actions[0], Action::PersistReplay(_)));
    }
    assert_eq!(n.applied_revision(), 7);
}

#[test]
fn a_replayed_target_is_refused() {
    let mut fleet = Fleet::new();
    let mut n = node(&fleet);
    let bytes = fleet.target(&n, 1, 0);
    n.on_target(&bytes).unwrap();
    let err = n.on_target(&bytes).unwrap_err();
    assert_eq!(err.reason(), "replay_duplicate", "{err}");
    // An older fleet epoch is refused too.
    let later = fleet.target(&n, 2, 0);
    fleet.epoch = 2;
    let stale = fleet.target(&n, 3, 0);
    n.on_target(&later).unwrap();
    assert_eq!(
        n.on_target(&stale).unwrap_err().reason(),
        "replay_stale_epoch"
    );
}

#[test]
fn targets_from_anyone_but_the_fleet_or_for_another_node_are_refused() {
    let mut fleet = Fleet::new();
    let mut n = node(&fleet);
    let msg = Message::Target(Target {
        revision: 9,
        ..Target::default()
    });
    let fleet_key = fleet.key.clone();
    // Another node (even with its own valid key) cannot send a target.
    let other = IdentityKey::generate();
    let b = fleet.send(&n, Sender::Node("n-2".into()), Some(NODE), &msg, &other);
    assert_eq!(n.on_target(&b).unwrap_err().reason(), "not_from_fleet");
    // A fleet target for another node, replayed onto our topic.
    let b = fleet.send(&n, Sender::Fleet, Some("n-2"), &msg, &fleet_key);
    assert_eq!(n.on_target(&b).unwrap_err().reason(), "wrong_recipient");
    let b = fleet.send(&n, Sender::Fleet, None, &msg, &fleet_key);
    assert_eq!(n.on_target(&b).unwrap_err().reason(), "wrong_recipient");
    // Claiming to be the fleet without its key.
    let b = fleet.send(&n, Sender::Fleet, Some(NODE), &msg, &other);
    assert_eq!(n.on_target(&b).unwrap_err().reason(), "bad_signature");
    // Garbage.
    assert_eq!(
        n.on_target(b"\x01\x02garbage").unwrap_err().reason(),
        "malformed"
    );
    assert_eq!(n.applied_revision(), 0);
}

#[test]
fn a_target_sealed_to_another_key_or_of_another_kind_is_refused() {
    let mut fleet = Fleet::new();
    let mut n = node(&fleet);
    let stranger = node(&fleet);
    let b = fleet.target(&stranger, 4, 0);
    assert_eq!(n.on_target(&b).unwrap_err().reason(), "decrypt_failed");
    let fleet_key = fleet.key.clone();
    let status = n.status(Usage::default(), vec![]);
    let b = fleet.send(&n, Sender::Fleet, Some(NODE), &status, &fleet_key);
    assert_eq!(n.on_target(&b).unwrap_err().reason(), "wrong_kind");
}

#[test]
fn heartbeat_follows_newer_targets_unless_overridden() {
    let mut fleet = Fleet::new();
    let mut n = node(&fleet);
    assert_eq!(n.heartbeat(), Duration::from_secs(10));
    let actions = n.on_target(&fleet.target(&n, 1, 3)).unwrap();
    assert!(actions.contains(&Action::Heartbeat(Duration::from_secs(3))));
    assert_eq!(n.heartbeat(), Duration::from_secs(3));
    // An old revision does not change it.
    n.mark_applied(1);
    n.on_target(&fleet.target(&n, 1, 20)).unwrap();
    assert_eq!(n.heartbeat(), Duration::from_secs(3));

    n.heartbeat_override = Some(1);
    let actions = n.on_target(&fleet.target(&n, 2, 30)).unwrap();
    assert!(!actions.iter().any(|a| matches!(a, Action::Heartbeat(_))));
    assert_eq!(n.heartbeat(), Duration::from_secs(1));
}

#[test]
fn sealed_messages_verify_and_count_up_from_the_will() {
    let fleet = Fleet::new();
    let mut n = node(&fleet);
    n.begin_epoch(42);
    let will = n.will().unwrap();
    let hello = n.seal(&n.hello(Inventory::default())).unwrap();
    let key = n.keys.identity.public();
    for (bytes, counter, kind) in [(will, 0, MessageKind::Will), (hello, 1, MessageKind::Hello)] {
        let opened = envelope::decode(&bytes).unwrap().open(&key, None).unwrap();
        assert_eq!(opened.header.sender, Sender::Node(NODE.into()));
        assert_eq!(opened.header.recipient, None);
        assert_eq!((opened.header.epoch, opened.header.counter), (42, counter));
        assert_eq!(opened.header.kind, kind);
    }
    n.begin_epoch(43);
    let opened = envelope::decode(&n.will().unwrap())
        .unwrap()
        .open(&key, None)
        .unwrap();
    assert_eq!((opened.header.epoch, opened.header.counter), (43, 0));
}
