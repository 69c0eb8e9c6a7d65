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

/// The lowercase, dash-separated name of a proto enum value without its prefix
/// (`RUN_KIND_BACKUP` → `backup`): what the daemon stores and `cofferctl` prints.
fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
        .replace('_', "-")
}

impl proto::RunKind {
    /// `backup`, `verify`, ...
    pub fn short_name(self) -> String {
        short_name(self.as_str_name(), "RUN_KIND_")
    }
}

impl proto::RunStatus {
    /// `running`, `succeeded`, ...
    pub fn short_name(self) -> String {
        short_name(self.as_str_name(), "RUN_STATUS_")
    }
}

impl proto::Phase {
    /// `snapshot`, `archive`, ...
    pub fn short_name(self) -> String {
        short_name(self.as_str_name(), "PHASE_")
    }
}

/// The version of this build, shared by the daemon and the client.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use super::proto;

    #[test]
    fn enum_short_names() {
        assert_eq!(proto::RunKind::Backup.short_name(), "backup");
        assert_eq!(proto::RunStatus::Cancelled.short_name(), "cancelled");
        assert_eq!(proto::Phase::Snapshot.short_name(), "snapshot");
    }
}
