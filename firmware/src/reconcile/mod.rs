//! The reconciler: turns the fleet's target into running containers and reports what each
//! workload is doing.
//!
//! - [`plan`] decides, free of I/O and clocks: `Reconciler::step(now, observed, batch_allowed)
//!   -> Vec<Action>`, with results fed back through `on_result`. Unit- and property-tested
//!   against an in-memory model of the engine.
//! - [`shell`] is the async loop that lists this node's containers, performs the actions with
//!   a [`crate::runtime::ContainerRuntime`] and publishes statuses through a
//!   [`ReconcileHandle`].
//! - [`ReconcileApplier`] plugs the loop into the agent as its [`crate::agent::Applier`],
//!   refusing malformed targets ([`validate`]) before they reach the loop.
//! - [`hash`] gives the stable spec hash each container carries, so a changed spec replaces
//!   its container and an unchanged one is adopted after a restart.

mod action;
mod applier;
pub mod hash;
mod memory;
pub mod plan;
pub mod shell;
mod status;
pub mod validate;

pub use applier::{docker_applier, ReconcileApplier};
pub use hash::spec_hash;
pub use plan::{Action, Reconciler};
pub use shell::{spawn, ReconcileHandle};

#[cfg(test)]
mod tests;
