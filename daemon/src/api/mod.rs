//! The API layer: what crosses the Unix socket.
//!
//! - [`service`]: the tonic `coffer.v1.Coffer` service; thin: check access, call the
//!   engine, convert, audit.
//! - [`auth`]: roles from the caller's socket credentials (SO_PEERCRED).
//! - [`convert`]: domain values to proto messages, and the one error-kind → gRPC code
//!   mapping.
//! - [`status`]: the `GetStatus` / `ListJobs` answers.
//! - [`health`]: keeps grpc.health.v1 per-job statuses current.
//! - [`metrics`]: the Prometheus text exposition.
//! - [`selective`]: the streams of the selective export and import RPCs.
//! - [`offsite`]: stores, store listings, locations and copy results on the wire.

pub mod auth;
pub mod convert;
pub mod health;
pub mod metrics;
pub mod offsite;
pub mod selective;
pub mod service;
pub mod status;
