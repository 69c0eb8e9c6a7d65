//! The PostgreSQL source: `postgres = "postgresql:///shop?host=/run/postgresql"`.
//!
//! [`PgSource`] is the job's [`Source`]: each backup finds the client tools
//! ([`tools`](crate::source::dump::tools)), probes the server (version, database and
//! data size: the disk-space estimate) and dumps on its own thread into the run's
//! staging directory ([`DumpSnapshot`]); the snapshot point is the moment
//! `pg_export_snapshot()` returned, so the media are archived while pg_dump runs.
//! [`Postgres`] is the server as the operations use it ([`DbServer`]): restore into a
//! new database, sessions, the in-place swap, deep verify.
//!
//! Every tool gets the job's URI (never with a password: refused at config load),
//! `-w` (never prompt), the passfile as `PGPASSFILE` ([`conn`]), `PGAPPNAME=coffer`
//! and a 10 s `PGCONNECT_TIMEOUT` unless the URI sets them. Administrative SQL
//! (CREATE/DROP/ALTER DATABASE, sessions) runs in `psql` on the maintenance database
//! `postgres` (`template1` when the job's database is `postgres` itself), with the
//! script on stdin.
//!
//! - [`conn`]: the passfile convention and the job's known secrets.
//! - [`dump`]: `pg_dump` into the spool, and validation.
//! - [`toc`]: reading a dump's table of contents and database entry.
//! - [`restore`]: restoring into a new database; deep verify.
//! - [`swap`]: sessions and the in-place swap by `ALTER DATABASE ... RENAME`.

pub mod conn;
pub mod dump;
pub mod restore;
pub mod swap;
pub mod toc;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use conn::PgConnection;
pub use dump::PgDumpOptions;

use super::dump::names::{self, pg_ident, pg_literal};
use super::dump::run::{self, Control, Input, Job, never_cancelled};
use super::dump::tools::PgTools;
use super::dump::{
    DbError, DbServer, DumpCheck, DumpSnapshot, ProbeFacts, ProbedOnce, Recovered, RestoreOptions, Scratch,
    Scrubber, Session, SwapRecord, VerifyOutcome,
};
use super::{Estimate, MediaOrder, Snapshot, Source, SourceError};
use crate::archive::FrameSpool;
use crate::config::{PostgresConfig, ServerKind};

/// Field separator of `psql -A` output (ASCII unit separator: never in our values).
const FIELD_SEP: char = '\u{1f}';
/// How long an administrative statement may take (CREATE/DROP DATABASE of a large
/// database included).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a probe or a query about sessions may take.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// libpq's connect timeout when neither the URI nor the environment sets one, so an
/// unreachable server fails a run instead of hanging it.
const CONNECT_TIMEOUT: &str = "10";

/// zstd threads compressing a dump as it arrives: none besides the thread that reads
/// it. The server's backend and pg_dump keep about one core busy meanwhile, and the
/// media are archived beside the dump by the archive's own multi-threaded encoder, so
/// worker threads here only add hand-offs and their buffers: measured on the 2-core
/// bench (`pgbench -i -s 70`, 402 MiB media), a single-threaded dump encoder was no
/// slower (database-only backups 2.9-4.2 s, pg_dump -Fc beside them 3.7-4.2 s) and
/// cofferd's peak RSS with media fell from 57-61 MiB to 49-54 MiB.
const DUMP_ZSTD_WORKERS: u32 = 1;

/// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`), if set.
fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)
}

/// A PostgreSQL job's source.
pub struct PgSource {
    config: PostgresConfig,
    /// The job's zstd level: the dump is compressed as it arrives (see [`dump`]).
    level: i32,
    probed: ProbedOnce<Postgres>,
}

impl PgSource {
    pub fn new(config: PostgresConfig, level: i32) -> PgSource {
        PgSource {
            config,
            level,
            probed: ProbedOnce::new(),
        }
    }

    /// The job's server: its tools (found now, versions read) and connection.
    pub fn server(&self) -> Result<Postgres, DbError> {
        let tools = PgTools::find(self.config.bin_dir.as_deref())?;
        let conn = PgConnection::new(&self.config, credentials_directory().as_deref())?;
        Ok(Postgres::new(conn, tools))
    }
}

impl Source for PgSource {
    fn describe(&self) -> String {
        format!("PostgreSQL database '{}'", self.config.uri.database())
    }

    /// Finds the tools and checks the passfile; no connection (start-up must not wait
    /// for a server that is down).
    fn probe(&self) -> Result<(), SourceError> {
        self.server().map(drop).map_err(SourceError::Database)
    }

