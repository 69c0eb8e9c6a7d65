//! Bringing the daemon up and down: directories, the single-instance lock, the
//! socket, the catalog's reconciliation, serving, and graceful shutdown.
//!
//! Start-up order: create the state, staging and backup directories; take an
//! exclusive lock on `<socket>.lock` (a second cofferd fails here, before touching
//! anything); sweep `.partial` files and staging leftovers; open and reconcile the
//! catalog; replace a stale socket file only if it really is a socket; bind with
//! `socket-mode` and `socket-group`; tell systemd READY=1. Shutdown (SIGTERM/SIGINT):
//! health NOT_SERVING, stop accepting, cancel running work and wait for it up to
//! `shutdown-grace`, remove the socket.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use coffer_common::proto::coffer_server::CofferServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::Engine;
use crate::service::CofferService;

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

/// Binds the socket, replacing a stale one only if it is a socket.
fn bind_socket(config: &Config) -> anyhow::Result<UnixListener> {
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
    Ok(listener)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    Ok(())
}

/// Runs the daemon until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let daemon = config.daemon.clone();
    ensure_dir(&daemon.state_dir, "state directory")?;
    let staging = daemon.state_dir.join("staging");
    ensure_dir(&staging, "staging directory")?;
    ensure_dir(&daemon.backup_dir, "backup directory")?;
    if let Some(parent) = daemon.socket.parent() {
        ensure_dir(parent, "socket directory")?;
    }
    let _lock = lock_instance(&daemon.socket)?;

    let swept = {
        let (backup_dir, staging) = (daemon.backup_dir.clone(), staging.clone());
        tokio::task::spawn_blocking(move || crate::fsutil::sweep_leftovers(&backup_dir, &staging)).await?
    }
    .context("cannot sweep leftovers of an earlier run")?;
    for path in swept {
        tracing::info!(path = %path.display(), "removed a leftover of an interrupted run");
    }

    let catalog_path = daemon.state_dir.join("catalog.db");
    let catalog = {
        let backup_dir = daemon.backup_dir.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Catalog> {
            let catalog = Catalog::open(&catalog_path)?;
            catalog.fail_interrupted_runs(chrono::Utc::now().timestamp())?;
            let report = catalog.reconcile(&backup_dir)?;
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
            Ok(catalog)
        })
        .await??
    };

    for job in &config.jobs {
        if let Err(e) = crate::snapshot::probe(&job.database, std::time::Duration::from_millis(100)) {
            tracing::warn!(job = job.name, "job cannot back up right now: {e}");
        }
    }

    let engine = Arc::new(Engine::new(config.clone(), catalog));
    let listener = bind_socket(&config)?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    crate::scheduler::start(&engine, &tasks, &shutdown);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CofferServer<CofferService>>().await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let service = CofferServer::new(CofferService::new(
        engine.clone(),
        tasks.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(16 << 20);

    let stop = shutdown.clone();
    let reporter = health_reporter.clone();
    let serve_signal = async move {
        tokio::select! {
            r = shutdown_signal() => if let Err(e) = r { tracing::error!("{e:#}") },
            () = stop.cancelled() => {}
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        stop.cancel();
    };

    tracing::info!(socket = %daemon.socket.display(), jobs = config.jobs.len(), "cofferd {} ready", coffer_common::VERSION);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), serve_signal)
        .await;

    // Running work was cancelled with the shutdown token; give it the grace period
    // to clean up (remove partial files, record the run).
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(daemon.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("running work did not stop within shutdown-grace");
    }
    let _ = std::fs::remove_file(&daemon.socket);
    served.context("the gRPC server failed")?;
    tracing::info!("cofferd stopped");
    Ok(())
}
