//! What the two database-server sources (PostgreSQL, MariaDB) share: running their
//! client tools, keeping secrets out of what they print, naming scratch databases,
//! the in-place swap's state machine, the [`DbServer`] seam the operations use, and
//! the [`Snapshot`] of a dump ([`DumpSnapshot`]).
//!
//! Every server operation goes through the server's own client tools (`pg_dump`,
//! `pg_restore`, `psql`, `pg_amcheck`; `mariadb-dump`, `mariadb`, `mariadb-check`):
//! SQL travels on their stdin, never in argv, and no password ever appears in argv,
//! in an environment we set, in errors or in logs (passwords live in a passfile or an
//! options file, and everything a tool prints goes through [`Scrubber`]).
//!
//! # A backup of a dump
//!
//! A tar header needs the entry's size before its content, and the dump must be
//! validated (`pg_restore --list`, the `-- Dump completed` trailer) before it may
//! become part of an archive, so a failed or truncated dump never does. So the dump
//! is *spooled* into the run's staging directory first:
//! - PostgreSQL: pg_dump writes to a pipe, and its output is compressed into a zstd
//!   frame as it arrives ([`crate::archive::FrameSpool`], hashing it on the way); once
//!   validated, the frame is spliced into the archive as it is
//!   ([`ArchiveWriter::add_frame`]). Nothing uncompressed reaches the disk and nothing
//!   is compressed twice.
//! - MariaDB: mariadb-dump's output is spooled as a plain file (its trailer is checked
//!   there), which the archive writer then reads once, compressing it and computing
//!   the entry's sha256 in the same pass.
//!
//! The spool is removed once it is in the archive.
//!
//! ```text
//! begin ─▶ thread: probe ─▶ [pg_export_snapshot: the point] ─▶ dump to staging ─▶ validate
//! wait_point ◀─ point (PostgreSQL) | start (MariaDB)
//! archive: join ─▶ writer.add_frame | add_file (db/<name>.pgdump|.sql) ─▶ DumpInfo for the manifest
//! ```
//!
//! - [`tools`]: finds a job's client tools; a missing one is one sentence.
//! - [`run`]: runs one tool (input, output, bounded scrubbed stderr, cancel, timeout).
//! - [`scrub`]: removes password-like text from tool output.
//! - [`names`]: `<db>__coffer_restore` / `_old` / `_verify` / `_drill`, SQL quoting.
//! - [`swap`]: the in-place swap as a journal-friendly state machine.
//! - [`error`]: [`DbError`], the one error of both server sources.

pub mod error;
pub mod names;
pub mod run;
pub mod scrub;
pub mod swap;
pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use error::{DbError, DbErrorKind};
pub use names::Scratch;
pub use run::Control;
pub use scrub::Scrubber;
pub use swap::{Recovered, SwapFailure, SwapPhase, SwapRecord};

use super::{MediaOrder, Snapshot, SourceError, Step};
use crate::archive::{ArchiveWriter, SpooledFrame};
use crate::config::ServerKind;
use crate::manifest::{DumpInfo, SourceInfo};

/// The path of a dump inside the archive: `db/<name>.pgdump` or `db/<name>.sql`.
/// PostgreSQL allows `/` and control characters in database names; they become `_`
/// (as does a leading `.`) so the entry is always one plain file name. The name is
/// informative only: restores take the database name from the job.
pub fn archive_path(kind: ServerKind, database: &str) -> String {
    format!("db/{}", file_name(kind, database))
}

/// The file name of a dump (see [`archive_path`]).
pub fn file_name(kind: ServerKind, database: &str) -> String {
    let mut name: String = database
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    match kind {
        ServerKind::Postgres => format!("{name}.pgdump"),
        ServerKind::Mariadb => format!("{name}.sql"),
    }
}

/// What `status`, `show`, health and the manifest say about a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFacts {
    pub kind: ServerKind,
    /// The server's version string (`15.18 (Debian 15.18-0+deb12u1)`,
    /// `10.11.19-MariaDB-0+deb12u1`).
    pub server_version: String,
    pub database: String,
    /// The database's size on the server (PostgreSQL `pg_database_size`; MariaDB data
    /// + index length): an upper bound for the disk-space guard.
    pub size_bytes: u64,
    /// Table data only (heap / data length): what an uncompressed dump is close to,
    /// used as the progress total of a dump.
    pub data_bytes: u64,
    /// The dump tool's version line.
    pub tool_version: String,
}

/// A run's probe of its server, made once: the disk-space estimate probes the server
/// before the snapshot begins, and the snapshot reuses that probe (tools found,
/// versions read, one connection) instead of repeating it a moment later. A probe
/// that failed is not kept: the snapshot probes again and fails with its error.
pub struct ProbedOnce<S>(Mutex<Option<(S, ProbeFacts)>>);

