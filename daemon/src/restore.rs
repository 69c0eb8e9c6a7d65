//! Restoring a backup: to another directory (a drill) or in place.
//!
//! Extraction is one streaming pass of the verifying reader ([`archive::read_archive`])
//! with the catalogued sidecar as the expected manifest, so every entry is checked
//! (path, type, size, mode, hash) before or while it is written, and only ever into
//! fresh staging directories that we created: [`Extractor`] creates files with
//! `O_EXCL`, never writes beneath a symlink (the reader refuses such entries), and
//! restores modes and mtimes (directories last, deepest first).
//!
//! `--to DIR` mirrors the archive layout under DIR (`DIR/db/<name>`,
//! `DIR/media/<n>/...`), staged in `DIR/.coffer-restore` and moved into place at the
//! end; DIR must be empty or missing, and the live paths are never touched. Like
//! `tar -x`, it leaves flushing to the kernel (nothing is deleted after it). The
//! hash checks are the verification there; in place, SQLite's `integrity_check` runs
//! on the staged database too, before anything live changes.
//!
//! In place, in this order: extract into staging *beside* each target (same
//! filesystem, so the swap is a rename) and `integrity_check` the staged database;
//! run `before-restore` hooks; refuse if the live database is in use (unless
//! `--force`); take a pinned safety backup of the current state (note
//! "pre-restore"); flush
//! the staged data to disk (`syncfs`: the old data is deleted after the swap); then
//! [`Swap`]: move each live path aside, move the staged one in (the database's stale
//! `-wal`, `-shm` and `-journal` go aside too), fsync; on any error, roll every step
//! back in reverse. Only after the whole swap succeeded are the old copies removed
//! and the `after-restore` hooks run. Staging is always cleaned up.
//!
//! A crash cannot leave a mix either: a journal (`<state-dir>/journal/<id>.json`)
//! records the staging directories and, before the first rename, the planned moves;
//! [`recover`] at start-up rolls an uncommitted swap back (or finishes a committed
//! one) and removes the staging directories.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use crate::archive::{self, ArchiveError, Expected, FoundEntry, Visitor};
use crate::catalog::{BackupPaths, BackupRecord};
use crate::engine::{Engine, Error, Event, Progress};
use crate::fsutil::{self, Cleanup};
use crate::hooks::{self, HookEvent};
use crate::manifest::{EntryKind, Sidecar};
use crate::snapshot;

/// How long the in-use check waits for the live database's lock.
const IN_USE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which parts of a backup to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    All,
    Db,
    Media,
}

impl Only {
    /// Parses the `--only` argument ("" means all).
    pub fn parse(text: &str) -> Result<Only, Error> {
        match text {
            "" | "all" => Ok(Only::All),
            "db" => Ok(Only::Db),
            "media" => Ok(Only::Media),
            other => Err(Error::InvalidArgument(format!(
                "--only must be db or media, not '{other}'"
            ))),
        }
    }

    fn db(self) -> bool {
        self != Only::Media
    }

    fn media(self) -> bool {
        self != Only::Db
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub id: String,
    pub safety_backup_id: Option<String>,
    pub database_path: Option<PathBuf>,
    pub media_paths: Vec<PathBuf>,
}

/// Where each part of an archive is extracted; `None` skips that part.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The file the `db/<name>` entry is written to.
    pub db: Option<PathBuf>,
    /// The directory each `media/<n>` root becomes.
    pub media: Vec<Option<PathBuf>>,
}

