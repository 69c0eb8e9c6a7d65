//! The operations, one module each. Every operation is a plain blocking function of
//! a [`Ctx`] (the config in force, the catalog, the local store, counters, the run's
//! cancel token) and its arguments, so it can be tested without gRPC; the engine
//! facade runs it on a blocking thread under a run guard and records the run.
//!
//! - [`backup`]: one backup ([`backup::BackupRun`], named steps).
//! - [`verify`]: shallow (hashes) and deep (SQLite's checks) verification.
//! - [`restore`]: to a directory, or in place with safety backup, swap and journal.
//! - [`upload`] / [`download`]: archives in and out.
//! - [`prune`]: retention; [`delete`]: delete, pin and unpin.
//! - [`drill`]: restore drills with the job's SQL checks.
//! - [`export`] / [`import`]: selective export and import (`[[job.export]]`), the
//!   logic in [`crate::selective`].
//! - [`rekey`]: re-encrypting an encrypted backup to its job's current recipients.
//! - [`copy`]: copying backups to offsite stores (the copy queue's work);
//!   [`fetch`]: bringing one back into the backup dir; [`offsite`]: the stores'
//!   overview, store listings (the fleet view), `verify --store`, start-up sweep and
//!   reconciliation, lag and health warnings; [`remote_prune`]: retention in a store.
//!
//! Dependencies run one way: `ops` uses the layers below (source, archive, manifest,
//! store, catalog, policy) and never the engine or the API.

pub mod backup;
pub mod copy;
pub mod delete;
pub mod download;
pub mod drill;
pub mod export;
pub mod fetch;
pub mod import;
pub mod offsite;
pub mod prune;
pub mod rekey;
pub mod remote_prune;
pub mod restore;
pub mod upload;
pub mod verify;

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;
use coffer_common::ids::IdRef;
use tokio_util::sync::CancellationToken;

use crate::catalog::{AuditRecord, BackupRecord, Catalog};
use crate::config::{Config, JobConfig};
use crate::error::Error;
use crate::run::{Event, Phase, Progress};
use crate::source::dump::Control;
use crate::store::LocalStore;
use crate::store::offsite::Offsite;

/// Counters that live only as long as the process (Prometheus handles resets).
#[derive(Debug, Default)]
pub struct Counters {
    inner: Mutex<CounterValues>,
}

/// A copy of the counters' values.
#[derive(Debug, Clone, Default)]
pub struct CounterValues {
    /// Backups removed by retention, per job.
    pub retention_removed: HashMap<String, u64>,
    /// Failed verifications, per job.
    pub verify_failures: HashMap<String, u64>,
    /// Failed copy attempts, per job and store.
    pub copy_failures: HashMap<(String, String), u64>,
    /// Archive bytes copied to stores, per job and store.
    pub copied_bytes: HashMap<(String, String), u64>,
    /// Copies removed from stores by retention, per job and store.
    pub remote_removed: HashMap<(String, String), u64>,
}

impl Counters {
    /// Changes the counters.
    pub fn count(&self, f: impl FnOnce(&mut CounterValues)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The current values.
    pub fn values(&self) -> CounterValues {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The host facts a manifest records and the archive writer uses.
#[derive(Debug, Clone)]
pub struct Host {
    pub hostname: String,
    /// Compression threads.
    pub workers: u32,
}

impl Host {
    /// This machine.
    pub fn current() -> Host {
        Host {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".to_owned()),
            workers: crate::archive::compression_workers(),
        }
    }

    /// This machine under the name `[daemon] host-name` gives it (when set).
    pub fn named(name: &str) -> Host {
        let mut host = Host::current();
        if !name.is_empty() {
            host.hostname = name.to_owned();
        }
        host
    }
}

/// What an operation works with.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub catalog: &'a Catalog,
    pub store: &'a LocalStore,
    /// The configured offsite stores.
    pub offsite: &'a Offsite,
    pub counters: &'a Counters,
    pub host: &'a Host,
    /// Fires when cofferd shuts down.
    pub cancel: &'a CancellationToken,
}

impl Ctx<'_> {
    /// The configured job `name`.
    pub fn job(&self, name: &str) -> Result<&JobConfig, Error> {
        self.config
            .job(name)
            .ok_or_else(|| Error::UnknownJob(name.to_owned()))
    }

    /// Where a catalogued backup's archive is (`.tar.zst` or `.tar.zst.age`).
    pub fn archive_path(&self, record: &BackupRecord) -> std::path::PathBuf {
        self.store
            .paths_for(&record.job, &record.id, record.is_encrypted())
            .archive
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
                self.known_job(&job)?;
                self.catalog.latest(Some(&job))?.ok_or(Error::NoBackups(job))
            }
        }
    }

    /// Refuses a job that is neither configured nor has backups here (a job no
    /// longer configured still lists its backups).
    fn known_job(&self, job: &str) -> Result<(), Error> {
        if self.config.job(job).is_none() && self.catalog.job_stats(job)?.count == 0 {
            return Err(Error::UnknownJob(job.to_owned()));
        }
        Ok(())
    }

    /// Backups newest first, of one job or all.
    pub fn list(&self, job: Option<&str>) -> Result<Vec<BackupRecord>, Error> {
        if let Some(job) = job {
            self.known_job(job)?;
        }
        Ok(self.catalog.list_backups(job)?)
    }

    /// Records an action in the audit log (and the daemon's log).
    pub fn audit(&self, actor: &str, action: &str, target: &str, error: Option<&str>) {
        audit(self.catalog, actor, action, target, error);
    }
}

