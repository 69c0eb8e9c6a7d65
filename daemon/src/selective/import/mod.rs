//! Import of an export file into a job's database and media directories.
//!
//! Data flow (the daemon has already verified the archive and extracted `db/<name>`
//! and `media/<n>/...` into staging, and taken the pinned safety backup):
//!
//! 1. [`ExportDb::open`] opens the file's database as hostile input (read-only,
//!    triggers and views off, `trusted_schema` off, `quick_check`), and refuses a
//!    file whose schema holds a trigger or a view.
//! 2. Planning ([`plan`]) resolves the *target job's* profile of the same name on the
//!    target schema — the trust anchor: the file may carry only the tables that
//!    profile selects (with `follow-foreign-keys`, their parents too) — checks
//!    column sets, and decides per row and per file what happens ([`ImportReport`]).
//! 3. [`dry_run`] stops there. [`run`] plans *inside* one `BEGIN IMMEDIATE`
//!    transaction (so nothing changes between plan and write), refuses a plan with
//!    blocked rows, writes the media (originals kept aside), writes the rows in
//!    dependency order with foreign keys deferred, checks that
//!    `PRAGMA foreign_key_check` shows no new violation, commits the database and
//!    only then the media. Any failure rolls both back: database and media
//!    directories are exactly as before.
//!
//! Both paths build the report with the same planning code, so a dry run's report
//! equals what the real import does (given the same target state).

mod apply;
pub mod journal;
mod plan;
mod report;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};

pub use journal::JournalTarget;
pub use report::{ColumnChange, ImportReport, RowAction, RowReport, RowStatus, TableReport};
pub use source::ExportDb;

use journal::{Journal, ProbeRecorder};

use crate::selective::ConflictPolicy;
use crate::selective::graph::GraphError;
use crate::selective::media::{self, ImportedMedia, MediaError, MediaPlan};
use crate::selective::profile::{ExportProfile, ParamValues, ProfileError};

