//! One backup, verify or delete at a time per job: the daemon's work, independent of
//! gRPC.
//!
//! A backup run: claim the job (a second run of the same job is refused), wait for a
//! free slot (`max-concurrent-runs`), then on a blocking thread: check free space,
//! snapshot the database into staging (`VACUUM INTO` + `quick_check`), walk the media
//! directories, stream everything into `<id>.tar.zst.partial`, write the sidecar,
//! rename the archive into place, fsync, catalog it, and (if configured) verify it.
//! Progress flows back through a callback as [`Event`]s. Whatever fails, the run's
//! staging files and partial archive are removed ([`Cleanup`]), earlier backups are
//! untouched, and the run is recorded with its error.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::Utc;
use coffer_common::format::bytes;
use coffer_common::ids::{self, IdRef};
use tokio_util::sync::CancellationToken;

use crate::archive::{self, ArchiveError, ArchiveWriter, Expected, HashOnly};
use crate::catalog::{BackupPaths, BackupRecord, Catalog, CatalogError, JobStats, RunRecord};
use crate::config::{Config, JobConfig};
use crate::fsutil::{self, Cleanup};
use crate::hooks::{self, HookEvent};
use crate::manifest::{FORMAT_VERSION, Manifest, Sidecar, Totals};
use crate::restore;
use crate::retention::{self, Candidate, Decision};
use crate::snapshot::{self, SnapshotError, SnapshotMethod};

/// Why an operation failed. Messages are sentences for the admin; the service maps
/// each kind to a gRPC code in one place.
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
    Snapshot(#[from] SnapshotError),
    #[error("{context}: {source}")]
    Archive {
        context: String,
        #[source]
        source: ArchiveError,
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
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}; the operation was not started")]
    Hook(String),
    #[error("database {} is in use by another program; stop it first (e.g. with a before-restore hook) or use --force", .0.display())]
    InUse(PathBuf),
    #[error("the restore failed while swapping in the restored data ({source}); {}", if *rolled_back { "the previous state was put back" } else { "ROLLBACK FAILED: see the log for the paths to fix by hand" })]
    Swap {
        #[source]
        source: std::io::Error,
        rolled_back: bool,
    },
    #[error("the operation was cancelled because cofferd is shutting down")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The error's sentence followed by each of its sources not already in it: what
    /// clients see and what runs record.
    pub fn describe(&self) -> String {
        coffer_common::format::error_chain(self)
    }

    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io { what, path, source }
    }

    /// Whether this failure is the disk filling up.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::NoSpace(_) => true,
            Error::Archive { source, .. } => source.is_disk_full(),
            Error::Io { source, .. } => source.raw_os_error() == Some(nix::libc::ENOSPC),
            Error::Snapshot(SnapshotError::Sqlite { source, .. })
            | Error::Catalog(CatalogError::Sqlite(source)) => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            _ => false,
        }
    }
}

/// A progress event of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
    pub message: String,
}

impl Event {
    pub fn new(phase: &'static str, message: impl Into<String>) -> Event {
        Event {
            phase,
            done: 0,
            total: 0,
            message: message.into(),
        }
    }
}

/// Where progress goes (a channel to the client, or nowhere).
pub type Progress<'a> = &'a mut (dyn FnMut(Event) + Send);

/// The outcome of a verification.
#[derive(Debug, Clone)]
pub struct Verified {
    pub id: String,
    pub entries: u64,
    pub deep: bool,
}

/// One backup's retention decision, and whether it was removed.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub job: String,
    pub decision: Decision,
    pub removed: bool,
}

/// Holds a job's "running" flag; released on drop.
pub struct Claim {
    engine: Arc<Engine>,
    job: String,
}

impl Claim {
    pub fn job(&self) -> &str {
        &self.job
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.engine.running().remove(&self.job);
    }
}

/// Counters that live only as long as the process (Prometheus handles resets).
#[derive(Debug, Default)]
pub struct Counters {
    /// Backups removed by retention, per job.
    pub retention_removed: HashMap<String, u64>,
    /// Failed verifications, per job.
    pub verify_failures: HashMap<String, u64>,
}

/// The daemon's state and operations.
pub struct Engine {
    counters: Mutex<Counters>,
    /// Woken after every run, so health is re-evaluated at once.
    pub changed: tokio::sync::Notify,
    config: RwLock<Arc<Config>>,
    catalog: Catalog,
    running: Mutex<HashSet<String>>,
    slots: tokio::sync::Semaphore,
    hostname: String,
    workers: u32,
}