/// Runs `f` with a [`Control`] for a database server's tools: cancelled with the run,
/// reporting their progress as `phase` events.
pub fn with_control<T>(
    ctx: &Ctx,
    phase: Phase,
    progress: Progress<'_>,
    f: impl FnOnce(&mut Control<'_>) -> T,
) -> T {
    let cancelled = || ctx.cancel.is_cancelled();
    let mut report = |done: u64, total: u64| progress(Event::bytes(phase, done, total.max(done)));
    let mut ctl = Control::new(&cancelled, &mut report);
    f(&mut ctl)
}

/// Records an action in the audit log and the daemon's log; a failure to write the
/// audit log is logged, never returned (the action itself happened or not already).
pub fn audit(catalog: &Catalog, actor: &str, action: &str, target: &str, error: Option<&str>) {
    match error {
        None => tracing::info!(actor, action, target, "audit: {action} {target} ok"),
        Some(e) => tracing::warn!(actor, action, target, "audit: {action} {target} failed: {e}"),
    }
    let entry = AuditRecord {
        id: 0,
        at: Utc::now().timestamp(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        result: if error.is_some() { "failed" } else { "ok" }.to_owned(),
        error: error.unwrap_or_default().to_owned(),
    };
    if let Err(e) = catalog.audit(&entry) {
        tracing::error!("cannot write the audit log: {e}");
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A [`Ctx`] over a temporary state and backup directory, for unit tests.

    use std::path::{Path, PathBuf};

    use super::*;

    pub struct TestCtx {
        /// Owns the temporary directory (`None` for a context sharing another's).
        pub _dir: Option<tempfile::TempDir>,
        root: PathBuf,
        pub config: Config,
        pub catalog: Catalog,
        pub store: LocalStore,
        pub offsite: Offsite,
        pub counters: Counters,
        pub host: Host,
        pub cancel: CancellationToken,
    }

    impl TestCtx {
        /// A daemon config with one job `app` over `db` and `media` (extra TOML lines
        /// go into the job), directories created.
        pub fn new(db: &Path, media: &[PathBuf], job_extra: &str) -> TestCtx {
            Self::with_stores(db, media, job_extra, "", None)
        }

        /// [`TestCtx::new`] with `[[store]]` tables (`stores`, placed before the job)
        /// whose requests run on `rt`.
        pub fn with_stores(
            db: &Path,
            media: &[PathBuf],
            job_extra: &str,
            stores: &str,
            rt: Option<tokio::runtime::Handle>,
        ) -> TestCtx {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_owned();
            TestCtx::build(Some(dir), root, db, media, job_extra, stores, rt)
        }

        /// Another config (`job_extra` for job `app` over `db`, no media) over the
        /// same state and backup directories as `other`: a reloaded daemon.
        pub fn with_dirs(other: &TestCtx, db: &Path, job_extra: &str) -> TestCtx {
            TestCtx::build(None, other.root.clone(), db, &[], job_extra, "", None)
        }

        fn build(
            dir: Option<tempfile::TempDir>,
            root: PathBuf,
            db: &Path,
            media: &[PathBuf],
            job_extra: &str,
            stores: &str,
            rt: Option<tokio::runtime::Handle>,
        ) -> TestCtx {
            let state = root.join("state");
            let backups = root.join("backups");
            let media: Vec<String> = media
                .iter()
                .map(|m| format!("{:?}", m.display().to_string()))
                .collect();
            let text = format!(
                "[daemon]\nstate-dir = {state:?}\nbackup-dir = {backups:?}\nhost-name = \"testhost\"\n\n{stores}\n[[job]]\nname = \"app\"\ndatabase = {db:?}\nmedia = [{}]\nschedule = \"manual\"\nmin-free-space = \"0B\"\n{job_extra}\n",
                media.join(", "),
                state = state.display().to_string(),
                backups = backups.display().to_string(),
                db = db.display().to_string(),
            );
            let config = Config::parse(Path::new("/test/cofferd.toml"), &text).unwrap();
            std::fs::create_dir_all(state.join("staging")).unwrap();
            std::fs::create_dir_all(&backups).unwrap();
            let catalog = Catalog::open(&state.join("catalog.db")).unwrap();
            let store = LocalStore::new(&backups, &state);
            TestCtx {
                _dir: dir,
                root,
                offsite: Offsite::new(&config.stores, rt, &CancellationToken::new()),
                config,
                catalog,
                store,
                counters: Counters::default(),
                host: Host::current(),
                cancel: CancellationToken::new(),
            }
        }

        /// A small database (`test_db::make_db`, WAL, no media) backed up by job
        /// `app` with `job_extra`; the database's directory comes back too.
        pub fn app(job_extra: &str) -> (tempfile::TempDir, TestCtx) {
            let src = tempfile::tempdir().unwrap();
            let db = src.path().join("app.db");
            crate::source::sqlite::test_db::make_db(&db, true);
            let t = TestCtx::new(&db, &[], job_extra);
            (src, t)
        }

        /// A backup of job `app`.
        pub fn backup(&self) -> BackupRecord {
            let ctx = self.ctx();
            super::backup::take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap()
        }

        /// The temporary directory holding state and backups.
        pub fn dir_path(&self) -> &Path {
            &self.root
        }

        pub fn ctx(&self) -> Ctx<'_> {
            Ctx {
                config: &self.config,
                catalog: &self.catalog,
                store: &self.store,
                offsite: &self.offsite,
                counters: &self.counters,
                host: &self.host,
                cancel: &self.cancel,
            }
        }
    }
}
