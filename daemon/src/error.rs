//! The daemon's one error type, [`Error`], and what kind of failure each is.
//!
//! Every operation in `ops/` returns `Result<_, Error>`. The layers below have errors of
//! their own (archive, catalog, source, store); they are wrapped here with the context
//! of the operation, never re-worded. [`Error::kind`] sorts every error into one
//! [`ErrorKind`], and the API layer maps kinds to gRPC codes in exactly one place
//! (`api::convert::status_of`), so the same failure gets the same code wherever it
//! happens. Messages are sentences for the admin; [`Error::describe`] adds the sources
//! not already in the sentence.

use std::path::{Path, PathBuf};

use coffer_common::ids;

use crate::archive::ArchiveError;
use crate::archive::crypt::CryptError;
use crate::catalog::CatalogError;
use crate::selective::ExportError;
use crate::selective::graph::GraphError;
use crate::selective::import::ImportError;
use crate::selective::media::MediaError;
use crate::selective::select::SelectError;
use crate::source::SourceError;
use crate::source::dump::{DbError, DbErrorKind};
use crate::store::StoreError;
use crate::store::s3::{S3Error, S3ErrorKind};

/// What kind of failure an [`Error`] is; decides the gRPC code and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A job or backup that does not exist.
    NotFound,
    /// A request that can never succeed as given (bad id, bad argument).
    Invalid,
    /// Another run or another program holds what this needs (busy job, id taken,
    /// database in use).
    Conflict,
    /// The system is not in a state that allows it (pinned backup, missing database,
    /// failed hook, permission).
    Precondition,
    /// Stored data is damaged or does not match its records.
    DataLoss,
    /// A disk is (nearly) full.
    NoSpace,
    /// Stopped by shutdown.
    Cancelled,
    /// Anything else: a bug or an unexpected system failure.
    Internal,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("there is no job named '{0}'")]
    UnknownJob(String),
    #[error("there is no backup '{0}'")]
    NoSuchBackup(String),
    #[error("job '{0}' has no backups")]
    NoBackups(String),
    #[error("there are no backups")]
    NoBackupsAtAll,
    #[error(transparent)]
    InvalidId(#[from] ids::IdError),
    #[error("backup {0} already exists")]
    AlreadyExists(String),
    #[error("a backup of job '{0}' is already running")]
    Busy(String),
    #[error("backup {0} is protected (pinned); unpin it first")]
    Protected(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{context}: {source}")]
    Archive {
        context: String,
        #[source]
        source: ArchiveError,
    },
    #[error("backup {id} cannot be read: its sidecar {} is unreadable: {message}", path.display())]
    Sidecar {
        id: String,
        path: PathBuf,
        message: String,
    },
    #[error("{0}")]
    NoSpace(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}; the operation was not started")]
    Hook(String),
    #[error("database {} is in use by another program; stop it first (e.g. with a before-restore hook) or use --force", .0.display())]
    InUse(PathBuf),
    #[error("the safety backup of the current state failed ({0}); fix it or restore with --force")]
    SafetyBackup(Box<Error>),
    #[error("the restore failed while swapping in the restored data ({source}); {}", if *rolled_back { "the previous state was put back" } else { "ROLLBACK FAILED: see the log for the paths to fix by hand" })]
    Swap {
        #[source]
        source: std::io::Error,
        rolled_back: bool,
    },
    #[error("the restore drill of backup {id} failed: {why}")]
    Drill { id: String, why: String },
    #[error("there is no store named '{0}'")]
    UnknownStore(String),
    #[error("backup {id} is not in the store '{store}'")]
    NotInStore { id: String, store: String },
    #[error("the copy of backup {id} in the store '{store}' {problem}")]
    RemoteDiffers {
        id: String,
        store: String,
        problem: String,
    },
    #[error("the operation was cancelled because cofferd is shutting down")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("the safety backup before the import failed ({0}); nothing was imported")]
    ImportSafetyBackup(Box<Error>),
    /// Keys, encryption or decryption (no identity, damaged ciphertext, ...). Boxed:
    /// it is large, and errors travel in every `Result`.
    #[error(transparent)]
    Crypt(Box<CryptError>),
}

impl From<CryptError> for Error {
    fn from(e: CryptError) -> Error {
        Error::Crypt(Box::new(e))
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Error {
        match e.kind() {
            DbErrorKind::Cancelled => Error::Cancelled,
            _ => Error::Source(SourceError::Database(e)),
        }
    }
}

impl From<crate::store::s3::S3Error> for Error {
    fn from(e: crate::store::s3::S3Error) -> Error {
        Error::Store(StoreError::Remote(e))
    }
}

impl Error {
    /// The error's sentence followed by each of its sources not already in it: what
    /// clients see and what runs record.
    pub fn describe(&self) -> String {
        coffer_common::format::error_chain(self)
    }

    /// Wraps an offsite store's error.
    pub fn from_remote(e: crate::store::s3::S3Error) -> Error {
        Error::Store(StoreError::Remote(e))
    }

    /// Wraps an io error with what was being done to which path.
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io { what, path, source }
    }

    /// Wraps an archive error with `context` (a cancelled archive is [`Error::Cancelled`]).
    pub fn archive(context: impl Into<String>) -> impl FnOnce(ArchiveError) -> Error {
        let context = context.into();
        move |source| match source {
            ArchiveError::Cancelled => Error::Cancelled,
            source => Error::Archive { context, source },
        }
    }

    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        if self.is_disk_full() {
            return K::NoSpace;
        }
        match self {
            Error::UnknownJob(_) | Error::NoSuchBackup(_) | Error::NoBackups(_) | Error::NoBackupsAtAll => {
                K::NotFound
            }
            Error::InvalidId(_) | Error::InvalidArgument(_) => K::Invalid,
            Error::AlreadyExists(_) | Error::Busy(_) | Error::InUse(_) => K::Conflict,
            Error::Protected(_) | Error::Hook(_) => K::Precondition,
            Error::Source(e) => source_kind(e),
            Error::Archive { source, .. } => match source {
                ArchiveError::Invalid(_) => K::DataLoss,
                // A media file the app changed while it was archived.
                ArchiveError::Changed { .. } => K::Conflict,
                ArchiveError::Source { .. } => K::Precondition,
                ArchiveError::Cancelled => K::Cancelled,
                ArchiveError::Write(_) | ArchiveError::Read(_) => K::Internal,
                ArchiveError::Crypt(e) => crypt_kind(e),
            },
            Error::Sidecar { .. } | Error::Drill { .. } => K::DataLoss,
            Error::NoSpace(_) => K::NoSpace,
            Error::Io { source, .. } | Error::Swap { source, .. } => io_kind(source),
            Error::Catalog(CatalogError::Corrupt { .. }) => K::DataLoss,
            Error::Catalog(_) => K::Internal,
            Error::Store(StoreError::Io { source, .. }) => io_kind(source),
            Error::Store(StoreError::NoSpace(_)) => K::NoSpace,
            Error::Store(StoreError::Sidecar { .. }) => K::DataLoss,
            Error::Store(StoreError::Remote(e)) => remote_kind(e),
            Error::Store(StoreError::Unusable(_)) => K::Precondition,
            Error::SafetyBackup(inner) => inner.kind(),
            Error::UnknownStore(_) | Error::NotInStore { .. } => K::NotFound,
            Error::RemoteDiffers { .. } => K::DataLoss,
            Error::Cancelled => K::Cancelled,
            Error::Internal(_) => K::Internal,
            Error::Export(e) => export_kind(e),
            Error::Import(e) => import_kind(e),
            Error::ImportSafetyBackup(inner) => inner.kind(),
            Error::Crypt(e) => crypt_kind(e),
        }
    }

    /// Whether this failure is the disk filling up.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::NoSpace(_) => true,
            Error::Archive { source, .. } => source.is_disk_full(),
            Error::Io { source, .. } | Error::Swap { source, .. } => {
                source.raw_os_error() == Some(nix::libc::ENOSPC)
            }
            Error::Source(e) => e.is_disk_full(),
            Error::Catalog(e) => e.is_disk_full(),
            Error::Store(StoreError::NoSpace(_)) => true,
            Error::Store(StoreError::Io { source, .. }) => source.raw_os_error() == Some(nix::libc::ENOSPC),
            Error::Store(StoreError::Remote(S3Error::LocalWrite { source, .. })) => {
                source.raw_os_error() == Some(nix::libc::ENOSPC)
            }
            Error::SafetyBackup(inner) | Error::ImportSafetyBackup(inner) => inner.is_disk_full(),
            Error::Export(ExportError::Select(
                SelectError::Write { source, .. } | SelectError::Output { source, .. },
            )) => sqlite_full(source),
            Error::Export(ExportError::Media(MediaError::Write { source, .. }))
            | Error::Import(ImportError::Media(MediaError::Write { source, .. }))
            | Error::Import(ImportError::Journal { source, .. }) => {
                source.raw_os_error() == Some(nix::libc::ENOSPC)
            }
            Error::Import(ImportError::Target { source, .. } | ImportError::Transaction(source)) => {
                sqlite_full(source)
            }
            Error::Crypt(c) => match &**c {
                CryptError::Write(e) | CryptError::Read(e) => e.raw_os_error() == Some(nix::libc::ENOSPC),
                _ => false,
            },
            _ => false,
        }
    }
}

