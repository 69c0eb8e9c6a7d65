//! The answers of `GetStatus` and `ListJobs`: per-job state from the catalog and the
//! config, next fire times, free space.

use chrono::{DateTime, Utc};
use coffer_common::proto;

use super::convert::run_message;
use crate::config::JobConfig;
use crate::engine::Engine;
use crate::error::Error;
use crate::run::{RunKind, RunStatus};

/// Next fire time of a job's schedule, as Unix seconds (0 when manual).
pub fn next_run_at(job: &JobConfig) -> i64 {
    job.schedule
        .as_ref()
        .and_then(|s| s.next_after(Utc::now()))
        .map_or(0, |t| t.timestamp())
}

/// The daemon's status (blocking: reads the catalog).
pub fn status(engine: &Engine, started_at: DateTime<Utc>) -> Result<proto::GetStatusResponse, Error> {
    let config = engine.config();
    let mut jobs = Vec::with_capacity(config.jobs.len());
    for job in &config.jobs {
        let stats = engine.job_stats(&job.name)?;
        let last_run = engine.last_run(&job.name)?;
        let last_drill = engine.catalog().last_run(&job.name, RunKind::Drill)?;
        // The server version as the newest backup found it: status opens no
        // connection to a database server.
        let server_version = match job.source.database_name() {
            Some(_) => engine
                .catalog()
                .latest(Some(&job.name))?
                .and_then(|b| b.summary.source.dump().map(|d| d.server_version.clone()))
                .unwrap_or_default(),
            None => String::new(),
        };
        jobs.push(proto::JobStatus {
            warnings: warnings(engine, &job.name)?,
            last_drill: last_drill.as_ref().map(run_message),
            name: job.name.clone(),
            last_run: last_run.as_ref().map(run_message),
            next_run_at: next_run_at(job),
            backup_count: stats.count,
            backup_bytes: stats.bytes,
            last_success_at: stats.newest_at,
            running: engine.is_running(&job.name),
            problem: crate::source::for_job(job).problem().unwrap_or_default(),
            source_kind: job.source.kind().to_owned(),
            database_name: job.source.database_name().unwrap_or_default().to_owned(),
            server_version,
        });
    }
    Ok(proto::GetStatusResponse {
        version: coffer_common::VERSION.to_owned(),
        uptime_seconds: (Utc::now() - started_at).num_seconds().max(0) as u64,
        started_at: started_at.timestamp(),
        jobs,
        backup_dir_free_bytes: engine.store().free_space().unwrap_or(0),
        backup_dir: config.daemon.backup_dir.display().to_string(),
        state_dir: config.daemon.state_dir.display().to_string(),
        stores: super::offsite::store_status(engine)?,
    })
}

/// What needs the admin's attention about `job` although its backups run (each a
/// sentence; `cofferctl health` turns them into WARNING): a failed last restore drill,
/// entries the newest backup could not store, and stores that have been behind for
/// longer than the job's offsite `stale-after`.
pub fn warnings(engine: &Engine, job: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let drill = engine.catalog().last_finished_run(job, RunKind::Drill)?;
    if let Some(run) = drill.filter(|r| r.status == RunStatus::Failed) {
        out.push(format!("the last restore drill failed: {}", run.error));
    }
    if let Some(newest) = engine.catalog().latest(Some(job))?
        && newest.summary.totals.skipped > 0
    {
        let first = newest
            .summary
            .skipped
            .first()
            .map(|s| format!(", e.g. {} ({})", s.path, s.reason))
            .unwrap_or_default();
        out.push(format!(
            "the newest backup {} could not store {} media entries{first}; see cofferctl show {}",
            newest.id, newest.summary.totals.skipped, newest.id
        ));
    }
    out.extend(super::offsite::warnings(engine, job)?);
    Ok(out)
}

/// The configured jobs.
pub fn jobs(engine: &Engine) -> proto::ListJobsResponse {
    let config = engine.config();
    let jobs = config
        .jobs
        .iter()
        .map(|j| proto::Job {
            name: j.name.clone(),
            database: j.source.describe(),
            media: j.media.iter().map(|m| m.display().to_string()).collect(),
            schedule: j
                .schedule
                .as_ref()
                .map_or_else(|| "manual".to_owned(), |s| s.expr().to_owned()),
            timezone: j.timezone.name().to_owned(),
            compression_level: j.compression_level,
            verify_after_backup: j.verify_after_backup,
            min_free_space: j.min_free_space,
            stale_after_seconds: j.stale_after.as_secs(),
            catch_up: j.catch_up,
            next_run_at: next_run_at(j),
            retention: j.retention.summary(),
            drill_schedule: j
                .drill
                .schedule
                .as_ref()
                .map_or_else(|| "manual".to_owned(), |s| s.expr().to_owned()),
            drill_checks: j.drill.checks.clone(),
            exclude: j.exclude.patterns().to_vec(),
            source_kind: j.source.kind().to_owned(),
        })
        .collect();
    proto::ListJobsResponse { jobs }
}
