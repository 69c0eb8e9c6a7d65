//! The MariaDB source: `mariadb = "shop"` with `mariadb-options-file`.
//!
//! [`MySource`] is the job's [`Source`]: each backup finds the client tools, probes
//! the server (version, database and data size: the disk-space estimate), refuses
//! non-transactional tables unless allowed, and dumps on its own thread into the
//! run's staging directory ([`DumpSnapshot`]); the media follow the dump (mariadb-dump
//! cannot say when its snapshot is taken). [`Mariadb`] is the server as the
//! operations use it ([`DbServer`]): restore into a new schema, sessions, the
//! in-place swap, deep verify. Every tool gets the job's options file first
//! (`--defaults-extra-file`, [`settings`]); SQL goes to `mariadb --batch` on stdin.
//!
//! - [`settings`]: the database and options file, and the job's known secrets.
//! - [`dump`]: `mariadb-dump` into the spool, and validation (the trailer).
//! - [`restore`]: restoring into a new schema; `mariadb-check`; deep verify.
//! - [`swap`]: sessions and the in-place swap by one atomic `RENAME TABLE`.

pub mod dump;
pub mod restore;
pub mod settings;
pub mod swap;

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use settings::MariaSettings;

use super::dump::names::{self, my_ident, my_literal};
use super::dump::run::{self, Control, Input, Job, never_cancelled};
use super::dump::tools::MariaTools;
use super::dump::{
    DbError, DbServer, DumpCheck, DumpSnapshot, ProbeFacts, ProbedOnce, Recovered, RestoreOptions, Scratch,
    Scrubber, Session, SwapRecord, VerifyOutcome,
};
use super::{Estimate, MediaOrder, Snapshot, Source, SourceError};
use crate::config::{MariadbConfig, ServerKind};

/// How long an administrative script may take.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a probe or a query may take.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Prefix of every script we write ourselves: our literals escape backslashes.
const SCRIPT_PREFIX: &str =
    "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '');\n";
/// Table types that `RENAME TABLE` moves (views are recreated instead).
pub(super) const MOVABLE: &str = "('BASE TABLE', 'SYSTEM VERSIONED', 'SEQUENCE')";

/// A MariaDB job's source.
pub struct MySource {
    config: MariadbConfig,
    probed: ProbedOnce<Mariadb>,
}

impl MySource {
    pub fn new(config: MariadbConfig) -> MySource {
        MySource {
            config,
            probed: ProbedOnce::new(),
        }
    }

    /// The job's server: its tools (found now, versions read) and settings.
    pub fn server(&self) -> Result<Mariadb, DbError> {
        let tools = MariaTools::find(self.config.bin_dir.as_deref())?;
        Ok(Mariadb::new(MariaSettings::new(&self.config)?, tools))
    }
}

impl Source for MySource {
    fn describe(&self) -> String {
        format!("MariaDB database '{}'", self.config.database)
    }

    /// Finds the tools and checks the options file; no connection (start-up must not
    /// wait for a server that is down).
    fn probe(&self) -> Result<(), SourceError> {
        self.server().map(drop).map_err(SourceError::Database)
    }

    fn problem(&self) -> Option<String> {
        let found = MariaTools::locate(self.config.bin_dir.as_deref())
            .and_then(|()| MariaSettings::new(&self.config).map(drop));
        found.err().map(|e| e.to_string())
    }

    fn estimate(&self) -> Estimate {
        match self.probed.facts(|| self.server()) {
            // A plain-SQL dump of InnoDB data is about its data length (hex blobs
            // double); data + index length bounds it well enough for the guard.
            Ok(facts) => Estimate {
                staging: facts.size_bytes.saturating_mul(2),
                archive: facts.size_bytes,
            },
            Err(e) => {
                tracing::debug!("no size estimate of {}: {e}", self.describe());
                Estimate::default()
            }
        }
    }

