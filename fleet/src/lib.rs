//! The Lattice fleet manager.
//!
//! * [`store`] — sqlx store (SQLite default, PostgreSQL-ready), migrations, every query.
//! * [`ingest`] — accepts what nodes publish: signature, sender, channel, replay window.
//! * [`link`] — the fleet's MQTT client: ingest, targets, re-sends, liveness timers.
//! * [`leader`] — one leader among replicas (PostgreSQL advisory lock) runs timers and sends.
//! * [`api`] — the axum HTTP API, OpenAPI document, `/metrics`.
//! * [`secrets`] — the fleet key and operator credential on disk.
//! * [`rotation`] — fleet key rotation: the chain of statements, `lattice keys rotate`.
//! * [`metrics`] — Prometheus metrics.
//! * [`accounts`], [`audit`] — sign-up, passwords, login limits; the audit log.
//! * [`workloads`], [`kinds`] — the workload frame and its kinds (`container`, `s3`).

pub mod accounts;
pub mod api;
pub mod audit;
pub mod backup;
pub mod broker;
pub mod cli;
pub mod data_lock;
pub mod gateway;
pub mod ingest;
pub mod kinds;
pub mod leader;
pub mod lifecycle;
pub mod link;
pub mod metrics;
pub mod offers;
pub mod rotation;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;
pub mod workloads;
