use super::*;

fn keys(n: usize) -> Vec<IdentityKey> {
    (0..n).map(|_| IdentityKey::generate()).collect()
}

/// A chain K0 → K1 → … → K(n-1).
fn chain_of(k: &[IdentityKey]) -> RotationChain {
    let mut chain = RotationChain::default();
    for w in k.windows(2) {
        chain = chain.extend(&w[0], &w[1].public(), 1_700_000_000_000);
    }
    chain
}

#[test]
fn a_statement_signed_by_the_pinned_key_moves_the_pin() {
    let k = keys(2);
    let chain = chain_of(&k);
    assert_eq!(chain.statements[0].epoch, 1);
    let pin = FleetPin::provisioned(k[0].public());
    let next = accept(pin, &chain.statements[0]).unwrap();
    assert_eq!(
        next,
        FleetPin {
            key: k[1].public(),
            epoch: 1
        }
    );
    assert_eq!(chain.verify().unwrap(), Some(next));
    assert_eq!(advance(pin, &chain.statements).unwrap(), next);
    assert_eq!(
        advance_to(pin, &chain.statements, &k[1].public()).unwrap(),
        next
    );
}

#[test]
fn a_node_walks_several_rotations_from_any_key_it_pinned() {
    let k = keys(4);
    let chain = chain_of(&k);
    assert_eq!(
        chain.verify().unwrap(),
        Some(FleetPin {
            key: k[3].public(),
            epoch: 3
        })
    );
    // Provisioned at K0 (never saw a rotation), at K1 (provisioned after the first one,
    // epoch unknown = 0), at K2 (followed two rotations): all end at K3.
    for start in [
        FleetPin::provisioned(k[0].public()),
        FleetPin::provisioned(k[1].public()),
        FleetPin {
            key: k[2].public(),
            epoch: 2,
        },
    ] {
        let end = advance_to(start, &chain.statements, &k[3].public()).unwrap();
        assert_eq!(end.key, k[3].public());
        assert_eq!(end.epoch, 3);
    }
    // At the tip nothing changes.
    let tip = FleetPin {
        key: k[3].public(),
        epoch: 3,
    };
    assert_eq!(advance(tip, &chain.statements).unwrap(), tip);
}

#[test]
fn a_forged_statement_signed_by_another_key_is_refused() {
    let k = keys(2);
    let attacker = IdentityKey::generate();
    let pin = FleetPin::provisioned(k[0].public());
    // Claims K0 → attacker, signed by the attacker.
    let mut forged = RotationStatement::sign(&attacker, &attacker.public(), 1, 0);
    forged.old_key = k[0].public();
    forged.new_key = attacker.public();
    let e = accept(pin, &forged).unwrap_err();
    assert!(
        matches!(e, RotationError::BadSignature { epoch: 1, .. }),
        "{e}"
    );
    assert_eq!(e.reason(), "bad_signature");
    let e = advance_to(pin, &[forged], &attacker.public()).unwrap_err();
    assert!(matches!(
        e,
        AdvanceError::Refused(RotationError::BadSignature { .. })
    ));

    // A genuine statement of the attacker's own key (attacker → other) says nothing about K0.
    let other = IdentityKey::generate();
    let own = RotationStatement::sign(&attacker, &other.public(), 1, 0);
    assert!(matches!(
        accept(pin, &own),
        Err(RotationError::NotPinned { .. })
    ));
    assert!(matches!(
        advance_to(pin, std::slice::from_ref(&own), &other.public()),
        Err(AdvanceError::NoPath {
            reached_epoch: 0,
            ..
        })
    ));
}

#[test]
fn a_tampered_statement_is_refused() {
    let k = keys(2);
    let evil = IdentityKey::generate();
    let pin = FleetPin::provisioned(k[0].public());
    let good = RotationStatement::sign(&k[0], &k[1].public(), 1, 5);

    let mut s = good.clone();
    s.new_key = evil.public();
    assert!(matches!(
        accept(pin, &s),
        Err(RotationError::BadSignature { .. })
    ));
    let mut s = good.clone();
    s.epoch = 7;
    assert!(matches!(
        accept(pin, &s),
        Err(RotationError::BadSignature { .. })
    ));
    let mut s = good.clone();
    s.issued_ms += 1;
    assert!(matches!(
        accept(pin, &s),
        Err(RotationError::BadSignature { .. })
    ));
    let mut s = good.clone();
    s.signature[0] ^= 1;
    assert!(matches!(
        accept(pin, &s),
        Err(RotationError::BadSignature { .. })
    ));
    let mut s = good.clone();
    s.signature.truncate(10);
    assert!(matches!(
        accept(pin, &s),
        Err(RotationError::BadSignature { .. })
    ));
    let mut s = good.clone();
    s.version = 2;
    assert_eq!(accept(pin, &s), Err(RotationError::UnsupportedVersion(2)));
    // A statement rotating a key to itself.
    let same = RotationStatement::sign(&k[0], &k[0].public(), 1, 0);
    assert!(matches!(
        accept(pin, &same),
        Err(RotationError::SameKey { .. })
    ));
    // The untouched one still verifies.
    assert_eq!(accept(pin, &good).unwrap().key, k[1].public());
}