impl Layout {
    /// The destination of an archive path, or `None` if that part is not extracted.
    /// Paths were checked by the reader (relative, no `..`), so joining is safe.
    fn target(&self, path: &str) -> Option<PathBuf> {
        let mut parts = path.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("db"), Some(_), None) => self.db.clone(),
            (Some("media"), Some(n), rest) => {
                let root = self.media.get(n.parse::<usize>().ok()?)?.as_ref()?;
                Some(match rest {
                    Some(rest) => root.join(rest),
                    None => root.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Writes archive entries to their [`Layout`] destinations.
pub struct Extractor<'a> {
    layout: &'a Layout,
    /// Directories whose mode and mtime are applied at the end.
    dirs: Vec<(PathBuf, u32, i64)>,
}

impl<'a> Extractor<'a> {
    pub fn new(layout: &'a Layout) -> Self {
        Extractor {
            layout,
            dirs: Vec::new(),
        }
    }

    /// Applies directory modes and mtimes, deepest first (writing into a directory
    /// changes its mtime, and a read-only mode would block the writes).
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        self.dirs
            .sort_by_key(|(path, _, _)| std::cmp::Reverse(path.components().count()));
        for (path, mode, mtime) in &self.dirs {
            set_mode(path, *mode)?;
            set_mtime(path, *mtime)?;
        }
        Ok(())
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Source { path, source }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ArchiveError> {
    use std::os::unix::fs::PermissionsExt;
    // No setuid/setgid from an archive.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o1777)).map_err(write_err(path))
}

fn set_mtime(path: &Path, mtime: i64) -> Result<(), ArchiveError> {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
    File::open(path)
        .and_then(|f| f.set_modified(when))
        .map_err(write_err(path))
}

impl Visitor for Extractor<'_> {
    fn entry(&mut self, entry: &FoundEntry, content: &mut dyn std::io::Read) -> Result<(), ArchiveError> {
        let Some(dest) = self.layout.target(&entry.path) else {
            return Ok(());
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        match entry.kind {
            EntryKind::File => {
                let mut file = File::create_new(&dest).map_err(write_err(&dest))?;
                archive::copy_large(content, &mut file).map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                        ArchiveError::Invalid(format!("its data is corrupt or truncated ({e})"))
                    }
                    _ => ArchiveError::Source {
                        path: dest.clone(),
                        source: e,
                    },
                })?;
                drop(file);
                set_mode(&dest, entry.mode)?;
                set_mtime(&dest, entry.mtime)?;
            }
            EntryKind::Dir => {
                match std::fs::create_dir(&dest) {
                    Ok(()) => {}
                    // Created earlier as the parent of an entry listed before it.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                    Err(e) => return Err(write_err(&dest)(e)),
                }
                self.dirs.push((dest, entry.mode, entry.mtime));
            }
            EntryKind::Symlink => {
                let target = entry.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(target, &dest).map_err(write_err(&dest))?;
            }
        }
        Ok(())
    }
}

/// Reads the sidecar of a catalogued backup and checks it against the catalog.
pub fn load_sidecar(record: &BackupRecord, backup_dir: &Path) -> Result<(BackupPaths, Sidecar), Error> {
    let paths = BackupPaths::new(backup_dir, &record.job, &record.id);
    let sidecar = crate::catalog::read_sidecar(&paths.sidecar).map_err(|message| Error::Archive {
        context: format!("backup {} cannot be read", record.id),
        source: ArchiveError::Invalid(format!(
            "its sidecar {} is unreadable: {message}",
            paths.sidecar.display()
        )),
    })?;
    if sidecar.sha256 != record.sha256 || sidecar.size != record.size {
        return Err(Error::Archive {
            context: format!("backup {} failed verification", record.id),
            source: ArchiveError::Invalid("its sidecar does not match the catalog".into()),
        });
    }
    Ok((paths, sidecar))
}

/// Extracts the archive at `paths` into `layout`, verifying it against `sidecar` on
/// the way.
pub fn extract(
    id: &str,
    paths: &BackupPaths,
    sidecar: &Sidecar,
    layout: &Layout,
    cancel: &CancellationToken,
    phase: &'static str,
    progress: Progress<'_>,
) -> Result<(), Error> {
    let total = sidecar.manifest.totals.bytes;
    let expected = Expected {
        manifest: &sidecar.manifest,
        size: sidecar.size,
        sha256: &sidecar.sha256,
    };
    let mut extractor = Extractor::new(layout);
    let mut report = |done| {
        progress(Event {
            phase,
            done,
            total,
            message: String::new(),
        })
    };
    let failed = |source| match source {
        ArchiveError::Cancelled => Error::Cancelled,
        source => Error::Archive {
            context: format!("backup {id} failed verification"),
            source,
        },
    };
    archive::read_archive(
        &paths.archive,
        Some(expected),
        &mut extractor,
        &mut report,
        &|| cancel.is_cancelled(),
    )
    .map_err(failed)?;
    extractor.finish().map_err(failed)
}

/// The file name of the database in a manifest (`db/<name>`).
fn db_name(sidecar: &Sidecar) -> String {
    sidecar
        .manifest
        .database_entry()
        .and_then(|e| e.path.strip_prefix("db/"))
        .unwrap_or("database.db")
        .to_owned()
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

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

/// Where an in-place restore is, on disk, so that start-up can undo or finish it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum JournalState {
    /// Extracting into the staging directories; nothing live touched.
    Staging,
    /// Swapping; an interruption is rolled back.
    Swapping,
    /// Swapped; an interruption only leaves old copies to remove.
    Committed,
}

/// One planned move of the swap.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PlannedMove {
    live: PathBuf,
    aside: PathBuf,
    /// Whether `live` existed before the swap.
    had_live: bool,
    /// Moved into `live` after `live` was set aside (none: `live` just goes away).
    staged: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct JournalRecord {
    id: String,
    state: JournalState,
    stages: Vec<PathBuf>,
    moves: Vec<PlannedMove>,
}

/// The journal file `<state-dir>/journal/<id>.json` of a running in-place restore.
/// Removed when the restore ends, unless a failed rollback left work for start-up.
struct Journal {
    path: PathBuf,
    record: JournalRecord,
    keep: bool,
}

impl Journal {
    fn begin(state_dir: &Path, id: &str, stages: &[PathBuf]) -> Result<Journal, Error> {
        let dir = state_dir.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create the journal directory", &dir))?;
        let journal = Journal {
            path: dir.join(format!("{id}.json")),
            record: JournalRecord {
                id: id.to_owned(),
                state: JournalState::Staging,
                stages: stages.to_vec(),
                moves: Vec::new(),
            },
            keep: false,
        };
        journal.write()?;
        Ok(journal)
    }

