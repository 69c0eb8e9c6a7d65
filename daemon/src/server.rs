//! Bringing the daemon up and down: directories, the single-instance lock, the
//! socket, the catalog's reconciliation, serving, reloads and graceful shutdown.
//!
//! Start-up order: create the state, staging and backup directories; take an
//! exclusive lock on `<socket>.lock` (a second cofferd fails here, before touching
//! anything); sweep `.partial` files and staging leftovers; finish or undo in-place
//! restores and imports a crash interrupted (their journals); open and reconcile the
//! catalog; take the listener from systemd (socket activation, `LISTEN_FDS`) or bind
//! the socket — replacing a stale socket file only if it really is a socket — with
//! `socket-mode` and `socket-group`; start the scheduler, the offsite copier (which
//! sweeps and reconciles each store in the background) and the health task; tell
//! systemd READY=1.
//!
//! SIGHUP reloads the config: a valid new config replaces jobs, schedules and access
//! lists without dropping connections; an invalid one is logged and the old one stays.
//! SIGTERM/SIGINT: STOPPING=1, health NOT_SERVING, stop accepting, cancel running work
//! (it removes its partial files and records the run as cancelled) and wait for it up
//! to `shutdown-grace`, remove the socket.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use coffer_common::proto::coffer_server::CofferServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::auth::{Access, Peer, Role};
use crate::api::service::CofferService;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::Engine;
use crate::notify;

/// Creates `dir` (and parents) if missing.
fn ensure_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the {what} {}", dir.display()))
}

/// Takes the single-instance lock beside the socket. The returned file holds it.
fn lock_instance(socket: &Path) -> anyhow::Result<File> {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("another cofferd is already running (it holds {})", path.display())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The listener: inherited from systemd (`true`), or bound here (`false`).
fn listener(config: &Config) -> anyhow::Result<(UnixListener, bool)> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Some(std_listener) = fds
        .take_unix_listener(0)
        .context("cannot use the socket passed by systemd")?
    {
        std_listener.set_nonblocking(true)?;
        return Ok((UnixListener::from_std(std_listener)?, true));
    }
    let path = &config.daemon.socket;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?,
        Ok(_) => bail!(
            "refusing to replace {}: it exists and is not a socket",
            path.display()
        ),
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.daemon.socket_mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    if let Some(group) = &config.daemon.socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .with_context(|| format!("socket-group '{group}' does not exist"))?
            .gid;
        nix::unistd::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group '{group}'", path.display()))?;
    }
    Ok((listener, false))
}

/// Sweeps leftovers, opens and reconciles the catalog (blocking).
fn open_catalog(config: &Config) -> anyhow::Result<Catalog> {
    let daemon = &config.daemon;
    let store = crate::store::LocalStore::new(&daemon.backup_dir, &daemon.state_dir);
    // Before the sweep, which removes the temp archives this looks at.
    let rekeyed = store
        .recover_rekeys()
        .context("cannot recover an interrupted rekey")?;
    for path in store
        .sweep()
        .context("cannot sweep leftovers of an earlier run")?
    {
        tracing::info!(path = %path.display(), "removed a leftover of an interrupted run");
    }
    for id in crate::ops::restore::recover(config).context("cannot recover an interrupted restore")? {
        tracing::info!(id, "recovered an interrupted in-place restore");
    }
    for id in
        crate::ops::import::recover(&daemon.state_dir).context("cannot recover an interrupted import")?
    {
        tracing::info!(id, "recovered the media of an interrupted import");
    }
    let catalog = Catalog::open(&daemon.state_dir.join("catalog.db"))?;
    catalog.fail_interrupted_runs(chrono::Utc::now().timestamp())?;
    finish_rekeys(&catalog, &store, rekeyed)?;
    let report = catalog.reconcile(&store)?;
    for id in &report.added {
        tracing::info!(id, "catalogued a backup found in the backup directory");
    }
    for id in &report.dropped {
        tracing::warn!(id, "dropped a catalogued backup whose archive is gone");
    }
    for id in &report.finished_deletes {
        tracing::info!(id, "finished an interrupted deletion");
    }
    for path in &report.unknown_archives {
        tracing::warn!(path = %path.display(), "archive has no valid sidecar; left alone, not catalogued");
    }
    for job in &config.jobs {
        if let Err(e) = crate::source::for_job(job).probe() {
            tracing::warn!(job = job.name, "job cannot back up right now: {e}");
        }
    }
    Ok(catalog)
}

