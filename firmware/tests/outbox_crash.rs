//! Kill -9 a process that is writing to the outbox and check that nothing it acknowledged is
//! lost. The writer is this same test binary re-run with `OUTBOX_CRASH_WRITER` set: it pushes
//! numbered records and prints `ACK n` after each push returns (fdatasynced), and pops the
//! oldest record whenever more than 40 are queued, printing `POP n` after the pop returns, so
//! that pops and compaction are also being exercised when the kill lands.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use latticed::outbox::{Outbox, Priority};
use rand::Rng;

const WRITER_ENV: &str = "OUTBOX_CRASH_WRITER";
const MAX_BYTES: u64 = 1 << 30;

fn number(payload: &[u8]) -> u64 {
    let head: [u8; 8] = payload[..8].try_into().expect("payload has a number");
    u64::from_le_bytes(head)
}

/// Child mode: only does something when re-run by `sigkill_loses_no_acknowledged_record`.
#[test]
fn writer_child() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let mut ob = Outbox::open(Path::new(&path), MAX_BYTES).expect("open outbox");
    let mut out = std::io::stdout().lock();
    let mut rng = rand::rng();
    for n in 0u64.. {
        let mut payload = n.to_le_bytes().to_vec();
        payload.resize(8 + rng.random_range(0..6000), n as u8);
        let prio = if n % 5 == 0 {
            Priority::Event
        } else {
            Priority::Telemetry
        };
        ob.push(prio, &format!("seq/{n}"), &payload).expect("push");
        writeln!(out, "ACK {n}")
            .and_then(|()| out.flush())
            .expect("stdout");
        if ob.len() > 40 {
            let popped = number(&ob.peek().expect("non-empty").payload);
            ob.pop().expect("pop");
            writeln!(out, "POP {popped}")
                .and_then(|()| out.flush())
                .expect("stdout");
        }
    }
}

#[test]
fn sigkill_loses_no_acknowledged_record() {
    let exe = std::env::current_exe().expect("current exe");
    let mut rng = rand::rng();
    for round in 0..10 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("outbox");
        let mut child = Command::new(&exe)
            .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let (mut acked, mut popped) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may prefix the first line with "test writer_child ... ".
                if let Some(i) = line.find("ACK ") {
                    acked = Some(line[i + 4..].trim().parse::<u64>().expect("ack number"));
                    let _ = tx.send(());
                } else if let Some(i) = line.find("POP ") {
                    popped = Some(line[i + 4..].trim().parse::<u64>().expect("pop number"));
                }
            }
            (acked, popped)
        });
        // Let it get going (some rounds past the first compaction), then kill at random.
        let warmup = [1, 30, 200, 600][round % 4];
        for _ in 0..warmup {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("writer acks");
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "writer must have been killed");
        let (acked, popped) = reader.join().expect("reader thread");
        let acked = acked.expect("at least one ack");

        let mut ob = Outbox::open(&path, MAX_BYTES).expect("reopen after crash");
        let mut got = Vec::new();
        while let Some(r) = ob.peek() {
            let n = number(&r.payload);
            assert_eq!(r.topic_suffix, format!("seq/{n}"));
            got.push(n);
            ob.pop().expect("pop");
        }
        // Consecutive numbers, from just after the last acknowledged pop (one more pop may
        // have happened unacknowledged) to the last acknowledged push (or one more).
        let first_live = popped.map_or(0, |p| p + 1);
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 1),
            "round {round}: gap or reorder in {got:?}"
        );
        let (Some(&lo), Some(&hi)) = (got.first(), got.last()) else {
            panic!("round {round}: outbox empty after crash, acked {acked}");
        };
        assert!(
            lo == first_live || lo == first_live + 1,
            "round {round}: first {lo}, expected {first_live}"
        );
        assert!(
            hi == acked || hi == acked + 1,
            "round {round}: last {hi}, acked {acked}"
        );
        eprintln!(
            "round {round}: acked {acked}, popped {popped:?}, recovered {lo}..={hi}, discarded {} bytes",
            ob.discarded_on_open()
        );
    }
}