fn sqlite_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

fn sqlite_kind(e: &rusqlite::Error) -> ErrorKind {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => ErrorKind::Conflict,
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
            ErrorKind::Precondition
        }
        _ => ErrorKind::Internal,
    }
}

/// The kind of a failed export: bad parameters and a profile that does not fit the
/// live schema are the caller's or the config's (Invalid).
fn export_kind(e: &ExportError) -> ErrorKind {
    match e {
        ExportError::Profile(_) => ErrorKind::Invalid,
        ExportError::Select(e) => match e {
            SelectError::Schema(GraphError::Sqlite(e)) => sqlite_kind(e),
            SelectError::Schema(_) | SelectError::BadCondition { .. } | SelectError::UnboundParam { .. } => {
                ErrorKind::Invalid
            }
            SelectError::Cancelled => ErrorKind::Cancelled,
            SelectError::Read { source, .. } => sqlite_kind(source),
            _ => ErrorKind::Internal,
        },
        ExportError::Media(e) => media_kind(e),
    }
}

fn media_kind(e: &MediaError) -> ErrorKind {
    match e {
        MediaError::Glob { .. } => ErrorKind::Invalid,
        // What an export file says about its files, refused.
        MediaError::UnknownRoot { .. } | MediaError::UnsafePath { .. } | MediaError::NotSelected { .. } => {
            ErrorKind::DataLoss
        }
        MediaError::Destination { .. } => ErrorKind::Precondition,
        MediaError::NoFreeName { .. } => ErrorKind::Conflict,
        MediaError::Walk { source, .. } | MediaError::Write { source, .. } => io_kind(source),
        MediaError::Rollback { .. } => ErrorKind::Internal,
        MediaError::Cancelled => ErrorKind::Cancelled,
    }
}