/// Brings the catalog up to date with rekeys that start-up finished or rolled back
/// (see `store::rekey`), then ends them.
fn finish_rekeys(
    catalog: &Catalog,
    store: &crate::store::LocalStore,
    recovered: Vec<crate::store::rekey::Recovered>,
) -> anyhow::Result<()> {
    use crate::store::rekey::Recovered;
    for r in recovered {
        match r {
            Recovered::RolledBack { id, .. } => {
                tracing::info!(
                    id,
                    "an interrupted rekey was rolled back: the backup is as it was"
                );
            }
            Recovered::Finished { job, id, sidecar } => {
                catalog.update_encryption(&sidecar)?;
                store.end_rekey(&store.paths_for(&job, &id, true))?;
                tracing::info!(id, "finished an interrupted rekey");
            }
            Recovered::LeftAlone { path, why } => {
                tracing::warn!(path = %path.display(), "interrupted rekey left alone: {why}");
            }
        }
    }
    Ok(())
}

/// What a reload may not change while running.
fn restart_only_changes(old: &Config, new: &Config) -> Option<&'static str> {
    let (o, n) = (&old.daemon, &new.daemon);
    if o.socket != n.socket {
        Some("socket")
    } else if o.state_dir != n.state_dir {
        Some("state-dir")
    } else if o.backup_dir != n.backup_dir {
        Some("backup-dir")
    } else if o.max_concurrent_runs != n.max_concurrent_runs {
        Some("max-concurrent-runs")
    } else if o.host_name != n.host_name {
        Some("host-name")
    } else {
        None
    }
}

/// The parts that a reload swaps.
struct Live {
    engine: Arc<Engine>,
    access: Arc<RwLock<Access>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Cancelled and replaced on each reload.
    scheduler: CancellationToken,
}

impl Live {
    async fn reload(&mut self) {
        notify::reloading();
        let path = self.engine.config().path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let outcome = match loaded {
            Ok(Ok(new)) => match restart_only_changes(&self.engine.config(), &new) {
                Some(key) => Err(format!(
                    "changing {key} needs a restart; the old config stays in force"
                )),
                None => {
                    *self.access.write().unwrap_or_else(|p| p.into_inner()) = Access::new(&new.daemon);
                    self.engine.set_config(new);
                    self.scheduler.cancel();
                    self.scheduler = self.shutdown.child_token();
                    crate::scheduler::start(&self.engine, &self.tasks, &self.scheduler, &self.shutdown);
                    self.engine.changed.notify_one();
                    Ok(())
                }
            },
            Ok(Err(e)) => Err(format!(
                "the new config is invalid ({}); the old one stays in force",
                coffer_common::format::error_chain(&e)
            )),
            Err(e) => Err(e.to_string()),
        };
        match &outcome {
            Ok(()) => tracing::info!(jobs = self.engine.config().jobs.len(), "config reloaded"),
            Err(e) => tracing::error!("reload refused: {e}"),
        }
        let engine = self.engine.clone();
        let _ = tokio::task::spawn_blocking(move || {
            engine.audit("SIGHUP", "reload", "config", outcome.err().as_deref())
        })
        .await;
        notify::ready("idle");
    }
}

