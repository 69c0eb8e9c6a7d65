//! A selective import: an export file's rows and files into a job.
//!
//! [`import`] reads the received file in one pass of the verifying reader (the
//! hostile-archive rules of an upload: no `..`, no absolute paths, no links or
//! devices, every entry listed with its sha256, nothing after the manifest),
//! extracting into the run's staging directory; refuses a file that is not an
//! export, or holds symbolic links; looks up the *target job's* profile of the name
//! the file gives (the trust anchor: the file's own profile is only a record) and
//! plans the import with it ([`crate::selective::import`]). A dry run stops there
//! and returns the report. A real import first plans once outside any transaction
//! (so a file that cannot be imported is refused before anything is written), then
//! takes a pinned safety backup (note `pre-import`), then imports: one transaction
//! for the database, the media under a journal in `<state-dir>/import-journal`
//! that [`recover`] replays at start-up after a crash.
//!
//! SQLite jobs only for now.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::Ctx;
use super::backup;
use super::export::{profile, sqlite_source};
use crate::archive::{self, Layout};
use crate::error::Error;
use crate::manifest::{ArchiveKind, EntryKind, Manifest};
use crate::run::{Event, Phase, Progress};
use crate::selective::ConflictPolicy;
use crate::selective::import::{self as selective_import, ImportReport, ImportRequest, JournalTarget};
use crate::selective::media::ImportedMedia;
use crate::selective::sql::display_name;
use crate::source::SourceError;

/// Where import journals live, under the state dir.
const JOURNAL_DIR: &str = "import-journal";

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone)]
pub struct Imported {
    pub job: String,
    pub dry_run: bool,
    pub safety_backup_id: Option<String>,
    pub report: ImportReport,
}

/// Parses `--on-conflict`.
pub fn parse_policy(text: &str) -> Result<ConflictPolicy, Error> {
    text.parse().map_err(Error::InvalidArgument)
}

/// Imports the export file at `file` (received into the run's staging directory
/// `stage`) into job `job` (see the module doc).
pub fn import(
    ctx: &Ctx,
    job_name: &str,
    file: &Path,
    stage: &Path,
    policy: ConflictPolicy,
    dry_run: bool,
    progress: Progress<'_>,
) -> Result<Imported, Error> {
    let job = ctx.job(job_name)?;
    let sqlite = sqlite_source(job, "import")?;
    let (manifest, export_db, media) = extract(ctx, file, stage, job.media.len(), progress)?;
    let Some(info) = &manifest.export else {
        return Err(not_an_export());
    };
    let profile = profile(job, &info.profile.name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "job '{}' has no export profile '{}', which the file was exported with; an import uses the target job's own profile of that name, so add it to the job's [[job.export]] profiles",
            job.name,
            display_name(&info.profile.name)
        ))
    })?;
    let req = ImportRequest {
        export_db: &export_db,
        media: &media,
        params: &info.params,
        profile,
        media_roots: &job.media,
        policy,
    };
    let mut target = open_target(&sqlite.path, sqlite.busy_timeout)?;
    progress(Event::new(
        Phase::Import,
        format!("planning the import with --on-conflict {policy}"),
    ));
    let cancelled = || ctx.cancel.is_cancelled();
    let planned = selective_import::dry_run(&req, &target, &cancelled).map_err(cancel_or)?;
    if dry_run {
        return Ok(Imported {
            job: job.name.clone(),
            dry_run,
            safety_backup_id: None,
            report: planned,
        });
    }
    if let Some(first) = planned.blocked.first() {
        return Err(selective_import::ImportError::Blocked {
            count: planned.blocked.len(),
            first: first.clone(),
        }
        .into());
    }
    progress(Event::new(Phase::Safety, "safety backup of the current state"));
    let safety = backup::take(ctx, job, "pre-import", true, progress)
        .map_err(|e| Error::ImportSafetyBackup(Box::new(e)))?;
    let journal = JournalTarget {
        dir: ctx.config.daemon.state_dir.join(JOURNAL_DIR),
        id: format!("{}-{}", safety.id, std::process::id()),
        database: sqlite.path.clone(),
    };
    progress(Event::new(Phase::Import, "importing"));
    let report = selective_import::run(&req, &mut target, &journal, &cancelled, &mut |done, total| {
        progress(Event {
            phase: Phase::Import,
            done,
            total,
            message: "steps".into(),
        })
    })
    .map_err(cancel_or)?;
    Ok(Imported {
        job: job.name.clone(),
        dry_run,
        safety_backup_id: Some(safety.id),
        report,
    })
}

fn cancel_or(e: selective_import::ImportError) -> Error {
    match e {
        selective_import::ImportError::Cancelled => Error::Cancelled,
        e => e.into(),
    }
}

fn not_an_export() -> Error {
    Error::InvalidArgument(
        "the file is a backup, not an export file; restore a backup with `cofferctl upload` and `cofferctl restore`"
            .into(),
    )
}

