//! Restores of database-server jobs (PostgreSQL, MariaDB): in place, into a new
//! database (`--to-database`), and into a drill's scratch database.
//!
//! In place, in this order: the dump is extracted into staging (the media beside
//! their targets, as for SQLite) and every entry checked against the sidecar, the
//! dump validated; it is restored into `<db>__coffer_restore` and checked; the
//! `before-restore` hooks run; other sessions on the live database refuse the restore
//! (unless `--force`, which ends them at the swap); a pinned safety backup of the
//! current state is taken; then the swap: the database's phases up to the point where
//! the restored copy is live but the old one kept ([`SwapPhase::Attaching`]), then the
//! media's renames, then both commit in one journal write and the old copies go. Any
//! failure before that commit rolls both back to the exact old state. The journal
//! (with the database swap's record, rewritten before each phase) lets start-up
//! finish or undo a restore a crash interrupted. A live database that does not exist
//! (dropped by accident) is simply restored under its name.
//!
//! `--to-database NAME` restores into a new database NAME on the job's server and
//! touches nothing else; a failure drops NAME again. Drills use `<db>__coffer_drill`,
//! without owners and privileges (so the backup role needs no memberships), and drop
//! it afterwards.

use std::path::{Path, PathBuf};

use super::in_place::{
    begin_swap, check_media_roots, create_stages, media_plan, plan_media, roll_back, run_moves, safety_backup,
};
use super::journal::Journal;
use super::{Only, Restored};
use crate::archive::Layout;
use crate::catalog::BackupRecord;
use crate::config::JobConfig;
use crate::error::Error;
use crate::hooks::{self, HookEvent};
use crate::ops::verify::{self, Stage};
use crate::ops::{Ctx, with_control};
use crate::run::{Event, Phase, Progress};
use crate::source;
use crate::source::dump::swap::drive;
use crate::source::dump::{
    DbError, DbServer, RestoreOptions, Scratch, SwapFailure, SwapPhase, SwapRecord, names,
};

/// Refuses a backup whose source is not the kind of server `job` has now.
fn check_kind(record: &BackupRecord, job: &JobConfig) -> Result<(), Error> {
    let (was, is) = (record.summary.source.kind(), job.source.kind());
    if was != is {
        return Err(Error::InvalidArgument(format!(
            "backup {} holds a {was} database but job '{}' now backs up a {is} source; restore it with --to DIR",
            record.id, job.name
        )));
    }
    Ok(())
}

/// Extracts the dump of `record` (checked against its sidecar and validated) into a
/// fresh staging directory; returns the stage (removed on drop) and the dump's path.
fn stage_dump(ctx: &Ctx, record: &BackupRecord, progress: Progress<'_>) -> Result<(Stage, PathBuf), Error> {
    let stage = Stage::new(ctx, &format!("restore-{}", record.id))?;
    let layout = stage.database_only();
    extract(ctx, record, &layout, progress)?;
    let dump = layout.db.unwrap_or_default();
    Ok((stage, dump))
}

/// Writes the entries `layout` selects, each checked against the sidecar as it
/// streams, then validates the dump.
fn extract(ctx: &Ctx, record: &BackupRecord, layout: &Layout, progress: Progress<'_>) -> Result<(), Error> {
    let sidecar = verify::load_sidecar(ctx, record)?;
    verify::extract_checked(
        ctx,
        &ctx.archive_path(record),
        verify::keys(ctx, &record.job, &sidecar)?,
        Some(verify::expected(&sidecar)),
        layout,
        &format!("backup {} failed verification", record.id),
        Phase::Extract,
        sidecar.size,
        progress,
    )?;
    Ok(())
}

