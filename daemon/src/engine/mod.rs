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
//! The entry point of each kind of run — the frame around one operation — is in
//! [`runs`] (local runs: backup, verify, restore, upload, drill, rekey, prune, export,
//! import) or [`offsite`] (copies, fetches and verifications against a store).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, JobStats, RunEnd, RunRecord};
use crate::config::Config;
use crate::error::Error;
use crate::ops::{self, CounterValues, Counters, Ctx, Host};
use crate::run::{Event, Phase, RunKind, RunStatus};
use crate::store::LocalStore;
use crate::store::offsite::Offsite;

mod offsite;
mod runs;

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
}