/// The kind of a failed import: a file that is damaged or hostile is DataLoss, one
/// that does not fit the target (schema, profile, constraints) Precondition.
fn import_kind(e: &ImportError) -> ErrorKind {
    use ImportError as I;
    match e {
        I::ExportDbUnreadable { .. }
        | I::ExportDbDamaged { .. }
        | I::ForeignObject { .. }
        | I::TableNotAllowed { .. }
        | I::ExportChanged { .. } => ErrorKind::DataLoss,
        I::Params(_)
        | I::ColumnMissing { .. }
        | I::ColumnExtra { .. }
        | I::NoRowIdentity { .. }
        | I::WriteRow { .. }
        | I::ForeignKey { .. }
        | I::NoFreeValue { .. } => ErrorKind::Precondition,
        I::Schema(GraphError::Sqlite(e)) => sqlite_kind(e),
        I::Schema(_) => ErrorKind::Precondition,
        I::Media(e) => media_kind(e),
        I::Blocked { .. } => ErrorKind::Conflict,
        I::Target { source, .. } | I::ReadExport { source, .. } | I::Transaction(source) => {
            sqlite_kind(source)
        }
        I::Journal { source, .. } => io_kind(source),
        I::MediaCommit(_) | I::MediaRollback(_) => ErrorKind::Internal,
        I::Cancelled => ErrorKind::Cancelled,
    }
}

/// The kind of a source failure.
fn source_kind(e: &SourceError) -> ErrorKind {
    match e {
        SourceError::Missing { .. }
        | SourceError::NotSqlite { .. }
        | SourceError::Empty { .. }
        | SourceError::Locked { .. } => ErrorKind::Precondition,
        SourceError::Cancelled { .. } | SourceError::Archive(ArchiveError::Cancelled) => ErrorKind::Cancelled,
        SourceError::Check { .. } => ErrorKind::DataLoss,
        _ if e.is_disk_full() => ErrorKind::NoSpace,
        SourceError::Database(e) => database_kind(e.kind()),
        SourceError::WrongKind(_) => ErrorKind::Precondition,
        _ => ErrorKind::Internal,
    }
}