/// Restores `dump` into the new database `target` and checks it.
fn restore_checked(
    ctx: &Ctx,
    server: &dyn DbServer,
    dump: &Path,
    target: &str,
    opts: &RestoreOptions,
    progress: Progress<'_>,
) -> Result<(), Error> {
    progress(Event::new(
        Phase::Extract,
        format!("restoring into database '{target}'"),
    ));
    with_control(ctx, Phase::Extract, progress, |ctl| {
        server.restore_into(dump, target, opts, ctl)
    })?;
    progress(Event::new(Phase::Check, format!("checking database '{target}'")));
    let tables = with_control(ctx, Phase::Check, progress, |ctl| server.check(target, ctl))?;
    tracing::info!(database = target, tables, "restored database checked");
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

/// `--to-database NAME`: restores the database of `record` into the new database
/// `name` on the server of its job; the live database is never touched.
pub fn restore_to_database(
    ctx: &Ctx,
    record: &BackupRecord,
    name: &str,
    progress: Progress<'_>,
) -> Result<Restored, Error> {
    let job = ctx.job(&record.job)?;
    let Some(live) = job.source.database_name() else {
        return Err(Error::InvalidArgument(format!(
            "--to-database restores PostgreSQL and MariaDB backups; job '{}' backs up an SQLite database (use --to DIR)",
            job.name
        )));
    };
    check_kind(record, job)?;
    let server = source::server_for(job)?;
    if let Err(e) = names::check_name(name, server.kind(), "--to-database name") {
        return Err(Error::InvalidArgument(e.to_string()));
    }
    if name == live {
        return Err(Error::InvalidArgument(format!(
            "--to-database must name a new database, not the job's live database '{live}'; restore in place instead"
        )));
    }
    if server.exists(name)? {
        return Err(Error::InvalidArgument(format!(
            "database '{name}' already exists; --to-database restores into a new database"
        )));
    }
    let (_stage, dump) = stage_dump(ctx, record, progress)?;
    restore_checked(ctx, &*server, &dump, name, &RestoreOptions::default(), progress)?;
    Ok(Restored {
        id: record.id.clone(),
        safety_backup_id: None,
        database_path: None,
        media_paths: Vec::new(),
        database_name: Some(name.to_owned()),
    })
}

/// Restores `record` of `job` into its drill database `<db>__coffer_drill` (dropped
/// first if a drill left it), runs each of `checks` there and returns, per check, the
/// one value it returned (as text; judging it is the caller's) or why it failed, then
/// drops the database whatever happened. An error is the restore's own failure (the
/// backup's extraction, validation or load). For restore drills of server jobs.
pub fn drill_database(
    ctx: &Ctx,
    record: &BackupRecord,
    job: &JobConfig,
    checks: &[String],
    progress: Progress<'_>,
) -> Result<Vec<Result<String, String>>, Error> {
    check_kind(record, job)?;
    let server = source::server_for(job)?;
    let name = server.scratch_name(Scratch::Drill);
    server.drop_database(&name)?;
    let (_stage, dump) = stage_dump(ctx, record, progress)?;
    let opts = RestoreOptions {
        keep_owners: false,
        ..RestoreOptions::default()
    };
    let result = restore_checked(ctx, &*server, &dump, &name, &opts, progress).map(|()| {
        progress(Event::new(Phase::Drill, format!("{} check(s)", checks.len())));
        checks
            .iter()
            .map(|sql| server.query_value(&name, sql).map_err(|e| e.to_string()))
            .collect()
    });
    let dropped = server.drop_database(&name);
    let values = result?;
    dropped?;
    Ok(values)
}

/// Restores `record` of server job `job` in place (see the module doc).
pub fn restore_in_place(
    ctx: &Ctx,
    record: &BackupRecord,
    job: &JobConfig,
    only: Only,
    force: bool,
    progress: Progress<'_>,
) -> Result<Restored, Error> {
    check_kind(record, job)?;
    check_media_roots(record, job, only)?;
    // A swap an unreachable server left pending is finished (or undone) first.
    super::journal::recover_job(ctx.config, &job.name).map_err(Error::io(
        "cannot recover an earlier restore",
        &ctx.config.daemon.state_dir,
    ))?;
    let server = source::server_for(job)?;
    let mut layout = Layout::default();
    let mut stages = Vec::new();
    plan_media(record, job, only, &mut layout, &mut stages);
    let mut journal = Journal::begin(&ctx.config.daemon.state_dir, &record.id, &stages)?;
    let _cleanup = create_stages(&stages)?;

    // 1. Extract and verify, in one pass: the dump into staging, the media beside
    // their targets.
    let stage = if only.db() {
        Some(Stage::new(ctx, &format!("restore-{}", record.id))?)
    } else {
        None
    };
    layout.db = stage.as_ref().map(|s| s.dir.join("db"));
    extract(ctx, record, &layout, progress)?;
    let dump = layout.db.clone();

    // 2. Restore into the scratch database; nothing live is touched yet.
    let live = server.database().to_owned();
    let (part, restored) = match &dump {
        None => (DbPart::Untouched, None),
        Some(dump) => restore_copy(ctx, &*server, &job.name, dump, &mut journal, progress)?,
    };
    // The restored copy goes again if the restore stops before its swap.
    let mut copy = DropGuard {
        server: &*server,
        name: restored,
    };

    // 3. Hooks, other sessions, safety backup.
    progress(Event::new(Phase::Hooks, "before-restore hooks"));
    hooks::run(job, HookEvent::BeforeRestore, &record.id, "", ctx.cancel)
        .map_err(|e| Error::Hook(e.to_string()))?;
    if part == DbPart::Swap && !force {
        let sessions = server.other_sessions(&live)?;
        if !sessions.is_empty() {
            return Err(DbError::InUse {
                database: live,
                sessions,
            }
            .into());
        }
    }
    let safety_backup_id = if part == DbPart::Fresh {
        tracing::info!(
            job = job.name,
            database = live,
            "no live database: no safety backup needed"
        );
        None
    } else {
        safety_backup(ctx, job, force, progress)?
    };

    // 4. Swap, with rollback on any failure.
    progress(Event::new(Phase::Swap, "swapping in the restored data"));
    let swap = Swapping {
        record,
        job,
        server: &*server,
        force,
    };
    if part == DbPart::Swap {
        // From here on the swap's rollback owns the copy.
        copy.name = None;
    }
    swap.run(part, &layout, &mut journal)?;
    copy.name = None;
    hooks::run_logged(job, HookEvent::AfterRestore, &record.id, "", ctx.cancel);
    Ok(Restored {
        id: record.id.clone(),
        safety_backup_id,
        database_path: None,
        media_paths: if only.media() {
            job.media.clone()
        } else {
            Vec::new()
        },
        database_name: only.db().then_some(live),
    })
}

/// Restores the dump into `<db>__coffer_restore`, or under the live name when there
/// is no live database; returns what the swap must do and the database restored.
fn restore_copy(
    ctx: &Ctx,
    server: &dyn DbServer,
    job: &str,
    dump: &Path,
    journal: &mut Journal,
    progress: Progress<'_>,
) -> Result<(DbPart, Option<String>), Error> {
    let live = server.database();
    let (part, target) = if server.exists(live)? {
        (DbPart::Swap, server.scratch_name(Scratch::Restore))
    } else {
        (DbPart::Fresh, live.to_owned())
    };
    // Ours by name: a leftover of a restore no journal remembers.
    server.drop_database(&server.scratch_name(Scratch::Restore))?;
    // On record first: a crash from here on drops the copy at start-up.
    journal.database(job, &provisional(server, &target))?;
    restore_checked(ctx, server, dump, &target, &RestoreOptions::default(), progress)?;
    Ok((part, Some(target)))
}

/// What an in-place restore does with the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbPart {
    /// Nothing (`--only media`).
    Untouched,
    /// There was no live database: the copy was restored under its name.
    Fresh,
    /// The copy in `<db>__coffer_restore` replaces the live database.
    Swap,
}

