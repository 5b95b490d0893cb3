//! One leader among fleet replicas (issue 8, item 3).
//!
//! Every replica serves the API and ingests node messages; only the leader runs the timers
//! that change placements ([`crate::lifecycle::run`]), marks silent nodes offline and sends
//! targets. On PostgreSQL the leader is the process that holds a session-level advisory lock
//! (`pg_try_advisory_lock`) on one dedicated connection, kept for as long as it leads: when
//! that connection fails (the process died, the database restarted, the network broke) the
//! lock is gone, and the process stops leader work at its next check. On SQLite (one process
//! by design) the process always leads.
//!
//! The decision is pure ([`Election::step`]: what a probe of the lock means); the I/O is
//! behind [`LeaderLock`] ([`PgLock`], [`AlwaysLeader`]); [`run`] polls the lock every
//! [`CHECK_EVERY`] and publishes the state on a [`Leadership`] watch.

use std::time::Duration;
use tokio::sync::watch;

/// How often a follower tries to take the lock and a leader checks it still holds it: the
/// failover time after a leader dies is about this.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A leader whose lock check takes longer than this takes itself as cut off and stops leading.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long PostgreSQL keeps a fleet session whose client went silent (its host cut off by the
/// network, not closed): the server probes an idle session after 6 s, every 1 s, and drops it
/// after 3 unanswered probes; data it sent that stays unacknowledged for 9 s drops it too
/// (`tcp_user_timeout`). Set on every fleet session ([`SESSION_TIMEOUTS`]), so the lock of a
/// partitioned leader, and any placement lock its pool held, is freed after about this, not
/// after the kernel's two-hour keepalive default. Longer than [`CHECK_EVERY`] +
/// [`CHECK_TIMEOUT`] with room to spare: the cut-off leader has stopped before another replica
/// can take the lock.
pub const SERVER_DROPS_SILENT_AFTER: Duration = Duration::from_secs(9);

/// The statement that sets [`SERVER_DROPS_SILENT_AFTER`] on a session (PostgreSQL 12 or later;
/// ignored on Unix-socket connections).
pub const SESSION_TIMEOUTS: &str = "SELECT set_config('tcp_keepalives_idle', '6', false), \
     set_config('tcp_keepalives_interval', '1', false), \
     set_config('tcp_keepalives_count', '3', false), \
     set_config('tcp_user_timeout', '9000', false)";

/// The advisory lock's key ("LATTICE!" as a big-endian i64): one per database.
pub const LOCK_KEY: i64 = 0x4c41_5454_4943_4521;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader lock: cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("leader lock: query on the lock connection failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("leader lock: no answer within {0:?}")]
    Timeout(Duration),
}

/// What one look at the lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// This process holds the lock (just taken, or still held).
    Held,
    /// Another process holds it.
    Taken,
    /// The lock connection failed: whatever this process held is gone.
    Failed(String),
}

/// A change of leadership, for the shell to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Start leader work (re-derived from the store).
    Gained,
    /// Stop leader work now.
    Lost(String),
}

/// The pure part: whether this process leads, and what a probe changes.
#[derive(Debug, Default)]
pub struct Election {
    leading: bool,
}

impl Election {
    pub fn leading(&self) -> bool {
        self.leading
    }

    pub fn step(&mut self, probe: Probe) -> Option<Change> {
        match (self.leading, probe) {
            (false, Probe::Held) => {
                self.leading = true;
                Some(Change::Gained)
            }
            (true, Probe::Taken) => {
                self.leading = false;
                Some(Change::Lost("another replica holds the lock".into()))
            }
            (true, Probe::Failed(why)) => {
                self.leading = false;
                Some(Change::Lost(why))
            }
            _ => None,
        }
    }
}

/// The lock, as the shell sees it.
#[allow(async_fn_in_trait)]
pub trait LeaderLock {
    /// Takes the lock if it is free; `Held` if this process holds it.
    async fn try_acquire(&mut self) -> Probe;
    /// Whether this process still holds the lock it took.
    async fn check(&mut self) -> Probe;
}

/// SQLite: one process, always the leader.
pub struct AlwaysLeader;

impl LeaderLock for AlwaysLeader {
    async fn try_acquire(&mut self) -> Probe {
        Probe::Held
    }
    async fn check(&mut self) -> Probe {
        Probe::Held
    }
}

/// PostgreSQL: a session advisory lock on one dedicated connection (not from the pool: a
/// pooled connection would hand the lock to whoever borrows it next).
pub struct PgLock {
    url: String,
    conn: Option<sqlx::PgConnection>,
}

impl PgLock {
    pub fn new(url: &str) -> PgLock {
        PgLock {
            url: url.to_string(),
            conn: None,
        }
    }