    fn begin(&self, staging: &Path, cancel: &CancellationToken) -> Result<Box<dyn Snapshot>, SourceError> {
        let (server, facts) = self.probed.take_or(|| self.server())?;
        server.check_transactional()?;
        let estimate = facts.data_bytes;
        let database = server.database().to_owned();
        let snapshot = DumpSnapshot::start(
            ServerKind::Mariadb,
            &database,
            staging,
            MediaOrder::AfterDatabase,
            estimate,
            cancel,
            move |task| task.run(|ctl| server.dump_file(&task.spool, facts, ctl)),
        )?;
        Ok(Box::new(snapshot))
    }
}

/// A MariaDB server as a job reaches it: settings plus the tools.
#[derive(Debug, Clone)]
pub struct Mariadb {
    settings: MariaSettings,
    tools: MariaTools,
}

/// Undoes the escaping of `mariadb --batch` output.
fn unescape_batch(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('0') => out.push('\0'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Mariadb {
    pub fn new(settings: MariaSettings, tools: MariaTools) -> Mariadb {
        Mariadb { settings, tools }
    }

    pub fn database(&self) -> &str {
        &self.settings.database
    }

    pub fn scrubber(&self) -> &Scrubber {
        &self.settings.scrubber
    }

    /// The name of a scratch schema of this job's database.
    pub fn scratch_name(&self, role: Scratch) -> String {
        names::derived(self.database(), role, ServerKind::Mariadb)
    }

    /// `--defaults-extra-file=FILE`, which must come first.
    pub(super) fn defaults(&self) -> Vec<OsString> {
        match &self.settings.options_file {
            Some(path) => {
                let mut arg = OsString::from("--defaults-extra-file=");
                arg.push(path);
                vec![arg]
            }
            None => Vec::new(),
        }
    }

    pub(super) fn client_job(&self, database: Option<&str>, action: String) -> Job<'_> {
        let mut job = Job::new(&self.tools.client, action).args(self.defaults()).args([
            "--batch",
            "--skip-column-names",
            "--binary-mode",
            "--default-character-set=utf8mb4",
        ]);
        if let Some(db) = database {
            job = job.arg(format!("--database={db}"));
        }
        job
    }

    /// Runs our own `sql` with the client (in `database` if given), returning rows.
    pub(super) fn sql(
        &self,
        database: Option<&str>,
        action: String,
        sql: &str,
        timeout: Duration,
    ) -> Result<Vec<Vec<String>>, DbError> {
        let script = format!("{SCRIPT_PREFIX}{sql}\n");
        let job = self
            .client_job(database, action)
            .stdin(Input::Bytes(script.as_bytes()))
            .timeout(timeout);
        let out = run::run(job, &mut Control::cancel_only(&never_cancelled), self.scrubber())?;
        Ok(out
            .text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(unescape_batch).collect())
            .collect())
    }

    pub(super) fn number(action: &str, value: Option<&String>) -> Result<u64, DbError> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| DbError::Unexpected {
                action: action.to_owned(),
                tool: "mariadb",
                detail: format!("'{}' is not a number", value.map(String::as_str).unwrap_or("")),
            })
    }

    /// Server version, database name and sizes (see [`ProbeFacts`]).
    pub fn probe(&self) -> Result<ProbeFacts, DbError> {
        let action = format!("connecting to database '{}'", self.database());
        let rows = self.sql(
            Some(self.database()),
            action.clone(),
            "SELECT VERSION(), DATABASE(), \
             (SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()), \
             (SELECT COALESCE(SUM(DATA_LENGTH), 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE());",
            QUERY_TIMEOUT,
        )?;
        let row = rows
            .first()
            .filter(|r| r.len() == 4)
            .ok_or_else(|| DbError::Unexpected {
                action: action.clone(),
                tool: "mariadb",
                detail: "not one row of four values".into(),
            })?;
        Ok(ProbeFacts {
            kind: ServerKind::Mariadb,
            server_version: row[0].clone(),
            database: row[1].clone(),
            size_bytes: Self::number(&action, row.get(2))?,
            data_bytes: Self::number(&action, row.get(3))?,
            tool_version: self.tools.version.clone(),
        })
    }

    /// Whether schema `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool, DbError> {
        let rows = self.sql(
            None,
            format!("looking up database '{name}'"),
            &format!(
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
                my_literal(name)
            ),
            QUERY_TIMEOUT,
        )?;
        Ok(!rows.is_empty())
    }

    /// Drops schema `name` if it exists.
    pub fn drop_database(&self, name: &str) -> Result<(), DbError> {
        self.sql(
            None,
            format!("dropping database '{name}'"),
            &format!("DROP DATABASE IF EXISTS {};", my_ident(name)),
            ADMIN_TIMEOUT,
        )?;
        Ok(())
    }
}

