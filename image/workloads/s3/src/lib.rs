//! `lattice-s3`: the S3 server that runs inside an `s3` workload's container.
//!
//! The S3 protocol (HTTP routing, XML, SigV4 headers and presigned URLs, aws-chunked bodies) is
//! [s3s](https://docs.rs/s3s) 0.14; everything about storing is this crate's own:
//!
//! - [`store`]: buckets, objects and multipart uploads on the workload's volume, written
//!   durably (temporary file, fsync, rename, directory fsync) and testable without HTTP;
//! - [`checksum`]: the ETag's MD5 and the flexible checksums clients send, verified before a
//!   write is committed;
//! - [`sse`]: SSE-C, objects encrypted at rest with the client's key (AES-256-GCM segments,
//!   only a keyed check of the key stored);
//! - [`quota`]: the plan's size limit; [`cors`]: bucket CORS rules; [`names`]: bucket names and
//!   keys ([`bucket_rules`]: the naming rules, shared with the fleet);
//! - [`s3`]: the `s3s::S3` implementation mapping requests onto the store;
//! - [`auth`]: the one access key of the deployment; [`config`]: flags, environment, files;
//! - [`server`]: the HTTP listener (TCP_NODELAY, CORS preflight, the replication status)
//!   around s3s's service;
//! - [`replication`]: a primary's journal of changes and the task shipping them to a replica.
//!
//! See docs/s3.md.

pub mod auth;
pub mod bucket_rules;
pub mod checksum;
pub mod config;
pub mod cors;
pub mod names;
pub mod quota;
pub mod replication;
pub mod s3;
pub mod server;
pub mod sse;
pub mod store;
