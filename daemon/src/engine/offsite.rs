//! The entry points of the runs against offsite stores: copies (on the copies' own
//! one-permit pool, see the parent module), fetches and verifications of a store's
//! copy, each recorded as a run.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::catalog::BackupRecord;
use crate::catalog::LocationRecord;
use crate::catalog::LocationState;
use crate::error::Error;
use crate::ops::copy::Copied;
use crate::ops::verify::Verified;
use crate::ops::{self, Ctx};
use crate::run::RunKind;

use super::{Engine, ProgressFn};

impl Engine {
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
}
