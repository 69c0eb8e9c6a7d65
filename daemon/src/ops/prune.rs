//! Applying retention: the pure policy ([`crate::policy::retention`]) decides, this
//! removes. Each removal is audited. Backups of jobs no longer configured are left
//! alone (there is no policy for them); pinned backups are never removed.

use super::{Ctx, delete};
use crate::config::JobConfig;
use crate::error::Error;
use crate::policy::retention::{self, Candidate, Decision};

/// One backup's retention decision, and whether it was removed.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub job: String,
    pub decision: Decision,
    pub removed: bool,
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
        for decision in retention::apply(&job.retention, job.timezone, &candidates) {
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
                decision,
                removed,
            });
        }
    }
    Ok(out)
}