/// Errors of an import; each message is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Params(#[from] ProfileError),
    #[error(transparent)]
    Schema(#[from] GraphError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("the database in the export file ({path}) cannot be read")]
    ExportDbUnreadable {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the database in the export file ({path}) is damaged: {detail}")]
    ExportDbDamaged { path: String, detail: String },
    #[error(
        "the export file's database contains {kind} {name:?}, which an export never holds; the file is refused"
    )]
    ForeignObject { kind: String, name: String },
    #[error(
        "the export file holds table {table:?}, which export profile {profile} of this job does not include; the file is refused"
    )]
    TableNotAllowed { table: String, profile: String },
    #[error(
        "table {table} of the export file has no column {column}, which the target table has; the schemas are not compatible"
    )]
    ColumnMissing { table: String, column: String },
    #[error(
        "table {table} of the export file has a column {column:?}, which the target table does not have; the schemas are not compatible"
    )]
    ColumnExtra { table: String, column: String },
    #[error(
        "table {table} of the target database has no usable row identity (its columns shadow rowid, _rowid_ and oid)"
    )]
    NoRowIdentity { table: String },
    #[error("reading table {table} of the target database failed")]
    Target {
        table: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("reading table {table} of the export file failed")]
    ReadExport {
        table: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("row {key} of table {table} could not be written ({message}); nothing was imported")]
    WriteRow {
        table: String,
        key: String,
        message: String,
    },
    #[error(
        "after the import, row {rowid} of table {table} would reference a missing row of table {parent}; nothing was imported"
    )]
    ForeignKey {
        table: String,
        rowid: String,
        parent: String,
    },
    #[error(
        "{count} row(s) conflict in a way --on-conflict overwrite cannot resolve, first {first}; nothing was imported (see --dry-run, or use rename or skip)"
    )]
    Blocked { count: usize, first: String },
    #[error("no free value was found for column {column} of table {table} (from {value:?})")]
    NoFreeValue {
        table: String,
        column: String,
        value: String,
    },
    #[error("the export database changed while it was imported (table {table}); nothing was imported")]
    ExportChanged { table: String },
    #[error("the import transaction on the target database failed; nothing was imported")]
    Transaction(#[source] rusqlite::Error),
    #[error("the database import was committed, but removing the replaced media files kept aside failed")]
    MediaCommit(#[source] MediaError),
    #[error("the import failed and undoing its media changes failed too; check the media directory")]
    MediaRollback(#[source] MediaError),
    #[error("the import was cancelled; nothing was imported")]
    Cancelled,
    #[error("the import journal {path} cannot be written")]
    Journal {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Everything an import needs besides the target connection.
#[derive(Clone, Copy, Debug)]
pub struct ImportRequest<'a> {
    /// The export's database, extracted into staging.
    pub export_db: &'a Path,
    /// The export's media files, extracted into staging.
    pub media: &'a [ImportedMedia],
    /// The parameters recorded in the export's manifest (untrusted; validated
    /// against `profile` here).
    pub params: &'a BTreeMap<String, String>,
    /// The target job's profile with the name the manifest gives. Never the
    /// profile inside the file: the target's config decides what may be imported.
    pub profile: &'a ExportProfile,
    /// The target job's media directories, in config order.
    pub media_roots: &'a [PathBuf],
    pub policy: ConflictPolicy,
}

/// Both halves of a plan and the report they make.
struct Planned {
    db: plan::DbPlan,
    media: MediaPlan,
    report: ImportReport,
}

fn plan_all(
    req: &ImportRequest<'_>,
    params: &ParamValues,
    export: &ExportDb,
    target: &Connection,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Planned, ImportError> {
    let db = plan::plan_db(
        export,
        target,
        req.profile,
        params,
        req.policy,
        cancelled,
        progress,
    )?;
    let media = media::plan_media_import(
        req.media,
        req.media_roots,
        req.profile,
        params,
        &db.param_fates,
        req.policy,
        cancelled,
    )?;
    let report = ImportReport {
        profile: req.profile.name.clone(),
        policy: req.policy,
        params: params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        tables: db.tables.iter().map(|t| t.report.clone()).collect(),
        param_fates: db.param_fates.clone(),
        media: media.report(),
        blocked: db.blocked.clone(),
    };
    Ok(Planned { db, media, report })
}

/// Plans the import and reports what it would do. Writes nothing: the target is
/// only read (in one read transaction when `target` is in autocommit mode).
pub fn dry_run(
    req: &ImportRequest<'_>,
    target: &Connection,
    cancelled: &dyn Fn() -> bool,
) -> Result<ImportReport, ImportError> {
    let params = ParamValues::new(
        req.profile,
        req.params.iter().map(|(k, v)| (k.clone(), v.clone())),
    )?;
    let export = ExportDb::open(req.export_db)?;
    let own_txn = target.is_autocommit();
    if own_txn {
        target
            .execute_batch("BEGIN DEFERRED")
            .map_err(ImportError::Transaction)?;
    }
    let result = plan_all(req, &params, &export, target, cancelled, &mut |_| {});
    if own_txn {
        let _ = target.execute_batch("ROLLBACK");
    }
    Ok(result?.report)
}

/// Imports for real: one transaction for the database, media written with the
/// same policy, both rolled back together on any failure — and, should the
/// process die midway, by [`journal::recover`] at the next start from the journal
/// written under `journal_at`. Returns the report (equal to a dry run's on the same
/// state). `progress` gets (steps done, steps) where a step is a row planned, a
/// row written, or a media file written.
pub fn run(
    req: &ImportRequest<'_>,
    target: &mut Connection,
    journal_at: &JournalTarget,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ImportReport, ImportError> {
    let params = ParamValues::new(
        req.profile,
        req.params.iter().map(|(k, v)| (k.clone(), v.clone())),
    )?;
    let export = ExportDb::open(req.export_db)?;
    let tx = target
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(ImportError::Transaction)?;
    // Cycles (and any insert order) are fine: references are checked at the end.
    tx.execute_batch("PRAGMA defer_foreign_keys = ON")
        .map_err(ImportError::Transaction)?;

    // Steps: every row planned, every row written, every media file written.
    let rows = export.total_rows();
    let files = req.media.len() as u64;
    let total = rows * 2 + files;
    let planned = plan_all(req, &params, &export, &tx, cancelled, &mut |n| {
        progress(n.min(rows), total)
    })?;
    if let Some(first) = planned.report.blocked.first() {
        return Err(ImportError::Blocked {
            count: planned.report.blocked.len(),
            first: first.clone(),
        });
    }
    progress(rows, total);

    let carried: Vec<String> = planned.db.ctxs.values().map(|c| c.name.clone()).collect();
    let relevant = apply::fk_relevant_tables(&tx, &carried)?;
    let violations_before = apply::fk_violations(&tx, &relevant)?;

    // The journal first (when files are written at all), then the files.
    let (steps, dirs) = media::planned_changes(&planned.media, req.media_roots, &journal_at.id)?;
    let mut journal = match steps.is_empty() {
        true => None,
        false => Some(Journal::begin(journal_at, &steps, &dirs)?),
    };
    let mut media_done = 0u64;
    let media_txn = media::apply_media(
        &planned.media,
        req.media_roots,
        &journal_at.id,
        cancelled,
        &mut |_, _| {
            media_done += 1;
            progress(rows + media_done.min(files), total);
        },
    )
    .map_err(|e| {
        if matches!(e, MediaError::Rollback { .. })
            && let Some(j) = journal.as_mut()
        {
            j.keep();
        }
        ImportError::Media(e)
    })?;

    let mut probes = ProbeRecorder::default();
    let written = apply::apply_db(
        &export,
        &tx,
        &planned.db,
        cancelled,
        &mut |n| progress(rows + files + n, total),
        &mut |ctx, row, pos| probes.before_write(&tx, ctx, row, pos),
    )
    .and_then(|()| check_references(&tx, &relevant, &violations_before))
    .and_then(|()| match cancelled() {
        true => Err(ImportError::Cancelled),
        false => Ok(()),
    })
    .and_then(|()| match journal.as_mut() {
        Some(j) => j.committing(probes.choose(&tx)?, probes.wrote),
        None => Ok(()),
    });
    if let Err(e) = written.and_then(|()| tx.commit().map_err(ImportError::Transaction)) {
        return Err(match media_txn.rollback() {
            Ok(()) => e,
            Err(m) => {
                if let Some(j) = journal.as_mut() {
                    j.keep();
                }
                ImportError::MediaRollback(m)
            }
        });
    }
    commit_media(media_txn, journal)?;
    progress(total, total);
    Ok(planned.report)
}

/// Refuses a state in which a reference points at a missing row that did not
/// before the import.
fn check_references(
    tx: &Connection,
    relevant: &[String],
    before: &std::collections::BTreeSet<apply::Violation>,
) -> Result<(), ImportError> {
    let after = apply::fk_violations(tx, relevant)?;
    match after.difference(before).next() {
        Some((table, rowid, parent, _)) => Err(ImportError::ForeignKey {
            table: table.clone(),
            rowid: rowid.map_or_else(|| "(without rowid)".to_owned(), |r| r.to_string()),
            parent: parent.clone(),
        }),
        None => Ok(()),
    }
}

/// After the database committed: the journal says so, then the originals set
/// aside are removed, then the journal goes. A journal that cannot be updated is
/// no reason to fail (its `committing` probe tells start-up the same).
fn commit_media(media_txn: media::MediaTxn, journal: Option<Journal>) -> Result<(), ImportError> {
    let mut journal = journal;
    if let Some(j) = journal.as_mut()
        && let Err(e) = j.committed()
    {
        tracing::warn!("cannot mark the import journal committed: {e}");
    }
    if let Err(e) = media_txn.commit() {
        // The database holds the import; start-up removes the originals left.
        if let Some(j) = journal.as_mut() {
            j.keep();
        }
        return Err(ImportError::MediaCommit(e));
    }
    Ok(())
}
