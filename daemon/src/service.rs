//! The `coffer.v1.Coffer` gRPC service: turns requests into [`Engine`] calls and
//! engine results into replies.
//!
//! Blocking engine calls run in `spawn_blocking`; long operations run as tasks on the
//! daemon's [`TaskTracker`] (so shutdown can wait for them) and stream their progress
//! through a bounded channel — progress is lossy (dropped when the client is slow),
//! the final result is not. A client that goes away does not cancel a backup.
//! Every engine error becomes a `Status` in exactly one place, [`status_of`].

use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use coffer_common::proto::{self, coffer_server::Coffer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use std::path::PathBuf;

use std::sync::RwLock;

use crate::auth::{Access, Peer, Role};
use crate::catalog::{BackupPaths, BackupRecord, RunRecord};
use crate::engine::{Engine, Error, Event};
use crate::restore::Only;
use crate::snapshot::SnapshotError;

/// Bytes per download message.
const DOWNLOAD_CHUNK: usize = 1 << 20;

/// Numbers concurrent uploads' file names.
static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Maps an engine error to its gRPC status, with the error's sentence as message.
pub fn status_of(error: Error) -> Status {
    use tonic::Code;
    let code = match &error {
        Error::UnknownJob(_) | Error::NoSuchBackup(_) | Error::NoBackups(_) | Error::NoBackupsAtAll => {
            Code::NotFound
        }
        Error::InvalidId(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::Busy(_) | Error::Protected(_) | Error::InUse(_) | Error::Hook(_) => Code::FailedPrecondition,
        Error::Swap { .. } => Code::Aborted,
        Error::Snapshot(
            SnapshotError::Missing { .. }
            | SnapshotError::NotSqlite { .. }
            | SnapshotError::Empty { .. }
            | SnapshotError::Locked { .. },
        ) => Code::FailedPrecondition,
        Error::Snapshot(SnapshotError::Cancelled { .. }) | Error::Cancelled => Code::Cancelled,
        e if e.is_disk_full() => Code::ResourceExhausted,
        Error::Archive {
            source: crate::archive::ArchiveError::Invalid(_),
            ..
        } => Code::DataLoss,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Code::FailedPrecondition
        }
        Error::Archive {
            source: crate::archive::ArchiveError::Source { .. },
            ..
        } => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    let mut message = error.describe();
    // A request's odd value is echoed in its error (an unknown job name of a megabyte):
    // cut it, or the status header is too large for HTTP/2 and the client sees only
    // "h2 protocol error".
    if message.len() > MAX_STATUS_MESSAGE {
        let cut = (0..=MAX_STATUS_MESSAGE)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        message.truncate(cut);
        message.push_str("...");
    }
    Status::new(code, message)
}

/// The longest error message sent to a client, in bytes.
const MAX_STATUS_MESSAGE: usize = 1024;

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        status_of(error)
    }
}

/// Writes an audit entry for `result` off the reactor.
async fn audit<T>(
    engine: &Arc<Engine>,
    actor: String,
    action: &str,
    target: &str,
    result: &Result<T, Status>,
) {
    let error = result.as_ref().err().map(|s| s.message().to_owned());
    let (engine, action, target) = (engine.clone(), action.to_owned(), target.to_owned());
    let _ =
        tokio::task::spawn_blocking(move || engine.audit(&actor, &action, &target, error.as_deref())).await;
}

/// Runs a blocking engine call off the reactor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("internal error: {e}")))?
        .map_err(Status::from)
}

/// The service implementation.
pub struct CofferService {
    engine: Arc<Engine>,
    /// Health is refreshed before a run's result is sent, so a client that asks
    /// right after sees the new state.
    health: tonic_health::server::HealthReporter,
    access: Arc<RwLock<Access>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    started_at: chrono::DateTime<Utc>,
}

impl CofferService {
    pub fn new(
        engine: Arc<Engine>,
        health: tonic_health::server::HealthReporter,
        access: Arc<RwLock<Access>>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        CofferService {
            engine,
            health,
            access,
            tasks,
            shutdown,
            started_at: Utc::now(),
        }
    }

