//! Cataloguing an uploaded archive.
//!
//! The archive was received into the backup directory (`LocalStore::upload_partial`).
//! It is verified as `verify --deep` does — every entry against its own manifest, then
//! SQLite's integrity and foreign-key checks on the database — and filed under its
//! manifest's job, or under another configured job when asked (the sidecar records
//! that). Until the catalog has its row, any failure removes what was written: never
//! a file the catalog does not list.

use std::path::Path;

use chrono::Utc;

use super::Ctx;
use super::verify::{Stage, extract_checked};
use crate::catalog::BackupRecord;
use crate::error::Error;
use crate::fsutil::{self, Cleanup};
use crate::manifest::{ArchiveKind, Sidecar};
use crate::run::{Phase, Progress};

/// Verifies and catalogues the upload at `partial` (see the module doc).
pub fn catalog_upload(
    ctx: &Ctx,
    partial: &Path,
    job: Option<&str>,
    progress: Progress<'_>,
) -> Result<BackupRecord, Error> {
    let mut cleanup = Cleanup::new();
    cleanup.add(partial);
    let name = partial
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stage = Stage::new(ctx, &format!("upload-{name}"))?;
    let size = std::fs::metadata(partial)
        .map_err(Error::io("cannot read the upload", partial))?
        .len();
    // The database is the only entry written; everything else is hashed only.
    let (manifest, size, sha256) = extract_checked(
        ctx,
        partial,
        None,
        &stage.database_only(),
        "the uploaded archive was rejected",
        Phase::Verify,
        size,
        progress,
    )?;
    if manifest.kind == ArchiveKind::Export {
        return Err(Error::InvalidArgument(
            "the uploaded archive is an export file, not a backup; import it with `cofferctl import FILE --job JOB`"
                .into(),
        ));
    }
    let filed_under = job.filter(|j| *j != manifest.job).map(str::to_owned);
    let job = filed_under.as_deref().unwrap_or(&manifest.job);
    if ctx.config.job(job).is_none() {
        return Err(Error::InvalidArgument(match &filed_under {
            Some(job) => format!("there is no job named '{job}' to file the upload under"),
            None => format!(
                "the uploaded archive belongs to job '{job}', which is not configured here; name a configured job with --job"
            ),
        }));
    }
    if ctx.catalog.id_exists(&manifest.id)? {
        return Err(Error::AlreadyExists(manifest.id));
    }
    let paths = ctx.store.paths(job, &manifest.id);
    let sidecar = Sidecar {
        manifest,
        size,
        sha256,
        note: "uploaded".into(),
        protected: false,
        duration_ms: 0,
        filed_under,
    };
    ctx.store.write_sidecar(&paths, &sidecar)?;
    cleanup.add(&paths.sidecar);
    fsutil::commit_partial(partial, &paths.archive)
        .map_err(Error::io("cannot move the upload into place", &paths.archive))?;
    // Until the catalog has the row, a failure (a full disk) removes archive and
    // sidecar again.
    cleanup.add(&paths.archive);
    ctx.catalog.insert_backup(&sidecar)?;
    cleanup.keep(&paths.sidecar);
    cleanup.keep(&paths.archive);
    // The upload is catalogued; not recording its verification only costs the date.
    if let Err(e) = ctx
        .catalog
        .set_verified(&sidecar.manifest.id, Utc::now().timestamp(), "ok")
    {
        tracing::warn!(id = sidecar.manifest.id, error = %e, "cannot record the upload's verification");
    }
    tracing::info!(id = sidecar.manifest.id, size, "uploaded backup catalogued");
    ctx.get(&sidecar.manifest.id)
}
