//! Dumping a PostgreSQL database: `pg_dump --format=custom --compress=0 --create` to
//! a pipe, compressed into a zstd frame in staging as it arrives, then validated.
//!
//! `--compress=0` because the archive is zstd-compressed anyway (pg_dump's zlib would
//! cost several times the rest of the backup); `--create` so the dump also carries
//! the database's own settings, grants and comment (a plain `pg_restore --create` by
//! hand then rebuilds it whole); standard output rather than `--file`, so nothing
//! uncompressed is written and the dump's bytes are final as they arrive (with a
//! seekable file pg_dump rewrites its table of contents at the end): the price is a
//! table of contents without data offsets, so `pg_restore` finds the data by reading
//! on (Coffer restores with one job; `pg_restore -j 2` of such a dump was checked with
//! PostgreSQL 15). The snapshot is first exported from a `psql` session
//! (`pg_export_snapshot()`) and handed to `pg_dump --snapshot`, so the backup learns
//! the exact moment the consistent state is fixed and archives the media meanwhile.
//! Exit status 0 and a clean `pg_restore --list` (of the frame's content) are both
//! required; a failed dump's spool is removed.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::toc::TocScan;
use super::{Postgres, QUERY_TIMEOUT};
use crate::archive::{FrameSpool, SpooledFrame};
use crate::source::dump::run::{self, Control, Input, Job, Meter, Sink, never_cancelled};
use crate::source::dump::tools::PgTools;
use crate::source::dump::{DbError, DumpCheck, DumpOutcome, ProbeFacts, Scrubber};

/// Options of a dump.
#[derive(Debug, Clone)]
pub struct PgDumpOptions {
    /// `pg_dump --compress` level; 0 (default) leaves compression to the archive.
    pub compress: u32,
    /// Export the snapshot from a separate session first (see the module doc).
    pub export_snapshot: bool,
    /// `pg_dump --lock-wait-timeout`: fail instead of waiting longer for a table lock.
    pub lock_wait_timeout: Option<Duration>,
}

impl Default for PgDumpOptions {
    fn default() -> Self {
        PgDumpOptions {
            compress: 0,
            export_snapshot: true,
            lock_wait_timeout: None,
        }
    }
}

/// A `psql` session holding the transaction whose snapshot `pg_dump` imports.
struct SnapshotHolder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl SnapshotHolder {
    /// Ends the transaction (EOF makes psql roll back and exit) and reaps psql.
    fn release(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SnapshotHolder {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Postgres {
    pub(super) fn check_tool_version(&self, facts: &ProbeFacts) -> Result<(), DbError> {
        match crate::source::dump::tools::pg_major(&facts.server_version) {
            Some(server_major) if server_major > self.tools.major => Err(DbError::ToolTooOld {
                tool: "pg_dump",
                tool_major: self.tools.major,
                server_major,
                database: self.database().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn export_snapshot(&self, ctl: &Control<'_>) -> Result<(SnapshotHolder, String), DbError> {
        let action = format!("exporting a snapshot of database '{}'", self.database());
        let mut child = Command::new(&self.tools.psql.path)
            .args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--dbname={}", self.uri(self.database())))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("LC_ALL")
            .env("LC_MESSAGES", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DbError::Spawn {
                tool: "psql",
                path: self.tools.psql.path.clone(),
                source,
            })?;
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut holder = SnapshotHolder { child, stdin: None };
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
                // Keep draining so psql never blocks on a full pipe.
                for _ in lines {}
            });
        }
        let (etx, erx) = mpsc::channel::<String>();
        if let Some(mut stderr) = stderr {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.by_ref().take(64 * 1024).read_to_string(&mut text);
                let _ = etx.send(text);
            });
        }
        let script = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n";
        if let Some(pipe) = stdin.as_mut() {
            // A failure here shows as psql ending without a snapshot, below.
            let _ = pipe.write_all(script).and_then(|()| pipe.flush());
        }
        holder.stdin = stdin;
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(id) if !id.trim().is_empty() => return Ok((holder, id.trim().to_owned())),
                Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    drop(holder.stdin.take());
                    let status = holder.child.wait().ok();
                    let stderr = self
                        .scrubber()
                        .scrub(&erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default());
                    return Err(run::classify(
                        &action,
                        "psql",
                        status.map(run::describe_status).unwrap_or_else(|| "ended".into()),
                        &stderr,
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if ctl.is_cancelled() {
                        return Err(DbError::Cancelled { action });
                    }
                    if started.elapsed() > QUERY_TIMEOUT {
                        return Err(DbError::TimedOut {
                            action,
                            seconds: QUERY_TIMEOUT.as_secs(),
                        });
                    }
                }
            }
        }
    }

    fn dump_args(&self, opts: &PgDumpOptions, snapshot: Option<&str>) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "-w".into(),
            "--format=custom".into(),
            format!("--compress={}", opts.compress).into(),
            "--create".into(),
        ];
        if let Some(timeout) = opts.lock_wait_timeout {
            args.push(format!("--lock-wait-timeout={}", timeout.as_millis().max(1)).into());
        }
        if let Some(id) = snapshot {
            args.push(format!("--snapshot={id}").into());
        }
        args
    }

    /// Dumps the database, probed as `facts` just before, into the zstd frame `spool`
    /// (see [`crate::archive::frame`]): pg_dump writes to a pipe, and its output is
    /// compressed and hashed as it arrives, so no uncompressed copy ever reaches the
    /// disk and nothing is left to do after the dump but to validate it. `on_snapshot`
    /// is called once the consistent state is fixed (with `export_snapshot`: when the
    /// snapshot was exported; otherwise just before pg_dump starts, whose snapshot is
    /// taken moments later). Progress counts the dump's bytes against the table data
    /// size. On any failure the spool is removed. The outcome's `frame` is the dump.
    pub fn dump_frame(
        &self,
        spool: FrameSpool,
        opts: &PgDumpOptions,
        facts: ProbeFacts,
        ctl: &mut Control<'_>,
        on_snapshot: &mut dyn FnMut(),
    ) -> Result<DumpOutcome, DbError> {
        let path = spool.path().to_owned();
        let result = self.dump_frame_inner(spool, opts, facts, ctl, on_snapshot);
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    fn dump_frame_inner(
        &self,
        mut spool: FrameSpool,
        opts: &PgDumpOptions,
        facts: ProbeFacts,
        ctl: &mut Control<'_>,
        on_snapshot: &mut dyn FnMut(),
    ) -> Result<DumpOutcome, DbError> {
        let (holder, snapshot) = if opts.export_snapshot {
            let (holder, id) = self.export_snapshot(ctl)?;
            (Some(holder), Some(id))
        } else {
            (None, None)
        };
        on_snapshot();
        let job = Job::new(
            &self.tools.pg_dump,
            format!("the dump of database '{}'", self.database()),
        )
        .args(self.dump_args(opts, snapshot.as_deref()))
        .arg(format!("--dbname={}", self.uri(self.database())))
        .envs(&self.env)
        .sink(Sink::Writer(&mut spool))
        .meter(Meter::Sink, facts.data_bytes);
        let result = run::run(job, ctl, self.scrubber());
        if let Some(holder) = holder {
            holder.release();
        }
        let outcome = result?;
        let path = spool.path().to_owned();
        let frame = spool
            .finish()
            .map_err(DbError::io("cannot write the dump", &path))?;
        let check = self.validate_frame(&frame)?;
        Ok(DumpOutcome {
            bytes: check.bytes,
            facts,
            snapshot,
            entries: check.entries,
            warnings: outcome.stderr,
            frame: Some(frame),
        })
    }

    /// Checks a dump in a spooled frame: not empty, readable by `pg_restore --list`
    /// (which reads the table of contents from the frame's content on its stdin),
    /// custom format.
    fn validate_frame(&self, frame: &SpooledFrame) -> Result<DumpCheck, DbError> {
        validate_with(&self.tools, &self.env, self.scrubber(), DumpAt::Frame(frame))
    }

    pub(super) fn list(&self, path: &Path, create: bool) -> Result<TocScan, DbError> {
        list_toc(
            &self.tools,
            &self.env,
            self.scrubber(),
            DumpAt::File(path),
            create,
        )
    }

    /// Checks a dump file: not empty, readable by `pg_restore --list`, custom format.
    pub fn validate(&self, path: &Path) -> Result<DumpCheck, DbError> {
        validate_with(&self.tools, &self.env, self.scrubber(), DumpAt::File(path))
    }
}

