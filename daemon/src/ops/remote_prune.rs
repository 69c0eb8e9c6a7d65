//! Retention in an offsite store: the job's `[job.offsite.retention]` (default: its own
//! policy) applied to the copies this host made there, independently of the local
//! backup dir — deleting locally never deletes a copy, and deleting a copy never
//! touches the local backup.
//!
//! The candidates are this host's catalogued copies of the job in the store (never a
//! key another host wrote: other hosts' prefixes are not even listed). The pure policy
//! decides; then a copy is kept anyway when it is pinned (the local row's pin, or — for
//! a copy no longer local — the pin in its sidecar in the store, read before deleting)
//! or still under Object Lock (its retain-until date is in the future: no DELETE is
//! even sent). A removal marks the location `deleting`, deletes the sidecar first (so
//! the backup stops counting as offsite at once), then the archive, then forgets the
//! location; each is audited as `remote-delete`. A deletion that fails stays
//! `deleting` and is tried again by the next retention run.

use chrono::Utc;

use super::Ctx;
use super::copy::backend;
use super::prune::Pruned;
use crate::catalog::{LocationRecord, LocationState};
use crate::config::JobConfig;
use crate::error::Error;
use crate::policy::retention::{self, Candidate};
use crate::store::Store;
use crate::store::s3::S3ErrorKind;

/// Applies `job`'s offsite retention in `store`; with `dry_run` nothing is deleted.
/// Removals are audited as done by `actor`.
pub fn prune_store(
    ctx: &Ctx,
    actor: &str,
    job: &JobConfig,
    store: &str,
    dry_run: bool,
) -> Result<Vec<Pruned>, Error> {
    let Some(offsite) = &job.offsite else {
        return Ok(Vec::new());
    };
    let rows: Vec<LocationRecord> = ctx
        .catalog
        .locations_in(store, Some(&job.name))?
        .into_iter()
        .filter(|l| matches!(l.state, LocationState::Copied | LocationState::Deleting))
        .collect();
    let mut candidates = Vec::with_capacity(rows.len());
    for row in &rows {
        let local = ctx.catalog.get_backup(&row.backup_id)?;
        candidates.push(Candidate {
            id: row.backup_id.clone(),
            created_at: chrono::DateTime::from_timestamp(row.created_at, 0).unwrap_or_default(),
            protected: local.map_or(row.protected, |b| b.protected),
        });
    }
    let now = Utc::now().timestamp();
    // Checked once, before the first removal: a store that is down costs one quick
    // request here, not a round of retries per copy.
    let mut reachable: Option<Result<(), String>> = None;
    let mut out = Vec::with_capacity(rows.len());
    for mut decision in retention::apply(&offsite.retention, job.timezone, &candidates) {
        let Some(row) = rows.iter().find(|r| r.backup_id == decision.id) else {
            continue;
        };
        let mut removed = false;
        if !decision.keep {
            if row.retain_until > now {
                decision.keep = true;
                decision.reasons.push(format!(
                    "locked until {}",
                    coffer_common::format::timestamp(row.retain_until)
                ));
            } else if !dry_run {
                let up = reachable.get_or_insert_with(|| {
                    backend(ctx, store)
                        .and_then(|b| b.check().map_err(Error::from_remote))
                        .map_err(|e| e.to_string())
                });
                let outcome = match up {
                    Ok(()) => remove(ctx, actor, row),
                    Err(e) => Err(Error::InvalidArgument(e.clone())),
                };
                match outcome {
                    Ok(true) => removed = true,
                    Ok(false) => {
                        decision.keep = true;
                        decision.reasons.push("protected".into());
                    }
                    Err(e) => {
                        decision.keep = true;
                        decision.reasons.push(format!("not deleted: {e}"));
                    }
                }
            }
        } else if row.state == LocationState::Deleting && !dry_run {
            // A deletion that was interrupted, of a copy the policy keeps after all.
            ctx.catalog
                .set_location_state(&row.backup_id, store, LocationState::Copied)?;
        }
        out.push(Pruned {
            job: job.name.clone(),
            location: store.to_owned(),
            decision,
            removed,
        });
    }
    Ok(out)
}

/// Deletes one copy from its store (see the module doc). `Ok(false)`: kept, because
/// its sidecar in the store says it is pinned.
fn remove(ctx: &Ctx, actor: &str, row: &LocationRecord) -> Result<bool, Error> {
    let backend = backend(ctx, &row.store)?;
    let target = format!("{} in {}", row.backup_id, row.store);
    if ctx.catalog.get_backup(&row.backup_id)?.is_none() {
        match backend.read_sidecar(&row.job, &row.backup_id) {
            Ok(sidecar) if sidecar.protected() => return Ok(false),
            Ok(_) => {}
            // Gone already: the deletion below finishes what is left.
            Err(crate::store::StoreError::Remote(e)) if e.kind() == S3ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.catalog
        .set_location_state(&row.backup_id, &row.store, LocationState::Deleting)?;
    let outcome = backend.remove(&row.job, &row.backup_id).map_err(Error::from);
    let error = outcome.as_ref().err().map(|e| e.describe());
    ctx.audit(actor, "remote-delete", &target, error.as_deref());
    if let Err(Error::Store(crate::store::StoreError::Remote(e))) = &outcome
        && e.kind() == S3ErrorKind::Locked
    {
        // Nothing was deleted (the sidecar goes first and is locked as long).
        ctx.catalog
            .set_location_state(&row.backup_id, &row.store, LocationState::Copied)?;
    }
    outcome?;
    ctx.catalog.remove_location(&row.backup_id, &row.store)?;
    ctx.counters.count(|c| {
        *c.remote_removed
            .entry((row.job.clone(), row.store.clone()))
            .or_default() += 1
    });
    tracing::info!(
        id = row.backup_id,
        store = row.store,
        "copy deleted from the store by retention"
    );
    Ok(true)
}