impl DbServer for Mariadb {
    fn kind(&self) -> ServerKind {
        ServerKind::Mariadb
    }

    fn database(&self) -> &str {
        Mariadb::database(self)
    }

    fn scrubber(&self) -> &Scrubber {
        Mariadb::scrubber(self)
    }

    fn scratch_name(&self, role: Scratch) -> String {
        Mariadb::scratch_name(self, role)
    }

    fn probe(&self) -> Result<ProbeFacts, DbError> {
        Mariadb::probe(self)
    }

    fn validate(&self, dump: &Path) -> Result<DumpCheck, DbError> {
        Mariadb::validate(self, dump)
    }

    fn exists(&self, name: &str) -> Result<bool, DbError> {
        Mariadb::exists(self, name)
    }

    fn drop_database(&self, name: &str) -> Result<(), DbError> {
        Mariadb::drop_database(self, name)
    }

    fn restore_into(
        &self,
        dump: &Path,
        target: &str,
        opts: &RestoreOptions,
        ctl: &mut Control<'_>,
    ) -> Result<(), DbError> {
        Mariadb::restore_into(self, dump, target, opts, ctl)
    }

    fn check(&self, database: &str, ctl: &mut Control<'_>) -> Result<u64, DbError> {
        Mariadb::check(self, database, ctl).map(|(tables, _)| tables)
    }

    fn other_sessions(&self, database: &str) -> Result<Vec<Session>, DbError> {
        Mariadb::other_sessions(self, database)
    }

    fn prepare_swap(&self, force: bool, staging: &Path) -> Result<SwapRecord, DbError> {
        Mariadb::prepare_swap(self, force, staging)
    }

    fn swap_step(&self, record: &SwapRecord) -> Result<(), DbError> {
        Mariadb::swap_step(self, record)
    }

    fn rollback(&self, record: &SwapRecord) -> Result<(), DbError> {
        Mariadb::rollback(self, record)
    }

    fn recover(&self, record: &SwapRecord) -> Result<Recovered, DbError> {
        Mariadb::recover(self, record)
    }

    fn verify_deep(&self, dump: &Path, ctl: &mut Control<'_>) -> Result<VerifyOutcome, DbError> {
        Mariadb::verify_deep(self, dump, ctl)
    }

    fn query_value(&self, database: &str, sql: &str) -> Result<String, DbError> {
        let action = format!("a check in database '{database}'");
        let rows = self.sql(Some(database), action.clone(), sql, QUERY_TIMEOUT)?;
        match rows.as_slice() {
            [row] if row.len() == 1 => Ok(row[0].clone()),
            _ => Err(DbError::Unexpected {
                action,
                tool: "mariadb",
                detail: format!(
                    "the query returned {} row(s) of {} value(s); a check must return exactly one value",
                    rows.len(),
                    rows.first().map_or(0, Vec::len)
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_unescape() {
        assert_eq!(unescape_batch("a\\tb\\nc\\\\d"), "a\tb\nc\\d");
    }
}
