//! A tunnel stream that counts its bytes per workload, marks activity for idle timeouts and
//! holds its workload's connection permit until it is dropped.

use super::metrics::GatewayMetrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Traffic per workload: (bytes in, bytes out, connections).
pub type Totals = HashMap<String, (u64, u64, u64)>;

/// Traffic not yet written to the store: that of open streams (so a connection open for days
/// is billed as it goes, not when it closes) and that of closed ones.
#[derive(Default)]
pub struct Ledger {
    live: Mutex<HashMap<u64, Arc<Live>>>,
    next: AtomicU64,
    done: Mutex<Totals>,
}

/// One open stream's counters; `stored_*` is what was already handed to the store.
struct Live {
    workload: String,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    stored_in: AtomicU64,
    stored_out: AtomicU64,
    conn_reported: std::sync::atomic::AtomicBool,
}

impl Live {
    /// What this stream moved since the last call. Safe against a concurrent call: each byte
    /// is reported once (`fetch_max` hands each range to exactly one caller).
    fn delta(&self) -> (u64, u64, u64) {
        let cur_in = self.bytes_in.load(Ordering::Relaxed);
        let cur_out = self.bytes_out.load(Ordering::Relaxed);
        let d_in = cur_in.saturating_sub(self.stored_in.fetch_max(cur_in, Ordering::Relaxed));
        let d_out = cur_out.saturating_sub(self.stored_out.fetch_max(cur_out, Ordering::Relaxed));
        let conn = u64::from(!self.conn_reported.swap(true, Ordering::Relaxed));
        (d_in, d_out, conn)
    }
}

fn add(totals: &mut Totals, workload: &str, d: (u64, u64, u64)) {
    if d == (0, 0, 0) {
        return;
    }
    let e = totals.entry(workload.to_owned()).or_default();
    e.0 += d.0;
    e.1 += d.1;
    e.2 += d.2;
}

impl Ledger {
    /// Everything not yet stored, per workload; what is returned counts as stored (hand it
    /// back with [`Ledger::requeue`] if storing fails).
    pub fn take(&self) -> Totals {
        let mut totals = std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()));
        let live: Vec<Arc<Live>> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for l in live {
            add(&mut totals, &l.workload, l.delta());
        }
        totals
    }

    pub fn requeue(&self, workload: &str, d: (u64, u64, u64)) {
        add(
            &mut self.done.lock().unwrap_or_else(|p| p.into_inner()),
            workload,
            d,
        );
    }
}

pub type Pending = Arc<Ledger>;

/// Milliseconds since a fixed start, shared by a connection's two directions.
#[derive(Debug, Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Time since the last byte either way.
    pub fn idle(&self) -> std::time::Duration {
        let now = self.start.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Counted<S> {
    inner: S,
    bytes_in: Counter,
    bytes_out: Counter,
    active: Gauge,
    id: u64,
    live: Arc<Live>,
    pending: Pending,
    pub activity: Activity,
    _permit: OwnedSemaphorePermit,
}

impl<S> Counted<S> {
    pub fn new(
        inner: S,
        workload: &str,
        metrics: &GatewayMetrics,
        pending: Pending,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let label = GatewayMetrics::workload(workload);
        metrics.connections.get_or_create(&label).inc();
        let active = metrics.active.get_or_create(&label).clone();
        active.inc();
        let activity = Activity::new();
        activity.touch();
        let live = Arc::new(Live {
            workload: workload.to_owned(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            stored_in: AtomicU64::new(0),
            stored_out: AtomicU64::new(0),
            conn_reported: Default::default(),
        });
        let id = pending.next.fetch_add(1, Ordering::Relaxed);
        pending
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, live.clone());
        Counted {
            inner,
            bytes_in: metrics.bytes_in.get_or_create(&label).clone(),
            bytes_out: metrics.bytes_out.get_or_create(&label).clone(),
            active,
            id,
            live,
            pending,
            activity,
            _permit: permit,
        }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.active.dec();
        self.pending
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        let d = self.live.delta();
        self.pending.requeue(&self.live.workload, d);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.bytes_out.inc_by(n);
            self.live.bytes_out.fetch_add(n, Ordering::Relaxed);
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.bytes_in.inc_by(n as u64);
                self.live.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                self.activity.touch();
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(w: &str) -> Arc<Live> {
        Arc::new(Live {
            workload: w.into(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            stored_in: AtomicU64::new(0),
            stored_out: AtomicU64::new(0),
            conn_reported: Default::default(),
        })
    }

    #[test]
    fn open_streams_are_reported_as_they_go_and_each_byte_once() {
        let ledger = Ledger::default();
        let l = live("w-db");
        ledger.live.lock().unwrap().insert(1, l.clone());
        l.bytes_in.fetch_add(10, Ordering::Relaxed);
        l.bytes_out.fetch_add(100, Ordering::Relaxed);
        assert_eq!(ledger.take().get("w-db"), Some(&(10, 100, 1)));
        assert_eq!(ledger.take().get("w-db"), None, "nothing new");
        l.bytes_out.fetch_add(5, Ordering::Relaxed);
        assert_eq!(ledger.take().get("w-db"), Some(&(0, 5, 0)));
        // Closing reports the rest once.
        ledger.live.lock().unwrap().remove(&1);
        l.bytes_in.fetch_add(1, Ordering::Relaxed);
        ledger.requeue("w-db", l.delta());
        assert_eq!(l.delta(), (0, 0, 0));
        assert_eq!(ledger.take().get("w-db"), Some(&(1, 0, 0)));
    }
}