    async fn acquire(&mut self) -> Result<bool, LeaderError> {
        use sqlx::Connection;
        if self.conn.is_none() {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .map_err(|source| LeaderError::Connect {
                    url: redact(&self.url),
                    source,
                })?;
            // The server frees the lock of a session whose client went silent (a partition)
            // after SERVER_DROPS_SILENT_AFTER, not hours later.
            sqlx::query(SESSION_TIMEOUTS).execute(&mut c).await?;
            self.conn = Some(c);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(conn)
            .await?;
        Ok(got)
    }

    async fn still_held(&mut self) -> Result<bool, LeaderError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        // The lock lives as long as the session: a query answered on it means it is held
        // (pg_locks confirms it was not released by hand).
        let (held,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1)",
        )
        .bind(LOCK_KEY)
        .fetch_one(conn)
        .await?;
        Ok(held)
    }

    fn probe(
        &mut self,
        r: Result<Result<bool, LeaderError>, tokio::time::error::Elapsed>,
    ) -> Probe {
        match r {
            Ok(Ok(true)) => Probe::Held,
            Ok(Ok(false)) => Probe::Taken,
            Ok(Err(e)) => {
                // A broken session holds nothing; a new one is made next time.
                self.conn = None;
                Probe::Failed(e.to_string())
            }
            Err(_) => {
                self.conn = None;
                Probe::Failed(LeaderError::Timeout(CHECK_TIMEOUT).to_string())
            }
        }
    }
}

impl LeaderLock for PgLock {
    async fn try_acquire(&mut self) -> Probe {
        let r = tokio::time::timeout(CHECK_TIMEOUT, self.acquire()).await;
        self.probe(r)
    }
    async fn check(&mut self) -> Probe {
        let r = tokio::time::timeout(CHECK_TIMEOUT, self.still_held()).await;
        self.probe(r)
    }
}

/// `postgres://user:secret@host/db` without the secret, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Whether this process leads now; cheap to clone and to ask.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A fixed answer (tests, and processes that never compete).
    pub fn fixed(leading: bool) -> Leadership {
        Leadership(watch::channel(leading).1)
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}

/// A leadership that [`run`] drives.
pub fn channel() -> (watch::Sender<bool>, Leadership) {
    let (tx, rx) = watch::channel(false);
    (tx, Leadership(rx))
}

/// Polls `lock` every `every` ([`CHECK_EVERY`] in the fleet) forever: a follower tries to
/// take it, a leader checks it still holds it; every change is logged, counted on `gauge` and
/// published on `tx`.
pub async fn run<L: LeaderLock>(
    mut lock: L,
    every: Duration,
    tx: watch::Sender<bool>,
    gauge: prometheus_client::metrics::gauge::Gauge,
) {
    let mut election = Election::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure = String::new();
    loop {
        tick.tick().await;
        let probe = if election.leading() {
            lock.check().await
        } else {
            lock.try_acquire().await
        };
        match &probe {
            Probe::Failed(why) if !election.leading() && *why != last_failure => {
                tracing::warn!(error = %why, "cannot try the leader lock; this replica follows");
                last_failure.clone_from(why);
            }
            Probe::Held | Probe::Taken => last_failure.clear(),
            _ => {}
        }
        match election.step(probe) {
            Some(Change::Gained) => {
                tracing::info!(
                    "leadership gained: this replica runs the scheduler timers and sends targets"
                );
                gauge.set(1);
                let _ = tx.send(true);
            }
            Some(Change::Lost(why)) => {
                tracing::warn!(reason = %why, "leadership lost: leader work stopped");
                gauge.set(0);
                let _ = tx.send(false);
            }
            None => {}
        }
    }
}

