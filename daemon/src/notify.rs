//! Talking to systemd (`sd_notify`): READY, STATUS, WATCHDOG, STOPPING.
//!
//! Every call is a no-op outside systemd (no `$NOTIFY_SOCKET`). STATUS lines are what
//! `systemctl status cofferd` shows: "idle; next: app at …", "backing up app: 41%".

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// READY=1 with a first STATUS line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STOPPING=1.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A human-readable STATUS= line.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// RELOADING=1 … READY=1 around a config reload.
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// If systemd set a watchdog (`WatchdogSec=`), sends WATCHDOG=1 at half the interval
/// from a task on the async runtime: a stuck runtime stops the pings and systemd
/// restarts the daemon.
pub fn spawn_watchdog(tasks: &tokio_util::task::TaskTracker, stop: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    tracing::info!(
        "systemd watchdog enabled; pinging every {}",
        humantime::format_duration(period)
    );
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = interval.tick() => send(&[NotifyState::Watchdog]),
                () = stop.cancelled() => return,
            }
        }
    });
}