/// The kind of a database-server failure: the server, its tools or the job's
/// settings not being as they must is a precondition, not a bug.
fn database_kind(kind: DbErrorKind) -> ErrorKind {
    match kind {
        DbErrorKind::Invalid
        | DbErrorKind::ToolMissing
        | DbErrorKind::NotFound
        | DbErrorKind::Precondition
        | DbErrorKind::Failed => ErrorKind::Precondition,
        DbErrorKind::Conflict => ErrorKind::Conflict,
        DbErrorKind::DataLoss => ErrorKind::DataLoss,
        DbErrorKind::Cancelled => ErrorKind::Cancelled,
        DbErrorKind::Io => ErrorKind::Internal,
    }
}

/// The kind of a failure of the age layer.
fn crypt_kind(e: &CryptError) -> ErrorKind {
    match e {
        // The admin has to provide a key: the archive is fine.
        CryptError::NoIdentity { .. } | CryptError::NoMatchingIdentity { .. } => ErrorKind::Precondition,
        // Config values: refused at load, so only reachable from a request.
        CryptError::NoRecipients
        | CryptError::InvalidRecipient { .. }
        | CryptError::IdentityRead { .. }
        | CryptError::IdentityPermissions { .. }
        | CryptError::IdentityTooLarge { .. }
        | CryptError::IdentityInvalid { .. }
        | CryptError::IdentityUnsupported { .. }
        | CryptError::IdentityEmpty { .. } => ErrorKind::Precondition,
        CryptError::NotAgeFile { .. }
        | CryptError::UnsupportedVersion
        | CryptError::HeaderDamaged { .. }
        | CryptError::Corrupt { .. }
        | CryptError::Truncated { .. }
        | CryptError::RekeyVerify { .. } => ErrorKind::DataLoss,
        CryptError::Read(e) | CryptError::Write(e) => io_kind(e),
        CryptError::Cancelled => ErrorKind::Cancelled,
        CryptError::Poisoned | CryptError::Encrypt(_) => ErrorKind::Internal,
    }
}

/// The kind of an offsite store's failure. An unreachable store or refused credentials
/// are preconditions (exit 1, retried later by the copier), not "unavailable": that
/// code means cofferd itself cannot be reached.
fn remote_kind(e: &S3Error) -> ErrorKind {
    match e.kind() {
        S3ErrorKind::Invalid => ErrorKind::Invalid,
        S3ErrorKind::NotFound => ErrorKind::NotFound,
        S3ErrorKind::DataLoss => ErrorKind::DataLoss,
        S3ErrorKind::Cancelled => ErrorKind::Cancelled,
        S3ErrorKind::LocalIo => ErrorKind::Internal,
        S3ErrorKind::Unavailable | S3ErrorKind::Auth | S3ErrorKind::Locked | S3ErrorKind::Rejected => {
            ErrorKind::Precondition
        }
    }
}

/// The kind of a plain io failure.
fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            ErrorKind::Precondition
        }
        _ if e.raw_os_error() == Some(nix::libc::ENOSPC) => ErrorKind::NoSpace,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_safety_backup_keeps_the_kind_of_its_cause() {
        let full = Error::Io {
            what: "cannot write the archive",
            path: PathBuf::from("/b/x.partial"),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        };
        let wrapped = Error::SafetyBackup(Box::new(full));
        assert_eq!(wrapped.kind(), ErrorKind::NoSpace);
        assert!(
            wrapped
                .to_string()
                .starts_with("the safety backup of the current state failed (")
        );
        let busy = Error::SafetyBackup(Box::new(Error::Busy("app".into())));
        assert_eq!(busy.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn kinds() {
        assert_eq!(Error::UnknownJob("x".into()).kind(), ErrorKind::NotFound);
        assert_eq!(Error::InvalidArgument("x".into()).kind(), ErrorKind::Invalid);
        assert_eq!(Error::Protected("x".into()).kind(), ErrorKind::Precondition);
        assert_eq!(
            Error::Sidecar {
                id: "a".into(),
                path: PathBuf::from("/x.json"),
                message: "bad".into()
            }
            .kind(),
            ErrorKind::DataLoss
        );
        let denied = Error::io("cannot create", Path::new("/x"))(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ));
        assert_eq!(denied.kind(), ErrorKind::Precondition);
        assert_eq!(
            Error::archive("ctx")(ArchiveError::Cancelled).kind(),
            ErrorKind::Cancelled
        );
        assert_eq!(
            Error::archive("ctx")(ArchiveError::Invalid("x".into())).kind(),
            ErrorKind::DataLoss
        );
    }
}