    fn write(&self) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| Error::Internal(e.to_string()))?;
        fsutil::write_atomic(&self.path, &json)
            .map_err(Error::io("cannot write the restore journal", &self.path))
    }

    fn swapping(&mut self, swap: &Swap, plan: &[(PathBuf, Option<PathBuf>)]) -> Result<(), Error> {
        self.record.moves = plan
            .iter()
            .map(|(live, staged)| PlannedMove {
                live: live.clone(),
                aside: with_suffix(live, &swap.tag),
                had_live: std::fs::symlink_metadata(live).is_ok(),
                staged: staged.clone(),
            })
            .collect();
        self.record.state = JournalState::Swapping;
        self.write()
    }

    fn committed(&mut self) -> Result<(), Error> {
        self.record.state = JournalState::Committed;
        self.write()
    }

    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where restore journals live, under the state dir.
const JOURNAL_DIR: &str = "journal";

/// Undoes or finishes in-place restores that a crash interrupted: a swap that had
/// not committed is rolled back move by move (the old data comes back; the restored
/// copy is dropped — it is still in the archive), a committed one has its old copies
/// removed, and staging directories beside the targets are removed. Returns the ids
/// handled. Run at start-up, before anything else touches the app's paths.
pub fn recover(state_dir: &Path) -> std::io::Result<Vec<String>> {
    let dir = state_dir.join(JOURNAL_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut handled = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            // A rewrite the crash interrupted: the journal it was to replace (if any)
            // is still beside it and complete, and no step after the write began.
            if path.to_string_lossy().ends_with(fsutil::PARTIAL_SUFFIX) {
                fsutil::remove_any(&path)?;
            }
            continue;
        }
        let record: JournalRecord = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(record)) => record,
            _ => {
                tracing::error!(journal = %path.display(), "unreadable restore journal; left for inspection");
                continue;
            }
        };
        match record.state {
            JournalState::Staging => {}
            JournalState::Swapping => {
                for m in record.moves.iter().rev() {
                    if std::fs::symlink_metadata(&m.aside).is_ok() {
                        fsutil::remove_any(&m.live)?;
                        std::fs::rename(&m.aside, &m.live)?;
                    } else if !m.had_live && m.staged.is_some() {
                        fsutil::remove_any(&m.live)?;
                    }
                    if let Some(parent) = m.live.parent() {
                        fsutil::sync_dir(parent)?;
                    }
                }
                tracing::warn!(
                    id = record.id,
                    "rolled back an in-place restore interrupted during its swap"
                );
            }
            JournalState::Committed => {
                for m in &record.moves {
                    fsutil::remove_any(&m.aside)?;
                }
                tracing::info!(
                    id = record.id,
                    "finished an in-place restore interrupted after its swap"
                );
            }
        }
        for stage in &record.stages {
            fsutil::remove_any(stage)?;
        }
        std::fs::remove_file(&path)?;
        handled.push(record.id);
    }
    Ok(handled)
}

