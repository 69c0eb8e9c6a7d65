//! A selective export: one `[[job.export]]` profile's rows and files, as a file.
//!
//! [`export`] takes one consistent snapshot as a backup does (`VACUUM INTO` a copy
//! in the run's staging directory, `quick_check`), selects the profile's rows from
//! the copy (parameters bound, never spliced; with `follow-foreign-keys` the parent
//! rows too) into a new SQLite database with the source's schema for those tables,
//! selects the media files the profile's globs name for the parameters (walked after
//! the snapshot point, symlinks never followed), and packs both into a `.tar.zst`
//! with the archive writer: `db/<name>`, `media/<n>/...` and a format-version 2
//! manifest of kind `export` with the profile, the parameters and the rows per
//! table. The file stays in staging, owned by the returned [`Exported`], until the
//! API has streamed it to the client; exports are not catalogued and not retained.
//!
//! SQLite jobs only for now; other sources say so in one sentence.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use coffer_common::ids;
use rusqlite::{Connection, OpenFlags};

use super::Ctx;
use super::verify::Stage;
use crate::archive::ArchiveWriter;
use crate::config::{JobConfig, SqliteConfig};
use crate::error::Error;
use crate::manifest::{ArchiveKind, ExportInfo, FORMAT_VERSION, Manifest, SourceInfo, Totals};
use crate::run::{Event, Phase, Progress};
use crate::selective::media::{SelectedMedia, select_media};
use crate::selective::profile::{ExportProfile, ParamValues};
use crate::selective::select::{ExportSummary, export_database};
use crate::selective::{ExportError, sql};
use crate::source::{self, SourceError, sqlite};

/// Numbers concurrent exports' staging directories.
static EXPORTS: AtomicU64 = AtomicU64::new(0);

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub job: String,
    pub profile: String,
    /// `--param name=value` pairs, in the order given.
    pub params: Vec<(String, String)>,
}

/// A finished export file in staging; removed when dropped (after streaming).
pub struct Exported {
    pub id: String,
    pub job: String,
    pub profile: String,
    pub params: BTreeMap<String, String>,
    pub summary: ExportSummary,
    pub media_files: u64,
    pub media_bytes: u64,
    pub media_skipped: u64,
    /// The export file.
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    _stage: Stage,
}

/// The SQLite source of a job, or why selective export and import cannot work on it.
pub fn sqlite_source<'a>(job: &'a JobConfig, what: &str) -> Result<&'a SqliteConfig, Error> {
    job.sqlite().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "selective {what} is not available yet for job '{}': it supports SQLite jobs only so far, and PostgreSQL and MariaDB jobs may follow",
            job.name
        ))
    })
}

/// The job's export profile `name`.
pub fn profile<'a>(job: &'a JobConfig, name: &str) -> Option<&'a ExportProfile> {
    job.exports.iter().find(|p| p.name == name)
}

