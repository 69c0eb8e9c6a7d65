//! The in-place restore of an SQLite job, in this order: extract into staging *beside*
//! each target (same filesystem, so the swap is a rename) and `integrity_check` the
//! staged database; run `before-restore` hooks; refuse if the live database is in use
//! (unless `--force`); take a pinned safety backup of the current state (note
//! "pre-restore"); flush the staged data to disk (`syncfs`: the old data is deleted
//! after the swap); then swap: move each live path aside, move the staged one in (the
//! database's stale `-wal`, `-shm` and `-journal` go aside too), fsync; on any error,
//! roll every step back in reverse. Only after the whole swap succeeded are the old
//! copies removed and the `after-restore` hooks run. Staging is always cleaned up, and
//! the journal lets start-up finish or undo a swap a crash interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::journal::Journal;
use super::swap::{Swap, sync_staged, with_suffix};
use super::{Only, Restored};
use crate::archive::Layout;
use crate::catalog::BackupRecord;
use crate::config::JobConfig;
use crate::error::Error;
use crate::fsutil::{self, Cleanup};
use crate::hooks::{self, HookEvent};
use crate::ops::{Ctx, backup, verify};
use crate::run::{Event, Phase, Progress};

/// How long the in-use check waits for the live database's lock.
const IN_USE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether another connection is using the live database: it cannot be locked
/// exclusively within [`IN_USE_TIMEOUT`], or (WAL) readers keep a checkpoint from
/// completing. An app that merely keeps an idle connection open is not detected; stop
/// it with a `before-restore` hook.
fn in_use(db: &Path) -> Result<bool, Error> {
    let conn = match Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(conn) => conn,
        // Not openable as a database: nothing can be using it as one.
        Err(_) => return Ok(false),
    };
    let busy = |e: &rusqlite::Error| {
        matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    };
    if conn.busy_timeout(IN_USE_TIMEOUT).is_err() {
        return Ok(false);
    }
    match conn.execute_batch("BEGIN EXCLUSIVE; ROLLBACK;") {
        Ok(()) => {}
        Err(e) if busy(&e) => return Ok(true),
        Err(_) => return Ok(false),
    }
    let wal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap_or_default();
    if wal == "wal" {
        let blocked: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap_or(0);
        return Ok(blocked != 0);
    }
    Ok(false)
}

/// Restores `record` of SQLite job `job` in place (see the module doc).
pub fn restore(
    ctx: &Ctx,
    record: &BackupRecord,
    job: &JobConfig,
    only: Only,
    force: bool,
    progress: Progress<'_>,
) -> Result<Restored, Error> {
    if record.summary.sqlite().is_none() {
        return Err(Error::InvalidArgument(format!(
            "backup {} holds a {} database but job '{}' now backs up an SQLite database; restore it with --to DIR",
            record.id,
            record.summary.source.kind(),
            job.name
        )));
    }
    let Some(sqlite) = job.sqlite() else {
        return Err(Error::InvalidArgument(format!(
            "job '{}' has no SQLite database to restore in place",
            job.name
        )));
    };
    let live_db = &sqlite.path;
    check_media_roots(record, job, only)?;
    // Before the journal or any staging directory: an encrypted backup without a key
    // is refused with nothing changed.
    let sidecar = verify::load_sidecar(ctx, record)?;
    let keys = verify::keys(ctx, &record.job, &sidecar)?;
    let (layout, stages) = plan_layout(record, job, live_db, only);

    // The journal names the staging directories before they exist, and (declared
    // before `cleanup`) is removed after them: whenever a crash comes, start-up
    // finds every staging directory that is left.
    let mut journal = Journal::begin(&ctx.config.daemon.state_dir, &record.id, &stages)?;
    let _cleanup = create_stages(&stages)?;

    // 1. Extract and verify (decrypting an encrypted archive, whose final chunk is
    //    checked before this returns); nothing live is touched yet.
    verify::extract_checked(
        ctx,
        &ctx.archive_path(record),
        keys,
        Some(verify::expected(&sidecar)),
        &layout,
        &format!("backup {} failed verification", record.id),
        Phase::Extract,
        sidecar.size,
        progress,
    )?;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }

    // 2. Hooks, in-use check, safety backup.
    progress(Event::new(Phase::Hooks, "before-restore hooks"));
    hooks::run(job, HookEvent::BeforeRestore, &record.id, "", ctx.cancel)
        .map_err(|e| Error::Hook(e.to_string()))?;
    if only.db() && !force && in_use(live_db)? {
        return Err(Error::InUse(live_db.clone()));
    }
    let safety_backup_id = if only.db() && !live_db.exists() {
        tracing::info!(job = job.name, "no live database: no safety backup needed");
        None
    } else {
        safety_backup(ctx, job, force, progress)?
    };

    // 3. Swap, with rollback on any failure.
    progress(Event::new(Phase::Swap, "swapping in the restored data"));
    swap_in(record, job, live_db, &layout, &mut journal)?;
    hooks::run_logged(job, HookEvent::AfterRestore, &record.id, "", ctx.cancel);
    Ok(Restored {
        id: record.id.clone(),
        safety_backup_id,
        database_name: None,
        database_path: only.db().then(|| live_db.clone()),
        media_paths: if only.media() {
            job.media.clone()
        } else {
            Vec::new()
        },
    })
}

