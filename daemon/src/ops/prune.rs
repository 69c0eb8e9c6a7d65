//! Applying retention: the pure policy ([`crate::policy::retention`]) decides, this
//! removes. Each removal is audited. Backups of jobs no longer configured are left
//! alone (there is no policy for them); pinned backups are never removed.
//!
//! Retention runs per location: [`prune`] is the local backup dir, where a backup whose
//! copy to one of its job's stores is still queued is kept ("not yet offsite") so the
//! copy can still be made; [`prune_everywhere`] adds each store of the job
//! ([`super::remote_prune`]). Local removal never deletes a copy in a store.

use super::{Ctx, delete, remote_prune};
use crate::catalog::LocationState;
use crate::config::JobConfig;
use crate::config::offsite::LOCAL;
use crate::error::Error;
use crate::policy::retention::{self, Candidate, Decision};

/// One backup's retention decision, and whether it was removed.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub job: String,
    /// `local`, or the store the decision is about.
    pub location: String,
    pub decision: Decision,
    pub removed: bool,
}

/// The reason a local backup is kept while its copy is still to be made.
pub const REASON_NOT_OFFSITE: &str = "not yet offsite";

/// [`prune`], then the retention of each store of the job(s) (`cofferctl prune`).
pub fn prune_everywhere(
    ctx: &Ctx,
    actor: &str,
    job: Option<&str>,
    dry_run: bool,
) -> Result<Vec<Pruned>, Error> {
    let mut out = prune(ctx, actor, job, dry_run)?;
    let jobs: Vec<&JobConfig> = match job {
        Some(name) => vec![ctx.job(name)?],
        None => ctx.config.jobs.iter().collect(),
    };
    for job in jobs {
        for store in job.offsite_stores() {
            out.extend(remote_prune::prune_store(ctx, actor, job, store, dry_run)?);
        }
    }
    Ok(out)
}

/// Applies the retention policy of one job or of every configured job. With
/// `dry_run` nothing is removed; each removal is audited as done by `actor`.
pub fn prune(ctx: &Ctx, actor: &str, job: Option<&str>, dry_run: bool) -> Result<Vec<Pruned>, Error> {
    let jobs: Vec<&JobConfig> = match job {
        Some(name) => vec![ctx.job(name)?],
        None => ctx.config.jobs.iter().collect(),
    };
    let mut out = Vec::new();
    for job in jobs {
        let records = ctx.catalog.list_backups(Some(&job.name))?;
        let candidates: Vec<Candidate> = records
            .iter()
            .map(|r| Candidate {
                id: r.id.clone(),
                created_at: chrono::DateTime::from_timestamp(r.created_at, 0).unwrap_or_default(),
                protected: r.protected,
            })
            .collect();
        let queued: std::collections::HashSet<String> = job
            .offsite_stores()
            .iter()
            .map(|store| ctx.catalog.locations_in(store, Some(&job.name)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .filter(|l| matches!(l.state, LocationState::Pending | LocationState::Failed))
            .map(|l| l.backup_id)
            .collect();
        for mut decision in retention::apply(&job.retention, job.timezone, &candidates) {
            if !decision.keep && queued.contains(&decision.id) {
                decision.keep = true;
                decision.reasons.push(REASON_NOT_OFFSITE.to_owned());
            }
            let mut removed = false;
            if !decision.keep && !dry_run {
                let record = records.iter().find(|r| r.id == decision.id);
                if let Some(record) = record.filter(|r| !r.protected) {
                    let outcome = delete::remove(ctx, record);
                    let error = outcome.as_ref().err().map(ToString::to_string);
                    ctx.audit(actor, "retention-remove", &record.id, error.as_deref());
                    outcome?;
                    removed = true;
                    ctx.counters
                        .count(|c| *c.retention_removed.entry(job.name.clone()).or_default() += 1);
                }
            }
            out.push(Pruned {
                job: job.name.clone(),
                location: LOCAL.to_owned(),
                decision,
                removed,
            });
        }
    }
    Ok(out)
}
