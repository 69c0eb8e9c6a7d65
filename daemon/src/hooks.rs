//! Running `[job.hooks]` commands.
//!
//! A hook is an argv array run without a shell, with the job's hook `timeout`, stdin
//! closed, and `COFFER_JOB`, `COFFER_EVENT`, `COFFER_BACKUP_ID` and `COFFER_ERROR` in
//! its environment, in its own process group. Its output goes to the log. When the
//! hook exits or times out, anything it left running in its group is killed. A
//! `before-*` hook that fails (non-zero exit, timeout, cannot start) aborts its
//! operation; the others only log.
//!
//! Shutdown ends hooks too: when the run's cancel token fires (SIGTERM), a running
//! hook's process group is killed at once, so a long hook timeout never outlives
//! `shutdown-grace`; a hook is not started once shutdown has begun.
//!
//! Blocking: callers run hooks from their blocking run thread.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::JobConfig;

/// Which hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    BeforeBackup,
    AfterBackup,
    OnFailure,
    BeforeRestore,
    AfterRestore,
}

impl HookEvent {
    /// The config key and `COFFER_EVENT` value.
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::BeforeBackup => "before-backup",
            HookEvent::AfterBackup => "after-backup",
            HookEvent::OnFailure => "on-failure",
            HookEvent::BeforeRestore => "before-restore",
            HookEvent::AfterRestore => "after-restore",
        }
    }

    fn argv(self, job: &JobConfig) -> &[String] {
        let h = &job.hooks;
        match self {
            HookEvent::BeforeBackup => &h.before_backup,
            HookEvent::AfterBackup => &h.after_backup,
            HookEvent::OnFailure => &h.on_failure,
            HookEvent::BeforeRestore => &h.before_restore,
            HookEvent::AfterRestore => &h.after_restore,
        }
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
#[error("the {event} hook of job '{job}' ({program}) {why}")]
pub struct HookError {
    pub event: &'static str,
    pub job: String,
    pub program: String,
    pub why: String,
}

/// Runs the job's hook for `event`, if it has one; `cancel` (shutdown) ends it.
pub fn run(
    job: &JobConfig,
    event: HookEvent,
    backup_id: &str,
    error: &str,
    cancel: &CancellationToken,
) -> Result<(), HookError> {
    let argv = event.argv(job);
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let fail = |why: String| HookError {
        event: event.name(),
        job: job.name.clone(),
        program: program.clone(),
        why,
    };
    if cancel.is_cancelled() {
        return Err(fail(SHUTTING_DOWN.to_owned()));
    }
    let mut child = Command::new(program)
        .args(args)
        .env("COFFER_JOB", &job.name)
        .env("COFFER_EVENT", event.name())
        .env("COFFER_BACKUP_ID", backup_id)
        .env("COFFER_ERROR", error)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills everything the hook started.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    // Drain output on threads so a chatty hook cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + job.hooks.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if cancel.is_cancelled() => {
                kill_group(child.id());
                let _ = child.wait();
                break Err(fail(SHUTTING_DOWN.to_owned()));
            }
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                break Err(fail(format!(
                    "timed out after {}",
                    humantime::format_duration(job.hooks.timeout)
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(fail(format!("could not be waited for: {e}"))),
        }
    };
    // Like systemd's control-group kill: whatever the hook left running in its
    // process group goes too, so nothing holds the output pipes or outlives the hook.
    kill_group(child.id());
    for (stream, handle) in [("stdout", out), ("stderr", err)] {
        let text = handle.join().unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(job = job.name, hook = event.name(), stream, "{line}");
        }
    }
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        }))
    }
}

/// Why a hook was stopped or not started at shutdown.
const SHUTTING_DOWN: &str = "was stopped because cofferd is shutting down";

/// SIGKILLs the process group led by `pid` (the hook); gone already is fine.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Runs a hook whose failure must not fail the operation; logs it instead.
pub fn run_logged(
    job: &JobConfig,
    event: HookEvent,
    backup_id: &str,
    error: &str,
    cancel: &CancellationToken,
) {
    if let Err(e) = run(job, event, backup_id, error, cancel) {
        tracing::warn!(job = job.name, "{e}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn job(hooks: &str) -> JobConfig {
        let text = format!(
            "[[job]]\nname = \"app\"\ndatabase = \"/x/app.db\"\nschedule = \"manual\"\n[job.hooks]\n{hooks}\n"
        );
        Config::parse(Path::new("/t.toml"), &text).unwrap().jobs.remove(0)
    }

    #[test]
    fn shutdown_ends_a_running_hook_long_before_its_timeout() {
        let job = job("before-backup = [\"sleep\", \"60\"]\ntimeout = \"5m\"");
        let cancel = CancellationToken::new();
        let stopper = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                cancel.cancel();
            })
        };
        let clock = Instant::now();
        let err = run(&job, HookEvent::BeforeBackup, "", "", &cancel).unwrap_err();
        stopper.join().unwrap();
        assert!(
            clock.elapsed() < Duration::from_secs(5),
            "took {:?}",
            clock.elapsed()
        );
        assert!(err.to_string().contains("shutting down"), "{err}");
        // Once shutdown began, no hook starts.
        let err = run(&job, HookEvent::BeforeBackup, "", "", &cancel).unwrap_err();
        assert!(err.to_string().contains("shutting down"), "{err}");
    }

    #[test]
    fn a_hook_that_succeeds_is_ok_and_none_is_ok() {
        let job = job("before-backup = [\"true\"]");
        let cancel = CancellationToken::new();
        run(&job, HookEvent::BeforeBackup, "", "", &cancel).unwrap();
        run(&job, HookEvent::AfterBackup, "", "", &cancel).unwrap();
    }
}
