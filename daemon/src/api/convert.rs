//! Domain values to and from the wire: errors to gRPC statuses (the one mapping of
//! [`ErrorKind`] to codes), records and events to proto messages.

use std::path::Path;

use coffer_common::proto;
use tonic::{Code, Status};

use crate::catalog::{BackupRecord, RunRecord};
use crate::error::{Error, ErrorKind};
use crate::manifest::SourceInfo;
use crate::run::{Event, Phase, RunKind, RunStatus};
use crate::store::LocalStore;

/// The longest error message sent to a client, in bytes.
const MAX_STATUS_MESSAGE: usize = 1024;

/// The gRPC code of each kind of failure.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Precondition => Code::FailedPrecondition,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::NoSpace => Code::ResourceExhausted,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Internal => Code::Internal,
    }
}

/// Maps an error to its gRPC status, with the error's sentence as message.
pub fn status_of(error: Error) -> Status {
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
    Status::new(code_of(error.kind()), message)
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        status_of(error)
    }
}

pub fn run_kind(kind: RunKind) -> proto::RunKind {
    match kind {
        RunKind::Backup => proto::RunKind::Backup,
        RunKind::Verify => proto::RunKind::Verify,
        RunKind::Restore => proto::RunKind::Restore,
        RunKind::Prune => proto::RunKind::Prune,
        RunKind::Upload => proto::RunKind::Upload,
        RunKind::Drill => proto::RunKind::Drill,
        RunKind::Copy => proto::RunKind::Copy,
        RunKind::Fetch => proto::RunKind::Fetch,
        RunKind::Export => proto::RunKind::Export,
        RunKind::Import => proto::RunKind::Import,
        RunKind::Rekey => proto::RunKind::Rekey,
    }
}

pub fn run_status(status: RunStatus) -> proto::RunStatus {
    match status {
        RunStatus::Running => proto::RunStatus::Running,
        RunStatus::Succeeded => proto::RunStatus::Succeeded,
        RunStatus::Failed => proto::RunStatus::Failed,
        RunStatus::Skipped => proto::RunStatus::Skipped,
        RunStatus::Cancelled => proto::RunStatus::Cancelled,
    }
}

pub fn phase(phase: Phase) -> proto::Phase {
    match phase {
        Phase::Waiting => proto::Phase::Waiting,
        Phase::Snapshot => proto::Phase::Snapshot,
        Phase::Media => proto::Phase::Media,
        Phase::Archive => proto::Phase::Archive,
        Phase::Verify => proto::Phase::Verify,
        Phase::Check => proto::Phase::Check,
        Phase::Extract => proto::Phase::Extract,
        Phase::Hooks => proto::Phase::Hooks,
        Phase::Safety => proto::Phase::Safety,
        Phase::Swap => proto::Phase::Swap,
        Phase::Copy => proto::Phase::Copy,
        Phase::Fetch => proto::Phase::Fetch,
        Phase::Drill => proto::Phase::Drill,
        Phase::Export => proto::Phase::Export,
        Phase::Import => proto::Phase::Import,
    }
}

/// A progress event on the wire.
pub fn progress_message(e: Event) -> proto::BackupEvent {
    proto::BackupEvent {
        event: Some(proto::backup_event::Event::Progress(progress(e))),
    }
}

/// The progress message of an event.
pub fn progress(e: Event) -> proto::Progress {
    proto::Progress {
        phase: phase(e.phase).into(),
        bytes_done: e.done,
        bytes_total: e.total,
        message: e.message,
    }
}

/// The wire form of a catalogued backup.
pub fn backup_message(r: &BackupRecord, store: &LocalStore) -> proto::Backup {
    let s = &r.summary;
    let db = s.database_entry();
    let mut message = proto::Backup {
        id: r.id.clone(),
        job: r.job.clone(),
        created_at: r.created_at,
        size: r.size,
        sha256: r.sha256.clone(),
        protected: r.protected,
        note: r.note.clone(),
        verified_at: r.verified_at,
        verify_result: r.verify_result.clone(),
        path: store
            .paths_for(&r.job, &r.id, r.is_encrypted())
            .archive
            .display()
            .to_string(),
        hostname: s.hostname.clone(),
        coffer_version: s.coffer_version.clone(),
        media_roots: s.media_roots.clone(),
        file_count: s.totals.files,
        dir_count: s.totals.dirs,
        symlink_count: s.totals.symlinks,
        total_bytes: s.totals.bytes,
        duration_ms: r.duration_ms,
        skipped_count: s.totals.skipped,
        skipped: s
            .skipped
            .iter()
            .map(|e| proto::SkippedEntry {
                path: e.path.clone(),
                reason: e.reason.clone(),
            })
            .collect(),
        excluded_count: s.totals.excluded,
        recipients: r.recipients.clone(),
        ..Default::default()
    };
    match &s.source {
        SourceInfo::Sqlite(info) => {
            message.sqlite_version = info.sqlite_version.clone();
            message.database_path = info.path.clone();
            message.database_size = db.map_or(info.page_size * info.page_count, |e| e.size);
            message.page_size = info.page_size;
            message.page_count = info.page_count;
            message.journal_mode = info.journal_mode.clone();
            message.snapshot_method = info.snapshot_method.clone();
            message.user_version = info.user_version;
            message.application_id = info.application_id;
        }
        SourceInfo::Postgres(info) | SourceInfo::Mariadb(info) => {
            message.database_size = db.map_or(0, |e| e.size);
            message.database_path = db.map(|e| e.path.clone()).unwrap_or_default();
            message.server_version = info.server_version.clone();
            message.tool_version = info.tool_version.clone();
            message.database_name = info.database.clone();
            message.server_database_size = info.size;
        }
    }
    message.source_kind = s.source.kind().to_owned();
    message
}

/// The wire form of a run.
pub fn run_message(r: &RunRecord) -> proto::RunSummary {
    proto::RunSummary {
        id: r.id,
        job: r.job.clone(),
        kind: run_kind(r.kind).into(),
        status: run_status(r.status).into(),
        started_at: r.started_at,
        finished_at: r.finished_at,
        error: r.error.clone(),
        backup_id: r.backup_id.clone(),
        bytes: r.bytes,
    }
}

/// A path as the wire carries it.
pub fn path_text(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_name_matches_the_proto_name() {
        for kind in RunKind::ALL {
            assert_eq!(run_kind(kind).short_name(), kind.as_str());
        }
        for status in RunStatus::ALL {
            assert_eq!(run_status(status).short_name(), status.as_str());
        }
        for p in Phase::ALL {
            assert_eq!(phase(p).short_name(), p.as_str());
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let status = status_of(Error::UnknownJob("x".repeat(1 << 20)));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE + 3);
    }
}
