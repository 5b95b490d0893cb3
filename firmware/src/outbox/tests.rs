use super::*;
use proptest::prelude::*;

fn rec(prio: Priority, suffix: &str, payload: &[u8]) -> Record {
    Record {
        prio,
        topic_suffix: suffix.into(),
        payload: payload.to_vec(),
    }
}

fn drain(ob: &mut Outbox) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(r) = ob.peek() {
        out.push(r);
        ob.pop().unwrap();
    }
    out
}

/// Encoded size of a record, as counted by `bytes()` and `max_bytes`.
fn size(suffix: &str, payload: &[u8]) -> u64 {
    HEADER + 2 + (suffix.len() + payload.len()) as u64
}

#[test]
fn order_is_preserved_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("outbox");
    let mut expected = Vec::new();
    {
        let mut ob = Outbox::open(&p, 1 << 20).unwrap();
        assert!(ob.is_empty() && ob.peek().is_none());
        for i in 0..20u32 {
            let prio = if i % 3 == 0 {
                Priority::Event
            } else {
                Priority::Telemetry
            };
            let r = rec(prio, &format!("t/{i}"), &i.to_le_bytes());
            let out = ob.push(r.prio, &r.topic_suffix, &r.payload).unwrap();
            assert_eq!(
                out,
                PushOutcome {
                    stored: true,
                    ..Default::default()
                }
            );
            expected.push(r);
        }
        assert_eq!(ob.peek().as_ref(), Some(&expected[0]));
        ob.pop().unwrap();
        ob.pop().unwrap();
        expected.drain(..2);
        assert_eq!(ob.len(), 18);
    }
    let mut ob = Outbox::open(&p, 1 << 20).unwrap();
    assert_eq!(ob.discarded_on_open(), 0);
    assert_eq!(ob.len(), 18);
    assert_eq!(drain(&mut ob), expected);
    assert_eq!(ob.bytes(), 0);
    drop(ob);
    let ob = Outbox::open(&p, 1 << 20).unwrap();
    assert!(ob.is_empty());
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        8,
        "all-dead file is truncated"
    );
}

#[test]
fn telemetry_is_dropped_before_events() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("outbox");
    let one = size("x", &[0; 10]);
    let mut ob = Outbox::open(&p, 4 * one).unwrap();
    ob.push(Priority::Event, "x", &[1; 10]).unwrap();
    ob.push(Priority::Telemetry, "x", &[2; 10]).unwrap();
    ob.push(Priority::Event, "x", &[3; 10]).unwrap();
    ob.push(Priority::Telemetry, "x", &[4; 10]).unwrap();
    assert_eq!(ob.bytes(), 4 * one);
    // Full: an event evicts the oldest telemetry, not the older event.
    let out = ob.push(Priority::Event, "x", &[5; 10]).unwrap();
    assert_eq!(
        (out.stored, out.dropped_telemetry, out.dropped_events),
        (true, 1, 0)
    );
    let out = ob.push(Priority::Event, "x", &[6; 10]).unwrap();
    assert_eq!(
        (out.stored, out.dropped_telemetry, out.dropped_events),
        (true, 1, 0)
    );
    // Only events left: telemetry does not evict them, it is dropped itself.
    let out = ob.push(Priority::Telemetry, "x", &[7; 10]).unwrap();
    assert_eq!(
        (out.stored, out.dropped_telemetry, out.dropped_events),
        (false, 1, 0)
    );
    // An event evicts the oldest event.
    let out = ob.push(Priority::Event, "x", &[8; 10]).unwrap();
    assert_eq!(
        (out.stored, out.dropped_telemetry, out.dropped_events),
        (true, 0, 1)
    );
    assert!(ob.bytes() <= 4 * one);
    drop(ob);
    let mut ob = Outbox::open(&p, 4 * one).unwrap();
    let got: Vec<u8> = drain(&mut ob).iter().map(|r| r.payload[0]).collect();
    assert_eq!(got, [3, 5, 6, 8]);
    assert!(matches!(
        ob.push(Priority::Event, "x", &[0; 100]),
        Err(OutboxError::RecordTooLarge { .. })
    ));
    let long = "s".repeat(256);
    assert!(matches!(
        ob.push(Priority::Event, &long, b""),
        Err(OutboxError::SuffixTooLong { len: 256 })
    ));
}

#[test]
fn a_torn_last_record_is_truncated_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("outbox");
    let mut expected = Vec::new();
    {
        let mut ob = Outbox::open(&p, 1 << 20).unwrap();
        for i in 0..5u8 {
            expected.push(rec(Priority::Event, "ev", &[i; 7]));
            ob.push(Priority::Event, "ev", &[i; 7]).unwrap();
        }
        ob.pop().unwrap(); // a dead record before the torn one must stay dead
        expected.remove(0);
    }
    let good = fs::read(&p).unwrap();
    let full = {
        let mut ob = Outbox::open(&p, 1 << 20).unwrap();
        ob.push(Priority::Telemetry, "last/one", b"payload bytes")
            .unwrap();
        drop(ob);
        fs::read(&p).unwrap()
    };
    for cut in good.len()..full.len() {
        fs::write(&p, &full[..cut]).unwrap();
        let mut ob = Outbox::open(&p, 1 << 20).unwrap();
        assert_eq!(
            ob.discarded_on_open(),
            (cut - good.len()) as u64,
            "cut at {cut}"
        );
        assert_eq!(fs::read(&p).unwrap(), good, "cut at {cut}");
        ob.push(Priority::Event, "after", b"crash").unwrap();
        drop(ob);
        let mut ob = Outbox::open(&p, 1 << 20).unwrap();
        let mut want = expected.clone();
        want.push(rec(Priority::Event, "after", b"crash"));
        assert_eq!(drain(&mut ob), want, "cut at {cut}");
    }
}

