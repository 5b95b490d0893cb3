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

/// Traffic totals not yet written to the store, per workload: (in, out, connections).
pub type Pending = Arc<Mutex<HashMap<String, (u64, u64, u64)>>>;

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
    workload: String,
    bytes_in: Counter,
    bytes_out: Counter,
    active: Gauge,
    total_in: u64,
    total_out: u64,
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
        Counted {
            inner,
            workload: workload.to_owned(),
            bytes_in: metrics.bytes_in.get_or_create(&label).clone(),
            bytes_out: metrics.bytes_out.get_or_create(&label).clone(),
            active,
            total_in: 0,
            total_out: 0,
            pending,
            activity,
            _permit: permit,
        }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.active.dec();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let e = p.entry(std::mem::take(&mut self.workload)).or_default();
        e.0 += self.total_in;
        e.1 += self.total_out;
        e.2 += 1;
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
            self.total_out += n;
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
                self.total_in += n as u64;
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