/// Flushes the staged data to disk before it replaces the live data (whose old copy is
/// deleted once the swap commits, so a power cut must not find the new one only in
/// the page cache): one `syncfs` per staged path, the second on a filesystem is cheap.
fn sync_staged(plan: &[(PathBuf, Option<PathBuf>)]) -> Result<(), Error> {
    for staged in plan.iter().filter_map(|(_, staged)| staged.as_ref()) {
        let file = File::open(staged).map_err(Error::io("cannot open the restored data", staged))?;
        nix::unistd::syncfs(&file)
            .map_err(|e| Error::io("cannot flush the restored data to disk", staged)(e.into()))?;
    }
    Ok(())
}

/// One swapped path: the live path, where its old content went, and whether a new
/// one was moved in.
struct Step {
    live: PathBuf,
    aside: Option<PathBuf>,
    replaced: bool,
}

/// Moves staged paths over live ones, able to undo everything until committed.
pub struct Swap {
    tag: String,
    steps: Vec<Step>,
}

impl Swap {
    pub fn new(id: &str) -> Swap {
        Swap {
            tag: format!(".coffer-old-{id}"),
            steps: Vec::new(),
        }
    }

    /// Moves `live` aside (if it exists) and `staged` into its place.
    pub fn replace(&mut self, live: &Path, staged: &Path) -> std::io::Result<()> {
        self.set_aside(live)?;
        std::fs::rename(staged, live)?;
        if let Some(step) = self.steps.last_mut() {
            step.replaced = true;
        }
        fsutil::sync_dir(live.parent().unwrap_or(Path::new("/")))
    }