/// Reads and verifies the export file, extracting its database and the media of
/// the job's `roots` media directories into `stage`. Returns the manifest, the
/// extracted database and the media files as the manifest lists them.
fn extract(
    ctx: &Ctx,
    file: &Path,
    stage: &Path,
    roots: usize,
    progress: Progress<'_>,
) -> Result<(Manifest, PathBuf, Vec<ImportedMedia>), Error> {
    let export_db = stage.join("db").join("export.db");
    let media_dir = |n: usize| stage.join("media").join(n.to_string());
    let layout = Layout {
        db: Some(export_db.clone()),
        media: (0..roots).map(|n| Some(media_dir(n))).collect(),
    };
    progress(Event::new(Phase::Verify, "verifying the export file"));
    let total = std::fs::metadata(file).map_or(0, |m| m.len());
    let mut report = |done| progress(Event::bytes(Phase::Verify, done, total.max(done)));
    let mut extractor = archive::Extractor::new(&layout);
    let (manifest, _, _) = archive::read_archive(file, None, &mut extractor, &mut report, &|| {
        ctx.cancel.is_cancelled()
    })
    .and_then(|read| extractor.finish().map(|()| read))
    .map_err(Error::archive("the export file was rejected"))?;
    if manifest.kind != ArchiveKind::Export || manifest.export.is_none() {
        return Err(not_an_export());
    }
    if let Some(link) = manifest.entries.iter().find(|e| e.kind == EntryKind::Symlink) {
        return Err(Error::Archive {
            context: "the export file was rejected".into(),
            source: archive::ArchiveError::Invalid(format!(
                "it holds the symbolic link '{}', which an export never does",
                link.path.escape_debug()
            )),
        });
    }
    let mut media = Vec::new();
    for e in manifest.entries.iter().filter(|e| e.kind == EntryKind::File) {
        // Manifest paths are escaped; the names on disk are their bytes.
        let bytes = crate::manifest::unescape(&e.path).map_err(|m| Error::Archive {
            context: "the export file was rejected".into(),
            source: archive::ArchiveError::Invalid(m),
        })?;
        let Some(rest) = bytes.strip_prefix(b"media/") else {
            continue;
        };
        let Some(slash) = rest.iter().position(|&b| b == b'/') else {
            continue;
        };
        let Some(root) = std::str::from_utf8(&rest[..slash])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&rest[slash + 1..]));
        media.push(ImportedMedia {
            root,
            staged: media_dir(root).join(&rel),
            rel,
        });
    }
    Ok((manifest, export_db, media))
}

/// The target database, opened for the import (never created).
fn open_target(path: &Path, busy_timeout: std::time::Duration) -> Result<Connection, Error> {
    if !path.exists() {
        return Err(SourceError::Missing {
            path: path.to_owned(),
        }
        .into());
    }
    let err = |e| Error::Source(SourceError::from_sqlite(path, busy_timeout, e));
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(busy_timeout).map_err(err)?;
    // References are checked before the commit (deferred within the transaction).
    conn.execute_batch("PRAGMA foreign_keys = ON").map_err(err)?;
    Ok(conn)
}

/// Undoes or finishes the media changes of imports a crash interrupted (see
/// [`crate::selective::import::journal`]). Run at start-up.
pub fn recover(state_dir: &Path) -> std::io::Result<Vec<String>> {
    selective_import::journal::recover(&state_dir.join(JOURNAL_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::export::{ExportRequest, export};
    use crate::ops::testing::TestCtx;

    const PROFILE: &str = "[[job.export]]\nname = \"all\"\n[job.export.tables]\nt = \"1\"\n";

    fn setup() -> (tempfile::TempDir, TestCtx) {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("app.db");
        crate::source::sqlite::test_db::make_db(&db, true);
        let t = TestCtx::new(&db, &[], PROFILE);
        (src, t)
    }

    fn stage(ctx: &Ctx, name: &str) -> PathBuf {
        let dir = ctx.store.staging_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_dry_run_and_a_real_import_agree_and_a_real_one_is_backed_up_first() {
        let (_src, t) = setup();
        let ctx = t.ctx();
        let req = ExportRequest {
            job: "app".into(),
            profile: "all".into(),
            params: Vec::new(),
        };
        let exported = export(&ctx, &req, &mut |_| {}).unwrap();
        let conn = Connection::open(&ctx.job("app").unwrap().sqlite().unwrap().path).unwrap();
        conn.execute_batch("UPDATE t SET v = 'changed' WHERE id = 1")
            .unwrap();
        drop(conn);
        let dir = stage(&ctx, "import-a");
        let dry = import(
            &ctx,
            "app",
            &exported.path,
            &dir,
            ConflictPolicy::Overwrite,
            true,
            &mut |_| {},
        )
        .unwrap();
        assert!(dry.safety_backup_id.is_none());
        assert!(ctx.catalog.list_backups(None).unwrap().is_empty());
        let dir = stage(&ctx, "import-b");
        let real = import(
            &ctx,
            "app",
            &exported.path,
            &dir,
            ConflictPolicy::Overwrite,
            false,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(dry.report, real.report);
        assert_eq!(real.report.tables[0].overwritten, 1);
        let backups = ctx.catalog.list_backups(Some("app")).unwrap();
        assert_eq!(backups.len(), 1);
        assert!(backups[0].protected && backups[0].note == "pre-import");
        assert_eq!(Some(backups[0].id.clone()), real.safety_backup_id);
    }

    #[test]
    fn a_backup_is_not_an_export_file() {
        let (_src, t) = setup();
        let ctx = t.ctx();
        let record = backup::take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap();
        let archive = ctx.store.paths("app", &record.id).archive;
        let dir = stage(&ctx, "import-c");
        let err = import(
            &ctx,
            "app",
            &archive,
            &dir,
            ConflictPolicy::Skip,
            true,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the file is a backup, not an export file"),
            "{err}"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::Invalid);
    }
}
