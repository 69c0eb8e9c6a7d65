//! The streams of the selective `Export` and `Import` RPCs.
//!
//! Export: a task on the daemon's tracker runs the export through the engine
//! (progress events go out as they come, lossy when the client is slow), audits it
//! (who, profile, parameters, rows), then sends the result and the export file's
//! bytes from staging — the file is removed once sent, or when the client went away.
//!
//! Import: a task receives the client's stream into a staging directory of its own
//! (the first message carries job, policy and dry run; at most `max-upload-size`
//! bytes), runs the import through the engine, audits it (policy and counts) and
//! sends the report as JSON. The staging directory is removed at the end whatever
//! happened (and by the start-up sweep after a crash).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_common::proto::{self, export_chunk::Chunk, import_event::Event as ImportReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Response, Status};

use super::auth::Peer;
use super::convert::progress;
use super::service::audit_error;
use crate::engine::Engine;
use crate::error::Error;
use crate::ops::export::{ExportRequest, Exported};
use crate::ops::import::{Imported, parse_policy};
use crate::selective::import::ImportReport;

/// Bytes per export data message.
const CHUNK: usize = 1 << 20;

/// Numbers concurrent imports' staging directories.
static IMPORTS: AtomicU64 = AtomicU64::new(0);

pub type ExportStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::ExportChunk, Status>> + Send>>;
pub type ImportStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::ImportEvent, Status>> + Send>>;

/// What an export or import stream needs from the service.
pub struct Streams {
    pub engine: Arc<Engine>,
    pub health: tonic_health::server::HealthReporter,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// `name=value, ...` of a parameter list.
fn params_text<'a>(params: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    params
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The audit target of an export: job, profile, parameters, and the rows and files.
fn export_target(request: &ExportRequest, result: &Result<Exported, Error>) -> String {
    let what = format!(
        "{} profile {} ({})",
        request.job,
        request.profile,
        params_text(request.params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    );
    match result {
        Ok(e) => {
            let rows = e
                .summary
                .rows
                .iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            format!("{what}: rows {rows}; {} media files", e.media_files)
        }
        Err(_) => what,
    }
}

fn export_result(e: &Exported) -> proto::ExportResult {
    proto::ExportResult {
        id: e.id.clone(),
        job: e.job.clone(),
        profile: e.profile.clone(),
        params: e
            .params
            .iter()
            .map(|(name, value)| proto::ExportParam {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        rows: e.summary.rows.clone().into_iter().collect(),
        followed: e.summary.followed.clone().into_iter().collect(),
        dangling_references: e.summary.dangling_references,
        media_files: e.media_files,
        media_bytes: e.media_bytes,
        media_skipped: e.media_skipped,
        size: e.size,
        sha256: e.sha256.clone(),
    }
}

impl Streams {
    /// Starts an export; see the module doc.
    pub fn export(&self, peer: Peer, req: proto::ExportRequest) -> Response<ExportStream> {
        let request = ExportRequest {
            job: req.job,
            profile: req.profile,
            params: req.params.into_iter().map(|p| (p.name, p.value)).collect(),
        };
        let (tx, rx) = mpsc::channel(64);
        let (engine, mut health, cancel) = (
            self.engine.clone(),
            self.health.clone(),
            self.shutdown.child_token(),
        );
        self.tasks.spawn(async move {
            let sender = tx.clone();
            let progress = Box::new(move |e| {
                let _ = sender.try_send(Ok(proto::ExportChunk {
                    chunk: Some(Chunk::Progress(progress(e))),
                }));
            });
            let result = engine.export(request.clone(), cancel, progress).await;
            let error = result.as_ref().err().map(Error::describe);
            audit_error(
                &engine,
                peer.actor(),
                "export",
                &export_target(&request, &result),
                error,
            )
            .await;
            super::health::refresh(&engine, &mut health).await;
            match result {
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                }
                Ok(exported) => {
                    send_file(&tx, &exported).await;
                    // Removing staging is blocking file-system work.
                    let _ = tokio::task::spawn_blocking(move || drop(exported)).await;
                }
            }
        });
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }

    /// Starts an import; see the module doc.
    pub fn import(&self, peer: Peer, stream: tonic::Streaming<proto::ImportChunk>) -> Response<ImportStream> {
        let (tx, rx) = mpsc::channel(64);
        let (engine, mut health, cancel) = (
            self.engine.clone(),
            self.health.clone(),
            self.shutdown.child_token(),
        );
        self.tasks.spawn(async move {
            let stage = engine
                .staging_dir()
                .join(format!("import-{}", IMPORTS.fetch_add(1, Ordering::Relaxed)));
            let mut options = None;
            let result = receive_and_import(&engine, stream, &stage, cancel, &tx, &mut options).await;
            let (action, target) = import_audit(options.as_ref(), &result);
            let error = result.as_ref().err().map(Status::message).map(str::to_owned);
            audit_error(&engine, peer.actor(), action, &target, error).await;
            super::health::refresh(&engine, &mut health).await;
            let reply = result.and_then(|imported| {
                Ok(proto::ImportEvent {
                    event: Some(ImportReply::Result(proto::ImportResult {
                        dry_run: imported.dry_run,
                        safety_backup_id: imported.safety_backup_id.clone().unwrap_or_default(),
                        report_json: serde_json::to_string(&imported.report)
                            .map_err(|e| Status::internal(format!("cannot encode the report: {e}")))?,
                    })),
                })
            });
            // Staging goes before the answer: a client that sees the result finds
            // nothing left behind.
            let _ = tokio::task::spawn_blocking(move || crate::fsutil::remove_any(&stage)).await;
            let _ = tx.send(reply).await;
        });
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Sends the export's result, then its file in chunks.
async fn send_file(tx: &mpsc::Sender<Result<proto::ExportChunk, Status>>, exported: &Exported) {
    let first = proto::ExportChunk {
        chunk: Some(Chunk::Result(export_result(exported))),
    };
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    let mut file = match tokio::fs::File::open(&exported.path).await {
        Ok(file) => file,
        Err(e) => {
            let _ = tx
                .send(Err(Status::internal(format!("cannot open the export file: {e}"))))
                .await;
            return;
        }
    };
    loop {
        let mut data = vec![0u8; CHUNK];
        let n = match file.read(&mut data).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::internal(format!("cannot read the export file: {e}"))))
                    .await;
                return;
            }
        };
        data.truncate(n);
        let chunk = proto::ExportChunk {
            chunk: Some(Chunk::Data(data)),
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return;
        }
    }
}

/// The options of an import, from its first message.
struct Options {
    job: String,
    on_conflict: String,
    dry_run: bool,
}

/// Receives the export file into `stage`, then imports it; `options` are those of
/// the first message, once received.
async fn receive_and_import(
    engine: &Arc<Engine>,
    mut stream: tonic::Streaming<proto::ImportChunk>,
    stage: &std::path::Path,
    cancel: CancellationToken,
    tx: &mpsc::Sender<Result<proto::ImportEvent, Status>>,
    options: &mut Option<Options>,
) -> Result<Imported, Status> {
    let limit = engine.config().daemon.max_upload_size;
    let io_err = |e: std::io::Error| Status::internal(format!("cannot store the export file: {e}"));
    tokio::fs::create_dir_all(stage).await.map_err(io_err)?;
    let file: PathBuf = stage.join("export.tar.zst");
    let mut out = tokio::fs::File::create_new(&file).await.map_err(io_err)?;
    let mut received = 0u64;
    while let Some(chunk) = stream.message().await? {
        if options.is_none() {
            *options = Some(Options {
                job: chunk.job,
                on_conflict: chunk.on_conflict,
                dry_run: chunk.dry_run,
            });
        }
        received += chunk.data.len() as u64;
        if received > limit {
            return Err(Status::resource_exhausted(format!(
                "the export file is larger than max-upload-size ({})",
                coffer_common::format::bytes(limit)
            )));
        }
        out.write_all(&chunk.data).await.map_err(io_err)?;
    }
    out.sync_all().await.map_err(io_err)?;
    drop(out);
    let options = options
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("the import sent no data"))?;
    if options.job.is_empty() {
        return Err(Status::invalid_argument("an import needs --job JOB"));
    }
    let policy = parse_policy(&options.on_conflict)?;
    let sender = tx.clone();
    let progress = Box::new(move |e| {
        let _ = sender.try_send(Ok(proto::ImportEvent {
            event: Some(ImportReply::Progress(progress(e))),
        }));
    });
    let imported = engine
        .import(
            options.job.clone(),
            file,
            stage.to_owned(),
            policy,
            options.dry_run,
            cancel,
            progress,
        )
        .await?;
    Ok(imported)
}

