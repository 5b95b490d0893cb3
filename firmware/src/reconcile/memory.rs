//! What the reconciler remembers about each workload between steps, and the backoff it
//! applies to retries and restarts. None of it survives a restart of latticed, which is why
//! every field starts from a default that is safe next to already running containers.

/// First retry delay after a failure or an exit.
pub const BACKOFF_BASE_MS: u64 = 1_000;
/// Longest retry delay.
pub const BACKOFF_CAP_MS: u64 = 60_000;
/// A container running this long has its backoff reset.
pub const STABLE_RUN_MS: u64 = 300_000;

/// What the reconciler remembers about one workload between steps. Lost on restart: every
/// field must be safe to start from its default next to already running containers.
#[derive(Debug, Clone, Default)]
pub(super) struct Memory {
    /// The spec hash this memory is about; a new spec starts the spec-bound fields over.
    pub(super) hash: String,
    pub(super) restarts: u32,
    /// Failures (or exits) since the last reset: the exponent of the next delay.
    pub(super) attempt: u32,
    /// No retry before this instant (ms).
    pub(super) not_before: u64,
    /// An exited container is due for a restart (counted once its start succeeds).
    pub(super) restart_pending: bool,
    pub(super) running_since: Option<u64>,
    /// The image known present locally.
    pub(super) image_ready: Option<String>,
    pub(super) image_missing: Option<String>,
    pub(super) last_error: Option<String>,
    /// The runtime refused the spec itself: not retried until the spec changes.
    pub(super) rejected: Option<String>,
}

impl Memory {
    /// Records a failure and holds the workload back for the next delay.
    pub(super) fn fail(&mut self, now_ms: u64, reason: String) {
        self.last_error = Some(reason);
        self.not_before = now_ms.saturating_add(delay_ms(self.attempt));
        self.attempt = self.attempt.saturating_add(1);
    }
}

/// The delay before retry number `attempt` (0-based): 1 s, 2 s, 4 s, … capped at 60 s.
pub fn delay_ms(attempt: u32) -> u64 {
    BACKOFF_BASE_MS
        .saturating_mul(1u64 << attempt.min(16))
        .min(BACKOFF_CAP_MS)
}
