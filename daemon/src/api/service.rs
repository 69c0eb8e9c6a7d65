//! The `coffer.v1.Coffer` gRPC service: checks the caller's role, calls the engine,
//! converts the answer, audits mutations.
//!
//! Quick calls run on a blocking thread ([`Engine::blocking`]). Long runs (backup,
//! verify, restore) go through [`CofferService::spawn_run`]: a task on the daemon's
//! [`TaskTracker`] (so shutdown can wait for it) that streams progress through a
//! bounded channel — lossy, dropped when the client is slow — and then the result,
//! which is not. A client that goes away does not cancel a run. Every engine error
//! becomes a `Status` in one place ([`super::convert::status_of`]).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use chrono::Utc;
use coffer_common::proto::{self, backup_event::Event as Reply, coffer_server::Coffer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use super::auth::{Access, Peer, Role};
use super::convert::{backup_message, path_text, progress_message};
use crate::engine::{Engine, ProgressFn};
use crate::error::Error;
use crate::ops;
use crate::ops::restore::{Only, Target};

/// Bytes per download message.
const DOWNLOAD_CHUNK: usize = 1 << 20;

/// Numbers concurrent uploads' file names.
static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::BackupEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::DownloadChunk, Status>> + Send>>;

/// Writes an audit entry for `result` off the reactor.
async fn audit<T>(
    engine: &Arc<Engine>,
    actor: String,
    action: &str,
    target: &str,
    result: &Result<T, Status>,
) {
    audit_error(
        engine,
        actor,
        action,
        target,
        result.as_ref().err().map(|s| s.message().to_owned()),
    )
    .await;
}

/// Writes an audit entry (`error` if the action failed) off the reactor.
pub(super) async fn audit_error(
    engine: &Arc<Engine>,
    actor: String,
    action: &str,
    target: &str,
    error: Option<String>,
) {
    let (engine, action, target) = (engine.clone(), action.to_owned(), target.to_owned());
    let _ =
        tokio::task::spawn_blocking(move || engine.audit(&actor, &action, &target, error.as_deref())).await;
}

/// A progress callback that forwards events to a stream without ever blocking.
fn progress_sender(tx: mpsc::Sender<Result<proto::BackupEvent, Status>>) -> ProgressFn {
    Box::new(move |e| {
        let _ = tx.try_send(Ok(progress_message(e)));
    })
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

    /// A quick engine call off the reactor, as a gRPC result.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&ops::Ctx) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        self.engine.blocking(op).await.map_err(Status::from)
    }

    /// Starts a long run as a task: `run` gets the progress callback and the run's
    /// cancel token; its result is audited as `action` on the target `target` names,
    /// health is refreshed, and `reply` turns a success into the stream's last
    /// message.
    fn spawn_run<T, Fut>(
        &self,
        peer: Peer,
        action: String,
        target: impl FnOnce(&Result<T, Status>) -> String + Send + 'static,
        run: impl FnOnce(ProgressFn, CancellationToken) -> Fut,
        reply: impl FnOnce(T) -> Reply + Send + 'static,
    ) -> Response<EventStream>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let running = run(progress_sender(tx.clone()), self.shutdown.child_token());
        let engine = self.engine.clone();
        let mut health = self.health.clone();
        self.tasks.spawn(async move {
            let result = running.await.map_err(Status::from);
            let target = target(&result);
            let error = result.as_ref().err().map(|s| s.message().to_owned());
            audit_error(&engine, peer.actor(), &action, &target, error).await;
            super::health::refresh(&engine, &mut health).await;
            let message = result.map(|value| proto::BackupEvent {
                event: Some(reply(value)),
            });
            let _ = tx.send(message).await;
        });
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Coffer for CofferService {
    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::GetStatusResponse>, Status> {
        self.allow(&req, Role::Reader, "status", "read the status")?;
        let (engine, started_at) = (self.engine.clone(), self.started_at);
        let response = self
            .blocking(move |_| super::status::status(&engine, started_at))
            .await?;
        Ok(Response::new(response))
    }

    async fn list_jobs(
        &self,
        req: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        self.allow(&req, Role::Reader, "jobs", "list jobs")?;
        Ok(Response::new(super::status::jobs(&self.engine)))
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
        let engine = self.engine.clone();
        let job = req.job.clone();
        Ok(self.spawn_run(
            peer,
            "backup".into(),
            move |result| result.as_ref().map_or(job, |r| r.id.clone()),
            |progress, cancel| async move { engine.backup(claim, req.note, cancel, progress).await },
            {
                let engine = self.engine.clone();
                move |record| Reply::Backup(backup_message(&record, engine.store()))
            },
        ))
    }

    async fn list_backups(
        &self,
        req: Request<proto::ListBackupsRequest>,
    ) -> Result<Response<proto::ListBackupsResponse>, Status> {
        self.allow(&req, Role::Reader, "list", "list backups")?;
        let job = req.into_inner().job;
        let backups = self
            .blocking(move |ctx| {
                let records = ctx.list((!job.is_empty()).then_some(job.as_str()))?;
                let mut backups: Vec<_> = records.iter().map(|r| backup_message(r, ctx.store)).collect();
                super::offsite::add_locations(ctx, &mut backups)?;
                Ok(backups)
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
        let backup = self
            .blocking(move |ctx| {
                let mut backup = [backup_message(&ctx.resolve(&id)?, ctx.store)];
                super::offsite::add_locations(ctx, &mut backup)?;
                let [backup] = backup;
                Ok(backup)
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
        let target = id.clone();
        let result = self.blocking(move |ctx| ops::delete::delete(ctx, &id)).await;
        self.audit(&peer, "delete", &target, &result).await;
        Ok(Response::new(proto::DeleteBackupResponse { id: result?.id }))
    }

    async fn set_protected(
        &self,
        req: Request<proto::SetProtectedRequest>,
    ) -> Result<Response<proto::Backup>, Status> {
        let peer = self.allow(&req, Role::Admin, "pin", "pin or unpin backups")?;
        let req = req.into_inner();
        let (target, action) = (req.id.clone(), if req.protected { "pin" } else { "unpin" });
        let result = self
            .blocking(move |ctx| {
                let record = ops::delete::set_protected(ctx, &req.id, req.protected)?;
                Ok(backup_message(&record, ctx.store))
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
        let result = self
            .blocking(move |_| engine.prune(&actor, job.as_deref(), req.dry_run))
            .await;
        let action = if req.dry_run { "prune --dry-run" } else { "prune" };
        self.audit(&peer, action, &target, &result).await;
        let decisions = result?
            .into_iter()
            .map(|p| proto::PruneDecision {
                id: p.decision.id,
                job: p.job,
                created_at: p.decision.created_at.timestamp(),
                keep: p.decision.keep,
                reasons: p.decision.reasons,
                removed: p.removed,
                location: p.location,
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
        if !req.store.is_empty() {
            return Ok(self.verify_in_store(peer, req));
        }
        let id = req.id.clone();
        let record = self.blocking(move |ctx| ctx.resolve(&id)).await?;
        let engine = self.engine.clone();
        let action = if req.deep { "verify --deep" } else { "verify" };
        let target = record.id.clone();
        Ok(self.spawn_run(
            peer,
            action.into(),
            move |_| target,
            |progress, cancel| async move { engine.verify(record, req.deep, cancel, progress).await },
            |v| {
                Reply::Verify(proto::VerifyResult {
                    id: v.id,
                    ok: true,
                    error: String::new(),
                    entries: v.entries,
                    deep: v.deep,
                    store: String::new(),
                    ciphertext_only: v.ciphertext_only,
                })
            },
        ))
    }

    type RestoreBackupStream = EventStream;

    async fn restore_backup(
        &self,
        req: Request<proto::RestoreBackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "restore", "restore backups")?;
        let req = req.into_inner();
        let only = Only::parse(&req.only)?;
        let to = match (req.to.is_empty(), req.to_database.is_empty()) {
            (true, true) => Target::InPlace,
            (false, true) => Target::Dir(PathBuf::from(&req.to)),
            (true, false) => Target::Database(req.to_database.clone()),
            (false, false) => {
                return Err(Error::InvalidArgument(
                    "--to and --to-database cannot be combined; choose one".into(),
                )
                .into());
            }
        };
        let target = match &to {
            Target::Dir(dir) => format!("{} to {}", req.id, dir.display()),
            Target::Database(name) => format!("{} to database {name}", req.id),
            Target::InPlace => format!("{} in place", req.id),
        };
        let engine = self.engine.clone();
        Ok(self.spawn_run(
            peer,
            "restore".into(),
            move |_| target,
            |progress, cancel| async move {
                engine
                    .restore(req.id, to, only, req.force, cancel, progress)
                    .await
            },
            |r| {
                Reply::Restore(proto::RestoreResult {
                    id: r.id,
                    safety_backup_id: r.safety_backup_id.unwrap_or_default(),
                    database_path: r.database_path.as_deref().map(path_text).unwrap_or_default(),
                    media_paths: r.media_paths.iter().map(|p| path_text(p)).collect(),
                    database_name: r.database_name.unwrap_or_default(),
                })
            },
        ))
    }

    type DownloadBackupStream = ChunkStream;

    async fn download_backup(
        &self,
        req: Request<proto::DownloadBackupRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "download", "download backups")?;
        let id = req.into_inner().id;
        let target = id.clone();
        let resolved = self.blocking(move |ctx| ops::download::open(ctx, &id)).await;
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
        let text = self.blocking(move |_| super::metrics::render(&engine)).await?;
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
        let records = self
            .blocking(move |ctx| Ok(ctx.catalog.list_audit(limit)?))
            .await?;
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

    type RunDrillStream = EventStream;

    async fn run_drill(&self, req: Request<proto::RunDrillRequest>) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "drill", "run restore drills")?;
        let job = req.into_inner().job;
        let engine = self.engine.clone();
        let target = job.clone();
        Ok(self.spawn_run(
            peer,
            "drill".into(),
            move |result: &Result<crate::ops::drill::Drilled, Status>| {
                result.as_ref().map_or(target, |d| d.backup_id.clone())
            },
            |progress, cancel| async move { engine.drill(job, cancel, progress).await },
            |d| {
                Reply::Drill(proto::DrillResult {
                    job: d.job,
                    backup_id: d.backup_id,
                    checks: d
                        .checks
                        .into_iter()
                        .map(|(query, value)| proto::DrillCheck { query, value })
                        .collect(),
                    duration_ms: d.duration_ms,
                })
            },
        ))
    }

    type ExportStream = super::selective::ExportStream;

    async fn export(
        &self,
        req: Request<proto::ExportRequest>,
    ) -> Result<Response<super::selective::ExportStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "export", "export data")?;
        Ok(self.streams().export(peer, req.into_inner()))
    }

    type ImportStream = super::selective::ImportStream;

    async fn import(
        &self,
        req: Request<tonic::Streaming<proto::ImportChunk>>,
    ) -> Result<Response<super::selective::ImportStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "import", "import data")?;
        Ok(self.streams().import(peer, req.into_inner()))
    }

    type RekeyBackupStream = EventStream;

    async fn rekey_backup(
        &self,
        req: Request<proto::RekeyBackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "rekey", "re-encrypt backups")?;
        let id = req.into_inner().id;
        let record = match self.blocking(move |ctx| ctx.resolve(&id)).await {
            Ok(record) => record,
            Err(refused) => {
                self.audit(&peer, "rekey", "(unknown backup)", &Err::<(), _>(refused.clone()))
                    .await;
                return Err(refused);
            }
        };
        // Refusals (job busy) answer the call itself.
        let claim = match self.engine.claim(&record.job) {
            Ok(claim) => claim,
            Err(e) => {
                let refused = Status::from(e);
                self.audit(&peer, "rekey", &record.id, &Err::<(), _>(refused.clone()))
                    .await;
                return Err(refused);
            }
        };
        let engine = self.engine.clone();
        let target = record.id.clone();
        Ok(self.spawn_run(
            peer,
            "rekey".into(),
            move |_| target,
            |progress, cancel| async move { engine.rekey(claim, record, cancel, progress).await },
            {
                let engine = self.engine.clone();
                move |rekeyed: ops::rekey::Rekeyed| {
                    Reply::Backup(backup_message(&rekeyed.record, engine.store()))
                }
            },
        ))
    }

    async fn list_stores(
        &self,
        req: Request<proto::ListStoresRequest>,
    ) -> Result<Response<proto::ListStoresResponse>, Status> {
        self.allow(&req, Role::Reader, "stores", "list the stores")?;
        let stores = self.blocking(super::offsite::stores).await?;
        Ok(Response::new(stores))
    }

    type CopyBackupStream = EventStream;

    async fn copy_backup(
        &self,
        req: Request<proto::CopyBackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "copy", "copy backups to stores")?;
        let req = req.into_inner();
        let (id, store) = (req.id.clone(), req.store.clone());
        let checked = self
            .blocking(move |ctx| {
                if ctx.offsite.get(&store).is_none() {
                    return Err(Error::UnknownStore(store));
                }
                ctx.resolve(&id)
            })
            .await;
        let record = match checked {
            Ok(record) => record,
            Err(refused) => {
                let target = format!("{} to {}", req.id, req.store);
                self.audit(&peer, "copy", &target, &Err::<(), _>(refused.clone()))
                    .await;
                return Err(refused);
            }
        };
        let target = format!("{} to {}", record.id, req.store);
        let engine = self.engine.clone();
        Ok(self.spawn_run(
            peer,
            "copy".into(),
            move |_| target,
            |progress, cancel| async move { engine.copy(record, req.store, cancel, progress).await },
            |c| Reply::Copy(super::offsite::copy_result(c)),
        ))
    }

    async fn list_store_backups(
        &self,
        req: Request<proto::ListStoreBackupsRequest>,
    ) -> Result<Response<proto::ListStoreBackupsResponse>, Status> {
        self.allow(&req, Role::Reader, "list", "list backups")?;
        let req = req.into_inner();
        let listed = self
            .blocking(move |ctx| {
                let job = (!req.job.is_empty()).then_some(req.job.as_str());
                super::offsite::store_backups(ctx, &req.store, job, req.all_hosts)
            })
            .await?;
        Ok(Response::new(listed))
    }

    type FetchBackupStream = EventStream;

    async fn fetch_backup(
        &self,
        req: Request<proto::FetchBackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = self.allow(&req, Role::Admin, "fetch", "fetch backups from stores")?;
        let req = req.into_inner();
        let target = format!("{} from {}", req.id, req.store);
        let engine = self.engine.clone();
        Ok(self.spawn_run(
            peer,
            "fetch".into(),
            move |_| target,
            |progress, cancel| async move { engine.fetch(req.id, req.store, cancel, progress).await },
            {
                let engine = self.engine.clone();
                move |record| Reply::Backup(backup_message(&record, engine.store()))
            },
        ))
    }
}

