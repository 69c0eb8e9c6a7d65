//! Cataloguing an uploaded archive.
//!
//! The archive was received into the backup directory (`LocalStore::upload_partial`).
//! It is verified as `verify --deep` does — every entry against its own manifest, then
//! SQLite's integrity and foreign-key checks on the database — and filed under its
//! manifest's job, or under another configured job when asked (the sidecar records
//! that). Until the catalog has its row, any failure removes what was written: never
//! a file the catalog does not list.
//!
//! An age-encrypted upload (told by its first bytes) is accepted when the daemon can
//! decrypt it: the identity files of the configured jobs are tried (the job named with
//! `--job` first), and the archive is then verified like any other, decrypting as it
//! streams. It is stored as `<id>.tar.zst.age`, still encrypted; its sidecar lists the
//! fingerprints of our keys it was encrypted to (age's header names no X25519
//! recipient, so those are all that can be known).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use chrono::Utc;

use super::Ctx;
use super::verify::{Stage, extract_checked};
use crate::archive::ArchiveError;
use crate::archive::crypt::{self, AGE_MAGIC, CryptError, Identities};
use crate::catalog::BackupRecord;
use crate::error::Error;
use crate::fsutil::{self, Cleanup};
use crate::manifest::{ArchiveKind, Encryption, Sidecar};

/// The start of every error about an upload.
const REJECTED: &str = "the uploaded archive was rejected";
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
    let (keys, recipients) = upload_keys(ctx, partial, job)?;
    let stage = Stage::new(ctx, &format!("upload-{name}"))?;
    let size = std::fs::metadata(partial)
        .map_err(Error::io("cannot read the upload", partial))?
        .len();
    // The database is the only entry written; everything else is hashed only.
    let (manifest, size, sha256) = extract_checked(
        ctx,
        partial,
        keys,
        None,
        &stage.database_only(),
        REJECTED,
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
    let paths = ctx.store.paths_for(job, &manifest.id, keys.is_some());
    let sidecar = Sidecar {
        manifest,
        size,
        sha256,
        note: "uploaded".into(),
        protected: false,
        duration_ms: 0,
        filed_under,
        encryption: keys.map(|_| Encryption::age(recipients)),
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

/// For an age-encrypted upload: the identities of a configured job that decrypt it
/// (`job`'s first) and the fingerprints of their keys it was encrypted to; `(None, [])`
/// for a plain archive. Refuses, in the sentence of the age layer, when no identity
/// file here can decrypt it.
fn upload_keys<'c>(
    ctx: &Ctx<'c>,
    partial: &Path,
    job: Option<&str>,
) -> Result<(Option<&'c Identities>, Vec<String>), Error> {
    let open = || File::open(partial).map_err(Error::io("cannot read the upload", partial));
    let mut head = Vec::with_capacity(AGE_MAGIC.len());
    open()?
        .take(AGE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(Error::io("cannot read the upload", partial))?;
    if !crypt::is_age_file(&head) {
        return Ok((None, Vec::new()));
    }
    let rejected = |e: CryptError| Error::Archive {
        context: REJECTED.into(),
        source: ArchiveError::from(e),
    };
    let config: &'c crate::config::Config = ctx.config;
    let mut jobs: Vec<_> = config.jobs.iter().collect();
    jobs.sort_by_key(|j| Some(j.name.as_str()) != job);
    let mut candidates: Vec<&'c Identities> = Vec::new();
    for j in jobs {
        let Some(ids) = j.encryption.as_ref().and_then(|e| e.identities.as_deref()) else {
            continue;
        };
        if !candidates.iter().any(|c| c.path() == ids.path()) {
            candidates.push(ids);
        }
    }
    for ids in &candidates {
        let found = crypt::matching_fingerprints(open()?, ids).map_err(rejected)?;
        if !found.is_empty() {
            return Ok((Some(ids), found));
        }
    }
    let recipients = crypt::describe_header(open()?).map_err(rejected)?;
    Err(Error::from(match candidates.first() {
        None => CryptError::NoIdentity { recipients },
        Some(ids) => CryptError::NoMatchingIdentity {
            path: ids.path().to_owned(),
            recipients,
        },
    }))
}
