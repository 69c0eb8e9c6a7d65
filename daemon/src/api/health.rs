//! Keeps `grpc.health.v1` statuses current.
//!
//! Service `""` is the daemon (SERVING while it runs; set NOT_SERVING at shutdown by
//! the server). Service `coffer.job.<name>` is NOT_SERVING when the job's last finished
//! backup run failed, or its newest backup is older than `stale-after` (or it has none).
//!
//! One task re-evaluates every job when a run ends (the engine's `changed` notifier)
//! and otherwise sleeps exactly until the next moment a job would turn stale, so an
//! idle daemon does not poll. It also sets systemd's idle STATUS line.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::Error;
use crate::run::{RunKind, RunStatus};

/// The health service name of a job.
pub fn service_name(job: &str) -> String {
    format!("coffer.job.{job}")
}

/// A job's health: healthy or not, and when it turns stale (Unix seconds) if healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobHealth {
    pub serving: bool,
    pub reason: String,
    pub stale_at: Option<i64>,
}

/// Judges a job's health at `now` from its newest backup time (0 = none) and whether
/// its last finished backup run failed. Pure.
pub fn judge(newest_at: i64, last_failed: Option<&str>, stale_after: Duration, now: i64) -> JobHealth {
    if let Some(error) = last_failed {
        return JobHealth {
            serving: false,
            reason: format!("the last backup failed: {error}"),
            stale_at: None,
        };
    }
    if newest_at == 0 {
        return JobHealth {
            serving: false,
            reason: "there is no backup yet".into(),
            stale_at: None,
        };
    }
    let stale_at = newest_at.saturating_add(stale_after.as_secs() as i64);
    if now >= stale_at {
        return JobHealth {
            serving: false,
            reason: format!(
                "the newest backup is {} old (stale-after {})",
                humantime::format_duration(Duration::from_secs((now - newest_at).max(0) as u64)),
                humantime::format_duration(stale_after)
            ),
            stale_at: None,
        };
    }
    JobHealth {
        serving: true,
        reason: String::new(),
        stale_at: Some(stale_at),
    }
}

/// The health of every configured job now.
pub fn evaluate(engine: &Engine) -> Result<Vec<(String, JobHealth)>, Error> {
    let now = Utc::now().timestamp();
    let config = engine.config();
    let mut out = Vec::with_capacity(config.jobs.len());
    for job in &config.jobs {
        let stats = engine.job_stats(&job.name)?;
        let last = engine.catalog().last_finished_run(&job.name, RunKind::Backup)?;
        let failed = last
            .as_ref()
            .filter(|r| r.status == RunStatus::Failed)
            .map(|r| r.error.as_str());
        out.push((
            job.name.clone(),
            judge(stats.newest_at, failed, job.stale_after, now),
        ));
    }
    Ok(out)
}

/// "idle; next: app at 2026-11-24T02:00:00Z" for systemd's STATUS line.
fn idle_status(engine: &Engine) -> String {
    let config = engine.config();
    let next = config
        .jobs
        .iter()
        .filter_map(|j| j.schedule.as_ref()?.next_after(Utc::now()).map(|t| (t, &j.name)))
        .min();
    match next {
        Some((at, job)) => format!("idle; next: {job} at {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
        None => "idle; no scheduled jobs".to_owned(),
    }
}

/// Publishes every job's health now; returns how long until the next job could turn
/// stale (at most an hour).
pub async fn refresh(engine: &Arc<Engine>, reporter: &mut tonic_health::server::HealthReporter) -> Duration {
    let evaluated = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || evaluate(&engine)).await
    };
    let mut wake = Duration::from_secs(3600);
    let jobs = match evaluated {
        Ok(Ok(jobs)) => jobs,
        Ok(Err(e)) => {
            tracing::error!("cannot evaluate job health: {e}");
            return wake;
        }
        Err(e) => {
            tracing::error!("cannot evaluate job health: {e}");
            return wake;
        }
    };
    let now = Utc::now().timestamp();
    for (job, health) in &jobs {
        let status = if health.serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        reporter.set_service_status(service_name(job), status).await;
        if let Some(at) = health.stale_at {
            wake = wake.min(Duration::from_secs((at - now).max(0) as u64 + 1));
        }
    }
    if !jobs.iter().any(|(job, _)| engine.is_running(job)) {
        crate::notify::status(&idle_status(engine));
    }
    wake
}

/// Runs until `stop`, keeping the reporter's job statuses current: after every run
/// (the engine's `changed` notifier) and when a job turns stale.
pub async fn run(
    engine: Arc<Engine>,
    mut reporter: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut known: Vec<String> = Vec::new();
    loop {
        // Jobs removed by a reload stop being reported.
        let names: Vec<String> = engine.config().jobs.iter().map(|j| j.name.clone()).collect();
        for gone in known.iter().filter(|k| !names.contains(k)) {
            reporter.clear_service_status(&service_name(gone)).await;
        }
        known = names;
        let wake = refresh(&engine, &mut reporter).await;
        tokio::select! {
            () = engine.changed.notified() => {}
            () = tokio::time::sleep(wake) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging() {
        let day = Duration::from_secs(86_400);
        let now = 1_000_000;
        let fresh = judge(now - 3600, None, day, now);
        assert!(fresh.serving);
        assert_eq!(fresh.stale_at, Some(now - 3600 + 86_400));
        let stale = judge(now - 2 * 86_400, None, day, now);
        assert!(!stale.serving);
        assert!(stale.reason.contains("2days old"), "{}", stale.reason);
        let failed = judge(now - 60, Some("disk full"), day, now);
        assert!(!failed.serving);
        assert_eq!(failed.reason, "the last backup failed: disk full");
        assert!(!judge(0, None, day, now).serving);
    }
}