/// Runs leader work while `leadership` says so: on each gain a new fleet epoch for what is
/// sent, then [`crate::lifecycle::run`] (which first rebuilds the targets from the
/// placements); on a loss that task is stopped at once. Every placement change is a
/// compare-and-set in the store, so work cut short here is finished, not repeated, by the
/// next leader.
pub async fn supervise(
    state: std::sync::Arc<crate::api::AppState>,
    leadership: Leadership,
    grace: Duration,
    link: Option<crate::link::Link>,
) {
    let mut rx = leadership.subscribe();
    let mut work: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let leading = *rx.borrow_and_update();
        if leading && work.is_none() {
            // A new epoch before any leader work: nodes refuse targets under an epoch older
            // than one they have seen (the previous leader's), so sending under this
            // process's old one would be refused silently. Retried while still leading.
            let taken = loop {
                match state.store.next_fleet_epoch(lattice_wire::now_ms()).await {
                    Ok(epoch) => {
                        state.outbound.set_epoch(epoch);
                        tracing::info!(epoch, "leader: sending under a new fleet epoch");
                        break true;
                    }
                    Err(e) => tracing::error!(error = %e,
                        "leader: cannot take a new fleet epoch; retrying before any leader work"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !*rx.borrow() {
                    break false;
                }
            };
            if !taken {
                continue;
            }
            work = Some(tokio::spawn(crate::lifecycle::run(
                state.clone(),
                grace,
                link.clone(),
            )));
        } else if !leading {
            if let Some(w) = work.take() {
                w.abort();
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_leads_once_it_holds_the_lock_and_only_then() {
        let mut e = Election::default();
        assert_eq!(e.step(Probe::Taken), None);
        assert_eq!(e.step(Probe::Failed("refused".into())), None);
        assert!(!e.leading());
        assert_eq!(e.step(Probe::Held), Some(Change::Gained));
        assert!(e.leading());
        assert_eq!(e.step(Probe::Held), None, "no second gain while held");
    }

    #[test]
    fn a_leader_whose_lock_connection_fails_stops_at_once() {
        let mut e = Election::default();
        e.step(Probe::Held);
        assert_eq!(
            e.step(Probe::Failed("connection reset".into())),
            Some(Change::Lost("connection reset".into()))
        );
        assert!(!e.leading());
        // It competes again like any follower.
        assert_eq!(e.step(Probe::Taken), None);
        assert_eq!(e.step(Probe::Held), Some(Change::Gained));
    }

    #[test]
    fn the_server_frees_a_silent_leaders_lock_only_after_it_stopped_leading() {
        // The last traffic on the lock session may be a check up to CHECK_EVERY before the
        // partition; the leader stops at most CHECK_EVERY + CHECK_TIMEOUT after it.
        let freed_at_least = SERVER_DROPS_SILENT_AFTER - CHECK_EVERY;
        let stopped_by = CHECK_EVERY + CHECK_TIMEOUT;
        assert!(
            freed_at_least >= stopped_by + Duration::from_secs(3),
            "{freed_at_least:?} vs {stopped_by:?}"
        );
        assert!(SESSION_TIMEOUTS.contains("'tcp_keepalives_idle', '6'"));
        assert!(SESSION_TIMEOUTS.contains("'tcp_user_timeout', '9000'"));
    }

    #[test]
    fn a_leader_that_finds_its_lock_gone_stops() {
        let mut e = Election::default();
        e.step(Probe::Held);
        assert!(matches!(e.step(Probe::Taken), Some(Change::Lost(_))));
        assert!(!e.leading());
    }

    /// Answers from a script; records what the shell asked.
    struct Scripted {
        answers: std::collections::VecDeque<Probe>,
        calls: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
    }

    impl LeaderLock for Scripted {
        async fn try_acquire(&mut self) -> Probe {
            self.calls.lock().unwrap().push("acquire");
            self.answers.pop_front().unwrap_or(Probe::Taken)
        }
        async fn check(&mut self) -> Probe {
            self.calls.lock().unwrap().push("check");
            self.answers.pop_front().unwrap_or(Probe::Taken)
        }
    }

    #[tokio::test]
    async fn the_shell_publishes_gain_and_loss_and_checks_only_while_leading() {
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lock = Scripted {
            answers: [
                Probe::Taken,
                Probe::Held,
                Probe::Held,
                Probe::Failed("gone".into()),
            ]
            .into(),
            calls: calls.clone(),
        };
        let (tx, leadership) = channel();
        let gauge = prometheus_client::metrics::gauge::Gauge::default();
        let mut rx = leadership.subscribe();
        let task = tokio::spawn(run(lock, Duration::from_millis(10), tx, gauge.clone()));
        rx.changed().await.unwrap();
        assert!(*rx.borrow_and_update());
        assert_eq!(gauge.get(), 1);
        rx.changed().await.unwrap();
        assert!(!*rx.borrow_and_update());
        assert_eq!(gauge.get(), 0);
        task.abort();
        assert_eq!(
            calls.lock().unwrap()[..4],
            ["acquire", "acquire", "check", "check"]
        );
    }

    #[test]
    fn sqlite_always_leads() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut l = AlwaysLeader;
        assert_eq!(rt.block_on(l.try_acquire()), Probe::Held);
        assert_eq!(rt.block_on(l.check()), Probe::Held);
    }

    #[test]
    fn the_password_stays_out_of_messages() {
        assert_eq!(
            redact("postgres://lattice:s3cret@db:5432/fleet"),
            "postgres://lattice:***@db:5432/fleet"
        );
        assert_eq!(redact("postgres://db/fleet"), "postgres://db/fleet");
    }
}
