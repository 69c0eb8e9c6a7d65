//! The engine: a thin facade over the operations.
//!
//! It holds what outlives a run — the config in force (swapped on reload), the
//! catalog, the local store, counters — and gives every run the same frame:
//! - a [`RunGuard`]: for runs that change a job's live data or backups (backup,
//!   in-place restore) a claim on the job, so a second such run of it is refused;
//!   for every run a `max-concurrent-runs` slot, waited for with a "waiting" event —
//!   except copies to offsite stores, which take the one slot of their own pool
//!   instead: a copy of a large archive can take hours, and must never make a backup
//!   wait (so copies do not count against `max-concurrent-runs`; one runs at a time,
//!   which also bounds their memory and bandwidth);
//! - a blocking thread, since every operation blocks;
//! - a record in the catalog's runs ([`Engine::record`]): kind, status (a run stopped
//!   by shutdown is `cancelled`, whatever error the interruption surfaced as), error,
//!   backup id and bytes; then health is re-evaluated.
//!
//! The operations themselves live in [`crate::ops`] and know nothing of this frame.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::catalog::LocationRecord;
use crate::catalog::LocationState;
use crate::catalog::{BackupRecord, Catalog, JobStats, RunEnd, RunRecord};
use crate::config::Config;
use crate::error::Error;
use crate::ops::copy::Copied;
use crate::ops::drill::Drilled;
use crate::ops::export::{ExportRequest, Exported};
use crate::ops::fetch::Remote;
use crate::ops::import::Imported;
use crate::ops::prune::Pruned;
use crate::ops::rekey::Rekeyed;
use crate::ops::restore::{Only, Restored, Target};
use crate::ops::verify::Verified;
use crate::ops::{self, CounterValues, Counters, Ctx, Host};
use crate::run::{Event, Phase, RunKind, RunStatus};
use crate::selective::ConflictPolicy;
use crate::store::LocalStore;
use crate::store::offsite::Offsite;

/// A progress callback that outlives the call that made it (runs on another thread).
pub type ProgressFn = Box<dyn FnMut(Event) + Send>;

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

/// What a run holds while it works: its job claim (if it needs one) and a slot.
pub struct RunGuard {
    _claim: Option<Claim>,
    _slot: OwnedSemaphorePermit,
}

/// The daemon's state and operations.
pub struct Engine {
    config: RwLock<Arc<Config>>,
    catalog: Catalog,
    store: LocalStore,
    /// The offsite stores of the config in force (rebuilt on reload).
    offsite: RwLock<Arc<Offsite>>,
    counters: Counters,
    host: Host,
    running: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    /// The slot pool of copies to offsite stores (one at a time; see the module doc).
    transfers: Arc<Semaphore>,
    /// Woken after every run, so health is re-evaluated at once.
    pub changed: tokio::sync::Notify,
    /// Woken when a copy is queued (or the config changed), so the copier looks.
    pub copies: tokio::sync::Notify,
    /// Cancelled when cofferd shuts down (the server's shutdown token).
    shutdown: CancellationToken,
}

/// The backup a restore starts from: catalogued here, or only in a store.
enum RestoreFrom {
    Local(Box<BackupRecord>),
    Remote(Remote),
}

