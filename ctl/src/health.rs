//! `cofferctl health [JOB]`: a Nagios/Icinga plugin.
//!
//! Asks `grpc.health.v1` for the daemon (service `""`) and each job
//! (`coffer.job.<name>`), and `GetStatus`/`ListJobs` for the numbers. Prints one
//! status line with perfdata and exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN:
//! - CRITICAL: the daemon or a job is NOT_SERVING (last backup failed, or the newest
//!   backup is older than `stale-after`, or there is none);
//! - WARNING: a job is healthy but its newest backup is older than 75 % of
//!   `stale-after`, or its database has a problem right now, or the daemon reports a
//!   warning for it (e.g. its newest backup is not offsite after `stale-after`);
//! - UNKNOWN: cofferd cannot be reached or refused the question.

use std::path::Path;

use coffer_common::proto::{self, coffer_client::CofferClient};
use coffer_common::tonic::Status;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Nagios states, in order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// Runs the check and returns the exit code.
pub async fn check(socket: &Path, job: Option<String>, json: bool) -> u8 {
    let (state, line, details) = match evaluate(socket, job).await {
        Ok(result) => result,
        Err(message) => (State::Unknown, message, Vec::new()),
    };
    if json {
        let text = json!({ "state": state.name(), "code": state as u8, "summary": line, "jobs": details });
        outln!("{}", serde_json::to_string_pretty(&text).unwrap_or_default());
    } else {
        outln!("COFFER {} - {line}", state.name());
    }
    state as u8
}

async fn evaluate(
    socket: &Path,
    only: Option<String>,
) -> Result<(State, String, Vec<serde_json::Value>), String> {
    let channel = coffer_common::client::connect_channel(socket)
        .await
        .map_err(|e| e.to_string())?;
    let health = HealthClient::new(channel.clone());
    let mut coffer = CofferClient::new(channel);
    let serving = |service: String| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    };
    let unknown = |s: Status| format!("cofferd answered: {}", s.message());
    if !serving(String::new()).await.map_err(unknown)? {
        return Ok((
            State::Critical,
            "cofferd is not serving (stopping?)".into(),
            Vec::new(),
        ));
    }
    let status = coffer
        .get_status(proto::GetStatusRequest {})
        .await
        .map_err(unknown)?
        .into_inner();
    let jobs = coffer
        .list_jobs(proto::ListJobsRequest {})
        .await
        .map_err(unknown)?
        .into_inner()
        .jobs;
    if let Some(name) = &only
        && !status.jobs.iter().any(|j| &j.name == name)
    {
        return Err(format!("there is no job named '{name}'"));
    }
    let now = chrono::Utc::now().timestamp();
    let mut worst = State::Ok;
    let mut problems = Vec::new();
    let mut perfdata = Vec::new();
    let mut details = Vec::new();
    for job in status
        .jobs
        .iter()
        .filter(|j| only.as_ref().is_none_or(|n| n == &j.name))
    {
        let stale_after = jobs
            .iter()
            .find(|c| c.name == job.name)
            .map_or(0, |c| c.stale_after_seconds) as i64;
        let age = (job.last_success_at > 0).then(|| (now - job.last_success_at).max(0));
        let healthy = serving(format!("coffer.job.{}", job.name))
            .await
            .map_err(unknown)?;
        let warn_at = stale_after * 3 / 4;
        let (state, why) = judge(job, healthy, age, stale_after);
        worst = worst.max(state);
        if !why.is_empty() {
            problems.push(why.clone());
        }
        perfdata.push(format!(
            "{name}_age={age}s;{warn_at};{stale_after};0 {name}_backups={count};;;0 {name}_bytes={bytes}B;;;0",
            name = job.name,
            age = age.unwrap_or(0),
            count = job.backup_count,
            bytes = job.backup_bytes
        ));
        details.push(json!({
            "job": job.name,
            "state": state.name(),
            "reason": why,
            "age-seconds": age,
            "stale-after-seconds": stale_after,
            "backups": job.backup_count,
            "bytes": job.backup_bytes,
            "source": {
                "kind": job.source_kind,
                "database": job.database_name,
                "server-version": job.server_version,
            },
            "warnings": job.warnings,
        }));
    }
    perfdata.push(format!("free={}B;;;0", status.backup_dir_free_bytes));
    let summary = if problems.is_empty() {
        format!("{} job(s) healthy", details.len())
    } else {
        problems.join("; ")
    };
    Ok((worst, format!("{summary} | {}", perfdata.join(" ")), details))
}

/// A job's state and why, from its health service (`healthy`), the age of its newest
/// backup and its `stale-after`: CRITICAL when unhealthy, WARNING for a known problem
/// or a backup past 3/4 of `stale-after`.
fn judge(job: &proto::JobStatus, healthy: bool, age: Option<i64>, stale_after: i64) -> (State, String) {
    let warn_at = stale_after * 3 / 4;
    if !healthy {
        let why = match (&job.last_run, age) {
            (Some(run), _) if run.status() == proto::RunStatus::Failed => {
                format!("{}: last backup failed: {}", job.name, run.error)
            }
            (_, None) if !job.problem.is_empty() => {
                format!("{}: no backup yet: {}", job.name, job.problem)
            }
            (_, None) => format!("{}: no backup yet", job.name),
            (_, Some(age)) => format!(
                "{}: newest backup is {age}s old (stale after {stale_after}s)",
                job.name
            ),
        };
        (State::Critical, why)
    } else if !job.problem.is_empty() {
        (State::Warning, format!("{}: {}", job.name, job.problem))
    } else if !job.warnings.is_empty() {
        (
            State::Warning,
            format!("{}: {}", job.name, job.warnings.join("; ")),
        )
    } else if age.is_some_and(|a| a > warn_at) {
        (
            State::Warning,
            format!("{}: newest backup is {}s old", job.name, age.unwrap_or(0)),
        )
    } else {
        (State::Ok, String::new())
    }
}