    fn problem(&self) -> Option<String> {
        let found = PgTools::locate(self.config.bin_dir.as_deref())
            .and_then(|()| PgConnection::new(&self.config, credentials_directory().as_deref()).map(drop));
        found.err().map(|e| e.to_string())
    }

    fn estimate(&self) -> Estimate {
        match self.probed.facts(|| self.server()) {
            // The uncompressed dump is at most about the database's size (indexes are
            // not dumped); the archive at most the dump.
            Ok(facts) => Estimate {
                staging: facts.size_bytes,
                archive: facts.size_bytes,
            },
            // The dump says why, with the run's error; no estimate meanwhile.
            Err(e) => {
                tracing::debug!("no size estimate of {}: {e}", self.describe());
                Estimate::default()
            }
        }
    }

    fn begin(&self, staging: &Path, cancel: &CancellationToken) -> Result<Box<dyn Snapshot>, SourceError> {
        // Probed (by the estimate, a moment ago, or here) before the media are
        // touched: a server that cannot be reached or a tool that is too old fails the
        // run at once.
        let (server, facts) = self.probed.take_or(|| self.server())?;
        server.check_tool_version(&facts)?;
        let estimate = facts.data_bytes;
        let database = server.database().to_owned();
        let (level, workers) = (self.level, DUMP_ZSTD_WORKERS);
        let snapshot = DumpSnapshot::start(
            ServerKind::Postgres,
            &database,
            staging,
            MediaOrder::DuringSnapshot,
            estimate,
            cancel,
            move |task| {
                let spool = FrameSpool::create(&task.spool, level, workers)
                    .map_err(DbError::io("cannot create the dump spool", &task.spool))?;
                task.run(|ctl| {
                    server.dump_frame(spool, &PgDumpOptions::default(), facts, ctl, &mut || {
                        task.point.fix()
                    })
                })
            },
        )?;
        Ok(Box::new(snapshot))
    }
}

/// A PostgreSQL server as a job reaches it: a [`PgConnection`] plus the tools.
#[derive(Debug, Clone)]
pub struct Postgres {
    conn: PgConnection,
    tools: PgTools,
    env: Vec<(OsString, OsString)>,
}

/// Rows of `psql -A -t -F US` output.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split(FIELD_SEP).map(str::to_owned).collect())
        .collect()
}

impl Postgres {
    /// A source for `conn` using `tools`.
    pub fn new(conn: PgConnection, tools: PgTools) -> Postgres {
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        if let Some(passfile) = &conn.passfile {
            env.push(("PGPASSFILE".into(), passfile.into()));
        }
        if !conn.uri.has_param("application_name") {
            env.push(("PGAPPNAME".into(), "coffer".into()));
        }
        if !conn.uri.has_param("connect_timeout") && std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            env.push(("PGCONNECT_TIMEOUT".into(), CONNECT_TIMEOUT.into()));
        }
        Postgres { conn, tools, env }
    }

    /// The job's database.
    pub fn database(&self) -> &str {
        self.conn.database()
    }

    /// The scrubber with this job's known secrets (for the caller's own messages).
    pub fn scrubber(&self) -> &Scrubber {
        &self.conn.scrubber
    }

    /// The name of a scratch database of this job's database.
    pub fn scratch_name(&self, role: Scratch) -> String {
        names::derived(self.database(), role, ServerKind::Postgres)
    }

    pub(super) fn maintenance_db(&self) -> &'static str {
        // A database cannot be renamed or dropped from a session connected to it.
        if self.database() == "postgres" {
            "template1"
        } else {
            "postgres"
        }
    }

    pub(super) fn uri(&self, database: &str) -> String {
        self.conn.uri.for_database(database)
    }

    /// Runs `sql` with psql on `database` and returns the rows it printed.
    pub(super) fn psql(
        &self,
        database: &str,
        action: String,
        sql: &str,
        timeout: Duration,
    ) -> Result<Vec<Vec<String>>, DbError> {
        let script = format!("SET standard_conforming_strings = on;\n{sql}\n");
        let job = Job::new(&self.tools.psql, action)
            .args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--field-separator={FIELD_SEP}"))
            .arg(format!("--dbname={}", self.uri(database)))
            .args(["-f", "-"])
            .envs(&self.env)
            .stdin(Input::Bytes(script.as_bytes()))
            .timeout(timeout);
        let outcome = run::run(job, &mut Control::cancel_only(&never_cancelled), self.scrubber())?;
        Ok(rows(&outcome.text()))
    }

    pub(super) fn admin(&self, action: String, sql: &str) -> Result<Vec<Vec<String>>, DbError> {
        self.psql(self.maintenance_db(), action, sql, ADMIN_TIMEOUT)
    }

    /// Server version, database name and sizes (see [`ProbeFacts`]).
    pub fn probe(&self) -> Result<ProbeFacts, DbError> {
        let sql = "SELECT current_setting('server_version'), current_database(), \
                   pg_database_size(current_database()), \
                   (SELECT coalesce(sum(pg_relation_size(c.oid)), 0) FROM pg_class c WHERE c.relkind IN ('r', 'm', 't'));";
        let action = format!("connecting to database '{}'", self.database());
        let rows = self.psql(self.database(), action.clone(), sql, QUERY_TIMEOUT)?;
        let unexpected = |detail: &str| DbError::Unexpected {
            action: action.clone(),
            tool: "psql",
            detail: detail.to_owned(),
        };
        let row = rows
            .first()
            .filter(|r| r.len() == 4)
            .ok_or_else(|| unexpected("not one row of four values"))?;
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| unexpected(&format!("'{s}' is not a size")))
        };
        Ok(ProbeFacts {
            kind: ServerKind::Postgres,
            server_version: row[0].clone(),
            database: row[1].clone(),
            size_bytes: number(&row[2])?,
            data_bytes: number(&row[3])?,
            tool_version: self.tools.version.clone(),
        })
    }

    /// Whether database `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool, DbError> {
        let rows = self.psql(
            self.maintenance_db(),
            format!("looking up database '{name}'"),
            &format!("SELECT 1 FROM pg_database WHERE datname = {};", pg_literal(name)),
            QUERY_TIMEOUT,
        )?;
        Ok(!rows.is_empty())
    }

    /// Drops database `name` if it exists, ending its sessions (PostgreSQL 13+).
    pub fn drop_database(&self, name: &str) -> Result<(), DbError> {
        self.admin(
            format!("dropping database '{name}'"),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE);", pg_ident(name)),
        )?;
        Ok(())
    }
}