impl Engine {
    /// An engine over `catalog` with `config` in force.
    /// Offsite stores run their requests on the current tokio runtime (none outside one).
    pub fn new(config: Config, catalog: Catalog) -> Engine {
        let rt = tokio::runtime::Handle::try_current().ok();
        let shutdown = CancellationToken::new();
        Engine {
            store: LocalStore::new(&config.daemon.backup_dir, &config.daemon.state_dir),
            offsite: RwLock::new(Arc::new(Offsite::new(&config.stores, rt, &shutdown))),
            shutdown,
            slots: Arc::new(Semaphore::new(config.daemon.max_concurrent_runs)),
            transfers: Arc::new(Semaphore::new(1)),
            host: Host::named(&config.daemon.host_name),
            config: RwLock::new(Arc::new(config)),
            catalog,
            counters: Counters::default(),
            running: Mutex::new(HashSet::new()),
            changed: tokio::sync::Notify::new(),
            copies: tokio::sync::Notify::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new (validated) config in force; runs already going keep theirs. The
    /// stores are rebuilt (credentials read again), keeping what was last seen of each.
    pub fn set_config(&self, config: Config) {
        let rt = tokio::runtime::Handle::try_current().ok();
        let offsite = Offsite::new(&config.stores, rt, &self.shutdown).carry_health(&self.offsite());
        *self.offsite.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(offsite);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        self.copies.notify_one();
    }

    /// The token that is cancelled when cofferd shuts down (the server cancels it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The offsite stores in force.
    pub fn offsite(&self) -> Arc<Offsite> {
        self.offsite.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The process-lifetime counters.
    pub fn counters(&self) -> CounterValues {
        self.counters.values()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a run that claims `job` is in progress.
    pub fn is_running(&self, job: &str) -> bool {
        self.running().contains(job)
    }

    /// Calls `f` with an operation context over the config in force.
    pub fn with_ctx<T>(&self, cancel: &CancellationToken, f: impl FnOnce(&Ctx) -> T) -> T {
        let config = self.config();
        let offsite = self.offsite();
        f(&Ctx {
            config: &config,
            catalog: &self.catalog,
            store: &self.store,
            offsite: &offsite,
            counters: &self.counters,
            host: &self.host,
            cancel,
        })
    }

    /// Records an action in the audit log (and the daemon's log).
    pub fn audit(&self, actor: &str, action: &str, target: &str, error: Option<&str>) {
        ops::audit(&self.catalog, actor, action, target, error);
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

    /// Waits for a run slot (`max-concurrent-runs`), saying so if it must wait.
    pub async fn guard(
        &self,
        claim: Option<Claim>,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<RunGuard, Error> {
        let why = "waiting for another run to finish (max-concurrent-runs)";
        let slot = Self::slot(&self.slots, why, cancel, progress).await?;
        Ok(RunGuard {
            _claim: claim,
            _slot: slot,
        })
    }

    /// Waits for the copy slot (copies run one at a time, outside `max-concurrent-runs`).
    pub async fn guard_copy(
        &self,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<RunGuard, Error> {
        let slot = Self::slot(
            &self.transfers,
            "waiting for another copy to finish",
            cancel,
            progress,
        )
        .await?;
        Ok(RunGuard {
            _claim: None,
            _slot: slot,
        })
    }

    async fn slot(
        pool: &Arc<Semaphore>,
        why: &str,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<OwnedSemaphorePermit, Error> {
        match pool.clone().try_acquire_owned() {
            Ok(slot) => Ok(slot),
            Err(_) => {
                progress(Event::new(Phase::Waiting, why));
                tokio::select! {
                    slot = pool.clone().acquire_owned() => slot.map_err(|e| Error::Internal(e.to_string())),
                    () = cancel.cancelled() => Err(Error::Cancelled),
                }
            }
        }
    }

    /// Runs `op` as a recorded run of `kind` for `job`: the run's row is written
    /// first, its end after (`facts` gives the backup id and bytes of a success), then
    /// health is re-evaluated. Runs that write (backups, in-place restores) do not
    /// start when their row cannot be written (a full catalog disk); runs that only
    /// read (verify, restore elsewhere, upload checks, prune) go ahead unrecorded, as
    /// they must still work on a full disk. Blocking; call from a run's thread.
    pub fn record<T>(
        &self,
        kind: RunKind,
        job: &str,
        writes: bool,
        cancel: &CancellationToken,
        op: impl FnOnce() -> Result<T, Error>,
        facts: impl FnOnce(&T) -> (String, u64),
    ) -> Result<T, Error> {
        let run = match self.catalog.start_run(job, kind, Utc::now().timestamp()) {
            Ok(run) => Some(run),
            Err(e) if !writes => {
                tracing::warn!(job, kind = kind.as_str(), "the run goes unrecorded: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let result = match op() {
            Err(e) if cancel.is_cancelled() && !matches!(e, Error::Cancelled) => {
                tracing::debug!(job, kind = kind.as_str(), "run interrupted by shutdown: {e}");
                Err(Error::Cancelled)
            }
            other => other,
        };
        let (status, error, backup_id, bytes) = match &result {
            Ok(value) => {
                let (id, bytes) = facts(value);
                (RunStatus::Succeeded, String::new(), id, bytes)
            }
            Err(Error::Cancelled) => (
                RunStatus::Cancelled,
                Error::Cancelled.to_string(),
                String::new(),
                0,
            ),
            Err(e) => (RunStatus::Failed, e.describe(), String::new(), 0),
        };
        let end = RunEnd {
            status,
            finished_at: Utc::now().timestamp(),
            error,
            backup_id,
            bytes,
        };
        if let Some(run) = run
            && let Err(e) = self.catalog.finish_run(run, &end)
        {
            tracing::error!(job, kind = kind.as_str(), "cannot record the run: {e}");
        }
        self.changed.notify_one();
        result
    }

    /// Runs `op` on a blocking thread with an operation context.
    async fn on_thread<T: Send + 'static>(
        self: &Arc<Self>,
        cancel: CancellationToken,
        op: impl FnOnce(&Engine, &CancellationToken) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || op(&engine, &cancel))
            .await
            .map_err(|e| Error::Internal(format!("the run's task failed: {e}")))?
    }

    /// Runs a quick blocking call (lookups, delete, pin) off the reactor; no slot.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&Ctx) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.on_thread(CancellationToken::new(), move |engine, cancel| {
            engine.with_ctx(cancel, op)
        })
        .await
    }

    /// A backup of the claimed job: waits for a slot, then the before-backup hook and
    /// the backup itself on a blocking thread; the run is recorded, then after-backup
    /// hooks and retention (or on-failure hooks) run. `progress` is called from that
    /// thread, and mirrored into systemd's STATUS line.
    pub async fn backup(
        self: &Arc<Self>,
        claim: Claim,
        note: String,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<BackupRecord, Error> {
        let job_name = claim.job().to_owned();
        let guard = self.guard(Some(claim), &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                let job = ctx.job(&job_name)?;
                // Mirror progress into systemd's STATUS line, once per percent.
                let mut shown = None;
                let mut progress = |event: Event| {
                    let pct = (event.total > 0).then(|| event.done * 100 / event.total);
                    if event.phase != Phase::Archive || pct != shown {
                        shown = pct;
                        crate::notify::status(&match pct {
                            Some(p) if event.phase == Phase::Archive => {
                                format!("backing up {}: {p}%", job.name)
                            }
                            _ => format!("backing up {}: {}", job.name, event.phase.as_str()),
                        });
                    }
                    progress(event);
                };
                let result = engine.record(
                    RunKind::Backup,
                    &job.name,
                    true,
                    cancel,
                    || {
                        ops::backup::before(ctx, job)?;
                        ops::backup::take(ctx, job, &note, false, &mut progress)
                    },
                    |r| (r.id.clone(), r.size),
                );
                ops::backup::after(ctx, job, &result);
                if result.is_ok() && !job.offsite_stores().is_empty() {
                    engine.copies.notify_one();
                }
                result
            })
        })
        .await
    }

    /// Verifies a backup (a recorded run of kind verify, with a slot).
    pub async fn verify(
        self: &Arc<Self>,
        record: BackupRecord,
        deep: bool,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Verified, Error> {
        let guard = self.guard(None, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.record(
                RunKind::Verify,
                &record.job,
                false,
                cancel,
                || {
                    engine.with_ctx(cancel, |ctx| {
                        ops::verify::verify(ctx, &record, deep, &mut *progress)
                    })
                },
                |_| (record.id.clone(), record.size),
            )
        })
        .await
    }

    /// Restores a backup to `target`: in place (claiming its job), into a directory or
    /// into a new database; a recorded run of kind restore, with a slot. A backup only a
    /// store holds is fetched first (a recorded run of kind fetch under the same
    /// guard). A failed in-place restore runs the on-failure hooks.
    pub async fn restore(
        self: &Arc<Self>,
        id_text: String,
        target: Target,
        only: Only,
        force: bool,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Restored, Error> {
        let source = self
            .blocking(move |ctx| match ctx.resolve(&id_text) {
                Ok(record) => Ok(RestoreFrom::Local(Box::new(record))),
                Err(e @ (Error::NoSuchBackup(_) | Error::NoBackups(_) | Error::NoBackupsAtAll))
                    if !ctx.offsite.is_empty() =>
                {
                    ops::fetch::locate(ctx, &id_text, None)
                        .map(RestoreFrom::Remote)
                        .map_err(|_| e)
                }
                Err(e) => Err(e),
            })
            .await?;
        let job = match &source {
            RestoreFrom::Local(r) => r.job.clone(),
            RestoreFrom::Remote(r) => r.job.clone(),
        };
        let in_place = target.is_in_place();
        let claim = match in_place {
            false => None,
            true => Some(self.claim(&job)?),
        };
        let guard = self.guard(claim, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                let record = match source {
                    RestoreFrom::Local(record) => *record,
                    RestoreFrom::Remote(remote) => engine.record(
                        RunKind::Fetch,
                        &remote.job,
                        true,
                        cancel,
                        || ops::fetch::fetch(ctx, &remote, &mut *progress),
                        |r| (r.id.clone(), r.size),
                    )?,
                };
                let result = engine.record(
                    RunKind::Restore,
                    &record.job,
                    in_place,
                    cancel,
                    || ops::restore::restore(ctx, &record, &target, only, force, &mut *progress),
                    |_| (record.id.clone(), 0),
                );
                if in_place {
                    engine.after_in_place_restore(ctx, &record, &result, cancel);
                }
                result
            })
        })
        .await
    }

    /// Logs an in-place restore's outcome; a failure runs the job's on-failure hooks.
    fn after_in_place_restore(
        &self,
        ctx: &Ctx,
        record: &BackupRecord,
        result: &Result<Restored, Error>,
        cancel: &CancellationToken,
    ) {
        match (result, ctx.config.job(&record.job)) {
            (Ok(_), _) => tracing::info!(job = record.job, id = record.id, "restored in place"),
            (Err(e), Some(job)) => {
                tracing::warn!(job = job.name, id = record.id, "restore failed: {e}");
                crate::hooks::run_logged(
                    job,
                    crate::hooks::HookEvent::OnFailure,
                    &record.id,
                    &e.describe(),
                    cancel,
                );
            }
            (Err(_), None) => {}
        }
    }

    /// Verifies and catalogues an upload received at `partial` (a recorded run of
    /// kind upload, with a slot; recorded under the job it is filed under, or the
    /// requested one).
    pub async fn upload(
        self: &Arc<Self>,
        partial: PathBuf,
        job: Option<String>,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<BackupRecord, Error> {
        let guard = self.guard(None, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                let recorded_as = job.clone().unwrap_or_default();
                engine.record(
                    RunKind::Upload,
                    &recorded_as,
                    false,
                    cancel,
                    || ops::upload::catalog_upload(ctx, &partial, job.as_deref(), &mut *progress),
                    |r| (r.id.clone(), r.size),
                )
            })
        })
        .await
    }

    /// A restore drill of `job`'s newest backup (a recorded run of kind drill, with a
    /// slot; it never touches live data, so it claims nothing). A failed drill runs
    /// the job's on-failure hooks.
    pub async fn drill(
        self: &Arc<Self>,
        job: String,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Drilled, Error> {
        if self.config().job(&job).is_none() {
            return Err(Error::UnknownJob(job));
        }
        let guard = self.guard(None, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                let job = ctx.job(&job)?;
                let result = engine.record(
                    RunKind::Drill,
                    &job.name,
                    false,
                    cancel,
                    || ops::drill::drill(ctx, job, &mut *progress),
                    |d| (d.backup_id.clone(), 0),
                );
                match &result {
                    Ok(d) => tracing::info!(job = job.name, id = d.backup_id, "restore drill passed"),
                    Err(e) => {
                        tracing::warn!(job = job.name, "restore drill failed: {}", e.describe());
                        crate::hooks::run_logged(
                            job,
                            crate::hooks::HookEvent::OnFailure,
                            "",
                            &e.describe(),
                            cancel,
                        );
                    }
                }
                result
            })
        })
        .await
    }

    /// Re-encrypts a backup of the claimed job to the job's current recipients (a
    /// recorded run of kind rekey, with a slot; it writes: the archive is replaced).
    pub async fn rekey(
        self: &Arc<Self>,
        claim: Claim,
        record: BackupRecord,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Rekeyed, Error> {
        let guard = self.guard(Some(claim), &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                engine.record(
                    RunKind::Rekey,
                    &record.job,
                    true,
                    cancel,
                    || ops::rekey::rekey(ctx, &record, &mut *progress),
                    |r| (r.record.id.clone(), r.record.size),
                )
            })
        })
        .await
    }

    /// Applies retention to one job or every job, locally and in each of its stores; a
    /// real prune is recorded as a run of kind prune per job (a dry run changes nothing
    /// and is not).
    pub fn prune(&self, actor: &str, job: Option<&str>, dry_run: bool) -> Result<Vec<Pruned>, Error> {
        let cancel = CancellationToken::new();
        self.with_ctx(&cancel, |ctx| {
            let jobs: Vec<String> = match job {
                Some(name) => vec![ctx.job(name)?.name.clone()],
                None => ctx.config.jobs.iter().map(|j| j.name.clone()).collect(),
            };
            let mut out = Vec::new();
            for name in jobs {
                let prune = || ops::prune::prune_everywhere(ctx, actor, Some(&name), dry_run);
                let pruned = if dry_run {
                    prune()?
                } else {
                    self.record(RunKind::Prune, &name, false, &cancel, prune, |p| {
                        (String::new(), p.iter().filter(|p| p.removed).count() as u64)
                    })?
                };
                out.extend(pruned);
            }
            Ok(out)
        })
    }

    /// Copies `record` to `store` now (a recorded run of kind copy, in the copy slot).
    /// A failure of a queued copy is recorded for its retry; a success runs the job's
    /// retention in that store. The caller audits (the service, or the copier).
    pub async fn copy(
        self: &Arc<Self>,
        record: BackupRecord,
        store: String,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Copied, Error> {
        let guard = self.guard_copy(&cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                let result = engine.record(
                    RunKind::Copy,
                    &record.job,
                    false,
                    cancel,
                    || ops::copy::copy(ctx, &record, &store, &mut *progress),
                    |c| (c.id.clone(), c.size),
                );
                ops::copy::note(ctx, &store, &result);
                match &result {
                    Ok(_) => engine.after_copy(ctx, &record.job, &store),
                    Err(Error::Cancelled) => {}
                    Err(e) => {
                        let queued = ctx
                            .catalog
                            .location(&record.id, &store)?
                            .filter(|l| matches!(l.state, LocationState::Pending | LocationState::Failed));
                        if let Some(location) = queued {
                            ops::copy::failed(ctx, &location, e)?;
                        }
                    }
                }
                result
            })
        })
        .await
    }

    /// After a copy of a backup of `job` to `store`: the job's retention in that store.
    fn after_copy(&self, ctx: &Ctx, job: &str, store: &str) {
        let Some(job) = ctx
            .config
            .job(job)
            .filter(|j| j.offsite_stores().iter().any(|s| s == store))
        else {
            return;
        };
        let cancel = CancellationToken::new();
        let pruned = self.record(
            RunKind::Prune,
            &job.name,
            false,
            &cancel,
            || ops::remote_prune::prune_store(ctx, "retention", job, store, false),
            |p| (String::new(), p.iter().filter(|p| p.removed).count() as u64),
        );
        if let Err(e) = pruned {
            tracing::error!(job = job.name, store, "retention in the store failed: {e}");
        }
    }

    /// Works one queued copy (the copier's step): a copy whose backup or store is gone
    /// is dropped from the queue; otherwise it is copied and audited as `actor`.
    pub async fn copy_queued(
        self: &Arc<Self>,
        location: LocationRecord,
        actor: &str,
        cancel: CancellationToken,
    ) {
        let (id, store) = (location.backup_id.clone(), location.store.clone());
        let found = self
            .blocking(move |ctx| {
                let record = ctx.catalog.get_backup(&location.backup_id)?;
                let configured = ctx.offsite.get(&location.store).is_some();
                if record.is_none() || !configured {
                    ctx.catalog
                        .remove_location(&location.backup_id, &location.store)?;
                }
                Ok(record.filter(|_| configured))
            })
            .await;
        let record = match found {
            Ok(Some(record)) => record,
            Ok(None) => {
                tracing::warn!(id, store, "queued copy dropped: the backup or the store is gone");
                return;
            }
            Err(e) => {
                tracing::error!(id, store, "cannot read the copy queue: {e}");
                return;
            }
        };
        let result = self.copy(record, store.clone(), cancel, Box::new(|_| {})).await;
        if !matches!(result, Err(Error::Cancelled)) {
            let error = result.as_ref().err().map(Error::describe);
            let target = format!("{id} to {store}");
            let engine = self.clone();
            let actor = actor.to_owned();
            let _ =
                tokio::task::spawn_blocking(move || engine.audit(&actor, "copy", &target, error.as_deref()))
                    .await;
        }
    }

    /// Fetches a backup from a store into the backup dir (a recorded run of kind fetch,
    /// with a slot).
    pub async fn fetch(
        self: &Arc<Self>,
        id_text: String,
        store: String,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<BackupRecord, Error> {
        let remote = self
            .blocking(move |ctx| ops::fetch::locate(ctx, &id_text, Some(&store)))
            .await?;
        let guard = self.guard(None, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                let result = engine.record(
                    RunKind::Fetch,
                    &remote.job,
                    true,
                    cancel,
                    || ops::fetch::fetch(ctx, &remote, &mut *progress),
                    |r| (r.id.clone(), r.size),
                );
                ops::copy::note(ctx, &remote.store, &result);
                result
            })
        })
        .await
    }

    /// Verifies the copy of a backup in a store (a recorded run of kind verify, with a
    /// slot).
    pub async fn verify_remote(
        self: &Arc<Self>,
        id_text: String,
        store: String,
        deep: bool,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Verified, Error> {
        let (text, name) = (id_text.clone(), store.clone());
        let remote = self
            .blocking(move |ctx| ops::fetch::locate(ctx, &text, Some(&name)))
            .await?;
        let guard = self.guard(None, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                engine.record(
                    RunKind::Verify,
                    &remote.job,
                    false,
                    cancel,
                    || ops::offsite::verify_remote(ctx, &remote.id, &store, deep, &mut *progress),
                    |v| (v.id.clone(), 0),
                )
            })
        })
        .await
    }

    /// Per-job counts.
    pub fn job_stats(&self, job: &str) -> Result<JobStats, Error> {
        Ok(self.catalog.job_stats(job)?)
    }

    /// The newest backup run of a job.
    pub fn last_run(&self, job: &str) -> Result<Option<RunRecord>, Error> {
        Ok(self.catalog.last_run(job, RunKind::Backup)?)
    }

    /// The staging directory.
    pub fn staging_dir(&self) -> &Path {
        self.store.staging_dir()
    }

    /// A selective export (a recorded run of kind export, with a slot; it only
    /// reads, so no job claim). The returned file stays in staging until dropped.
    pub async fn export(
        self: &Arc<Self>,
        request: ExportRequest,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Exported, Error> {
        let guard = self.guard(None, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                engine.record(
                    RunKind::Export,
                    &request.job,
                    false,
                    cancel,
                    || ops::export::export(ctx, &request, &mut *progress),
                    |e| (String::new(), e.size),
                )
            })
        })
        .await
    }

    /// A selective import of the export file `file` (received into the staging
    /// directory `stage`) into `job`: a recorded run of kind import with a slot,
    /// and — unless a dry run, which only reads — a claim on the job.
    #[allow(clippy::too_many_arguments)]
    pub async fn import(
        self: &Arc<Self>,
        job: String,
        file: PathBuf,
        stage: PathBuf,
        policy: ConflictPolicy,
        dry_run: bool,
        cancel: CancellationToken,
        mut progress: ProgressFn,
    ) -> Result<Imported, Error> {
        let claim = match dry_run {
            true => None,
            false => Some(self.claim(&job)?),
        };
        let guard = self.guard(claim, &cancel, &mut *progress).await?;
        self.on_thread(cancel, move |engine, cancel| {
            let _guard = guard;
            engine.with_ctx(cancel, |ctx| {
                engine.record(
                    RunKind::Import,
                    &job,
                    !dry_run,
                    cancel,
                    || ops::import::import(ctx, &job, &file, &stage, policy, dry_run, &mut *progress),
                    |i| (i.safety_backup_id.clone().unwrap_or_default(), 0),
                )
            })
        })
        .await
    }
}