/// Runs the daemon until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let daemon = config.daemon.clone();
    ensure_dir(&daemon.state_dir, "state directory")?;
    ensure_dir(&daemon.state_dir.join("staging"), "staging directory")?;
    ensure_dir(&daemon.backup_dir, "backup directory")?;
    if let Some(parent) = daemon.socket.parent() {
        ensure_dir(parent, "socket directory")?;
    }
    let _lock = lock_instance(&daemon.socket)?;
    let catalog = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || open_catalog(&config)).await??
    };

    let engine = Arc::new(Engine::new(config.clone(), catalog));
    let access = Arc::new(RwLock::new(Access::new(&daemon)));
    let (listener, inherited) = listener(&config)?;
    // The engine's token: offsite requests in flight end when it is cancelled.
    let shutdown = engine.shutdown_token();
    let tasks = TaskTracker::new();
    let (reporter, health_service) = health(&engine, &access, &tasks, &shutdown).await;
    let scheduler = shutdown.child_token();
    crate::scheduler::start(&engine, &tasks, &scheduler, &shutdown);
    crate::copier::start(&engine, &tasks, &shutdown);
    notify::spawn_watchdog(&tasks, shutdown.clone());

    let service = CofferServer::new(CofferService::new(
        engine.clone(),
        reporter.clone(),
        access.clone(),
        tasks.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(16 << 20);
    let live = Live {
        engine: engine.clone(),
        access,
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        scheduler,
    };
    let signals = signals(live, reporter)?;

    tracing::info!(socket = %daemon.socket.display(), jobs = config.jobs.len(), inherited, "cofferd {} ready", coffer_common::VERSION);
    notify::ready("idle");

    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), signals),
    );
    let served = drain(server, &shutdown, &tasks, daemon.shutdown_grace).await;
    if !inherited {
        let _ = std::fs::remove_file(&daemon.socket);
    }
    served
        .context("the gRPC server task failed")?
        .context("the gRPC server failed")?;
    tracing::info!("cofferd stopped");
    Ok(())
}

/// Lets readers (and admins) call the health service, never strangers.
#[derive(Clone)]
struct ReadersOnly(Arc<RwLock<Access>>);

impl tonic::service::Interceptor for ReadersOnly {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let peer = Peer::from_extensions(req.extensions())?;
        let access = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        access.check(&peer, Role::Reader, "read health")?;
        Ok(req)
    }
}

/// The grpc.health.v1 service (readers only) and the task that keeps its per-job
/// statuses current.
async fn health(
    engine: &Arc<Engine>,
    access: &Arc<RwLock<Access>>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> (
    tonic_health::server::HealthReporter,
    tonic::service::interceptor::InterceptedService<
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        ReadersOnly,
    >,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<CofferServer<CofferService>>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tasks.spawn(crate::api::health::run(
        engine.clone(),
        reporter.clone(),
        shutdown.clone(),
    ));
    let service = tonic::service::interceptor::InterceptedService::new(service, ReadersOnly(access.clone()));
    (reporter, service)
}

/// The future that ends serving: SIGTERM or SIGINT (or a cancelled shutdown token)
/// notify STOPPING, turn the daemon's health NOT_SERVING and cancel the token; SIGHUP
/// reloads the config.
fn signals(
    mut live: Live,
    reporter: tonic_health::server::HealthReporter,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let stop = live.shutdown.clone();
    Ok(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM received, shutting down"); break; }
                _ = interrupt.recv() => { tracing::info!("SIGINT received, shutting down"); break; }
                _ = hangup.recv() => live.reload().await,
                () = stop.cancelled() => break,
            }
        }
        notify::stopping();
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        stop.cancel();
    })
}

/// Serves until `shutdown` is cancelled (or the server fails on its own), then lets
/// running work finish or clean up within `grace`. Running work sees the cancelled
/// token (partial files removed, run recorded as cancelled); the server waits for
/// open streams, which end when that work ends.
async fn drain(
    mut server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
    grace: std::time::Duration,
) -> Result<Result<(), tonic::transport::Error>, tokio::task::JoinError> {
    let early = tokio::select! {
        result = &mut server => Some(result),
        () = shutdown.cancelled() => None,
    };
    shutdown.cancel();
    tasks.close();
    if let Some(result) = early {
        return result;
    }
    let drained = tokio::time::timeout(grace, async {
        tasks.wait().await;
        (&mut server).await
    })
    .await;
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("running work did not stop within shutdown-grace; exiting anyway");
            server.abort();
            Ok(Ok(()))
        }
    }
}
