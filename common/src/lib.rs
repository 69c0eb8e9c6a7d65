//! Shared by `cofferd`, `cofferctl` and the end-to-end tests.
//!
//! # Layout
//! - [`proto`]: the generated `coffer.v1` gRPC code (from `proto/coffer/v1`), and the
//!   re-exported [`tonic`] so that client and server share one version.
//! - [`ids`]: backup ids (`<job>-<yyyymmddThhmmssZ>[-n]`), job names, and the
//!   `latest` / `JOB:latest` references accepted wherever an id is.
//! - [`format`]: human formatting of byte counts and durations.
//! - [`client`]: the default socket path and the connector for the Unix socket.

pub mod client;
pub mod format;
pub mod ids;

pub use tonic;

/// The generated `coffer.v1` API.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("coffer.v1");
}

/// The version of this build, shared by the daemon and the client.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