impl<S: DbServer> ProbedOnce<S> {
    pub fn new() -> ProbedOnce<S> {
        ProbedOnce(Mutex::new(None))
    }

    /// Probes the server `server` gives ([`DbServer::probe`]); its facts, kept with the
    /// server for [`Self::take_or`].
    pub fn facts(&self, server: impl FnOnce() -> Result<S, DbError>) -> Result<ProbeFacts, DbError> {
        let (server, facts) = probed(server)?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((server, facts.clone()));
        Ok(facts)
    }

    /// The kept probe, or a new one of the server `server` gives.
    pub fn take_or(&self, server: impl FnOnce() -> Result<S, DbError>) -> Result<(S, ProbeFacts), DbError> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        kept.map_or_else(|| probed(server), Ok)
    }
}

/// The server `server` gives, and what probing it found.
fn probed<S: DbServer>(server: impl FnOnce() -> Result<S, DbError>) -> Result<(S, ProbeFacts), DbError> {
    let server = server()?;
    let facts = server.probe()?;
    Ok((server, facts))
}

impl<S: DbServer> Default for ProbedOnce<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeFacts {
    /// The manifest's facts of a dump taken after this probe.
    pub fn info(&self) -> DumpInfo {
        DumpInfo {
            server_version: self.server_version.clone(),
            tool_version: self.tool_version.clone(),
            database: self.database.clone(),
            size: self.size_bytes,
        }
    }
}

/// Another session connected to a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Backend pid (PostgreSQL) or connection id (MariaDB).
    pub id: u64,
    pub user: String,
    /// `application_name` (PostgreSQL) or the current command (MariaDB).
    pub application: String,
    /// Client address, or `local`.
    pub client: String,
}

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} {} from {}", self.id, self.user, self.client)?;
        if !self.application.is_empty() {
            write!(f, " ({})", self.application)?;
        }
        Ok(())
    }
}

/// What a successful dump produced.
#[derive(Debug, Clone)]
pub struct DumpOutcome {
    /// Size of the dump file.
    pub bytes: u64,
    /// The source as probed just before the dump.
    pub facts: ProbeFacts,
    /// PostgreSQL: the exported snapshot the dump used.
    pub snapshot: Option<String>,
    /// Entries in the dump's table of contents (PostgreSQL) or 0.
    pub entries: u64,
    /// What the tool printed on stderr although it succeeded (scrubbed), for logs.
    pub warnings: String,
    /// Where the dump is: a spooled zstd frame (PostgreSQL, dumped to a pipe), or
    /// `None` for the plain spool file (MariaDB).
    pub frame: Option<SpooledFrame>,
}

/// What a validation found in a dump file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpCheck {
    pub bytes: u64,
    /// TOC entries (PostgreSQL); 0 for MariaDB.
    pub entries: u64,
    /// The database the dump was taken from, as the dump says.
    pub database: String,
}

/// How to restore a dump into a new database.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore owners and privileges (and PostgreSQL database-level settings, grants
    /// and comment) as the dump has them. In-place restores and `--to-database` use
    /// `true`; deep verify and drills use `false`, so they need no role memberships.
    pub keep_owners: bool,
    /// PostgreSQL: parallel restore jobs (`pg_restore -j`); 1 is sequential.
    pub jobs: u32,
}

// Sequential by default: on the 2-core test machine `pg_restore -j 2` of the
// benchmark's 1 GiB database took 23.4 s against 17.7 s with one job (the server's
// own COPY and index builds already use the cores), and a restore should not crowd
// out the live database's work on the same server.
impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            keep_owners: true,
            jobs: 1,
        }
    }
}

/// What a deep verify did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// The scratch database the dump was restored into (dropped again).
    pub database: String,
    /// User tables found in the restored copy.
    pub tables: u64,
    /// The checker that ran over the restored copy (`pg_amcheck`, `mariadb-check`).
    pub checker: Option<&'static str>,
    /// Why the checker did not run, when it did not.
    pub note: Option<String>,
}

/// A job's database server, as the operations (restore, deep verify, drills, start-up
/// recovery) use it. Every call blocks (it runs client tools).
pub trait DbServer: Send + Sync {
    /// Which server this is.
    fn kind(&self) -> ServerKind;

    /// The job's database.
    fn database(&self) -> &str;

    /// The scrubber with this job's known secrets.
    fn scrubber(&self) -> &Scrubber;

    /// The name of a scratch database of the job's database.
    fn scratch_name(&self, role: Scratch) -> String;

    /// Server version, database name and sizes.
    fn probe(&self) -> Result<ProbeFacts, DbError>;

    /// Checks a dump file without a server (PostgreSQL: `pg_restore --list`;
    /// MariaDB: its head and `-- Dump completed` trailer).
    fn validate(&self, dump: &Path) -> Result<DumpCheck, DbError>;