/// A dump for `pg_restore --list`: a file it opens, or a spooled frame whose content
/// it reads on stdin (stopping after the table of contents).
#[derive(Clone, Copy)]
enum DumpAt<'a> {
    File(&'a Path),
    Frame(&'a SpooledFrame),
}

impl DumpAt<'_> {
    /// The file that holds the dump, for messages.
    fn path(&self) -> &Path {
        match self {
            DumpAt::File(path) => path,
            DumpAt::Frame(frame) => &frame.path,
        }
    }
}

/// Reads the table of contents of `dump` with `pg_restore --list`.
fn list_toc(
    tools: &PgTools,
    env: &[(OsString, OsString)],
    scrubber: &Scrubber,
    dump: DumpAt<'_>,
    create: bool,
) -> Result<TocScan, DbError> {
    let mut scan = TocScan::default();
    let mut args: Vec<OsString> = vec!["--list".into()];
    if create {
        args.push("--create".into());
    }
    let mut job = Job::new(
        &tools.pg_restore,
        format!("reading the table of contents of {}", dump.path().display()),
    );
    match dump {
        DumpAt::File(path) => {
            args.push("--".into());
            args.push(path.into());
        }
        DumpAt::Frame(frame) => job = job.stdin(Input::Head(frame)),
    }
    let job = job
        .args(args)
        .envs(env)
        .sink(Sink::Writer(&mut scan))
        .timeout(QUERY_TIMEOUT);
    run::run(job, &mut Control::cancel_only(&never_cancelled), scrubber)?;
    Ok(scan)
}

/// Checks a dump file without a server: not empty, readable by `pg_restore --list`,
/// custom format.
pub fn validate_file(tools: &PgTools, path: &Path) -> Result<DumpCheck, DbError> {
    validate_with(tools, &[], &Scrubber::default(), DumpAt::File(path))
}

fn validate_with(
    tools: &PgTools,
    env: &[(OsString, OsString)],
    scrubber: &Scrubber,
    dump: DumpAt<'_>,
) -> Result<DumpCheck, DbError> {
    let invalid = |reason: String| DbError::InvalidDump {
        path: dump.path().to_owned(),
        reason,
    };
    let bytes = match dump {
        DumpAt::File(path) => std::fs::metadata(path)
            .map_err(|e| invalid(format!("it cannot be read ({e})")))?
            .len(),
        DumpAt::Frame(frame) => frame.size,
    };
    if bytes == 0 {
        return Err(invalid("it is empty".into()));
    }
    let scan = list_toc(tools, env, scrubber, dump, false).map_err(|e| match e {
        DbError::Tool { detail, .. } => invalid(format!("pg_restore --list rejects it: {detail}")),
        other => other,
    })?;
    if !scan.custom_format {
        return Err(invalid(
            "pg_restore --list does not report a custom-format archive".into(),
        ));
    }
    Ok(DumpCheck {
        bytes,
        entries: scan.entries,
        database: scan.database,
    })
}
