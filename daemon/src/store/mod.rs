//! Where backups are kept: the [`Store`] seam.
//!
//! A store holds complete backups — an archive and its sidecar, named by job and id —
//! and can list, read and remove them. The local backup directory ([`local`]) is one;
//! offsite object stores ([`s3`], configured as `[[store]]` and held by
//! [`offsite::Offsite`]) are others. Everything that names a path under the backup
//! directory goes through [`LocalStore`], which adds what only a local store has:
//! writing archives in place (`.partial`, then commit), staging, sweeping leftovers and
//! free space. [`rekey`] is the file side of re-encrypting an archive in place: the
//! order of the replacement and its recovery at start-up.

pub mod local;
pub mod offsite;
pub mod rekey;
pub mod s3;

use std::io::Read;
use std::path::PathBuf;

pub use local::{ARCHIVE_SUFFIX, BackupPaths, ENCRYPTED_SUFFIX, LocalStore, archive_name};

use crate::manifest::Sidecar;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NoSpace(String),
    #[error("backup {id} cannot be read: its sidecar {location} is unreadable: {message}")]
    Sidecar {
        id: String,
        location: String,
        message: String,
    },
    /// An offsite store failed (its sentence names the store, never a secret).
    #[error(transparent)]
    Remote(#[from] s3::S3Error),
    /// An offsite store cannot be used at all (no credentials, bad settings).
    #[error("{0}")]
    Unusable(String),
}

impl StoreError {
    /// Wraps an io error with what was being done to which path.
    pub fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
        let path = path.to_owned();
        move |source| StoreError::Io { what, path, source }
    }
}

/// One backup a store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub job: String,
    pub id: String,
    /// Archive size in bytes.
    pub size: u64,
}

/// A place that holds complete backups (archive + sidecar).
pub trait Store: Send + Sync {
    /// The store's name: `local`, or a `[[store]]` name.
    fn name(&self) -> &str;

    /// Every complete backup (archive and sidecar both present), of `job` or of all.
    fn list(&self, job: Option<&str>) -> Result<Vec<Listed>, StoreError>;

    /// A backup's sidecar, parsed and validated.
    fn sidecar(&self, job: &str, id: &str) -> Result<Sidecar, StoreError>;

    /// A backup's archive, read from its start.
    fn open_archive(&self, job: &str, id: &str) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Removes a backup. Locally the archive goes first, then the sidecar (a sidecar
    /// left by a crash is swept at start-up); in an object store the sidecar goes first,
    /// so that a listed sidecar always means a complete archive.
    fn remove(&self, job: &str, id: &str) -> Result<(), StoreError>;
}