/// Drops a restored copy (in `<db>__coffer_restore`, or under the live name when
/// there was none) unless the restore got past the point where it is kept.
struct DropGuard<'a> {
    server: &'a dyn DbServer,
    name: Option<String>,
}

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        if let Some(name) = &self.name
            && let Err(e) = self.server.drop_database(name)
        {
            tracing::error!(
                database = name,
                "cannot drop the restored database after the failed restore: {e}"
            );
        }
    }
}

/// The journal's record while the copy is restored into `target`: a crash before the
/// swap rolls back from `Prepared`, which drops the scratch copy.
fn provisional(server: &dyn DbServer, target: &str) -> SwapRecord {
    SwapRecord {
        engine: server.kind(),
        live: server.database().to_owned(),
        scratch: target.to_owned(),
        old: server.scratch_name(Scratch::Old),
        phase: SwapPhase::Prepared,
        force: false,
        blocked_connections: false,
        old_objects: None,
        new_objects: None,
    }
}

/// The swap of one in-place restore.
struct Swapping<'a> {
    record: &'a BackupRecord,
    job: &'a JobConfig,
    server: &'a dyn DbServer,
    force: bool,
}

impl Swapping<'_> {
    /// Swaps the database (when it replaces a live one) and the media, committed
    /// together (see the module doc).
    fn run(&self, part: DbPart, layout: &Layout, journal: &mut Journal) -> Result<(), Error> {
        let plan = media_plan(self.job, layout);
        let mut db = match part {
            DbPart::Swap => Some(self.server.prepare_swap(self.force, &journal.objects_dir()?)?),
            DbPart::Fresh | DbPart::Untouched => None,
        };
        let mut files = begin_swap(&self.record.id, &plan, journal)?;
        if let Some(rec) = db.as_mut() {
            self.drive(rec, SwapPhase::Attaching, journal)
                .map_err(|e| kept_on_failed_rollback(e, journal))?;
        }
        if let Err(e) = run_moves(&mut files, &plan) {
            let error = roll_back(files, journal, e);
            if let Some(rec) = &db
                && let Err(undo) = self.server.rollback(rec)
            {
                journal.keep();
                tracing::error!(
                    job = self.job.name,
                    "cannot put the previous database back: {undo}"
                );
            }
            return Err(error);
        }
        // The commit: the database record at `Committed` and the journal's state in
        // one write; from here on the new state stays, whatever fails.
        match db.as_mut() {
            Some(rec) => {
                if let Err(e) = self.drive(rec, SwapPhase::Done, journal) {
                    // Only removing the old copy failed: start-up retries.
                    journal.keep();
                    tracing::warn!(job = self.job.name, "{e}");
                }
            }
            None => {
                journal.forget_database();
                journal.committed()?;
            }
        }
        files.commit();
        Ok(())
    }

    /// Drives the database swap up to `until`, persisting each phase in the journal.
    fn drive(&self, rec: &mut SwapRecord, until: SwapPhase, journal: &mut Journal) -> Result<(), DbError> {
        let job = &self.job.name;
        let mut persist = |r: &SwapRecord| {
            journal
                .database(job, r)
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        drive(
            rec,
            until,
            &mut persist,
            &mut |r| self.server.swap_step(r),
            &mut |r| self.server.rollback(r),
        )
    }
}

/// A failed database swap: if its rollback failed too, the journal stays for start-up.
fn kept_on_failed_rollback(e: DbError, journal: &mut Journal) -> Error {
    if let DbError::Swap {
        outcome: SwapFailure::RollbackFailed(_),
        ..
    } = &e
    {
        journal.keep();
    }
    e.into()
}