impl Engine {
    /// Opens the catalog and prepares the directories of `config`.
    pub fn new(config: Config, catalog: Catalog) -> Engine {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Engine {
            counters: Mutex::new(Counters::default()),
            changed: tokio::sync::Notify::new(),
            slots: tokio::sync::Semaphore::new(config.daemon.max_concurrent_runs),
            config: RwLock::new(Arc::new(config)),
            catalog,
            running: Mutex::new(HashSet::new()),
            hostname,
            workers,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new (validated) config in force; runs already going keep theirs.
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a run of `job` is in progress.
    pub fn is_running(&self, job: &str) -> bool {
        self.running().contains(job)
    }

    /// The staging directory (same filesystem as the state dir).
    pub fn staging_dir(&self) -> PathBuf {
        self.config().daemon.state_dir.join("staging")
    }

    /// Reads the process-lifetime counters.
    pub fn counters<T>(&self, f: impl FnOnce(&Counters) -> T) -> T {
        f(&self.counters.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Records an action in the audit log (and the daemon's log).
    pub fn audit(&self, actor: &str, action: &str, target: &str, error: Option<&str>) {
        let result = if error.is_some() { "failed" } else { "ok" };
        match error {
            None => tracing::info!(actor, action, target, "audit: {action} {target} ok"),
            Some(e) => tracing::warn!(actor, action, target, "audit: {action} {target} failed: {e}"),
        }
        let entry = crate::catalog::AuditRecord {
            id: 0,
            at: Utc::now().timestamp(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            result: result.to_owned(),
            error: error.unwrap_or_default().to_owned(),
        };
        if let Err(e) = self.catalog.audit(&entry) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }

    /// Marks `job` as running, or refuses if it already is.
    pub fn claim(self: &Arc<Self>, job: &str) -> Result<Claim, Error> {
        if self.config().job(job).is_none() {
            return Err(Error::UnknownJob(job.to_owned()));
        }
        if !self.running().insert(job.to_owned()) {
            return Err(Error::Busy(job.to_owned()));
        }
        Ok(Claim {
            engine: self.clone(),
            job: job.to_owned(),
        })
    }

    /// Runs a backup of the claimed job: waits for a run slot, then works on a
    /// blocking thread. `progress` is called from that thread.
    pub async fn backup(
        self: Arc<Self>,
        claim: Claim,
        note: String,
        cancel: CancellationToken,
        mut progress: Box<dyn FnMut(Event) + Send>,
    ) -> Result<BackupRecord, Error> {
        let _permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                progress(Event::new(
                    "waiting",
                    "waiting for another run to finish (max-concurrent-runs)",
                ));
                tokio::select! {
                    permit = self.slots.acquire() => permit.map_err(|e| Error::Internal(e.to_string()))?,
                    () = cancel.cancelled() => return Err(Error::Cancelled),
                }
            }
        };
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = engine.backup_blocking(claim.job(), &note, &cancel, &mut *progress);
            drop(claim);
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("the backup task failed: {e}")))?
    }

    /// A whole backup run, recorded in the catalog's runs.
    fn backup_blocking(
        &self,
        job_name: &str,
        note: &str,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<BackupRecord, Error> {
        let config = self.config();
        let job = config
            .job(job_name)
            .ok_or_else(|| Error::UnknownJob(job_name.to_owned()))?;
        let started = Utc::now();
        let run = self.catalog.start_run(&job.name, "backup", started.timestamp())?;
        // Mirror progress into systemd's STATUS line, once per percent.
        let mut shown = None;
        let progress = &mut |event: Event| {
            let pct = (event.total > 0).then(|| event.done * 100 / event.total);
            if event.phase != "archive" || pct != shown {
                shown = pct;
                crate::notify::status(&match pct {
                    Some(p) if event.phase == "archive" => format!("backing up {}: {p}%", job.name),
                    _ => format!("backing up {}: {}", job.name, event.phase),
                });
            }
            progress(event);
        };
        let result = hooks::run(job, HookEvent::BeforeBackup, "", "")
            .map_err(|e| Error::Hook(e.to_string()))
            .and_then(|()| self.take_backup(&config, job, note, false, cancel, progress));
        // A run stopped by shutdown is "cancelled", whatever error the interruption
        // surfaced as (an interrupted lock wait looks like a busy database).
        let result = match result {
            Err(e) if cancel.is_cancelled() && !matches!(e, Error::Cancelled) => {
                tracing::debug!(job = job.name, "run interrupted by shutdown: {e}");
                Err(Error::Cancelled)
            }
            other => other,
        };
        let (status, error, id, size) = match &result {
            Ok(record) => ("succeeded", String::new(), record.id.as_str(), record.size),
            Err(Error::Cancelled) => ("cancelled", Error::Cancelled.to_string(), "", 0),
            Err(e) => ("failed", e.describe(), "", 0),
        };
        if let Err(e) = self
            .catalog
            .finish_run(run, status, Utc::now().timestamp(), &error, id, size)
        {
            tracing::error!(job = job.name, "cannot record the run: {e}");
        }
        // Health and STATUS are re-evaluated at once.
        self.changed.notify_one();
        match &result {
            Ok(r) => {
                tracing::info!(job = job.name, id = r.id, size = r.size, "backup succeeded");
                hooks::run_logged(job, HookEvent::AfterBackup, &r.id, "");
                // Retention runs after every successful backup; its failure does not
                // make the backup fail.
                if let Err(e) = self.prune("retention", Some(&job.name), false) {
                    tracing::error!(job = job.name, "retention failed: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(job = job.name, "backup failed: {}", e.describe());
                hooks::run_logged(job, HookEvent::OnFailure, "", &e.describe());
            }
        }
        result
    }

    /// A free id for a backup of `job` starting at `at`.
    fn new_id(&self, backup_dir: &Path, job: &str, at: chrono::DateTime<Utc>) -> Result<String, Error> {
        for attempt in 1..1000 {
            let id = ids::backup_id(job, at, attempt);
            let paths = BackupPaths::new(backup_dir, job, &id);
            if !self.catalog.id_exists(&id)? && !paths.archive.exists() && !paths.sidecar.exists() {
                return Ok(id);
            }
        }
        Err(Error::Internal(format!("no free backup id for job '{job}'")))
    }

    /// Takes one backup. `protected` pins it from the start (the sidecar and row are
    /// written pinned), so a crash during its verification cannot leave an unpinned
    /// safety backup that retention would remove.
    pub(crate) fn take_backup(
        &self,
        config: &Config,
        job: &JobConfig,
        note: &str,
        protected: bool,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<BackupRecord, Error> {
        let clock = Instant::now();
        let created = Utc::now();
        let daemon = &config.daemon;
        let id = self.new_id(&daemon.backup_dir, &job.name, created)?;
        let paths = BackupPaths::new(&daemon.backup_dir, &job.name, &id);
        let mut cleanup = Cleanup::new();

        std::fs::create_dir_all(&paths.dir)
            .map_err(Error::io("cannot create the backup directory", &paths.dir))?;
        let staging = self.staging_dir().join(&id);
        cleanup.add(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(Error::io("cannot create the staging directory", &staging))?;

        // Before the snapshot: room for the archive and, with vacuum-into, for the copy
        // in staging. The media size is checked once the media are walked.
        let db_size = database_size(&job.database);
        match job.snapshot_method {
            SnapshotMethod::VacuumInto => check_space(job, &[(&staging, db_size), (&paths.dir, db_size)])?,
            SnapshotMethod::PageStream => check_space(job, &[(&paths.dir, db_size)])?,
        }
        let db_name = job
            .database
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Internal("the database file name is not valid UTF-8".into()))?;
        let db_entry = format!("db/{db_name}");

        let partial = fsutil::partial_path(&paths.archive);
        cleanup.add(&partial);
        let file =
            std::fs::File::create_new(&partial).map_err(Error::io("cannot create the archive", &partial))?;
        let archive_err = |source| match source {
            ArchiveError::Cancelled => Error::Cancelled,
            source => Error::Archive {
                context: format!("cannot write the archive {}", paths.archive.display()),
                source,
            },
        };
        let mut writer = ArchiveWriter::new(file, job.compression_level, self.workers, cancel.clone())
            .map_err(archive_err)?;
        let mut done = 0u64;

        let mut skipped = 0u64;
        progress(Event::new(
            "snapshot",
            format!("snapshot of {}", job.database.display()),
        ));
        let db_clock = Instant::now();
        let (source, media_ms) = match job.snapshot_method {
            SnapshotMethod::VacuumInto => {
                // SQLite copies on one core; the media are compressed meanwhile on the
                // others, once the copy's read transaction has begun (the snapshot
                // point), so the archive holds media first, then the database.
                let snapshot_path = staging.join(db_name);
                let started = snapshot::Started::default();
                let (source, media_ms) = std::thread::scope(|scope| -> Result<_, Error> {
                    let vacuum = scope.spawn(|| {
                        snapshot::vacuum_into(
                            &job.database,
                            &snapshot_path,
                            job.busy_timeout,
                            cancel,
                            &started,
                        )
                    });
                    started.wait();
                    let join = |handle: std::thread::ScopedJoinHandle<'_, Result<_, SnapshotError>>| {
                        handle
                            .join()
                            .map_err(|_| Error::Internal("the snapshot thread panicked".into()))?
                            .map_err(Error::from)
                    };
                    let mut archive_media = || {
                        self.archive_media(
                            job,
                            &paths,
                            &mut writer,
                            &mut done,
                            &mut skipped,
                            db_size,
                            cancel,
                            progress,
                        )
                    };
                    if vacuum.is_finished() {
                        // It failed before copying (missing, locked, not a database),
                        // or the database was tiny: nothing to overlap.
                        let source = join(vacuum)?;
                        return Ok((source, archive_media()?));
                    }
                    let media = archive_media();
                    let source = join(vacuum);
                    Ok((source?, media?))
                })?;
                if cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let meta = std::fs::metadata(&snapshot_path)
                    .map_err(Error::io("cannot read the snapshot", &snapshot_path))?;
                let total = done + meta.len();
                let mut tick = ticker(&mut *progress, &mut done, total);
                // `quick_check` of the copy runs while the copy is compressed, instead
                // of idling a core between the two; the archive is only committed
                // (renamed into place) after the check passed.
                std::thread::scope(|scope| -> Result<(), Error> {
                    let checked = scope.spawn(|| snapshot::check(&snapshot_path, false));
                    let added = writer.add_file(&db_entry, &snapshot_path, &meta, &mut tick);
                    checked
                        .join()
                        .map_err(|_| Error::Internal("the snapshot check panicked".into()))??;
                    added.map_err(archive_err)
                })?;
                (source, media_ms)
            }
            SnapshotMethod::PageStream => {
                let stream = snapshot::PageStream::open(&job.database, job.busy_timeout, cancel)?;
                // Mode, owner and mtime of the live file (a stat, not an open).
                let meta = std::fs::metadata(&job.database)
                    .map_err(Error::io("cannot stat the database", &job.database))?;
                let (size, info) = (stream.size(), stream.info.clone());
                // A page that could not be read is a snapshot failure.
                let page_err = |e: std::io::Error| {
                    Error::Internal(format!("the snapshot of {} failed: {e}", job.database.display()))
                };
                let mut tick = ticker(&mut *progress, &mut done, size);
                if info.journal_mode == "wal" {
                    // Writers do not wait for readers: check and stream in the transaction.
                    stream.check()?;
                    stream
                        .with_reader(|reader| writer.add_stream(&db_entry, reader, size, &meta, &mut tick))?
                        .map_err(|source| match source {
                            ArchiveError::Write(e) if e.kind() == std::io::ErrorKind::Other => page_err(e),
                            source => archive_err(source),
                        })?;
                    stream.finish()?;
                } else {
                    // Rollback journal: writers wait as long as the read transaction
                    // lasts. A plain copy to staging ends it many times sooner than
                    // compressing and hashing would, and the check runs on the copy.
                    let copy = staging.join(db_name);
                    check_space(job, &[(&staging, size), (&paths.dir, size)])?;
                    let file = std::fs::File::create_new(&copy)
                        .map_err(Error::io("cannot create the snapshot", &copy))?;
                    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                    stream
                        .with_reader(|reader| std::io::copy(reader, &mut out))?
                        .and_then(|_| std::io::Write::flush(&mut out))
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::Other => page_err(e),
                            _ => Error::io("cannot write the snapshot", &copy)(e),
                        })?;
                    drop(out);
                    stream.finish()?;
                    snapshot::check(&copy, false)?;
                    let file =
                        std::fs::File::open(&copy).map_err(Error::io("cannot read the snapshot", &copy))?;
                    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
                    writer
                        .add_stream(&db_entry, &mut reader, size, &meta, &mut tick)
                        .map_err(archive_err)?;
                }
                drop(tick);
                // Media after the database: files the snapshot refers to are there.
                let media_ms = self.archive_media(
                    job,
                    &paths,
                    &mut writer,
                    &mut done,
                    &mut skipped,
                    0,
                    cancel,
                    progress,
                )?;
                (info, media_ms)
            }
        };
        let db_ms = db_clock.elapsed().as_millis() as u64 - media_ms;
        let total = done;
        writer.count_skipped(skipped);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            id: id.clone(),
            job: job.name.clone(),
            created_at: created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            coffer_version: coffer_common::VERSION.to_owned(),
            hostname: self.hostname.clone(),
            sqlite_version: snapshot::sqlite_version().to_owned(),
            source,
            media_roots: job.media.iter().map(|p| p.display().to_string()).collect(),
            entries: Vec::new(),
            totals: Totals::default(),
        };
        let (manifest, size, sha256) = writer.finish(manifest).map_err(archive_err)?;
        tracing::info!(
            job = job.name,
            id,
            db_ms,
            media_ms,
            bytes = total,
            "archive written"
        );

        // The sidecar goes first: a crash before the archive's rename leaves an orphan
        // sidecar (swept by reconcile), never an archive the catalog cannot rebuild.
        let sidecar = Sidecar {
            manifest,
            size,
            sha256,
            note: note.to_owned(),
            protected,
            duration_ms: clock.elapsed().as_millis() as u64,
            filed_under: None,
        };
        write_sidecar(&paths.sidecar, &sidecar)?;
        cleanup.add(&paths.sidecar);
        fsutil::commit_partial(&partial, &paths.archive)
            .map_err(Error::io("cannot finish the archive", &paths.archive))?;
        cleanup.add(&paths.archive);
        self.catalog.insert_backup(&sidecar)?;

        if job.verify_after_backup {
            progress(Event::new("verify", "verifying the new archive"));
            let record = self.get(&id)?;
            if let Err(e) = self.verify_record(&record, false, cancel, progress) {
                // The files go (Cleanup); a row that cannot be dropped now (full disk)
                // is dropped by reconcile at the next start, its archive being gone.
                if let Err(drop) = self.catalog.remove_backup(&id) {
                    tracing::error!(id, "cannot drop the row of the unverified backup: {drop}");
                }
                return Err(e);
            }
        }
        cleanup.keep(&paths.archive);
        cleanup.keep(&paths.sidecar);
        self.get(&id)
    }

    /// Walks the job's media directories and adds them to the archive; call only
    /// after the snapshot point (files the snapshot refers to exist by then).
    /// `other_bytes` is what else the archive will hold, for progress. Returns the
    /// milliseconds it took.
    #[allow(clippy::too_many_arguments)]
    fn archive_media(
        &self,
        job: &JobConfig,
        paths: &BackupPaths,
        writer: &mut ArchiveWriter,
        done: &mut u64,
        skipped: &mut u64,
        other_bytes: u64,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<u64, Error> {
        let clock = Instant::now();
        progress(Event::new("media", "walking media directories"));
        let mut media = Vec::with_capacity(job.media.len());
        for (index, root) in job.media.iter().enumerate() {
            let (items, left_out) = archive::walk_media(index, root).map_err(|source| Error::Archive {
                context: format!("cannot read media directory {}", root.display()),
                source,
            })?;
            for s in &left_out {
                tracing::warn!(job = job.name, path = %s.path.display(), "not backed up: {}", s.why);
            }
            *skipped += left_out.len() as u64;
            media.push(items);
        }
        let media_bytes: u64 = media
            .iter()
            .flatten()
            .filter(|i| i.metadata.is_file())
            .map(|i| i.metadata.len())
            .sum();
        // An estimate, not a bound: content is counted uncompressed, tar headers and
        // the manifest (which compress to little) are not.
        check_space(job, &[(&paths.dir, media_bytes)])?;
        let total = *done + media_bytes + other_bytes;
        let mut tick = ticker(progress, done, total);
        for item in media.iter().flatten() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            writer
                .add_media_item(item, &mut tick)
                .map_err(|source| match source {
                    ArchiveError::Cancelled => Error::Cancelled,
                    source => Error::Archive {
                        context: format!("cannot write the archive {}", paths.archive.display()),
                        source,
                    },
                })?;
        }
        Ok(clock.elapsed().as_millis() as u64)
    }

    /// Looks a backup up by exact id.
    pub fn get(&self, id: &str) -> Result<BackupRecord, Error> {
        self.catalog
            .get_backup(id)?
            .ok_or_else(|| Error::NoSuchBackup(id.to_owned()))
    }

    /// Resolves an id argument (`ID`, `latest`, `JOB:latest`).
    pub fn resolve(&self, text: &str) -> Result<BackupRecord, Error> {
        match IdRef::parse(text)? {
            IdRef::Id(id) => self.get(&id),
            IdRef::Latest => self.catalog.latest(None)?.ok_or(Error::NoBackupsAtAll),
            IdRef::LatestOf(job) => {
                if self.config().job(&job).is_none() && self.catalog.job_stats(&job)?.count == 0 {
                    return Err(Error::UnknownJob(job));
                }
                self.catalog.latest(Some(&job))?.ok_or(Error::NoBackups(job))
            }
        }
    }

    /// Backups newest first, of one job or all. A job that is no longer configured
    /// still lists its backups.
    pub fn list(&self, job: Option<&str>) -> Result<Vec<BackupRecord>, Error> {
        if let Some(job) = job
            && self.config().job(job).is_none()
            && self.catalog.job_stats(job)?.count == 0
        {
            return Err(Error::UnknownJob(job.to_owned()));
        }
        Ok(self.catalog.list_backups(job)?)
    }

    /// Deletes a backup crash-safely: mark, remove files, drop the row.
    pub fn delete(&self, id_text: &str) -> Result<BackupRecord, Error> {
        let record = self.resolve(id_text)?;
        if record.protected {
            return Err(Error::Protected(record.id));
        }
        self.remove(&record)?;
        Ok(record)
    }

    /// Removes a backup's files and row (no protection check).
    pub fn remove(&self, record: &BackupRecord) -> Result<(), Error> {
        let paths = BackupPaths::new(&self.config().daemon.backup_dir, &record.job, &record.id);
        self.catalog.mark_deleting(&record.id)?;
        paths
            .remove_files()
            .map_err(Error::io("cannot delete the backup files in", &paths.dir))?;
        self.catalog.remove_backup(&record.id)?;
        tracing::info!(id = record.id, "backup deleted");
        Ok(())
    }

    /// Applies the retention policy of one job or of every configured job. With
    /// `dry_run` nothing is removed; each removal is audited as done by `actor`. Backups of jobs no longer configured are left
    /// alone (there is no policy for them).
    pub fn prune(&self, actor: &str, job: Option<&str>, dry_run: bool) -> Result<Vec<Pruned>, Error> {
        let config = self.config();
        let jobs: Vec<&JobConfig> = match job {
            Some(name) => vec![
                config
                    .job(name)
                    .ok_or_else(|| Error::UnknownJob(name.to_owned()))?,
            ],
            None => config.jobs.iter().collect(),
        };
        let mut out = Vec::new();
        for job in jobs {
            let records = self.catalog.list_backups(Some(&job.name))?;
            let candidates: Vec<Candidate> = records
                .iter()
                .map(|r| Candidate {
                    id: r.id.clone(),
                    created_at: chrono::DateTime::from_timestamp(r.created_at, 0).unwrap_or_default(),
                    protected: r.protected,
                })
                .collect();
            for decision in retention::apply(&job.retention, job.timezone, &candidates) {
                let mut removed = false;
                if !decision.keep && !dry_run {
                    let record = records.iter().find(|r| r.id == decision.id);
                    if let Some(record) = record.filter(|r| !r.protected) {
                        let outcome = self.remove(record);
                        let error = outcome.as_ref().err().map(ToString::to_string);
                        self.audit(actor, "retention-remove", &record.id, error.as_deref());
                        outcome?;
                        removed = true;
                        self.count(|c| *c.retention_removed.entry(job.name.clone()).or_default() += 1);
                    }
                }
                out.push(Pruned {
                    job: job.name.clone(),
                    decision,
                    removed,
                });
            }
        }
        Ok(out)
    }

    /// Pins or unpins a backup. The sidecar is rewritten first so a rebuilt catalog
    /// keeps the pin.
    pub fn set_protected(&self, id_text: &str, protected: bool) -> Result<BackupRecord, Error> {
        let record = self.resolve(id_text)?;
        let paths = BackupPaths::new(&self.config().daemon.backup_dir, &record.job, &record.id);
        let mut sidecar = crate::catalog::read_sidecar(&paths.sidecar).map_err(|message| {
            Error::Internal(format!(
                "the sidecar {} is unreadable: {message}",
                paths.sidecar.display()
            ))
        })?;
        sidecar.protected = protected;
        write_sidecar(&paths.sidecar, &sidecar)?;
        self.catalog.set_protected(&record.id, protected)?;
        self.get(&record.id)
    }

    /// Verifies a catalogued backup against its sidecar; records the result.
    pub fn verify_record(
        &self,
        record: &BackupRecord,
        deep: bool,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<Verified, Error> {
        let backup_dir = self.config().daemon.backup_dir.clone();
        let result = (|| {
            let (paths, sidecar) = restore::load_sidecar(record, &backup_dir)?;
            if !deep {
                let total = sidecar.manifest.totals.bytes;
                let expected = Expected {
                    manifest: &sidecar.manifest,
                    size: sidecar.size,
                    sha256: &sidecar.sha256,
                };
                let mut report = |done| {
                    progress(Event {
                        phase: "verify",
                        done,
                        total,
                        message: String::new(),
                    })
                };
                archive::read_archive(
                    &paths.archive,
                    Some(expected),
                    &mut HashOnly,
                    &mut report,
                    &|| cancel.is_cancelled(),
                )
                .map_err(|source| match source {
                    ArchiveError::Cancelled => Error::Cancelled,
                    source => Error::Archive {
                        context: format!("backup {} failed verification", record.id),
                        source,
                    },
                })?;
            } else {
                // Deep: the database is extracted to staging and checked by SQLite.
                let mut cleanup = Cleanup::new();
                let stage = self.staging_dir().join(format!("verify-{}", record.id));
                fsutil::remove_any(&stage).map_err(Error::io("cannot clear", &stage))?;
                cleanup.add(&stage);
                let db = stage.join("db");
                let layout = restore::Layout {
                    db: Some(db.clone()),
                    media: Vec::new(),
                };
                restore::extract(&record.id, &paths, &sidecar, &layout, cancel, "verify", progress)?;
                progress(Event::new(
                    "check",
                    "integrity and foreign-key check of the database",
                ));
                snapshot::check(&db, true)?;
            }
            Ok(Verified {
                id: record.id.clone(),
                entries: sidecar.manifest.entries.len() as u64,
                deep,
            })
        })();
        let verdict = match &result {
            Ok(_) => "ok".to_owned(),
            Err(Error::Cancelled) => return result,
            Err(e) => {
                self.count(|c| *c.verify_failures.entry(record.job.clone()).or_default() += 1);
                e.describe()
            }
        };
        // The verdict stands even when the catalog cannot record it (a full disk):
        // the archive was read either way, and failing here would make
        // verify-after-backup throw away a good backup.
        if let Err(e) = self
            .catalog
            .set_verified(&record.id, Utc::now().timestamp(), &verdict)
        {
            tracing::warn!(id = record.id, "cannot record the verification result: {e}");
        }
        result
    }

    /// Catalogs an uploaded archive (already written to `partial` inside the backup
    /// dir) after verifying it as `verify --deep` does: every entry against its
    /// manifest, then SQLite's integrity and foreign-key checks on the database. It is
    /// filed under its manifest's job, or under `job` when given (the sidecar records
    /// that); that job must be configured here.
    pub fn catalog_upload(
        &self,
        partial: &Path,
        job: Option<&str>,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<BackupRecord, Error> {
        let config = self.config();
        let mut cleanup = Cleanup::new();
        cleanup.add(partial);
        let stage = self.staging_dir().join(format!(
            "upload-{}",
            partial
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        cleanup.add(&stage);
        let db = stage.join("db");
        // The database is the only entry written; everything else is hashed only.
        let layout = restore::Layout {
            db: Some(db.clone()),
            media: Vec::new(),
        };
        let mut extractor = restore::Extractor::new(&layout);
        let mut report = |done| {
            progress(Event {
                phase: "verify",
                done,
                total: 0,
                message: String::new(),
            })
        };
        let rejected = |source| match source {
            ArchiveError::Cancelled => Error::Cancelled,
            source => Error::Archive {
                context: "the uploaded archive was rejected".into(),
                source,
            },
        };
        std::fs::create_dir_all(&stage).map_err(Error::io("cannot create the staging directory", &stage))?;
        let (manifest, size, sha256) =
            archive::read_archive(partial, None, &mut extractor, &mut report, &|| {
                cancel.is_cancelled()
            })
            .map_err(rejected)?;
        extractor.finish().map_err(rejected)?;
        progress(Event::new(
            "check",
            "integrity and foreign-key check of the database",
        ));
        snapshot::check(&db, true)?;
        let filed_under = job.filter(|j| *j != manifest.job).map(str::to_owned);
        let job = filed_under.as_deref().unwrap_or(&manifest.job);
        if config.job(job).is_none() {
            return Err(Error::InvalidArgument(match &filed_under {
                Some(job) => format!("there is no job named '{job}' to file the upload under"),
                None => format!(
                    "the uploaded archive belongs to job '{job}', which is not configured here; name a configured job with --job"
                ),
            }));
        }
        if self.catalog.id_exists(&manifest.id)? {
            return Err(Error::AlreadyExists(manifest.id));
        }
        let paths = BackupPaths::new(&config.daemon.backup_dir, job, &manifest.id);
        std::fs::create_dir_all(&paths.dir)
            .map_err(Error::io("cannot create the backup directory", &paths.dir))?;
        let sidecar = Sidecar {
            manifest,
            size,
            sha256,
            note: "uploaded".into(),
            protected: false,
            duration_ms: 0,
            filed_under,
        };
        write_sidecar(&paths.sidecar, &sidecar)?;
        cleanup.add(&paths.sidecar);
        fsutil::commit_partial(partial, &paths.archive)
            .map_err(Error::io("cannot move the upload into place", &paths.archive))?;
        // Until the catalog has the row, a failure (a full disk) removes archive and
        // sidecar again: never a file the catalog does not list.
        cleanup.add(&paths.archive);
        self.catalog.insert_backup(&sidecar)?;
        cleanup.keep(&paths.sidecar);
        cleanup.keep(&paths.archive);
        // The upload is catalogued; not recording its verification only costs the date.
        if let Err(e) = self
            .catalog
            .set_verified(&sidecar.manifest.id, Utc::now().timestamp(), "ok")
        {
            tracing::warn!(id = sidecar.manifest.id, error = %e, "cannot record the upload's verification");
        }
        tracing::info!(id = sidecar.manifest.id, size, "uploaded backup catalogued");
        self.get(&sidecar.manifest.id)
    }

    /// Per-job counts.
    pub fn job_stats(&self, job: &str) -> Result<JobStats, Error> {
        Ok(self.catalog.job_stats(job)?)
    }

    /// The newest backup run of a job.
    pub fn last_run(&self, job: &str) -> Result<Option<RunRecord>, Error> {
        Ok(self.catalog.last_run(job, "backup")?)
    }
}

/// A progress callback for the archive phase: adds bytes to `done`, reports every
/// 8 MiB and at `total`.
fn ticker<'a>(progress: Progress<'a>, done: &'a mut u64, total: u64) -> impl FnMut(u64) + 'a {
    let mut last = *done;
    move |n| {
        *done += n;
        if *done - last >= 8 << 20 || *done == total {
            last = *done;
            progress(Event {
                phase: "archive",
                done: *done,
                total,
                message: String::new(),
            });
        }
    }
}

/// Size of the database and its WAL: what `VACUUM INTO` may copy at most.
fn database_size(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_owned(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Refuses a run when writing `needs` bytes to each directory would leave less than
/// `min-free-space` on its filesystem. Directories on one filesystem add up.
fn check_space(job: &JobConfig, needs: &[(&Path, u64)]) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let mut per_fs: Vec<(u64, &Path, u64)> = Vec::new();
    for (dir, need) in needs {
        let dev = std::fs::metadata(dir)
            .map_err(Error::io("cannot stat", dir))?
            .dev();
        match per_fs.iter_mut().find(|(d, _, _)| *d == dev) {
            Some(entry) => entry.2 += need,
            None => per_fs.push((dev, dir, *need)),
        }
    }
    for (_, dir, need) in per_fs {
        let free = fsutil::free_space(dir).map_err(Error::io("cannot read the free space of", dir))?;
        if free < need.saturating_add(job.min_free_space) {
            return Err(Error::NoSpace(format!(
                "not enough free space for a backup of job '{}': {} has {} free, the backup needs about {} and min-free-space is {}",
                job.name,
                dir.display(),
                bytes(free),
                bytes(need),
                bytes(job.min_free_space)
            )));
        }
    }
    Ok(())
}

/// Writes a sidecar crash-safely.
pub fn write_sidecar(path: &Path, sidecar: &Sidecar) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(sidecar).map_err(|e| Error::Internal(e.to_string()))?;
    fsutil::write_atomic(path, &json).map_err(Error::io("cannot write the sidecar", path))
}
