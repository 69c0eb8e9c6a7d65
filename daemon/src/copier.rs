//! The background copier: makes the queued copies to offsite stores, one at a time,
//! without ever holding up a local backup.
//!
//! At start-up it sweeps each store (`ops::offsite::sweep`: aborts the multipart
//! uploads a killed cofferd left under this host's prefix, then reconciles the
//! catalog's locations with one LIST of that prefix), all stores at once so a store
//! that does not answer delays no other. A store whose sweep failed is swept again
//! before its next copy. Then it works the queue (the catalog's `pending`/`failed`
//! locations, so copies interrupted by a shutdown or a crash resume): every due copy in
//! turn, each a recorded run of kind copy audited as `offsite`; a failure is recorded
//! with the time of its next attempt (`copy-retry`, doubling to an hour). Between
//! rounds it sleeps until the next copy is due, or until a backup queues one (the
//! engine's `copies` notifier), or until shutdown, which also cancels a copy in
//! progress (its multipart upload is aborted, and it stays queued).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Engine;
use crate::error::Error;

/// Who the audit log says made the copies.
pub const ACTOR: &str = "offsite";

/// The longest sleep between two looks at the queue.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Starts the copier on `tasks` (shutdown waits for it).
pub fn start(engine: &Arc<Engine>, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let (engine, shutdown) = (engine.clone(), shutdown.clone());
    tasks.spawn(async move { run(engine, shutdown).await });
}

/// Sweeps `stores` in parallel; returns the names of those that were swept.
async fn sweep(engine: &Arc<Engine>, stores: Vec<String>) -> HashSet<String> {
    let mut sweeps = tokio::task::JoinSet::new();
    for store in stores {
        let engine = engine.clone();
        sweeps.spawn(async move {
            let name = store.clone();
            let swept = engine
                .blocking(move |ctx| crate::ops::offsite::sweep(ctx, &name))
                .await;
            match &swept {
                Ok(s) => {
                    let r = &s.reconciled;
                    tracing::info!(
                        store,
                        aborted_uploads = s.aborted,
                        found = r.found.len(),
                        requeued = r.requeued.len(),
                        forgotten = r.forgotten.len(),
                        incomplete = s.incomplete.len(),
                        "store swept"
                    );
                    for key in &s.incomplete {
                        tracing::warn!(
                            store,
                            key,
                            "an archive without its sidecar (an interrupted copy or deletion); left alone"
                        );
                    }
                }
                Err(e) => tracing::warn!(
                    store,
                    "cannot sweep the store now (tried again before its next copy): {e}"
                ),
            }
            swept.ok().map(|_| store)
        });
    }
    let mut done = HashSet::new();
    while let Some(joined) = sweeps.join_next().await {
        if let Ok(Some(store)) = joined {
            done.insert(store);
        }
    }
    engine.changed.notify_one();
    done
}

async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let all: Vec<String> = engine.offsite().iter().map(|s| s.config.name.clone()).collect();
    let mut swept = sweep(&engine, all).await;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let due = engine
            .blocking(|ctx| Ok(ctx.catalog.due_copies(Utc::now().timestamp())?))
            .await;
        let due = due.unwrap_or_else(|e: Error| {
            tracing::error!("cannot read the copy queue: {e}");
            Vec::new()
        });
        let unswept: Vec<String> = due
            .iter()
            .map(|l| l.store.clone())
            .filter(|s| !swept.contains(s) && engine.offsite().get(s).is_some())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !unswept.is_empty() {
            swept.extend(sweep(&engine, unswept).await);
        }
        for location in due {
            if shutdown.is_cancelled() {
                return;
            }
            engine.copy_queued(location, ACTOR, shutdown.child_token()).await;
        }
        let next = engine
            .blocking(|ctx| Ok(ctx.catalog.next_copy_due()?))
            .await
            .ok()
            .flatten();
        let wait = match next {
            Some(at) => {
                Duration::from_secs((at - Utc::now().timestamp()).clamp(0, MAX_SLEEP.as_secs() as i64) as u64)
            }
            None => MAX_SLEEP,
        };
        // Due already (a copy queued meanwhile, or a failure due again): look once a
        // second at most, so a failing store cannot make this spin.
        let wait = wait.max(Duration::from_secs(1));
        tokio::select! {
            () = engine.copies.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
