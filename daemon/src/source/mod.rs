//! Where a backup's database part comes from: the [`Source`] seam, and the media walk.
//!
//! A [`Source`] is built from a job's config ([`for_job`]). A backup asks it to
//! [`Source::begin`] a snapshot into the run's staging directory; the [`Snapshot`] then
//! says when its consistent point is fixed ([`Snapshot::wait_point`]) and whether the
//! media are archived while it finishes (a `VACUUM INTO` copy, a dump being written)
//! or after its entries (a page stream holding a read transaction), and finally adds
//! its entries to the archive ([`Snapshot::archive`]), returning the facts the
//! manifest records. A dump-based source is the same shape: `begin` starts the tool,
//! `archive` adds the validated dump.
//!
//! - [`sqlite`]: `VACUUM INTO` and page-stream snapshots, checks of copies.
//! - [`postgres`], [`mariadb`]: dumps of a database server through its client tools,
//!   and the server as restores, deep verify and drills use it ([`dump::DbServer`],
//!   [`server_for`]); [`dump`]: what the two share.
//! - [`media`]: walking media directories into archive order (separate from the
//!   database source: every kind of job has media).

pub mod dump;
pub mod mariadb;
pub mod media;
pub mod postgres;
pub mod sqlite;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::archive::{ArchiveError, ArchiveWriter};
use crate::config::{JobConfig, SourceConfig};
use crate::manifest::SourceInfo;

/// Why a snapshot or a check of a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("database {path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not an SQLite database")]
    NotSqlite { path: PathBuf },
    #[error("database {path} is empty (0 pages); check the job's database path")]
    Empty { path: PathBuf },
    #[error("database {path} stayed locked by another connection for longer than the busy timeout ({})", humantime::format_duration(*timeout))]
    Locked { path: PathBuf, timeout: Duration },
    #[error("the snapshot of {path} was cancelled")]
    Cancelled { path: PathBuf },
    #[error("the copy {path} failed its integrity check: {message}")]
    Check { path: PathBuf, message: String },
    #[error("SQLite failed on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the snapshot of {path} failed: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the snapshot into the archive failed; the caller names the archive.
    #[error(transparent)]
    Archive(ArchiveError),
    /// A database server or its client tools failed (PostgreSQL, MariaDB).
    #[error(transparent)]
    Database(#[from] dump::DbError),
    /// The job's source is not of the kind an operation needs.
    #[error("{0}")]
    WrongKind(String),
}

impl SourceError {
    pub(crate) fn from_sqlite(path: &Path, timeout: Duration, source: rusqlite::Error) -> Self {
        let path = path.to_owned();
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => SourceError::NotSqlite { path },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                SourceError::Locked { path, timeout }
            }
            Some(ErrorCode::OperationInterrupted) => SourceError::Cancelled { path },
            _ => SourceError::Sqlite { path, source },
        }
    }

    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SourceError {
        let path = path.to_owned();
        move |source| SourceError::Io { what, path, source }
    }

    /// Whether the failure was the disk filling up.
    pub fn is_disk_full(&self) -> bool {
        match self {
            SourceError::Sqlite { source, .. } => source.sqlite_error_code() == Some(ErrorCode::DiskFull),
            SourceError::Io { source, .. } => source.raw_os_error() == Some(nix::libc::ENOSPC),
            SourceError::Archive(e) => e.is_disk_full(),
            SourceError::Database(
                dump::DbError::Io { source, .. } | dump::DbError::Output { source, .. },
            ) => source.raw_os_error() == Some(nix::libc::ENOSPC),
            _ => false,
        }
    }
}

/// Disk space a snapshot may need: in staging, and in the archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub staging: u64,
    pub archive: u64,
}

/// When a backup archives the media relative to the database entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaOrder {
    /// While the snapshot finishes (after its point): the media first, then the
    /// database entries. The copy or dump runs on its own thread meanwhile.
    DuringSnapshot,
    /// After the database entries (the snapshot holds the source until archived).
    AfterDatabase,
}

/// How far a snapshot has got, in bytes: the copy (or dump) being made, then its
/// entries being added to the archive. `total` is the best estimate known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Copying { done: u64, total: u64 },
    Archived { done: u64, total: u64 },
}

