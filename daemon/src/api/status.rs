//! The answers of `GetStatus` and `ListJobs`: per-job state from the catalog and the
//! config, next fire times, free space.

use chrono::{DateTime, Utc};
use coffer_common::proto;

use super::convert::run_message;
use crate::config::{JobConfig, SourceConfig};
use crate::engine::Engine;
use crate::error::Error;

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
        jobs.push(proto::JobStatus {
            name: job.name.clone(),
            last_run: last_run.as_ref().map(run_message),
            next_run_at: next_run_at(job),
            backup_count: stats.count,
            backup_bytes: stats.bytes,
            last_success_at: stats.newest_at,
            running: engine.is_running(&job.name),
            problem: crate::source::for_job(job).problem().unwrap_or_default(),
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
    })
}

/// The configured jobs.
pub fn jobs(engine: &Engine) -> proto::ListJobsResponse {
    let config = engine.config();
    let jobs = config
        .jobs
        .iter()
        .map(|j| proto::Job {
            name: j.name.clone(),
            database: match &j.source {
                SourceConfig::Sqlite(s) => s.path.display().to_string(),
            },
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
        })
        .collect();
    proto::ListJobsResponse { jobs }
}