#[test]
fn garbage_appended_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("outbox");
    let mut ob = Outbox::open(&p, 1 << 20).unwrap();
    ob.push(Priority::Event, "a", b"1").unwrap();
    ob.push(Priority::Telemetry, "b", b"2").unwrap();
    drop(ob);
    let clean_len = fs::metadata(&p).unwrap().len();
    let mut bytes = fs::read(&p).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]); // zero-filled tail, as after some fs crashes
    fs::write(&p, &bytes).unwrap();
    let ob = Outbox::open(&p, 1 << 20).unwrap();
    assert_eq!(ob.discarded_on_open(), 4096);
    drop(ob);
    bytes.truncate(clean_len as usize);
    bytes.extend_from_slice(b"\x05\x00\x00\x00garbage that is not a record");
    fs::write(&p, &bytes).unwrap();
    let mut ob = Outbox::open(&p, 1 << 20).unwrap();
    assert!(ob.discarded_on_open() > 0);
    assert_eq!(fs::metadata(&p).unwrap().len(), clean_len);
    let got = drain(&mut ob);
    assert_eq!(
        got,
        [
            rec(Priority::Event, "a", b"1"),
            rec(Priority::Telemetry, "b", b"2")
        ]
    );
}

#[test]
fn compaction_shrinks_the_file_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("outbox");
    let mut ob = Outbox::open(&p, 1 << 24).unwrap();
    for i in 0..200u32 {
        let prio = if i % 2 == 0 {
            Priority::Event
        } else {
            Priority::Telemetry
        };
        ob.push(prio, "c", &[i as u8; 1000]).unwrap();
    }
    let before = fs::metadata(&p).unwrap().len();
    for _ in 0..150 {
        ob.pop().unwrap();
    }
    let after = fs::metadata(&p).unwrap().len();
    assert!(after < before / 2, "{after} vs {before}");
    assert!(!tmp_path(&p).exists());
    ob.push(Priority::Telemetry, "c", &[200; 1000]).unwrap();
    drop(ob);
    let mut ob = Outbox::open(&p, 1 << 24).unwrap();
    let got: Vec<u8> = drain(&mut ob).iter().map(|r| r.payload[0]).collect();
    assert_eq!(got, (150..=200).map(|i| i as u8).collect::<Vec<_>>());
}

#[test]
fn second_open_is_locked_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("outbox");
    let _ob = Outbox::open(&p, 1024).unwrap();
    assert!(matches!(
        Outbox::open(&p, 1024),
        Err(OutboxError::Locked { .. })
    ));
    let other = dir.path().join("config.toml");
    fs::write(&other, "not = \"an outbox\"\n").unwrap();
    let err = Outbox::open(&other, 1024).err().unwrap();
    assert!(matches!(err, OutboxError::NotAnOutbox { .. }), "{err}");
    assert_eq!(fs::read_to_string(&other).unwrap(), "not = \"an outbox\"\n");
}

#[derive(Debug, Clone)]
enum Op {
    Push(bool, u16),
    Pop,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u16..3000).prop_map(|(e, n)| Op::Push(e, n)),
        3 => Just(Op::Pop),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The outbox behaves like an in-memory queue with the documented drop policy.
    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("outbox");
        let max = 40_000;
        let mut ob = Outbox::open(&p, max).unwrap();
        let mut model: VecDeque<Record> = VecDeque::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push(event, len) => {
                    let prio = if event { Priority::Event } else { Priority::Telemetry };
                    let r = rec(prio, "m", &vec![n as u8; usize::from(len)]);
                    let sz = size("m", &r.payload);
                    let total = |m: &VecDeque<Record>, p: Option<Priority>| -> u64 {
                        m.iter().filter(|r| p.is_none_or(|p| r.prio == p))
                            .map(|r| size(&r.topic_suffix, &r.payload)).sum()
                    };
                    let excess = (total(&model, None) + sz).saturating_sub(max);
                    if !event && excess > total(&model, Some(Priority::Telemetry)) {
                        let out = ob.push(prio, "m", &r.payload).unwrap();
                        prop_assert!(!out.stored);
                        continue;
                    }
                    while total(&model, None) + sz > max {
                        let i = model.iter().position(|r| r.prio == Priority::Telemetry)
                            .unwrap_or(0);
                        model.remove(i);
                    }
                    ob.push(prio, "m", &r.payload).unwrap();
                    model.push_back(r);
                }
                Op::Pop => {
                    ob.pop().unwrap();
                    model.pop_front();
                }
                Op::Reopen => {
                    drop(ob);
                    ob = Outbox::open(&p, max).unwrap();
                    prop_assert_eq!(ob.discarded_on_open(), 0);
                }
            }
            prop_assert_eq!(ob.len(), model.len());
            prop_assert_eq!(ob.peek(), model.front().cloned());
            prop_assert!(ob.bytes() <= max);
        }
        prop_assert_eq!(drain(&mut ob), Vec::from(model));
    }
}