impl CofferService {
    /// `verify ID --store S [--deep]`: the copy in a store (a run like `verify`).
    fn verify_in_store(&self, peer: Peer, req: proto::VerifyBackupRequest) -> Response<EventStream> {
        let engine = self.engine.clone();
        let action = if req.deep {
            "verify --store --deep"
        } else {
            "verify --store"
        };
        let target = format!("{} in {}", req.id, req.store);
        let store = req.store.clone();
        self.spawn_run(
            peer,
            action.into(),
            move |_| target,
            |progress, cancel| async move {
                engine
                    .verify_remote(req.id, req.store, req.deep, cancel, progress)
                    .await
            },
            move |v| {
                Reply::Verify(proto::VerifyResult {
                    id: v.id,
                    ok: true,
                    error: String::new(),
                    entries: v.entries,
                    deep: v.deep,
                    ciphertext_only: v.ciphertext_only,
                    store,
                })
            },
        )
    }

    /// What the selective export and import streams need.
    fn streams(&self) -> super::selective::Streams {
        super::selective::Streams {
            engine: self.engine.clone(),
            health: self.health.clone(),
            tasks: self.tasks.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Receives an upload into the backup dir, then verifies and catalogues it.
    async fn receive_upload(
        &self,
        mut stream: tonic::Streaming<proto::UploadChunk>,
    ) -> Result<proto::Backup, Status> {
        use tokio::io::AsyncWriteExt;
        let limit = self.engine.config().daemon.max_upload_size;
        let partial = self
            .engine
            .store()
            .upload_partial(UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
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
        let job = (!job.is_empty()).then_some(job);
        let record = self
            .engine
            .upload(
                partial.clone(),
                job,
                self.shutdown.child_token(),
                Box::new(|_| {}),
            )
            .await?;
        cleanup.keep(&partial);
        Ok(backup_message(&record, self.engine.store()))
    }
}