#[test]
fn a_replayed_older_statement_never_moves_the_pin_back() {
    // K0 → K1 → K0 → K2: the key K0 came back; the node pinned at (K0, epoch 2) must not take
    // the epoch-1 statement (K0 → K1) again.
    let k = keys(3);
    let mut chain = RotationChain::default();
    chain = chain.extend(&k[0], &k[1].public(), 0);
    chain = chain.extend(&k[1], &k[0].public(), 0);
    let pin = FleetPin {
        key: k[0].public(),
        epoch: 2,
    };
    assert_eq!(
        accept(pin, &chain.statements[0]),
        Err(RotationError::Replayed {
            epoch: 1,
            pinned: 2
        })
    );
    assert_eq!(advance(pin, &chain.statements).unwrap(), pin);
    assert!(matches!(
        advance_to(pin, &chain.statements, &k[1].public()),
        Err(AdvanceError::NoPath { .. })
    ));
    chain = chain.extend(&k[0], &k[2].public(), 0);
    assert_eq!(
        advance(pin, &chain.statements).unwrap(),
        FleetPin {
            key: k[2].public(),
            epoch: 3
        }
    );

    // A node that moved on from K0 to K1 is not moved by the old statement either.
    let k = keys(2);
    let chain = chain_of(&k);
    let moved = FleetPin {
        key: k[1].public(),
        epoch: 1,
    };
    assert_eq!(advance(moved, &chain.statements).unwrap(), moved);
    // And a server still showing K0 (someone with the retired key) is refused.
    assert_eq!(
        advance_to(moved, &chain.statements, &k[0].public()).unwrap_err(),
        AdvanceError::NoPath {
            reached_key: k[1].public().to_string(),
            reached_epoch: 1
        }
    );
}

#[test]
fn chains_must_link_up() {
    let k = keys(4);
    let good = chain_of(&k);
    good.verify().unwrap();
    assert_eq!(RotationChain::default().verify().unwrap(), None);

    // A gap: K0 → K1, then K2 → K3.
    let mut gap = good.clone();
    gap.statements.remove(1);
    assert!(matches!(gap.verify(), Err(RotationError::Broken { .. })));
    // Epochs not 1, 2, 3.
    let skipped = RotationChain {
        statements: vec![RotationStatement::sign(&k[0], &k[1].public(), 2, 0)],
    };
    assert!(matches!(
        skipped.verify(),
        Err(RotationError::Broken { .. })
    ));
    // One bad signature anywhere spoils the chain.
    let mut bad = good.clone();
    bad.statements[2].signature[5] ^= 0x40;
    assert!(matches!(
        bad.verify(),
        Err(RotationError::BadSignature { epoch: 3, .. })
    ));
    // A node walking it from K0 is refused at the bad step and keeps nothing past it
    // (the caller keeps its old pin on any error).
    let pin = FleetPin::provisioned(k[0].public());
    assert!(advance(pin, &bad.statements).is_err());
}

#[test]
fn chains_round_trip_and_corrupt_bytes_are_refused() {
    let k = keys(3);
    let chain = chain_of(&k);
    let bytes = chain.encode();
    assert_eq!(RotationChain::decode(&bytes).unwrap(), chain);
    assert_eq!(
        RotationChain::decode(&RotationChain::default().encode()).unwrap(),
        RotationChain::default()
    );

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        RotationChain::decode(&trailing),
        Err(RotationError::Malformed(_))
    ));
    assert!(matches!(
        RotationChain::decode(&bytes[..bytes.len() - 3]),
        Err(RotationError::Malformed(_))
    ));
    assert!(matches!(
        RotationChain::decode(&vec![0u8; MAX_CHAIN_BYTES + 1]),
        Err(RotationError::TooLarge)
    ));
    // Every single-bit corruption is refused by decode or by the signatures: a corrupted chain
    // never verifies unless it decodes to the very same statements.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if let Ok(c) = RotationChain::decode(&b) {
            assert!(c == chain || c.verify().is_err(), "byte {i}");
        }
    }
}

#[test]
fn decoding_never_panics() {
    use proptest::prelude::*;
    proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..600))| {
        let _ = RotationChain::decode(&bytes);
    });
}