/// Media can be restored in place only into as many directories as were backed up.
pub(super) fn check_media_roots(record: &BackupRecord, job: &JobConfig, only: Only) -> Result<(), Error> {
    let backed_up = record.summary.media_roots.len();
    if only.media() && backed_up != job.media.len() {
        return Err(Error::InvalidArgument(format!(
            "backup {} has {backed_up} media directories but job '{}' now has {}; restore it with --to DIR",
            record.id,
            job.name,
            job.media.len()
        )));
    }
    Ok(())
}

/// Where each part is staged: a `.coffer-restore-<id>-<name>` directory beside each
/// target (same filesystem, so the swap is a rename). Returns the layout and the
/// staging directories.
fn plan_layout(record: &BackupRecord, job: &JobConfig, live_db: &Path, only: Only) -> (Layout, Vec<PathBuf>) {
    let mut layout = Layout::default();
    let mut stages = Vec::new();
    if only.db() {
        let stage = stage_dir(record, live_db);
        layout.db = Some(stage.join("db"));
        stages.push(stage);
    }
    plan_media(record, job, only, &mut layout, &mut stages);
    (layout, stages)
}

/// The staging directory of `target`: `.coffer-restore-<id>-<name>` beside it.
fn stage_dir(record: &BackupRecord, target: &Path) -> PathBuf {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent.join(format!(".coffer-restore-{}-{name}", record.id))
}

/// Adds the media directories' staging (beside each) to `layout` and `stages`.
pub(super) fn plan_media(
    record: &BackupRecord,
    job: &JobConfig,
    only: Only,
    layout: &mut Layout,
    stages: &mut Vec<PathBuf>,
) {
    if only.media() {
        for root in &job.media {
            let stage = stage_dir(record, root);
            layout.media.push(Some(stage.join("root")));
            stages.push(stage);
        }
    }
}

/// Creates the (fresh) staging directories; they are removed when the result drops.
pub(super) fn create_stages(stages: &[PathBuf]) -> Result<Cleanup, Error> {
    let mut cleanup = Cleanup::new();
    for stage in stages {
        cleanup.add(stage);
        fsutil::remove_any(stage).map_err(Error::io("cannot clear the staging directory", stage))?;
        std::fs::create_dir(stage).map_err(Error::io("cannot create the staging directory", stage))?;
    }
    Ok(cleanup)
}

/// The pinned safety backup of the live state before it is replaced; with `force`, a
/// failed one only warns. Returns its id.
pub fn safety_backup(
    ctx: &Ctx,
    job: &JobConfig,
    force: bool,
    progress: Progress<'_>,
) -> Result<Option<String>, Error> {
    progress(Event::new(Phase::Safety, "safety backup of the current state"));
    match backup::take(ctx, job, "pre-restore", true, progress) {
        Ok(safety) => Ok(Some(safety.id)),
        Err(e) if force => {
            tracing::warn!(job = job.name, "no safety backup (forced restore): {e}");
            Ok(None)
        }
        Err(e) => Err(Error::SafetyBackup(Box::new(e))),
    }
}

/// Moves the staged database (and its stale `-wal`/`-shm`/`-journal` aside) and media
/// over the live ones, rolling every step back on failure. The plan goes to the
/// journal first, so a crash mid-swap is rolled back at start-up.
fn swap_in(
    record: &BackupRecord,
    job: &JobConfig,
    live_db: &Path,
    layout: &Layout,
    journal: &mut Journal,
) -> Result<(), Error> {
    let mut plan: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    if let Some(db) = &layout.db {
        for suffix in ["-wal", "-shm", "-journal"] {
            plan.push((with_suffix(live_db, suffix), None));
        }
        plan.push((live_db.to_owned(), Some(db.clone())));
    }
    plan.extend(media_plan(job, layout));
    let mut swap = begin_swap(&record.id, &plan, journal)?;
    if let Err(e) = run_moves(&mut swap, &plan) {
        return Err(roll_back(swap, journal, e));
    }
    journal.committed()?;
    swap.commit();
    Ok(())
}

/// The moves of the staged media directories over the live ones.
pub(super) fn media_plan(job: &JobConfig, layout: &Layout) -> Vec<(PathBuf, Option<PathBuf>)> {
    job.media
        .iter()
        .zip(&layout.media)
        .filter_map(|(root, staged)| staged.as_ref().map(|s| (root.clone(), Some(s.clone()))))
        .collect()
}

/// Flushes the staged data and writes the plan to the journal; nothing moved yet.
pub(super) fn begin_swap(
    id: &str,
    plan: &[(PathBuf, Option<PathBuf>)],
    journal: &mut Journal,
) -> Result<Swap, Error> {
    sync_staged(plan)?;
    let swap = Swap::new(id);
    journal.swapping(&swap, plan)?;
    Ok(swap)
}

/// Makes the planned moves (each undoable until the swap is committed).
pub(super) fn run_moves(swap: &mut Swap, plan: &[(PathBuf, Option<PathBuf>)]) -> std::io::Result<()> {
    plan.iter().try_for_each(|(live, staged)| match staged {
        Some(staged) => swap.replace(live, staged),
        None => swap.set_aside(live),
    })
}

/// Undoes the moves after `cause`; if that fails too, the journal is kept so that
/// start-up retries. Returns the error to report.
pub(super) fn roll_back(swap: Swap, journal: &mut Journal, cause: std::io::Error) -> Error {
    let rolled_back = swap.rollback();
    if rolled_back.is_err() {
        journal.keep();
    }
    Error::Swap {
        source: cause,
        rolled_back: rolled_back.is_ok(),
    }
}
