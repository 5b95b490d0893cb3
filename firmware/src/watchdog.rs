//! systemd's service protocol (`sd_notify`): `READY=1` once latticed runs, a `STATUS=` line
//! for `systemctl status`, `STOPPING=1` on shutdown, and the service watchdog.
//!
//! The watchdog pings (`WATCHDOG=1`) come from a task on latticed's own single-threaded
//! runtime, so they stop when anything blocks that thread. Once the MQTT agent runs they also
//! stop when the agent's loop has made no progress for half the watchdog interval (it
//! [`Liveness::touch`]es at least every [`crate::agent::STATE_POLL`], connected or not). systemd
//! then kills latticed (SIGABRT) and restarts it, which is what the image's unit asks
//! (`WatchdogSec=`, `Restart=always`). Outside systemd (no `NOTIFY_SOCKET`, no
//! `WATCHDOG_USEC`) none of this sends anything.
//!
//! The decision is [`ping_due`], free of I/O; the socket is behind [`Notify`] so tests record
//! what would be sent.

use crate::shutdown::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One message to the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
}

/// Where notices go: systemd's socket, or a recording in tests.
pub trait Notify: Send + Sync {
    fn send(&self, notice: &Notice) -> std::io::Result<()>;
}

/// The service manager named by `NOTIFY_SOCKET` (nothing is sent when it is unset).
#[derive(Debug, Default, Clone, Copy)]
pub struct Systemd;

impl Notify for Systemd {
    fn send(&self, notice: &Notice) -> std::io::Result<()> {
        use sd_notify::NotifyState;
        let state = match notice {
            Notice::Ready => NotifyState::Ready,
            Notice::Status(s) => NotifyState::Status(s),
            Notice::Watchdog => NotifyState::Watchdog,
            Notice::Stopping => NotifyState::Stopping,
        };
        sd_notify::notify(&[state])
    }
}

/// Records notices (tests).
#[derive(Debug, Default)]
pub struct Recorded(Mutex<Vec<Notice>>);

impl Recorded {
    pub fn take(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Notify for Recorded {
    fn send(&self, notice: &Notice) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(notice.clone());
        Ok(())
    }
}

/// Sends `notice`, logging (not failing) when the socket refuses: a service manager that went
/// away must not stop the node.
pub fn tell(notify: &dyn Notify, notice: Notice) {
    if let Err(e) = notify.send(&notice) {
        tracing::warn!(error = %e, ?notice, "cannot notify the service manager");
    }
}

/// The agent loop's last sign of progress, shared with the watchdog task. Until
/// [`Liveness::arm`] (the agent has not started: enrolling) only the runtime's own liveness
/// counts.
#[derive(Debug, Clone)]
pub struct Liveness(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    origin: Instant,
    armed: AtomicBool,
    last_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness(Arc::new(Inner {
            origin: Instant::now(),
            armed: AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
        }))
    }
}

impl Liveness {
    /// From now on a loop that stops touching stops the pings.
    pub fn arm(&self) {
        self.touch();
        self.0.armed.store(true, Ordering::Release);
    }

    /// The loop made progress.
    pub fn touch(&self) {
        let ms = self.0.origin.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Release);
    }

    /// How long since the last touch; `None` while not armed.
    pub fn stalled_for(&self) -> Option<Duration> {
        if !self.0.armed.load(Ordering::Acquire) {
            return None;
        }
        let now = self.0.origin.elapsed().as_millis() as u64;
        let last = self.0.last_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(now.saturating_sub(last)))
    }
}

/// Whether to feed the watchdog: the runtime is alive (we are asking), and the agent, if
/// armed, made progress within half the watchdog `timeout`.
pub fn ping_due(stalled_for: Option<Duration>, timeout: Duration) -> bool {
    stalled_for.is_none_or(|s| s < timeout / 2)
}

/// How often to consider a ping: a third of the timeout, so one late wake-up does not miss it.
pub fn ping_period(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(10))
}

/// The watchdog timeout systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn requested_timeout() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|t| !t.is_zero())
}

/// Feeds the watchdog every [`ping_period`] while [`ping_due`], until `shutdown`.
pub async fn run(
    notify: Arc<dyn Notify>,
    liveness: Liveness,
    timeout: Duration,
    mut shutdown: Shutdown,
) {
    let period = ping_period(timeout);
    let mut withheld = false;
    tracing::info!(
        timeout_ms = timeout.as_millis() as u64,
        "feeding systemd's watchdog"
    );
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(period) => {}
        }
        let stalled = liveness.stalled_for();
        if ping_due(stalled, timeout) {
            if withheld {
                tracing::info!("the agent loop made progress again; feeding the watchdog");
                withheld = false;
            }
            tell(notify.as_ref(), Notice::Watchdog);
        } else if !withheld {
            withheld = true;
            tracing::error!(
                stalled_ms = stalled.unwrap_or_default().as_millis() as u64,
                "the agent loop has made no progress; not feeding systemd's watchdog, which \
                 restarts latticed if this lasts"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_while_unarmed_or_recent() {
        let t = Duration::from_secs(30);
        assert!(ping_due(None, t));
        assert!(ping_due(Some(Duration::from_secs(14)), t));
        assert!(!ping_due(Some(Duration::from_secs(15)), t));
        assert!(!ping_due(Some(Duration::from_secs(600)), t));
        assert_eq!(ping_period(t), Duration::from_secs(10));
        assert_eq!(
            ping_period(Duration::from_millis(3)),
            Duration::from_millis(10)
        );
    }

    fn pings(r: &Recorded) -> usize {
        r.take().iter().filter(|n| **n == Notice::Watchdog).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_agent_stops_the_pings_and_progress_resumes_them() {
        let recorded = Arc::new(Recorded::default());
        let liveness = Liveness::default();
        let (trigger, shutdown) = crate::shutdown::channel();
        let timeout = Duration::from_secs(3);
        let task = tokio::spawn(run(recorded.clone(), liveness.clone(), timeout, shutdown));
        // Enrolling (not armed): pinged every second.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(pings(&recorded), 3);
        // The agent runs and touches every 0.5 s: still pinged.
        liveness.arm();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            liveness.touch();
        }
        assert_eq!(pings(&recorded), 4);
        // The agent stalls: at most one more ping (within half the timeout), then none.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(pings(&recorded) <= 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(pings(&recorded), 0);
        // Progress again: pings resume.
        liveness.touch();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(pings(&recorded), 1);
        trigger.trigger();
        task.await.unwrap();
    }
}
