//! Runs each job's backups — and its restore drills (`[job.drill] schedule`) — on
//! their cron schedules.
//!
//! One task per scheduled job computes the next fire time with [`Schedule`] (time zone
//! and daylight-saving rules included, see `schedule.rs`) and sleeps toward it in
//! steps of at most a minute, re-reading the wall clock each time, so a suspended
//! machine or a clock step cannot make it fire late by hours or twice. We compute fire
//! times ourselves rather than use tokio-cron-scheduler, which freezes a job's UTC
//! offset when the job is created and so misfires after a DST change.
//!
//! - No overlap: a fire while the job's previous run is still going is skipped and
//!   recorded as a `skipped` run; runs across jobs queue for `max-concurrent-runs`.
//! - Catch-up (`catch-up = true`): at start-up, a job whose newest backup is older
//!   than its previous fire time runs once right away (like systemd's
//!   `Persistent=true`), not once per missed slot.
//! - Scheduled runs and skips are audited with the actor `scheduler`.
//! - Drills have no catch-up: a missed drill waits for its next fire.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Engine;
use crate::error::Error;
use crate::run::{RunKind, RunStatus};

/// Who the audit log says started scheduled runs.
const ACTOR: &str = "scheduler";

/// The longest single sleep; the clock is re-read after each.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Starts one task per scheduled job. The tasks stop firing when `stop` is cancelled
/// (a reload replaces them); runs they started are cancelled only by `shutdown`, so
/// a reload never interrupts a running backup.
pub fn start(
    engine: &Arc<Engine>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let config = engine.config();
    for job in &config.jobs {
        for (what, schedule) in [(What::Backup, &job.schedule), (What::Drill, &job.drill.schedule)] {
            let Some(schedule) = schedule.clone() else {
                continue;
            };
            let (engine, stop, shutdown) = (engine.clone(), stop.clone(), shutdown.clone());
            let name = job.name.clone();
            let runs = tasks.clone();
            tasks.spawn(async move { job_loop(engine, name, what, schedule, stop, shutdown, runs).await });
        }
    }
}

/// What a schedule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Backup,
    Drill,
}

/// Whether a job that has not backed up since `newest_backup` missed a fire.
pub fn missed_fire(prev_fire: Option<DateTime<Utc>>, newest_backup: i64) -> bool {
    prev_fire.is_some_and(|prev| newest_backup < prev.timestamp())
}

async fn job_loop(
    engine: Arc<Engine>,
    name: String,
    what: What,
    schedule: crate::policy::schedule::Schedule,
    stop: CancellationToken,
    shutdown: CancellationToken,
    runs: TaskTracker,
) {
    let catch_up = what == What::Backup && engine.config().job(&name).is_some_and(|j| j.catch_up);
    if catch_up {
        let newest = {
            let engine = engine.clone();
            let name = name.clone();
            tokio::task::spawn_blocking(move || engine.job_stats(&name).map(|s| s.newest_at)).await
        };
        match newest {
            Ok(Ok(newest)) if missed_fire(schedule.prev_at_or_before(Utc::now()), newest) => {
                tracing::info!(job = name, "a scheduled backup was missed; catching up now");
                fire(&engine, &name, &shutdown).await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(job = name, "cannot check for missed backups: {e}"),
            Err(e) => tracing::error!(job = name, "cannot check for missed backups: {e}"),
        }
    }
    let mut after = Utc::now();
    loop {
        let Some(next) = schedule.next_after(after) else {
            tracing::warn!(job = name, "schedule '{}' never fires again", schedule.expr());
            return;
        };
        // Sleep toward `next`, re-reading the wall clock at least once a minute.
        loop {
            let now = Utc::now();
            if now >= next {
                break;
            }
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO).min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
        // Runs are spawned, so a run still going at the next fire time makes that
        // fire a recorded skip rather than a delay. After a suspend, slots that passed
        // meanwhile are not replayed: the next one is computed from now.
        after = next.max(Utc::now());
        let (engine, job_name, shutdown) = (engine.clone(), name.clone(), shutdown.clone());
        runs.spawn(async move {
            match what {
                What::Backup => fire(&engine, &job_name, &shutdown).await,
                What::Drill => fire_drill(&engine, &job_name, &shutdown).await,
            }
        });
    }
}

/// One scheduled drill (recorded and hooked by the engine; audited here).
async fn fire_drill(engine: &Arc<Engine>, name: &str, stop: &CancellationToken) {
    let result = engine
        .drill(name.to_owned(), stop.child_token(), Box::new(|_| {}))
        .await;
    let (target, error) = match &result {
        Ok(drilled) => (drilled.backup_id.clone(), None),
        Err(e) => (name.to_owned(), Some(e.to_string())),
    };
    let engine = engine.clone();
    let _ =
        tokio::task::spawn_blocking(move || engine.audit(ACTOR, "drill", &target, error.as_deref())).await;
}

/// One scheduled run: skipped (and recorded) if the job is already running.
async fn fire(engine: &Arc<Engine>, name: &str, stop: &CancellationToken) {
    let claim = match engine.claim(name) {
        Ok(claim) => claim,
        Err(Error::Busy(_)) => {
            tracing::info!(
                job = name,
                "scheduled backup skipped: the previous run is still going"
            );
            let engine = engine.clone();
            let name = name.to_owned();
            let _ = tokio::task::spawn_blocking(move || {
                let why = "the previous backup of this job was still running";
                engine.audit(ACTOR, "backup skipped", &name, Some(why));
                engine.catalog().record_run(
                    &name,
                    RunKind::Backup,
                    RunStatus::Skipped,
                    Utc::now().timestamp(),
                    why,
                )
            })
            .await;
            return;
        }
        Err(e) => {
            tracing::warn!(job = name, "scheduled backup not started: {e}");
            return;
        }
    };
    // The run itself is logged and recorded by the engine; the audit says who started it.
    let result = engine
        .backup(claim, String::new(), stop.child_token(), Box::new(|_| {}))
        .await;
    let (target, error) = match &result {
        Ok(record) => (record.id.clone(), None),
        Err(e) => (name.to_owned(), Some(e.to_string())),
    };
    let engine = engine.clone();
    let _ =
        tokio::task::spawn_blocking(move || engine.audit(ACTOR, "backup", &target, error.as_deref())).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn catch_up_only_when_a_fire_was_missed() {
        let fire = Utc.with_ymd_and_hms(2026, 11, 23, 2, 0, 0).unwrap();
        let cases = [
            (None, 0, false),                              // never fired: nothing missed
            (Some(fire), 0, true),                         // no backup at all
            (Some(fire), fire.timestamp() - 86_400, true), // last backup the day before
            (Some(fire), fire.timestamp(), false),         // backup at the fire time
            (Some(fire), fire.timestamp() + 60, false),    // backup after it
        ];
        for (prev, newest, want) in cases {
            assert_eq!(missed_fire(prev, newest), want, "{prev:?} {newest}");
        }
    }
}
