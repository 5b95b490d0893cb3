//! The audit log: security-relevant actions, written by the code that performs them and read
//! by operators (`GET /api/v1/audit`, `lattice audit`).
//!
//! ```ignore
//! audit::record(&state.store, &principal.account_id, Action::WorkloadCreated, &workload_id,
//!     "kind=container plan=small").await?;
//! ```
//!
//! `detail` is for people and must never hold a secret (passwords, tokens, generated
//! credentials): say *that* credentials were revealed, not what they are.

use crate::store::{AuditEntry, Store, StoreError};

/// The actor recorded for requests without a credential (sign-up, failed logins for emails
/// that have no account).
pub const ANONYMOUS: &str = "anonymous";

/// What happened. The names (`as_str`) are stable: operators filter on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AccountCreated,
    /// An operator changed an account's role or disabled/enabled it.
    AccountChanged,
    /// An account changed its password (all its API tokens were deleted).
    PasswordChanged,
    LoginSucceeded,
    LoginFailed,
    ApiTokenCreated,
    ApiTokenDeleted,
    WorkloadCreated,
    WorkloadChanged,
    WorkloadDeleted,
    /// A workload's generated credentials were shown to someone.
    CredentialsRevealed,
    NodeRevoked,
    /// A node was cordoned (takes no new work).
    NodeCordoned,
    NodeUncordoned,
    /// A node's drain was asked for (its movable workloads move elsewhere).
    NodeDrainStarted,
    /// A node's decommission was asked for (drain, then revocation).
    NodeDecommissionStarted,
    /// A node's offer (region, labels, price, …) was set.
    NodeOfferChanged,
    ProvisioningTokenCreated,
    /// A node registered with a provisioning token.
    NodeRegistered,
    /// A registration with a known token was refused (expired or used up). Unknown tokens
    /// are only logged and counted: anyone can send them, and a flood must not fill the table.
    NodeRegistrationRefused,
}

impl Action {
    pub const ALL: [Action; 20] = [
        Action::AccountCreated,
        Action::AccountChanged,
        Action::PasswordChanged,
        Action::LoginSucceeded,
        Action::LoginFailed,
        Action::ApiTokenCreated,
        Action::ApiTokenDeleted,
        Action::WorkloadCreated,
        Action::WorkloadChanged,
        Action::WorkloadDeleted,
        Action::CredentialsRevealed,
        Action::NodeRevoked,
        Action::NodeCordoned,
        Action::NodeUncordoned,
        Action::NodeDrainStarted,
        Action::NodeDecommissionStarted,
        Action::NodeOfferChanged,
        Action::ProvisioningTokenCreated,
        Action::NodeRegistered,
        Action::NodeRegistrationRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::AccountCreated => "account.created",
            Action::AccountChanged => "account.changed",
            Action::PasswordChanged => "account.password_changed",
            Action::LoginSucceeded => "login.success",
            Action::LoginFailed => "login.failure",
            Action::ApiTokenCreated => "api_token.created",
            Action::ApiTokenDeleted => "api_token.deleted",
            Action::WorkloadCreated => "workload.created",
            Action::WorkloadChanged => "workload.changed",
            Action::WorkloadDeleted => "workload.deleted",
            Action::CredentialsRevealed => "credentials.revealed",
            Action::NodeRevoked => "node.revoked",
            Action::NodeCordoned => "node.cordoned",
            Action::NodeUncordoned => "node.uncordoned",
            Action::NodeDrainStarted => "node.drain_started",
            Action::NodeDecommissionStarted => "node.decommission_started",
            Action::NodeOfferChanged => "node.offer_changed",
            Action::ProvisioningTokenCreated => "provisioning_token.created",
            Action::NodeRegistered => "node.registered",
            Action::NodeRegistrationRefused => "node.registration_refused",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends one entry (now, a fresh id) and logs it at INFO under the `audit` target. An error
/// means the entry is not stored: callers doing something security-relevant should fail the
/// request rather than act unaudited (`?` into `ApiError` gives 503).
pub async fn record(
    store: &Store,
    actor: &str,
    action: Action,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let e = entry(actor, action, target, detail);
    log(&e);
    store.insert_audit(&e).await
}

/// A new entry (now, a fresh id), for a write that stores it in its own transaction
/// ([`crate::store::Write::audit`]) and [`log`]s it once that commits.
pub fn entry(actor: &str, action: Action, target: &str, detail: &str) -> AuditEntry {
    AuditEntry {
        id: format!("au-{}", hex::encode(rand::random::<[u8; 8]>())),
        at_ms: lattice_wire::now_ms(),
        actor: actor.to_string(),
        action: action.as_str().to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
    }
}

/// Logs entry `e` at INFO under the `audit` target.
pub fn log(e: &AuditEntry) {
    tracing::info!(
        target: "audit",
        actor = e.actor.as_str(),
        action = e.action.as_str(),
        target_id = e.target.as_str(),
        detail = e.detail.as_str(),
        "audit"
    );
}