/// Counts of a report for the audit log.
fn report_counts(r: &ImportReport) -> String {
    let sum = |f: fn(&crate::selective::import::TableReport) -> u64| r.tables.iter().map(f).sum::<u64>();
    let m = &r.media;
    format!(
        "rows inserted {}, overwritten {}, renamed {}, skipped {}, identical {}; media written {}, overwritten {}, renamed {}, skipped {}",
        sum(|t| t.inserted),
        sum(|t| t.overwritten),
        sum(|t| t.renamed),
        sum(|t| t.skipped),
        sum(|t| t.identical),
        m.written,
        m.overwritten,
        m.renamed,
        m.skipped
    )
}

/// The audit action and target of an import: job, policy, the file's profile and
/// parameters, and the counts.
fn import_audit(options: Option<&Options>, result: &Result<Imported, Status>) -> (&'static str, String) {
    let Some(options) = options else {
        return ("import", "an export file".to_owned());
    };
    let action = if options.dry_run {
        "import --dry-run"
    } else {
        "import"
    };
    let Ok(imported) = result else {
        return (
            action,
            format!("{}, --on-conflict {}", options.job, options.on_conflict),
        );
    };
    let r = &imported.report;
    let safety = imported
        .safety_backup_id
        .as_deref()
        .map(|id| format!("; safety backup {id}"))
        .unwrap_or_default();
    let target = format!(
        "{} from export profile {} ({}), --on-conflict {}: {}{safety}",
        options.job,
        r.profile,
        params_text(r.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        r.policy,
        report_counts(r)
    );
    (action, target)
}
