//! The daemon's own SQLite database, `<state-dir>/catalog.db`: backups, their offsite
//! locations, runs and the audit trail.
//!
//! The catalog is an index, not the source of truth: every archive has a sidecar
//! (`<id>.json`) beside it, and [`Catalog::reconcile`] makes the catalog agree with the
//! local store at start-up (see [`reconcile`]), so deleting catalog.db loses nothing.
//! The schema is versioned and migrated at open ([`schema`]).
//!
//! - [`backups`]: catalogued backups ([`BackupRecord`]).
//! - [`runs`]: every run of every kind ([`RunRecord`]).
//! - [`audit`]: the audit trail ([`AuditRecord`]).
//! - [`locations`]: copies in offsite stores ([`LocationRecord`]) and the copy queue.
//!
//! One connection behind a mutex; every method blocks, so async callers use
//! `spawn_blocking`.

pub mod audit;
pub mod backups;
pub mod locations;
pub mod reconcile;
pub mod runs;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, params};

pub use audit::AuditRecord;
pub use backups::{BackupRecord, JobStats, created_at};
pub use locations::{CopiedFacts, FoundRemote, LocationRecord, LocationState, StoreReconciled};
pub use reconcile::Reconciled;
pub use runs::{RunEnd, RunRecord};

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog {path} cannot be opened")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the catalog {path} was written by a newer cofferd (schema version {version}; this build knows up to {known}); upgrade cofferd, or move the catalog away to have it rebuilt from the backup directory"
    )]
    Newer { path: PathBuf, version: i64, known: i64 },
    #[error("the catalog failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the catalog holds an unreadable record for {id}: {message}")]
    Corrupt { id: String, message: String },
    #[error("cannot reconcile the catalog with {path}")]
    Scan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CatalogError {
    /// Whether the failure was the disk filling up.
    pub fn is_disk_full(&self) -> bool {
        match self {
            CatalogError::Sqlite(e) | CatalogError::Open { source: e, .. } => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            CatalogError::Scan { source, .. } => source.raw_os_error() == Some(nix::libc::ENOSPC),
            _ => false,
        }
    }
}

/// The catalog database.
pub struct Catalog {
    conn: Mutex<Connection>,
    /// Ends of runs the database could not take (its disk was full): retried before
    /// every later catalog operation, and read in place of their rows meanwhile.
    unrecorded: Mutex<Vec<RunRecord>>,
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and migrates its schema.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let open_err = |source| CatalogError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL keeps readers (list, status) from waiting on a run's writes. NORMAL
        // sync may lose the last commit on power loss; reconcile restores it from
        // the sidecars.
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(open_err)?;
        schema::migrate(&mut conn, path)?;
        Ok(Catalog {
            conn: Mutex::new(conn),
            unrecorded: Mutex::new(Vec::new()),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent.
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.unrecorded().retain(|r| {
            conn.execute(
                runs::UPDATE_RUN,
                params![
                    r.id,
                    r.status.as_str(),
                    r.finished_at,
                    r.error,
                    r.backup_id,
                    r.bytes as i64
                ],
            )
            .is_err()
        });
        conn
    }

    fn unrecorded(&self) -> MutexGuard<'_, Vec<RunRecord>> {
        self.unrecorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