/// Runs an export (see the module doc).
pub fn export(ctx: &Ctx, req: &ExportRequest, progress: Progress<'_>) -> Result<Exported, Error> {
    let job = ctx.job(&req.job)?;
    let sqlite = sqlite_source(job, "export")?;
    let profile = profile(job, &req.profile).ok_or_else(|| {
        let known: Vec<&str> = job.exports.iter().map(|p| p.name.as_str()).collect();
        Error::InvalidArgument(format!(
            "job '{}' has no export profile '{}' (configured: {})",
            job.name,
            sql::display_name(&req.profile),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })?;
    let params = ParamValues::new(profile, req.params.iter().cloned()).map_err(ExportError::from)?;
    let created = Utc::now();
    let id = ids::backup_id(&job.name, created, 1);
    let n = EXPORTS.fetch_add(1, Ordering::Relaxed);
    let stage = Stage::new(ctx, &format!("export-{id}-{n}"))?;
    let estimate = source::for_job(job).estimate();
    // The copy, and an export database and archive no larger than it.
    ctx.store.check_space(
        &job.name,
        job.min_free_space,
        &[(&stage.dir, estimate.staging * 3)],
    )?;

    progress(Event::new(
        Phase::Snapshot,
        format!("snapshot of {}", sqlite.path.display()),
    ));
    let copy = stage.dir.join("snapshot.db");
    let info = sqlite::vacuum_into(
        &sqlite.path,
        &copy,
        sqlite.busy_timeout,
        ctx.cancel,
        &sqlite::Started::default(),
    )?;
    sqlite::check(&copy, false)?;

    let db_name = sqlite
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app.db".into());
    let export_db = stage.dir.join("export.db");
    let summary = select_rows(ctx, &copy, profile, &params, &export_db, progress)?;
    let _ = std::fs::remove_file(&copy);

    progress(Event::new(Phase::Media, "selecting media files"));
    let selection = select_media(&job.media, profile, &params, &|| ctx.cancel.is_cancelled())
        .map_err(ExportError::from)?;
    let media_bytes: u64 = selection.files.iter().map(|f| f.size).sum();
    ctx.store
        .check_space(&job.name, job.min_free_space, &[(&stage.dir, media_bytes)])?;

    let export_info = ExportInfo {
        profile: profile.raw.clone(),
        params: params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        rows: summary.rows.clone(),
        followed: summary.followed.clone(),
        dangling_references: summary.dangling_references,
    };
    let manifest = export_manifest(ctx, job, &id, created, info, export_info);
    let path = stage.dir.join("export.tar.zst");
    let packed = pack(
        ctx,
        job,
        &path,
        (&export_db, &db_name),
        &selection.files,
        manifest,
        progress,
    )?;
    Ok(Exported {
        id,
        job: job.name.clone(),
        profile: profile.name.clone(),
        params: params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        summary,
        media_files: packed.files,
        media_bytes: packed.bytes,
        media_skipped: selection.skipped + packed.skipped,
        path,
        size: packed.size,
        sha256: packed.sha256,
        _stage: stage,
    })
}

/// The manifest of an export (entries and totals are filled in by the writer).
fn export_manifest(
    ctx: &Ctx,
    job: &JobConfig,
    id: &str,
    created: chrono::DateTime<Utc>,
    info: crate::manifest::SqliteInfo,
    export: ExportInfo,
) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        kind: ArchiveKind::Export,
        id: id.to_owned(),
        job: job.name.clone(),
        created_at: created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        coffer_version: coffer_common::VERSION.to_owned(),
        hostname: ctx.host.hostname.clone(),
        source: SourceInfo::Sqlite(info),
        media_roots: job.media.iter().map(|p| p.display().to_string()).collect(),
        entries: Vec::new(),
        skipped: Vec::new(),
        totals: Totals::default(),
        export: Some(export),
    }
}

/// Selects the profile's rows from the snapshot copy into `out`.
fn select_rows(
    ctx: &Ctx,
    copy: &Path,
    profile: &ExportProfile,
    params: &ParamValues,
    out: &Path,
    progress: Progress<'_>,
) -> Result<ExportSummary, Error> {
    progress(Event::new(
        Phase::Export,
        format!("selecting the rows of export profile {}", profile.name),
    ));
    let src = Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| SourceError::from_sqlite(copy, std::time::Duration::ZERO, e))?;
    let mut last = 0;
    let summary = export_database(
        &src,
        profile,
        params,
        out,
        &|| ctx.cancel.is_cancelled(),
        &mut |done, total| {
            // Rows, not bytes: reported every 1024 rows and at the end.
            if done >= last + 1024 || (done == total && done != last) {
                last = done;
                progress(Event {
                    phase: Phase::Export,
                    done,
                    total,
                    message: "rows".into(),
                });
            }
        },
    )
    .map_err(|e| match e {
        crate::selective::select::SelectError::Cancelled => Error::Cancelled,
        e => ExportError::from(e).into(),
    })?;
    Ok(summary)
}

/// What [`pack`] wrote.
struct Packed {
    files: u64,
    bytes: u64,
    skipped: u64,
    size: u64,
    sha256: String,
}