    /// Moves `live` aside if it exists (for files that must go, like a stale `-wal`).
    pub fn set_aside(&mut self, live: &Path) -> std::io::Result<()> {
        let aside = with_suffix(live, &self.tag);
        let moved = match std::fs::rename(live, &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        self.steps.push(Step {
            live: live.to_owned(),
            aside: moved.then_some(aside),
            replaced: false,
        });
        Ok(())
    }

    /// Undoes every step, newest first. Returns the first error, after trying all.
    pub fn rollback(mut self) -> std::io::Result<()> {
        let mut first_error = None;
        while let Some(step) = self.steps.pop() {
            let result = (|| {
                if step.replaced {
                    fsutil::remove_any(&step.live)?;
                }
                if let Some(aside) = &step.aside {
                    std::fs::rename(aside, &step.live)?;
                }
                fsutil::sync_dir(step.live.parent().unwrap_or(Path::new("/")))
            })();
            if let Err(e) = result {
                tracing::error!(path = %step.live.display(), "rollback step failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Keeps the new state: removes the old copies.
    pub fn commit(self) {
        for step in self.steps {
            if let Some(aside) = step.aside
                && let Err(e) = fsutil::remove_any(&aside)
            {
                tracing::warn!(path = %aside.display(), "cannot remove the pre-restore copy: {e}");
            }
        }
    }
}

impl Engine {
    /// Restores a backup (see the module doc). `to` restores into another directory.
    pub fn restore(
        self: &std::sync::Arc<Self>,
        id_text: &str,
        to: Option<&Path>,
        only: Only,
        force: bool,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<Restored, Error> {
        let record = self.resolve(id_text)?;
        let config = self.config();
        let backup_dir = config.daemon.backup_dir.clone();
        match to {
            Some(dir) => restore_to(&record, &backup_dir, dir, only, cancel, progress),
            None => {
                let job = config
                    .job(&record.job)
                    .ok_or_else(|| Error::UnknownJob(record.job.clone()))?
                    .clone();
                let _claim = self.claim(&job.name)?;
                let started = Utc::now().timestamp();
                let run = self.catalog().start_run(&job.name, "restore", started)?;
                let result = self.restore_in_place(&record, &job, only, force, cancel, progress);
                let (status, error) = match &result {
                    Ok(_) => ("succeeded", String::new()),
                    Err(Error::Cancelled) => ("cancelled", Error::Cancelled.to_string()),
                    Err(e) => ("failed", e.describe()),
                };
                let _ = self
                    .catalog()
                    .finish_run(run, status, Utc::now().timestamp(), &error, &record.id, 0);
                match &result {
                    Ok(_) => tracing::info!(job = job.name, id = record.id, "restored in place"),
                    Err(e) => {
                        tracing::warn!(job = job.name, id = record.id, "restore failed: {e}");
                        hooks::run_logged(&job, HookEvent::OnFailure, &record.id, &e.describe());
                    }
                }
                result
            }
        }
    }

    fn restore_in_place(
        &self,
        record: &BackupRecord,
        job: &crate::config::JobConfig,
        only: Only,
        force: bool,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<Restored, Error> {
        let summary = &record.summary;
        if only.media() && summary.media_roots.len() != job.media.len() {
            return Err(Error::InvalidArgument(format!(
                "backup {} has {} media directories but job '{}' now has {}; restore it with --to DIR",
                record.id,
                summary.media_roots.len(),
                job.name,
                job.media.len()
            )));
        }
        let stage_dir = |target: &Path| -> PathBuf {
            let parent = target.parent().unwrap_or(Path::new("/"));
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            parent.join(format!(".coffer-restore-{}-{name}", record.id))
        };
        let mut layout = Layout::default();
        let mut stages = Vec::new();
        if only.db() {
            let stage = stage_dir(&job.database);
            layout.db = Some(stage.join("db"));
            stages.push(stage);
        }
        if only.media() {
            for root in &job.media {
                let stage = stage_dir(root);
                layout.media.push(Some(stage.join("root")));
                stages.push(stage);
            }
        }

        // The journal names the staging directories before they exist, and (declared
        // before `cleanup`) is removed after them: whenever a crash comes, start-up
        // finds every staging directory that is left.
        let mut journal = Journal::begin(&self.config().daemon.state_dir, &record.id, &stages)?;
        let mut cleanup = Cleanup::new();
        for stage in &stages {
            cleanup.add(stage);
            fsutil::remove_any(stage).map_err(Error::io("cannot clear the staging directory", stage))?;
            std::fs::create_dir(stage).map_err(Error::io("cannot create the staging directory", stage))?;
        }

        // 1. Extract and verify; nothing live is touched yet.
        let (paths, sidecar) = load_sidecar(record, &self.config().daemon.backup_dir)?;
        extract(&record.id, &paths, &sidecar, &layout, cancel, "extract", progress)?;
        if let Some(db) = &layout.db {
            progress(Event::new("check", "integrity check of the restored database"));
            snapshot::check(db, true)?;
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }

        // 2. Hooks, in-use check, safety backup.
        progress(Event::new("hooks", "before-restore hooks"));
        hooks::run(job, HookEvent::BeforeRestore, &record.id, "").map_err(|e| Error::Hook(e.to_string()))?;
        if only.db() && !force && in_use(&job.database)? {
            return Err(Error::InUse(job.database.clone()));
        }
        let safety_backup_id = if only.db() && !job.database.exists() {
            tracing::info!(job = job.name, "no live database: no safety backup needed");
            None
        } else {
            progress(Event::new("safety", "safety backup of the current state"));
            match self.take_backup(&self.config(), job, "pre-restore", true, cancel, progress) {
                Ok(safety) => Some(safety.id),
                Err(e) if force => {
                    tracing::warn!(job = job.name, "no safety backup (forced restore): {e}");
                    None
                }
                Err(e) => {
                    return Err(Error::InvalidArgument(format!(
                        "the safety backup of the current state failed ({e}); fix it or restore with --force"
                    )));
                }
            }
        };

        // 3. Swap, with rollback on any failure. The plan goes to the journal first,
        // so a crash mid-swap is rolled back at start-up ([`recover`]).
        progress(Event::new("swap", "swapping in the restored data"));
        let mut plan: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
        if let Some(db) = &layout.db {
            for suffix in ["-wal", "-shm", "-journal"] {
                plan.push((with_suffix(&job.database, suffix), None));
            }
            plan.push((job.database.clone(), Some(db.clone())));
        }
        for (root, staged) in job.media.iter().zip(&layout.media) {
            if let Some(staged) = staged {
                plan.push((root.clone(), Some(staged.clone())));
            }
        }
        sync_staged(&plan)?;
        let mut swap = Swap::new(&record.id);
        journal.swapping(&swap, &plan)?;
        let swapped = plan.iter().try_for_each(|(live, staged)| match staged {
            Some(staged) => swap.replace(live, staged),
            None => swap.set_aside(live),
        });
        if let Err(e) = swapped {
            let rolled_back = swap.rollback();
            if rolled_back.is_err() {
                // Start-up retries the rollback from the journal.
                journal.keep();
            }
            return Err(Error::Swap {
                source: e,
                rolled_back: rolled_back.is_ok(),
            });
        }
        journal.committed()?;
        swap.commit();
        hooks::run_logged(job, HookEvent::AfterRestore, &record.id, "");
        Ok(Restored {
            id: record.id.clone(),
            safety_backup_id,
            database_path: only.db().then(|| job.database.clone()),
            media_paths: if only.media() {
                job.media.clone()
            } else {
                Vec::new()
            },
        })
    }
}

/// Restores into `dir` (see the module doc).
fn restore_to(
    record: &BackupRecord,
    backup_dir: &Path,
    dir: &Path,
    only: Only,
    cancel: &CancellationToken,
    progress: Progress<'_>,
) -> Result<Restored, Error> {
    if !dir.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "--to needs an absolute path, not '{}'",
            dir.display()
        )));
    }
    let mut cleanup = Cleanup::new();
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{} is not empty; restore into a new or empty directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
            cleanup.add(dir);
        }
        // A file, or a path under one, or one too long: the caller's mistake, said
        // without echoing a path that may be megabytes long.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::InvalidArgument(format!(
                "{} is not a directory; restore into a new or empty directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => {
            return Err(Error::InvalidArgument("the --to path is too long".into()));
        }
        Err(e) => return Err(Error::io("cannot read", dir)(e)),
    }
    let stage = dir.join(".coffer-restore");
    std::fs::create_dir(&stage).map_err(Error::io("cannot create the staging directory", &stage))?;
    cleanup.add(&stage);
    let (paths, sidecar) = load_sidecar(record, backup_dir)?;
    let db_name = db_name(&sidecar);
    let roots = sidecar.manifest.media_roots.len();
    let layout = Layout {
        db: only.db().then(|| stage.join("db").join(&db_name)),
        media: (0..roots)
            .map(|n| only.media().then(|| stage.join("media").join(n.to_string())))
            .collect(),
    };
    // No SQLite check here: every byte was just checked against the manifest's
    // sha256, so the database is identical to the snapshot that passed quick_check
    // when it was taken (`verify --deep` runs SQLite's own checks on demand).
    extract(&record.id, &paths, &sidecar, &layout, cancel, "extract", progress)?;
    for part in ["db", "media"] {
        let staged = stage.join(part);
        if staged.exists() {
            std::fs::rename(&staged, dir.join(part)).map_err(Error::io("cannot move into place", &staged))?;
        }
    }
    fsutil::remove_any(&stage).map_err(Error::io("cannot remove", &stage))?;
    fsutil::sync_dir(dir).map_err(Error::io("cannot sync", dir))?;
    cleanup.keep(dir);
    Ok(Restored {
        id: record.id.clone(),
        safety_backup_id: None,
        database_path: only.db().then(|| dir.join("db").join(db_name)),
        media_paths: if only.media() {
            (0..roots)
                .map(|n| dir.join("media").join(n.to_string()))
                .collect()
        } else {
            Vec::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_targets() {
        let layout = Layout {
            db: Some(PathBuf::from("/s/db/app.db")),
            media: vec![Some(PathBuf::from("/s/m0")), None],
        };
        assert_eq!(layout.target("db/app.db"), Some(PathBuf::from("/s/db/app.db")));
        assert_eq!(layout.target("media/0"), Some(PathBuf::from("/s/m0")));
        assert_eq!(
            layout.target("media/0/a/b.png"),
            Some(PathBuf::from("/s/m0/a/b.png"))
        );
        assert_eq!(layout.target("media/1/x"), None);
        assert_eq!(layout.target("media/2/x"), None);
        assert_eq!(layout.target("manifest.json"), None);
    }

    #[test]
    fn swap_rolls_back_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let live_db = dir.path().join("app.db");
        let wal = dir.path().join("app.db-wal");
        let media = dir.path().join("uploads");
        std::fs::write(&live_db, b"old db").unwrap();
        std::fs::write(&wal, b"old wal").unwrap();
        std::fs::create_dir(&media).unwrap();
        std::fs::write(media.join("f"), b"old file").unwrap();
        let staged_db = dir.path().join("staged.db");
        std::fs::write(&staged_db, b"new db").unwrap();

        let mut swap = Swap::new("app-20260101T000000Z");
        swap.set_aside(&wal).unwrap();
        swap.replace(&live_db, &staged_db).unwrap();
        // The staged media directory does not exist: the swap fails half-way.
        assert!(swap.replace(&media, &dir.path().join("missing")).is_err());
        swap.rollback().unwrap();

        assert_eq!(std::fs::read(&live_db).unwrap(), b"old db");
        assert_eq!(std::fs::read(&wal).unwrap(), b"old wal");
        assert_eq!(std::fs::read(media.join("f")).unwrap(), b"old file");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "nothing left aside: {names:?}");
    }

    #[test]
    fn recover_rolls_back_a_swap_interrupted_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let db = dir.path().join("app.db");
        let media = dir.path().join("uploads");
        let stage = dir.path().join(".coffer-restore-x-app.db");
        std::fs::write(&db, b"old db").unwrap();
        std::fs::create_dir(&media).unwrap();
        std::fs::write(media.join("f"), b"old file").unwrap();
        std::fs::create_dir(&stage).unwrap();
        std::fs::write(stage.join("db"), b"new db").unwrap();
        let staged_media = stage.join("root");
        std::fs::create_dir(&staged_media).unwrap();

        let mut journal = Journal::begin(&state, "x", std::slice::from_ref(&stage)).unwrap();
        let mut swap = Swap::new("x");
        let plan = vec![
            (db.clone(), Some(stage.join("db"))),
            (media.clone(), Some(staged_media.clone())),
        ];
        journal.swapping(&swap, &plan).unwrap();
        // The database was swapped, then the daemon died before the media swap.
        swap.replace(&db, &stage.join("db")).unwrap();
        std::mem::forget(swap);
        journal.keep();
        drop(journal);

        assert_eq!(recover(&state).unwrap(), vec!["x".to_owned()]);
        assert_eq!(std::fs::read(&db).unwrap(), b"old db");
        assert_eq!(std::fs::read(media.join("f")).unwrap(), b"old file");
        assert!(!stage.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "only app.db, uploads and state remain: {names:?}");
        assert!(recover(&state).unwrap().is_empty(), "the journal is gone");
    }

    #[test]
    fn swap_commit_removes_old_copies() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("uploads");
        let staged = dir.path().join("staged");
        std::fs::create_dir(&live).unwrap();
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("new"), b"n").unwrap();
        let mut swap = Swap::new("x");
        swap.replace(&live, &staged).unwrap();
        swap.commit();
        assert!(live.join("new").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
