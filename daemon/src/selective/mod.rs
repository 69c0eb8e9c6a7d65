//! Selective export and import of SQLite rows and media files (`[[job.export]]`):
//! the logic, with no knowledge of jobs, archives, the catalog or gRPC. The config
//! loader validates profiles with it, `ops::export` and `ops::import` drive it; it
//! uses nothing of the daemon but [`crate::fsutil`] (the import journal's writes).
//!
//! # Layout
//! - [`profile`]: the `[[job.export]]` config structs, syntax validation, and
//!   validated parameter values.
//! - [`graph`]: a profile resolved on a live schema — tables, references
//!   (declared and profile-named), the `follow-foreign-keys` closure, dependency order.
//! - [`select`]: export, database side: selected rows (+ parents) into a new SQLite file.
//! - [`media`]: export media selection; import media plan, crash-safe apply with undo.
//! - [`import`]: hostile export file opening, planning (new / identical /
//!   conflicting → skip / overwrite / rename), dry run, apply in one transaction,
//!   and the journal ([`import::journal`]) that makes an interrupted import's media
//!   recoverable at start-up.
//! - `sql`: identifier quoting, a hashable SQLite value, schema introspection.
//!
//! # Flow
//! Export: `ExportProfile::from_raw` (config load) → `ParamValues::new` →
//! [`select::export_database`] on a snapshot + [`media::select_media`] → the daemon
//! packs `db/<name>`, `media/<n>/...` and a v2 manifest into a `.tar.zst`.
//!
//! Import: the daemon verifies and extracts the file, looks up the target job's
//! profile by the manifest's profile name, calls [`import::dry_run`], and for a real
//! import takes the safety backup and calls [`import::run`] with an
//! [`import::ImportRequest`] and a [`import::JournalTarget`].

pub mod graph;
pub mod import;
pub mod media;
pub mod profile;
pub mod select;
pub mod sql;

#[cfg(test)]
mod tests;

use serde::Serialize;

/// Why an export failed: its parameters, its rows, or its files.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error(transparent)]
    Select(#[from] select::SelectError),
    #[error(transparent)]
    Media(#[from] media::MediaError),
}

/// How an import handles rows and files that already exist in another form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Keep what exists.
    Skip,
    /// Replace what exists with the file's version.
    Overwrite,
    /// Import the file's version next to what exists, under new keys/names.
    Rename,
}

impl std::str::FromStr for ConflictPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "overwrite" => Ok(Self::Overwrite),
            "rename" => Ok(Self::Rename),
            other => Err(format!(
                "--on-conflict must be skip, overwrite or rename, not {other:?}"
            )),
        }
    }
}

impl std::fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictPolicy::Skip => "skip",
            ConflictPolicy::Overwrite => "overwrite",
            ConflictPolicy::Rename => "rename",
        })
    }
}