    /// The caller, if its role allows `what`; a refusal is audited as a failed `action`.
    fn allow<T>(&self, req: &Request<T>, role: Role, action: &str, what: &str) -> Result<Peer, Status> {
        let peer = Peer::of(req)?;
        let access = self.access.read().unwrap_or_else(|p| p.into_inner()).clone();
        access.check(&peer, role, what).inspect_err(|denied| {
            // Refusals are audited too; fire and forget, the answer does not wait.
            let (engine, actor, action, message) = (
                self.engine.clone(),
                peer.actor(),
                action.to_owned(),
                denied.message().to_owned(),
            );
            tokio::task::spawn_blocking(move || engine.audit(&actor, &action, "(refused)", Some(&message)));
        })?;
        Ok(peer)
    }

    /// Audits an RPC's outcome off the reactor.
    async fn audit<T>(&self, peer: &Peer, action: &str, target: &str, result: &Result<T, Status>) {
        audit(&self.engine, peer.actor(), action, target, result).await;
    }
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::BackupEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::DownloadChunk, Status>> + Send>>;

/// A progress callback that forwards events to a stream without ever blocking.
fn progress_sender(tx: mpsc::Sender<Result<proto::BackupEvent, Status>>) -> Box<dyn FnMut(Event) + Send> {
    Box::new(move |e: Event| {
        let _ = tx.try_send(Ok(proto::BackupEvent {
            event: Some(proto::backup_event::Event::Progress(proto::Progress {
                phase: e.phase.to_owned(),
                bytes_done: e.done,
                bytes_total: e.total,
                message: e.message,
            })),
        }));
    })
}

/// The wire form of a catalogued backup.
pub fn backup_message(r: &BackupRecord, backup_dir: &std::path::Path) -> proto::Backup {
    let s = &r.summary;
    let db = s.entries.iter().find(|e| e.path.starts_with("db/"));
    proto::Backup {
        id: r.id.clone(),
        job: r.job.clone(),
        created_at: r.created_at,
        size: r.size,
        sha256: r.sha256.clone(),
        protected: r.protected,
        note: r.note.clone(),
        verified_at: r.verified_at,
        verify_result: r.verify_result.clone(),
        path: crate::catalog::BackupPaths::new(backup_dir, &r.job, &r.id)
            .archive
            .display()
            .to_string(),
        hostname: s.hostname.clone(),
        coffer_version: s.coffer_version.clone(),
        sqlite_version: s.sqlite_version.clone(),
        database_path: s.source.path.clone(),
        database_size: db.map_or(s.source.page_size * s.source.page_count, |e| e.size),
        page_size: s.source.page_size,
        page_count: s.source.page_count,
        journal_mode: s.source.journal_mode.clone(),
        snapshot_method: s.source.snapshot_method.clone(),
        media_roots: s.media_roots.clone(),
        file_count: s.totals.files,
        dir_count: s.totals.dirs,
        symlink_count: s.totals.symlinks,
        total_bytes: s.totals.bytes,
        user_version: s.source.user_version,
        application_id: s.source.application_id,
        duration_ms: r.duration_ms,
    }
}

fn run_message(r: &RunRecord) -> proto::RunSummary {
    proto::RunSummary {
        id: r.id,
        job: r.job.clone(),
        kind: r.kind.clone(),
        status: r.status.clone(),
        started_at: r.started_at,
        finished_at: r.finished_at,
        error: r.error.clone(),
        backup_id: r.backup_id.clone(),
        bytes: r.bytes,
    }
}

/// Next fire time of a job's schedule, as Unix seconds (0 when manual).
fn next_run_at(job: &crate::config::JobConfig) -> i64 {
    job.schedule
        .as_ref()
        .and_then(|s| s.next_after(Utc::now()))
        .map_or(0, |t| t.timestamp())
}

#[tonic::async_trait]
impl Coffer for CofferService {
    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::GetStatusResponse>, Status> {
        self.allow(&req, Role::Reader, "status", "read the status")?;
        let engine = self.engine.clone();
        let started_at = self.started_at;
        let response = blocking(move || {
            let config = engine.config();
            let mut jobs = Vec::with_capacity(config.jobs.len());
            for job in &config.jobs {
                let stats = engine.job_stats(&job.name)?;
                let last_run = engine.last_run(&job.name)?;
                let problem = match job.database.try_exists() {
                    Ok(true) => String::new(),
                    _ => format!("database {} does not exist", job.database.display()),
                };
                jobs.push(proto::JobStatus {
                    name: job.name.clone(),
                    last_run: last_run.as_ref().map(run_message),
                    next_run_at: next_run_at(job),
                    backup_count: stats.count,
                    backup_bytes: stats.bytes,
                    last_success_at: stats.newest_at,
                    running: engine.is_running(&job.name),
                    problem,
                });
            }
            let free = crate::fsutil::free_space(&config.daemon.backup_dir).unwrap_or(0);
            Ok(proto::GetStatusResponse {
                version: coffer_common::VERSION.to_owned(),
                uptime_seconds: (Utc::now() - started_at).num_seconds().max(0) as u64,
                started_at: started_at.timestamp(),
                jobs,
                backup_dir_free_bytes: free,
                backup_dir: config.daemon.backup_dir.display().to_string(),
                state_dir: config.daemon.state_dir.display().to_string(),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn list_jobs(
        &self,
        req: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        self.allow(&req, Role::Reader, "jobs", "list jobs")?;
        let config = self.engine.config();
        let jobs = config
            .jobs
            .iter()
            .map(|j| proto::Job {
                name: j.name.clone(),
                database: j.database.display().to_string(),
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
        Ok(Response::new(proto::ListJobsResponse { jobs }))
    }

    type CreateBackupStream = EventStream;

    async fn create_backup(
        &self,
        req: Request<proto::CreateBackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "backup", "take backups")?;
        let req = req.into_inner();
        // Refusals (unknown job, already running) answer the call itself.
        let claim = match self.engine.claim(&req.job) {
            Ok(claim) => claim,
            Err(e) => {
                let refused = Status::from(e);
                self.audit(&peer, "backup", &req.job, &Err::<(), _>(refused.clone()))
                    .await;
                return Err(refused);
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let engine = self.engine.clone();
        let cancel = self.shutdown.child_token();
        let backup_dir = engine.config().daemon.backup_dir.clone();
        let mut health = self.health.clone();
        self.tasks.spawn(async move {
            let result = engine
                .clone()
                .backup(claim, req.note, cancel, progress_sender(tx.clone()))
                .await
                .map_err(Status::from);
            let target = result.as_ref().map_or(req.job.clone(), |r| r.id.clone());
            audit(&engine, peer.actor(), "backup", &target, &result).await;
            crate::health::refresh(&engine, &mut health).await;
            let message = result.map(|record| proto::BackupEvent {
                event: Some(proto::backup_event::Event::Backup(backup_message(
                    &record,
                    &backup_dir,
                ))),
            });
            let _ = tx.send(message).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_backups(
        &self,
        req: Request<proto::ListBackupsRequest>,
    ) -> Result<Response<proto::ListBackupsResponse>, Status> {
        self.allow(&req, Role::Reader, "list", "list backups")?;
        let job = req.into_inner().job;
        let engine = self.engine.clone();
        let backups = blocking(move || {
            let dir = engine.config().daemon.backup_dir.clone();
            let records = engine.list((!job.is_empty()).then_some(job.as_str()))?;
            Ok(records.iter().map(|r| backup_message(r, &dir)).collect())
        })
        .await?;
        Ok(Response::new(proto::ListBackupsResponse { backups }))
    }

    async fn get_backup(
        &self,
        req: Request<proto::GetBackupRequest>,
    ) -> Result<Response<proto::Backup>, Status> {
        self.allow(&req, Role::Reader, "show", "show backups")?;
        let id = req.into_inner().id;
        let engine = self.engine.clone();
        let backup = blocking(move || {
            let record = engine.resolve(&id)?;
            Ok(backup_message(&record, &engine.config().daemon.backup_dir))
        })
        .await?;
        Ok(Response::new(backup))
    }

    async fn delete_backup(
        &self,
        req: Request<proto::DeleteBackupRequest>,
    ) -> Result<Response<proto::DeleteBackupResponse>, Status> {
        let peer = self.allow(&req, Role::Admin, "delete", "delete backups")?;
        let id = req.into_inner().id;
        let engine = self.engine.clone();
        let target = id.clone();
        let result = blocking(move || engine.delete(&id)).await;
        self.audit(&peer, "delete", &target, &result).await;
        Ok(Response::new(proto::DeleteBackupResponse { id: result?.id }))
    }

    async fn set_protected(
        &self,
        req: Request<proto::SetProtectedRequest>,
    ) -> Result<Response<proto::Backup>, Status> {
        let peer = self.allow(&req, Role::Admin, "pin", "pin or unpin backups")?;
        let req = req.into_inner();
        let engine = self.engine.clone();
        let (target, action) = (req.id.clone(), if req.protected { "pin" } else { "unpin" });
        let result = blocking(move || {
            let record = engine.set_protected(&req.id, req.protected)?;
            Ok(backup_message(&record, &engine.config().daemon.backup_dir))
        })
        .await;
        self.audit(&peer, action, &target, &result).await;
        Ok(Response::new(result?))
    }

    async fn prune(
        &self,
        req: Request<proto::PruneRequest>,
    ) -> Result<Response<proto::PruneResponse>, Status> {
        let peer = self.allow(&req, Role::Admin, "prune", "prune backups")?;
        let req = req.into_inner();
        let engine = self.engine.clone();
        let job = (!req.job.is_empty()).then_some(req.job);
        let target = job.clone().unwrap_or_else(|| "all jobs".to_owned());
        let actor = peer.actor();
        let result = blocking(move || engine.prune(&actor, job.as_deref(), req.dry_run)).await;
        let action = if req.dry_run { "prune --dry-run" } else { "prune" };
        self.audit(&peer, action, &target, &result).await;
        let pruned = result?;
        let decisions = pruned
            .into_iter()
            .map(|p| proto::PruneDecision {
                id: p.decision.id,
                job: p.job,
                created_at: p.decision.created_at.timestamp(),
                keep: p.decision.keep,
                reasons: p.decision.reasons,
                removed: p.removed,
            })
            .collect();
        Ok(Response::new(proto::PruneResponse { decisions }))
    }

    type VerifyBackupStream = EventStream;

    async fn verify_backup(
        &self,
        req: Request<proto::VerifyBackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "verify", "verify backups")?;
        let req = req.into_inner();
        let engine = self.engine.clone();
        let record = {
            let engine = engine.clone();
            let id = req.id.clone();
            blocking(move || engine.resolve(&id)).await?
        };
        let (tx, rx) = mpsc::channel(64);
        let cancel = self.shutdown.child_token();
        self.tasks.spawn(async move {
            let mut progress = progress_sender(tx.clone());
            let (run_engine, target) = (engine.clone(), record.id.clone());
            let result = tokio::task::spawn_blocking(move || {
                run_engine.verify_record(&record, req.deep, &cancel, &mut *progress)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))
            .and_then(|r| r.map_err(Status::from));
            let action = if req.deep { "verify --deep" } else { "verify" };
            audit(&engine, peer.actor(), action, &target, &result).await;
            let message = result.map(|v| proto::BackupEvent {
                event: Some(proto::backup_event::Event::Verify(proto::VerifyResult {
                    id: v.id,
                    ok: true,
                    error: String::new(),
                    entries: v.entries,
                    deep: v.deep,
                })),
            });
            let _ = tx.send(message).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type RestoreBackupStream = EventStream;

    async fn restore_backup(
        &self,
        req: Request<proto::RestoreBackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "restore", "restore backups")?;
        let req = req.into_inner();
        let only = Only::parse(&req.only)?;
        let to = (!req.to.is_empty()).then(|| PathBuf::from(&req.to));
        let (tx, rx) = mpsc::channel(64);
        let engine = self.engine.clone();
        let cancel = self.shutdown.child_token();
        self.tasks.spawn(async move {
            let mut progress = progress_sender(tx.clone());
            let run_engine = engine.clone();
            let target = match &to {
                Some(dir) => format!("{} to {}", req.id, dir.display()),
                None => format!("{} in place", req.id),
            };
            let result = tokio::task::spawn_blocking(move || {
                run_engine.restore(&req.id, to.as_deref(), only, req.force, &cancel, &mut *progress)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))
            .and_then(|r| r.map_err(Status::from));
            audit(&engine, peer.actor(), "restore", &target, &result).await;
            let message = result.map(|r| proto::BackupEvent {
                event: Some(proto::backup_event::Event::Restore(proto::RestoreResult {
                    id: r.id,
                    safety_backup_id: r.safety_backup_id.unwrap_or_default(),
                    database_path: r
                        .database_path
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    media_paths: r.media_paths.iter().map(|p| p.display().to_string()).collect(),
                })),
            });
            let _ = tx.send(message).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DownloadBackupStream = ChunkStream;

    async fn download_backup(
        &self,
        req: Request<proto::DownloadBackupRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "download", "download backups")?;
        let id = req.into_inner().id;
        let engine = self.engine.clone();
        let target = id.clone();
        let resolved = blocking(move || {
            let record = engine.resolve(&id)?;
            let path = BackupPaths::new(&engine.config().daemon.backup_dir, &record.job, &record.id).archive;
            Ok((record, path))
        })
        .await;
        self.audit(&peer, "download", &target, &resolved).await;
        let (record, path) = resolved?;
        // tokio's file reads run on its blocking pool, not on the reactor.
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("cannot open {}: {e}", path.display())))?;
        let (tx, rx) = mpsc::channel(4);
        self.tasks.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut first = true;
            loop {
                let mut data = vec![0u8; DOWNLOAD_CHUNK];
                let n = match file.read(&mut data).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("cannot read the archive: {e}"))))
                            .await;
                        return;
                    }
                };
                if n == 0 && !first {
                    return;
                }
                data.truncate(n);
                let mut chunk = proto::DownloadChunk {
                    data,
                    ..Default::default()
                };
                if first {
                    chunk.size = record.size;
                    chunk.sha256 = record.sha256.clone();
                    chunk.id = record.id.clone();
                    first = false;
                }
                if tx.send(Ok(chunk)).await.is_err() || n == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn upload_backup(
        &self,
        req: Request<tonic::Streaming<proto::UploadChunk>>,
    ) -> Result<Response<proto::Backup>, Status> {
        let peer = self.allow(&req, Role::Admin, "upload", "upload backups")?;
        let result = self.receive_upload(req.into_inner()).await;
        let target = result
            .as_ref()
            .map_or_else(|_| "an archive".to_owned(), |b| b.id.clone());
        self.audit(&peer, "upload", &target, &result).await;
        Ok(Response::new(result?))
    }

    async fn get_metrics(
        &self,
        req: Request<proto::GetMetricsRequest>,
    ) -> Result<Response<proto::GetMetricsResponse>, Status> {
        self.allow(&req, Role::Reader, "metrics", "read metrics")?;
        let engine = self.engine.clone();
        let text = blocking(move || crate::metrics::render(&engine)).await?;
        Ok(Response::new(proto::GetMetricsResponse { text }))
    }

    async fn list_audit(
        &self,
        req: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        self.allow(&req, Role::Reader, "audit", "read the audit log")?;
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n.min(10_000),
        };
        let engine = self.engine.clone();
        let records = blocking(move || Ok(engine.catalog().list_audit(limit)?)).await?;
        let entries = records
            .into_iter()
            .map(|r| proto::AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                result: r.result,
                error: r.error,
            })
            .collect();
        Ok(Response::new(proto::ListAuditResponse { entries }))
    }
}

impl CofferService {
    /// Receives an upload into the backup dir, then verifies and catalogues it.
    async fn receive_upload(
        &self,
        mut stream: tonic::Streaming<proto::UploadChunk>,
    ) -> Result<proto::Backup, Status> {
        use tokio::io::AsyncWriteExt;
        let config = self.engine.config();
        let limit = config.daemon.max_upload_size;
        // Received inside the backup dir so cataloguing is a rename on one filesystem.
        let partial = config.daemon.backup_dir.join(format!(
            ".upload-{}-{}{}",
            std::process::id(),
            UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            crate::fsutil::PARTIAL_SUFFIX
        ));
        let mut cleanup = crate::fsutil::Cleanup::new();
        cleanup.add(&partial);
        let io_err = |e: std::io::Error| Status::internal(format!("cannot store the upload: {e}"));
        let mut file = tokio::fs::File::create_new(&partial).await.map_err(io_err)?;
        let mut received = 0u64;
        let mut job = String::new();
        while let Some(chunk) = stream.message().await? {
            if job.is_empty() {
                job = chunk.job;
            }
            received += chunk.data.len() as u64;
            if received > limit {
                return Err(Status::resource_exhausted(format!(
                    "the upload is larger than max-upload-size ({})",
                    coffer_common::format::bytes(limit)
                )));
            }
            file.write_all(&chunk.data).await.map_err(io_err)?;
        }
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        let engine = self.engine.clone();
        let cancel = self.shutdown.child_token();
        let path = partial.clone();
        let backup = blocking(move || {
            let job = (!job.is_empty()).then_some(job.as_str());
            let record = engine.catalog_upload(&path, job, &cancel, &mut |_| {})?;
            Ok(backup_message(&record, &engine.config().daemon.backup_dir))
        })
        .await?;
        cleanup.keep(&partial);
        Ok(backup)
    }
}