    /// Whether database `name` exists.
    fn exists(&self, name: &str) -> Result<bool, DbError>;

    /// Drops database `name` if it exists (ending its sessions on PostgreSQL).
    fn drop_database(&self, name: &str) -> Result<(), DbError>;

    /// Restores `dump` into the new database `target` (refused if it exists; dropped
    /// again on failure).
    fn restore_into(
        &self,
        dump: &Path,
        target: &str,
        opts: &RestoreOptions,
        ctl: &mut Control<'_>,
    ) -> Result<(), DbError>;

    /// The quick check of a restored copy; returns its number of tables.
    fn check(&self, database: &str, ctl: &mut Control<'_>) -> Result<u64, DbError>;

    /// Client sessions connected to `database`, other than our own.
    fn other_sessions(&self, database: &str) -> Result<Vec<Session>, DbError>;

    /// Checks that an in-place swap can start (see the engines) and returns the record
    /// to keep in the journal; `staging` is a directory the caller keeps until the
    /// swap is over.
    fn prepare_swap(&self, force: bool, staging: &Path) -> Result<SwapRecord, DbError>;

    /// The work of the phase `record` is in (see [`swap`]).
    fn swap_step(&self, record: &SwapRecord) -> Result<(), DbError>;

    /// Undoes a swap that has not committed, from any phase, idempotently.
    fn rollback(&self, record: &SwapRecord) -> Result<(), DbError>;

    /// Start-up recovery: rolls back a swap that had not committed, finishes one
    /// that had.
    fn recover(&self, record: &SwapRecord) -> Result<Recovered, DbError>;

    /// Restores `dump` into `<db>__coffer_verify`, checks it with the server's
    /// checker where available, and drops it again whatever happened.
    fn verify_deep(&self, dump: &Path, ctl: &mut Control<'_>) -> Result<VerifyOutcome, DbError>;

    /// Runs one check query in `database` and returns the single value it must
    /// return (one row, one column), as text.
    fn query_value(&self, database: &str, sql: &str) -> Result<String, DbError>;
}

/// Where the snapshot point of a dump stands.
#[derive(Debug, Default)]
struct PointState {
    /// The consistent state is fixed (PostgreSQL: the snapshot was exported).
    fixed: bool,
    /// The dump thread ended (with or without the point).
    ended: bool,
}

/// Signals the snapshot point from the dump thread to the backup's thread.
#[derive(Debug, Clone, Default)]
pub struct Point(Arc<(Mutex<PointState>, Condvar)>);

impl Point {
    /// Marks the point fixed.
    pub fn fix(&self) {
        self.set(|s| s.fixed = true);
    }

    fn end(&self) {
        self.set(|s| s.ended = true);
    }

    fn set(&self, f: impl FnOnce(&mut PointState)) {
        let (state, cond) = &*self.0;
        f(&mut state.lock().unwrap_or_else(|p| p.into_inner()));
        cond.notify_all();
    }

    /// Waits until the point is fixed or the thread ended; returns whether it is fixed.
    fn wait(&self) -> bool {
        let (state, cond) = &*self.0;
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        while !s.fixed && !s.ended {
            s = cond.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.fixed
    }
}

/// What a dump thread is given: the spool path, cancellation, where to count
/// progress, and the point to fix.
pub struct DumpTask {
    pub spool: PathBuf,
    pub cancel: CancellationToken,
    pub written: Arc<AtomicU64>,
    pub point: Point,
}

impl DumpTask {
    /// Runs `dump` with a [`Control`] over this task's cancellation and progress.
    pub fn run<T>(&self, dump: impl FnOnce(&mut Control<'_>) -> T) -> T {
        let cancelled = || self.cancel.is_cancelled();
        let mut progress = |done: u64, _total: u64| self.written.store(done, Ordering::Relaxed);
        let mut ctl = Control::new(&cancelled, &mut progress);
        dump(&mut ctl)
    }
}

/// The [`Snapshot`] of a dump: a thread dumps into the spool while the backup waits
/// for the point (and, for PostgreSQL, archives the media meanwhile).
pub struct DumpSnapshot {
    kind: ServerKind,
    entry: String,
    spool: PathBuf,
    order: MediaOrder,
    point: Point,
    written: Arc<AtomicU64>,
    /// The data size the probe before the dump saw: the progress estimate.
    estimate: u64,
    cancel: CancellationToken,
    thread: Option<JoinHandle<Result<DumpOutcome, DbError>>>,
}

impl DumpSnapshot {
    /// Starts `dump` on its own thread; it writes `<staging>/<file name>` and calls
    /// `task.point.fix()` once its consistent state is fixed.
    pub fn start(
        kind: ServerKind,
        database: &str,
        staging: &Path,
        order: MediaOrder,
        estimate: u64,
        cancel: &CancellationToken,
        dump: impl FnOnce(&DumpTask) -> Result<DumpOutcome, DbError> + Send + 'static,
    ) -> Result<DumpSnapshot, SourceError> {
        let spool = staging.join(file_name(kind, database));
        // The dump's own token: dropping a snapshot stops its dump, never the daemon.
        let cancel = cancel.child_token();
        let point = Point::default();
        let written = Arc::new(AtomicU64::new(0));
        let task = DumpTask {
            spool: spool.clone(),
            cancel: cancel.clone(),
            written: written.clone(),
            point: point.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("coffer-dump".into())
            .spawn(move || {
                let result = dump(&task);
                task.point.end();
                result
            })
            .map_err(SourceError::io("cannot start the dump thread for", &spool))?;
        Ok(DumpSnapshot {
            kind,
            entry: archive_path(kind, database),
            spool,
            order,
            point,
            written,
            estimate,
            cancel,
            thread: Some(thread),
        })
    }

    /// Waits for the dump thread, reporting the bytes it wrote meanwhile.
    fn join(&mut self, progress: &mut dyn FnMut(Step)) -> Result<DumpOutcome, SourceError> {
        let thread = self.thread.take().ok_or_else(|| SourceError::Read {
            path: self.spool.clone(),
            message: "the dump thread is gone".into(),
        })?;
        let mut reported = 0;
        while !thread.is_finished() {
            let done = self.written.load(Ordering::Relaxed);
            if done > reported {
                reported = done;
                progress(Step::Copying {
                    done,
                    total: self.estimate.max(done),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let outcome = thread.join().map_err(|_| SourceError::Read {
            path: self.spool.clone(),
            message: "the dump thread panicked".into(),
        })??;
        Ok(outcome)
    }
}

impl Snapshot for DumpSnapshot {
    fn media_order(&self) -> MediaOrder {
        self.order
    }

    fn in_progress(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn wait_point(&mut self) -> Result<(), SourceError> {
        if self.order == MediaOrder::AfterDatabase {
            return Ok(());
        }
        if !self.point.wait() {
            // The thread ended before the point: it failed (say why before the media).
            self.join(&mut |_| {})?;
        }
        Ok(())
    }

    fn archive(
        mut self: Box<Self>,
        writer: &mut ArchiveWriter,
        progress: &mut dyn FnMut(Step),
    ) -> Result<SourceInfo, SourceError> {
        let outcome = self.join(progress)?;
        if self.cancel.is_cancelled() {
            return Err(SourceError::Cancelled {
                path: self.spool.clone(),
            });
        }
        if !outcome.warnings.trim().is_empty() {
            tracing::info!(
                database = outcome.facts.database,
                "the dump tool reported: {}",
                run::condense(&outcome.warnings)
            );
        }
        let meta =
            std::fs::metadata(&self.spool).map_err(SourceError::io("cannot read the dump", &self.spool))?;
        let size = outcome.frame.as_ref().map_or(meta.len(), |frame| frame.size);
        progress(Step::Copying {
            done: size,
            total: size,
        });
        match &outcome.frame {
            // Compressed as it was dumped: its bytes go into the archive as they are.
            Some(frame) => writer
                .add_frame(self.entry.as_bytes(), frame, &meta)
                .map_err(SourceError::Archive)?,
            None => {
                let mut added = 0;
                writer
                    .add_file(self.entry.as_bytes(), &self.spool, &meta, &mut |n| {
                        added += n;
                        progress(Step::Archived {
                            done: added,
                            total: size,
                        });
                    })
                    .map_err(SourceError::Archive)?;
            }
        }
        progress(Step::Archived {
            done: size,
            total: size,
        });
        // Free the staging space now rather than after the verification.
        if let Err(e) = std::fs::remove_file(&self.spool) {
            tracing::warn!(path = %self.spool.display(), "cannot remove the dump spool: {e}");
        }
        let info = outcome.facts.info();
        Ok(match self.kind {
            ServerKind::Postgres => SourceInfo::Postgres(info),
            ServerKind::Mariadb => SourceInfo::Mariadb(info),
        })
    }
}

impl Drop for DumpSnapshot {
    fn drop(&mut self) {
        // A snapshot given up (an error in the media, a shutdown) stops its dump.
        if let Some(thread) = self.thread.take() {
            self.cancel.cancel();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_one_plain_file_name() {
        assert_eq!(
            archive_path(ServerKind::Postgres, "techstore"),
            "db/techstore.pgdump"
        );
        assert_eq!(archive_path(ServerKind::Mariadb, "shop"), "db/shop.sql");
        assert_eq!(
            archive_path(ServerKind::Postgres, "a/../b\nc"),
            "db/a_.._b_c.pgdump"
        );
        assert_eq!(archive_path(ServerKind::Postgres, ".hidden"), "db/_hidden.pgdump");
    }
}