/// A job's database, by kind.
pub trait Source: Send + Sync {
    /// What the snapshot phase names, e.g. "database /var/lib/app/app.db".
    fn describe(&self) -> String;

    /// Checks that a snapshot could be taken now (start-up): opens the database.
    fn probe(&self) -> Result<(), SourceError>;

    /// Why a backup cannot start right now, from a check cheap enough for every
    /// `status` call (no connection is opened); `None` when nothing is known wrong.
    fn problem(&self) -> Option<String>;

    /// Disk space a snapshot may need.
    fn estimate(&self) -> Estimate;

    /// Starts a snapshot whose files go into `staging` (a fresh directory of the run).
    fn begin(&self, staging: &Path, cancel: &CancellationToken) -> Result<Box<dyn Snapshot>, SourceError>;
}

/// A snapshot being taken.
pub trait Snapshot: Send {
    /// Whether the media go before or after this snapshot's entries.
    fn media_order(&self) -> MediaOrder;

    /// Blocks until the snapshot's consistent point is fixed (media are walked after
    /// it). A snapshot that already failed says so here.
    fn wait_point(&mut self) -> Result<(), SourceError>;

    /// Whether the snapshot is still being made on another thread (a copy or a dump
    /// running beside the media).
    fn in_progress(&self) -> bool {
        false
    }

    /// Bytes this snapshot will still write to staging (known once it has begun, e.g.
    /// a page stream that must copy a rollback-journal database first).
    fn staging_needed(&self) -> u64 {
        0
    }

    /// Finishes the snapshot, checks it, and adds its entries to `writer`,
    /// reporting each [`Step`]. Returns the facts the manifest records.
    fn archive(
        self: Box<Self>,
        writer: &mut ArchiveWriter,
        progress: &mut dyn FnMut(Step),
    ) -> Result<SourceInfo, SourceError>;
}

/// The source of `job`.
pub fn for_job(job: &JobConfig) -> Box<dyn Source> {
    match &job.source {
        SourceConfig::Sqlite(config) if job.encryption.is_some() => {
            Box::new(sqlite::SqliteSource::encrypted(config.clone()))
        }
        SourceConfig::Sqlite(config) => Box::new(sqlite::SqliteSource::new(config.clone())),
        SourceConfig::Postgres(config) => {
            Box::new(postgres::PgSource::new(config.clone(), job.compression_level))
        }
        SourceConfig::Mariadb(config) => Box::new(mariadb::MySource::new(config.clone())),
    }
}

/// Checks a copy of a backup's database part as its kind requires: SQLite's
/// integrity and foreign-key checks; a dump's validation without a server
/// (PostgreSQL: `pg_restore --list`, with the tools of `job` if it is a PostgreSQL
/// job, else those on `$PATH`; MariaDB: its head and trailer).
pub fn check_copy(source: &SourceInfo, copy: &Path, job: Option<&JobConfig>) -> Result<(), SourceError> {
    match source {
        SourceInfo::Sqlite(_) => sqlite::check(copy, true),
        SourceInfo::Postgres(_) => {
            let bin_dir = job.and_then(|j| match &j.source {
                SourceConfig::Postgres(p) => p.bin_dir.as_deref(),
                _ => None,
            });
            let tools = dump::tools::PgTools::find(bin_dir)?;
            postgres::dump::validate_file(&tools, copy)?;
            Ok(())
        }
        SourceInfo::Mariadb(_) => {
            mariadb::dump::validate_file(copy)?;
            Ok(())
        }
    }
}

/// The database server of `job` (its tools found, its passfile or options file
/// read), for restores, deep verify, drills and start-up recovery; an SQLite job has
/// none.
pub fn server_for(job: &JobConfig) -> Result<Box<dyn dump::DbServer>, SourceError> {
    match &job.source {
        SourceConfig::Sqlite(_) => Err(SourceError::WrongKind(format!(
            "job '{}' backs up an SQLite database, not a database server",
            job.name
        ))),
        SourceConfig::Postgres(config) => Ok(Box::new(
            postgres::PgSource::new(config.clone(), job.compression_level).server()?,
        )),
        SourceConfig::Mariadb(config) => Ok(Box::new(mariadb::MySource::new(config.clone()).server()?)),
    }
}