impl DbServer for Postgres {
    fn kind(&self) -> ServerKind {
        ServerKind::Postgres
    }

    fn database(&self) -> &str {
        Postgres::database(self)
    }

    fn scrubber(&self) -> &Scrubber {
        Postgres::scrubber(self)
    }

    fn scratch_name(&self, role: Scratch) -> String {
        Postgres::scratch_name(self, role)
    }

    fn probe(&self) -> Result<ProbeFacts, DbError> {
        Postgres::probe(self)
    }

    fn validate(&self, dump: &Path) -> Result<DumpCheck, DbError> {
        Postgres::validate(self, dump)
    }

    fn exists(&self, name: &str) -> Result<bool, DbError> {
        Postgres::exists(self, name)
    }

    fn drop_database(&self, name: &str) -> Result<(), DbError> {
        Postgres::drop_database(self, name)
    }

    fn restore_into(
        &self,
        dump: &Path,
        target: &str,
        opts: &RestoreOptions,
        ctl: &mut Control<'_>,
    ) -> Result<(), DbError> {
        Postgres::restore_into(self, dump, target, opts, ctl)
    }

    fn check(&self, database: &str, _ctl: &mut Control<'_>) -> Result<u64, DbError> {
        Postgres::check(self, database)
    }

    fn other_sessions(&self, database: &str) -> Result<Vec<Session>, DbError> {
        Postgres::other_sessions(self, database)
    }

    fn prepare_swap(&self, force: bool, _staging: &Path) -> Result<SwapRecord, DbError> {
        Postgres::prepare_swap(self, force)
    }

    fn swap_step(&self, record: &SwapRecord) -> Result<(), DbError> {
        Postgres::swap_step(self, record)
    }

    fn rollback(&self, record: &SwapRecord) -> Result<(), DbError> {
        Postgres::rollback(self, record)
    }

    fn recover(&self, record: &SwapRecord) -> Result<Recovered, DbError> {
        Postgres::recover(self, record)
    }

    fn verify_deep(&self, dump: &Path, ctl: &mut Control<'_>) -> Result<VerifyOutcome, DbError> {
        Postgres::verify_deep(self, dump, ctl)
    }

    fn query_value(&self, database: &str, sql: &str) -> Result<String, DbError> {
        let action = format!("a check in database '{database}'");
        let rows = self.psql(database, action.clone(), sql, QUERY_TIMEOUT)?;
        match rows.as_slice() {
            [row] if row.len() == 1 => Ok(row[0].clone()),
            _ => Err(DbError::Unexpected {
                action,
                tool: "psql",
                detail: format!(
                    "the query returned {} row(s) of {} value(s); a check must return exactly one value",
                    rows.len(),
                    rows.first().map_or(0, Vec::len)
                ),
            }),
        }
    }
}
