//! The entry points of the local runs, one per kind: each takes the engine's frame
//! (a [`super::RunGuard`], a blocking thread, a recorded run; see the parent module) around
//! one operation of [`crate::ops`].

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::catalog::BackupRecord;
use crate::error::Error;
use crate::ops::drill::Drilled;
use crate::ops::export::{ExportRequest, Exported};
use crate::ops::fetch::Remote;
use crate::ops::import::Imported;
use crate::ops::prune::Pruned;
use crate::ops::rekey::Rekeyed;
use crate::ops::restore::{Only, Restored, Target};
use crate::ops::verify::Verified;
use crate::ops::{self, Ctx};
use crate::run::{Event, Phase, RunKind};
use crate::selective::ConflictPolicy;

use super::{Claim, Engine, ProgressFn};

/// The backup a restore starts from: catalogued here, or only in a store.
enum RestoreFrom {
    Local(Box<BackupRecord>),
    Remote(Remote),
}

impl Engine {
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
