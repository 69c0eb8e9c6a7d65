//! Manifest format-version 1 (written by Coffer before stage 2), read-only.
//!
//! Version 1 describes only SQLite sources, without a `kind`, and keeps the SQLite
//! library version at the top level. It is parsed into the current model
//! ([`SourceInfo::Sqlite`](super::SourceInfo)) and written back in its own shape (a
//! pin rewrites a sidecar), so a v1 archive and its sidecar keep agreeing forever.

use serde::{Deserialize, Serialize};

use super::SqliteInfo;

/// The v1 `source` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourceV1 {
    pub path: String,
    pub page_size: u64,
    pub page_count: u64,
    pub user_version: i64,
    pub application_id: i64,
    pub journal_mode: String,
    pub snapshot_method: String,
}

impl SourceV1 {
    /// The current model of this source, with the manifest's top-level SQLite version.
    pub fn upgrade(self, sqlite_version: String) -> SqliteInfo {
        SqliteInfo {
            path: self.path,
            sqlite_version,
            page_size: self.page_size,
            page_count: self.page_count,
            user_version: self.user_version,
            application_id: self.application_id,
            journal_mode: self.journal_mode,
            snapshot_method: self.snapshot_method,
        }
    }

    /// The v1 shape of `info` and the SQLite version that goes to the top level.
    pub fn downgrade(info: SqliteInfo) -> (SourceV1, String) {
        (
            SourceV1 {
                path: info.path,
                page_size: info.page_size,
                page_count: info.page_count,
                user_version: info.user_version,
                application_id: info.application_id,
                journal_mode: info.journal_mode,
                snapshot_method: info.snapshot_method,
            },
            info.sqlite_version,
        )
    }
}
