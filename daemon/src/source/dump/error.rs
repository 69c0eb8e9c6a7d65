//! [`DbError`], the one error type of the database-server sources (PostgreSQL,
//! MariaDB); the daemon wraps it as [`crate::source::SourceError::Database`].
//!
//! Every variant renders as one sentence a sysadmin understands, naming the database,
//! tool or file involved. Text that came from a tool or a server (stderr, messages)
//! has been through [`super::scrub::Scrubber`] before it is stored in a variant, so
//! neither `Display` nor `Debug` can carry a password.

use std::path::PathBuf;

/// What kind of failure an error is; the daemon maps it onto its own error kinds
/// (and gRPC codes) without matching on every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The job's settings are wrong (URI, passfile, options file, names).
    Invalid,
    /// A client tool is missing or unusable.
    ToolMissing,
    /// The database (or a database we were told to use) does not exist.
    NotFound,
    /// Something already exists or is in use (target database, other sessions).
    Conflict,
    /// The source cannot be backed up as configured (non-transactional tables).
    Precondition,
    /// A tool or the server failed; the message holds its own words.
    Failed,
    /// A dump file does not validate.
    DataLoss,
    /// The operation was cancelled.
    Cancelled,
    /// Local file system trouble (staging files).
    Io,
}

/// Why an operation on a PostgreSQL or MariaDB source failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{tool} was not found {searched}; {hint}")]
    ToolMissing {
        tool: &'static str,
        /// Where we looked, as a phrase ("in /usr/lib/postgresql/15/bin").
        searched: String,
        hint: &'static str,
    },
    #[error("{tool} ({}) does not work: {detail}", path.display())]
    ToolUnusable {
        tool: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "{tool} {tool_major} cannot dump database '{database}' on a PostgreSQL {server_major} server; install the PostgreSQL {server_major} client tools and point pg-bin-dir at them"
    )]
    ToolTooOld {
        tool: &'static str,
        tool_major: u32,
        server_major: u32,
        database: String,
    },
    /// A setting of the job is wrong; the text says which and how to fix it.
    #[error("{0}")]
    Config(String),
    #[error("cannot start {tool} ({}): {source}", path.display())]
    Spawn {
        tool: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tool exited unsuccessfully; `detail` is its scrubbed stderr, condensed.
    #[error("{action} failed: {tool} {status}{}", colon(detail))]
    Tool {
        action: String,
        tool: &'static str,
        status: String,
        detail: String,
    },
    #[error("{action} failed: database '{database}' does not exist{}", colon(detail))]
    DatabaseMissing {
        action: String,
        database: String,
        detail: String,
    },
    #[error("{action} failed: the server is not reachable{}", colon(detail))]
    Unreachable { action: String, detail: String },
    #[error("{action} failed: {tool} printed something unexpected: {detail}")]
    Unexpected {
        action: String,
        tool: &'static str,
        detail: String,
    },
    #[error("the dump {} is not valid: {reason}", path.display())]
    InvalidDump { path: PathBuf, reason: String },
    #[error(
        "database '{database}' has tables that are not transactional ({}), so a --single-transaction dump would not be consistent; convert them to InnoDB or set allow-non-transactional = true for this job",
        tables.join(", ")
    )]
    NonTransactional {
        database: String,
        /// `table (ENGINE)` for each offending table.
        tables: Vec<String>,
    },
    #[error(
        "database '{database}' is in use by {} other session(s) ({}); stop the application first (e.g. with a before-restore hook) or use --force",
        sessions.len(),
        describe_sessions(sessions)
    )]
    InUse {
        database: String,
        sessions: Vec<super::Session>,
    },
    #[error("database '{database}' already exists; {hint}")]
    Exists { database: String, hint: String },
    #[error("{action} was cancelled")]
    Cancelled { action: String },
    #[error("{action} took longer than {seconds} s and was stopped")]
    TimedOut { action: String, seconds: u64 },
    #[error("{action} failed: its output could not be written: {source}")]
    Output {
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// An in-place swap failed; `outcome` says whether the old state is back.
    #[error("the swap of database '{live}' failed ({cause}); {outcome}")]
    Swap {
        live: String,
        cause: Box<DbError>,
        outcome: super::swap::SwapFailure,
    },
    #[error("the restore journal of database '{database}' could not be written: {source}")]
    Journal {
        database: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn colon(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn describe_sessions(sessions: &[super::Session]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = sessions.iter().take(SHOWN).map(|s| s.to_string()).collect();
    if sessions.len() > SHOWN {
        parts.push(format!("{} more", sessions.len() - SHOWN));
    }
    parts.join(", ")
}

impl DbError {
    /// The kind of failure, for mapping onto the daemon's error kinds.
    pub fn kind(&self) -> DbErrorKind {
        match self {
            DbError::ToolMissing { .. } | DbError::ToolUnusable { .. } | DbError::ToolTooOld { .. } => {
                DbErrorKind::ToolMissing
            }
            DbError::Config(_) => DbErrorKind::Invalid,
            DbError::DatabaseMissing { .. } => DbErrorKind::NotFound,
            DbError::InUse { .. } | DbError::Exists { .. } => DbErrorKind::Conflict,
            DbError::NonTransactional { .. } => DbErrorKind::Precondition,
            DbError::InvalidDump { .. } => DbErrorKind::DataLoss,
            DbError::Cancelled { .. } => DbErrorKind::Cancelled,
            DbError::Io { .. } | DbError::Output { .. } | DbError::Journal { .. } => DbErrorKind::Io,
            DbError::Swap { cause, .. } => cause.kind(),
            DbError::Spawn { .. }
            | DbError::Tool { .. }
            | DbError::Unreachable { .. }
            | DbError::Unexpected { .. }
            | DbError::TimedOut { .. } => DbErrorKind::Failed,
        }
    }

    pub(crate) fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DbError {
        let path = path.to_owned();
        move |source| DbError::Io { what, path, source }
    }
}