/// Writes the export file: the database, the media files, the manifest.
fn pack(
    ctx: &Ctx,
    job: &JobConfig,
    path: &Path,
    (db, db_name): (&Path, &str),
    files: &[SelectedMedia],
    manifest: Manifest,
    progress: Progress<'_>,
) -> Result<Packed, Error> {
    let context = || format!("cannot write the export file {}", path.display());
    let file = File::create_new(path).map_err(Error::io("cannot create the export file", path))?;
    let mut writer = ArchiveWriter::new(file, job.compression_level, ctx.host.workers, ctx.cancel.clone())
        .map_err(Error::archive(context()))?;
    let db_meta = std::fs::metadata(db).map_err(Error::io("cannot read", db))?;
    let total = db_meta.len() + files.iter().map(|f| f.size).sum::<u64>();
    let mut done = 0u64;
    let mut reported = 0u64;
    let mut tick = |n: u64| {
        done += n;
        if done - reported >= 8 << 20 || done == total {
            reported = done;
            progress(Event::bytes(Phase::Archive, done, total.max(done)));
        }
    };
    writer
        .add_file(format!("db/{db_name}").as_bytes(), db, &db_meta, &mut tick)
        .map_err(Error::archive(context()))?;
    let mut packed = Packed {
        files: 0,
        bytes: 0,
        skipped: 0,
        size: 0,
        sha256: String::new(),
    };
    for f in files {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let Some(root) = job.media.get(f.root) else {
            continue;
        };
        let full = root.join(&f.rel);
        // Never through a link: the file was a regular file when selected, and
        // must still be one (O_NOFOLLOW, then fstat).
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&full)
            .and_then(|file| file.metadata().map(|m| (file, m)));
        let (mut file, meta) = match opened {
            Ok((file, meta)) if meta.is_file() => (file, meta),
            _ => {
                tracing::warn!(job = job.name, path = %full.display(), "not exported: no longer a regular file");
                packed.skipped += 1;
                continue;
            }
        };
        // Names go into the archive byte for byte (the manifest escapes what is not
        // UTF-8), as in a backup.
        let mut path = format!("media/{}/", f.root).into_bytes();
        path.extend_from_slice(f.rel.as_os_str().as_bytes());
        writer
            .add_stream(&path, &mut file, meta.len(), &meta, &mut tick)
            .map_err(Error::archive(context()))?;
        packed.files += 1;
        packed.bytes += meta.len();
    }
    writer.count_left_out(packed.skipped, 0);
    let finished = writer.finish(manifest).map_err(Error::archive(context()))?;
    packed.size = finished.size;
    // A writer that nothing follows always hashes what it writes.
    packed.sha256 = finished
        .sha256
        .ok_or_else(|| Error::Internal("the export's archive was not hashed".into()))?;
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{HashOnly, read_archive};
    use crate::ops::testing::TestCtx;

    const PROFILE: &str = r#"
[[job.export]]
name = "notes"
params = ["owner"]
[job.export.tables]
t = "v = :owner"
[job.export.media]
include = ["{owner}/**"]
"#;

    fn setup() -> (tempfile::TempDir, TestCtx) {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("app.db");
        crate::source::sqlite::test_db::make_db(&db, true);
        let media = src.path().join("media");
        std::fs::create_dir_all(media.join("a/sub")).unwrap();
        std::fs::create_dir_all(media.join("b")).unwrap();
        std::fs::write(media.join("a/sub/x.txt"), b"x").unwrap();
        std::fs::write(media.join("b/y.txt"), b"y").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", media.join("a/link")).unwrap();
        let t = TestCtx::new(&db, &[media], PROFILE);
        (src, t)
    }

    fn request(params: &[(&str, &str)]) -> ExportRequest {
        ExportRequest {
            job: "app".into(),
            profile: "notes".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_export_holds_the_selected_rows_and_files_and_reads_back_verified() {
        let (_src, t) = setup();
        let ctx = t.ctx();
        let mut phases = Vec::new();
        let exported = export(&ctx, &request(&[("owner", "a")]), &mut |e: Event| {
            phases.push(e.phase)
        })
        .unwrap();
        assert_eq!(exported.summary.rows, BTreeMap::from([("t".to_owned(), 1)]));
        assert_eq!((exported.media_files, exported.media_skipped), (1, 1));
        let (manifest, size, sha256) =
            read_archive(&exported.path, None, &mut HashOnly, &mut |_| {}, &|| false).unwrap();
        assert_eq!((size, sha256.as_str()), (exported.size, exported.sha256.as_str()));
        assert_eq!(manifest.kind, ArchiveKind::Export);
        let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["db/app.db", "media/0/a/sub/x.txt"]);
        let info = manifest.export.unwrap();
        assert_eq!(info.params["owner"], "a");
        assert_eq!(info.profile.name, "notes");
        for p in [Phase::Snapshot, Phase::Export, Phase::Media, Phase::Archive] {
            assert!(phases.contains(&p), "{p:?} in {phases:?}");
        }
        let stage = exported.path.parent().unwrap().to_owned();
        drop(exported);
        assert!(!stage.exists(), "staging is removed with the export");
    }

    #[test]
    fn bad_requests_are_one_sentence_and_leave_nothing() {
        let (_src, t) = setup();
        let ctx = t.ctx();
        let err = |req: ExportRequest| export(&ctx, &req, &mut |_| {}).err().unwrap();
        let e = err(ExportRequest {
            profile: "nope".into(),
            ..request(&[("owner", "a")])
        });
        assert_eq!(
            e.to_string(),
            "job 'app' has no export profile 'nope' (configured: notes)"
        );
        assert_eq!(e.kind(), crate::error::ErrorKind::Invalid);
        let e = err(request(&[]));
        assert!(e.to_string().contains("needs parameter owner"), "{e}");
        let e = err(request(&[("owner", "../x")]));
        assert!(e.to_string().contains("'..'"), "{e}");
        assert_eq!(std::fs::read_dir(ctx.store.staging_dir()).unwrap().count(), 0);
    }
}
