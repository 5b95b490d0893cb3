//! A cloneable "stop now" signal for the daemon's long-running loops.
//!
//! [`ShutdownTrigger::trigger`] (from a signal handler, or a test) wakes every
//! [`Shutdown::wait`]; a loop that checks [`Shutdown::is_triggered`] before a new step never
//! starts one after the trigger.

use tokio::sync::watch;

/// Fires the signal; dropping it without firing leaves the receivers waiting forever.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(std::sync::Arc<watch::Sender<bool>>);

/// Waits for the signal.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(std::sync::Arc::new(tx)), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A receiver that never fires.
    pub fn never() -> Shutdown {
        // With the sender gone, `wait` stays pending forever.
        let (_tx, rx) = watch::channel(false);
        Shutdown(rx)
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal fired (at once if it already has).
    pub async fn wait(&mut self) {
        if self.0.wait_for(|v| *v).await.is_err() {
            // The trigger was dropped without firing: never resolve.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_wakes_every_clone() {
        let (t, s) = channel();
        let mut a = s.clone();
        let mut b = s;
        assert!(!a.is_triggered());
        t.trigger();
        tokio::time::timeout(Duration::from_secs(1), async {
            a.wait().await;
            b.wait().await;
        })
        .await
        .unwrap();
        assert!(a.is_triggered());
    }
}
