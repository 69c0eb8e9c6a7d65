//! Verification of catalogued backups, and the one "extract, then check the
//! database" step that deep verification, uploads and restores share.
//!
//! Shallow: the archive's size and sha256 against its sidecar, every entry against the
//! manifest, in one streaming pass ([`crate::archive::read_archive`]). Deep: the same
//! pass writes the database to staging, then the checks of its kind run on it
//! ([`crate::source::check_copy`]): SQLite's `integrity_check` and
//! `foreign_key_check`; for a dump its validation (`pg_restore --list`, the MariaDB
//! trailer) and then a restore into the scratch database `<db>__coffer_verify` on the
//! job's server, checked with `pg_amcheck` / `mariadb-check` where available and
//! dropped again. The verdict ("ok" or the error sentence) is recorded in the
//! catalog, and failures are counted for metrics.
//!
//! Encrypted backups: the pass decrypts as it streams when the job's `identity-file`
//! holds a recipient's key ([`keys`]). Without one, shallow verification checks what
//! can be checked without the plaintext — the ciphertext's size and sha256 against the
//! sidecar — and says so ([`Verified::ciphertext_only`]); deep verification (and
//! everything else that needs the plaintext: restore, upload, rekey, drills) is
//! refused with the sentence saying how to provide a key. A deep verification writes
//! the decrypted database into staging for SQLite's checks and removes it after.

use std::path::Path;

use chrono::Utc;

use super::Ctx;
use crate::archive::crypt::{self, Identities};
use crate::archive::{self, Expected, Extractor, HashOnly, Layout};
use crate::catalog::BackupRecord;
use crate::error::Error;
use crate::fsutil::{self, Cleanup};
use crate::manifest::{Manifest, Sidecar, SourceInfo};
use crate::run::{Event, Phase, Progress};
use crate::source::{self, dump::Scratch};

/// The outcome of a verification.
#[derive(Debug, Clone)]
pub struct Verified {
    pub id: String,
    pub entries: u64,
    pub deep: bool,
    /// An encrypted archive checked without a key: its size and sha256 only.
    pub ciphertext_only: bool,
}

/// The keys that read a backup with `sidecar`, filed under `job`: `None` for a plain
/// archive (it needs none); for an encrypted one the job's identities if they hold a
/// recipient's key, else the sentence saying how to provide one.
pub fn keys<'c>(ctx: &Ctx<'c>, job: &str, sidecar: &Sidecar) -> Result<Option<&'c Identities>, Error> {
    keys_for(ctx, job, sidecar.recipients())
}

/// [`keys`] for an archive encrypted to `recipients` (empty: a plain archive).
pub fn keys_for<'c>(
    ctx: &Ctx<'c>,
    job: &str,
    recipients: &[String],
) -> Result<Option<&'c Identities>, Error> {
    if recipients.is_empty() {
        return Ok(None);
    }
    let identities = ctx
        .config
        .job(job)
        .and_then(|j| j.encryption.as_ref())
        .and_then(|e| e.identities.as_deref());
    Ok(Some(crypt::require_identity(identities, recipients)?))
}

/// The full sidecar of a backup read from a store: as it is, or — for an encrypted
/// backup's redacted sidecar — completed with the manifest read (and every entry
/// checked) from its archive at `archive`, which needs the job's identity.
pub fn complete_sidecar(
    ctx: &Ctx,
    job: &str,
    sidecar: crate::manifest::redacted::AnySidecar,
    archive: &std::path::Path,
    context: &str,
) -> Result<Sidecar, Error> {
    use crate::manifest::redacted::AnySidecar;
    match sidecar {
        AnySidecar::Full(sidecar) => Ok(*sidecar),
        AnySidecar::Redacted(redacted) => {
            let keys = keys_for(ctx, job, &redacted.encryption.recipients)?;
            let (manifest, _, _) =
                archive::read_archive_keyed(archive, keys, None, &mut HashOnly, &mut |_| {}, &|| {
                    ctx.cancel.is_cancelled()
                })
                .map_err(Error::archive(context))?;
            redacted.complete(manifest).map_err(|message| Error::Archive {
                context: context.to_owned(),
                source: archive::ArchiveError::Invalid(message),
            })
        }
    }
}

/// Reads a catalogued backup's sidecar and checks it against the catalog.
pub fn load_sidecar(ctx: &Ctx, record: &BackupRecord) -> Result<Sidecar, Error> {
    let sidecar = ctx.store.read_sidecar(&record.job, &record.id)?;
    if sidecar.sha256 != record.sha256 || sidecar.size != record.size {
        return Err(Error::Archive {
            context: format!("backup {} failed verification", record.id),
            source: archive::ArchiveError::Invalid("its sidecar does not match the catalog".into()),
        });
    }
    Ok(sidecar)
}

/// What a catalogued backup's reader expects.
pub fn expected(sidecar: &Sidecar) -> Expected<'_> {
    Expected {
        manifest: &sidecar.manifest,
        size: sidecar.size,
        sha256: &sidecar.sha256,
    }
}

/// Reads the archive at `path` (decrypting it with `keys` if it is encrypted) in one
/// verifying pass (against `expected` when known), writing the entries `layout`
/// selects; then, if `layout` has a database, runs the checks of its kind that need
/// no server (SQLite's deep checks, a dump's validation). `context` starts the error
/// sentence. Returns the archive's manifest, size and sha256, only once the whole
/// archive checked out.
#[allow(clippy::too_many_arguments)]
pub fn extract_checked(
    ctx: &Ctx,
    path: &Path,
    keys: Option<&Identities>,
    expected: Option<Expected<'_>>,
    layout: &Layout,
    context: &str,
    phase: Phase,
    total: u64,
    progress: Progress<'_>,
) -> Result<(Manifest, u64, String), Error> {
    let mut extractor = Extractor::new(layout);
    let mut report = |done| progress(Event::bytes(phase, done, total));
    let read = archive::read_archive_keyed(path, keys, expected, &mut extractor, &mut report, &|| {
        ctx.cancel.is_cancelled()
    })
    .and_then(|read| extractor.finish().map(|()| read))
    .map_err(Error::archive(context))?;
    if let Some(db) = &layout.db {
        let manifest = &read.0;
        progress(Event::new(
            Phase::Check,
            match manifest.source {
                SourceInfo::Sqlite(_) => "integrity and foreign-key check of the database",
                _ => "validating the dump",
            },
        ));
        source::check_copy(&manifest.source, db, ctx.config.job(&manifest.job))?;
    }
    Ok(read)
}

/// A staging directory for one step, removed when dropped.
pub struct Stage {
    pub dir: std::path::PathBuf,
    _cleanup: Cleanup,
}

impl Stage {
    /// A fresh `<staging>/<name>` (anything left there is removed first).
    pub fn new(ctx: &Ctx, name: &str) -> Result<Stage, Error> {
        let dir = ctx.store.staging_dir().join(name);
        let mut cleanup = Cleanup::new();
        fsutil::remove_any(&dir).map_err(Error::io("cannot clear", &dir))?;
        cleanup.add(&dir);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create the staging directory", &dir))?;
        Ok(Stage {
            dir,
            _cleanup: cleanup,
        })
    }

    /// A layout that writes only the database, to `<stage>/db`.
    pub fn database_only(&self) -> Layout {
        Layout {
            db: Some(self.dir.join("db")),
            media: Vec::new(),
        }
    }
}

/// Deep verify of a dump on its job's server: restored into `<db>__coffer_verify`,
/// checked, dropped.
fn verify_on_server(
    ctx: &Ctx,
    record: &BackupRecord,
    source: &SourceInfo,
    dump: &Path,
    progress: Progress<'_>,
) -> Result<(), Error> {
    let job = ctx
        .config
        .job(&record.job)
        .filter(|j| j.source.kind() == source.kind());
    let Some(job) = job else {
        return Err(Error::InvalidArgument(format!(
            "deep verify of backup {} restores its {} dump on the server of job '{}', which is not configured as a {} job here",
            record.id,
            source.kind(),
            record.job,
            source.kind()
        )));
    };
    let server = source::server_for(job)?;
    progress(Event::new(
        Phase::Check,
        format!(
            "restoring into database '{}' and checking it",
            server.scratch_name(Scratch::Verify)
        ),
    ));
    let outcome = super::with_control(ctx, Phase::Check, progress, |ctl| server.verify_deep(dump, ctl))?;
    tracing::info!(
        id = record.id,
        database = outcome.database,
        tables = outcome.tables,
        checker = outcome.checker.unwrap_or("none"),
        note = outcome.note.as_deref().unwrap_or(""),
        "deep verify restored and checked the dump"
    );
    Ok(())
}

/// Verifies a catalogued backup (see the module doc) and records the verdict.
pub fn verify(
    ctx: &Ctx,
    record: &BackupRecord,
    deep: bool,
    progress: Progress<'_>,
) -> Result<Verified, Error> {
    // A deep verification without a key is refused, not a verdict on the backup.
    if deep && let Ok(sidecar) = load_sidecar(ctx, record) {
        keys(ctx, &record.job, &sidecar)?;
    }
    let result = (|| {
        let sidecar = load_sidecar(ctx, record)?;
        let path = ctx.archive_path(record);
        let context = format!("backup {} failed verification", record.id);
        let total = sidecar.size;
        let cancelled = || ctx.cancel.is_cancelled();
        let mut ciphertext_only = false;
        if deep {
            let keys = keys(ctx, &record.job, &sidecar)?;
            let stage = Stage::new(ctx, &format!("verify-{}", record.id))?;
            let layout = stage.database_only();
            extract_checked(
                ctx,
                &path,
                keys,
                Some(expected(&sidecar)),
                &layout,
                &context,
                Phase::Verify,
                total,
                progress,
            )?;
            if sidecar.manifest.source.dump().is_some() {
                verify_on_server(
                    ctx,
                    record,
                    &sidecar.manifest.source,
                    &stage.dir.join("db"),
                    progress,
                )?;
            }
        } else if let (true, Err(no_key)) = (sidecar.is_encrypted(), keys(ctx, &record.job, &sidecar)) {
            tracing::info!(id = record.id, "verifying the ciphertext only: {no_key}");
            let mut report = |done, size| progress(Event::bytes(Phase::Verify, done, size));
            archive::check_file(&path, sidecar.size, &sidecar.sha256, &mut report, &cancelled)
                .map_err(Error::archive(context))?;
            ciphertext_only = true;
        } else {
            let keys = keys(ctx, &record.job, &sidecar)?;
            let mut report = |done| progress(Event::bytes(Phase::Verify, done, total));
            archive::read_archive_keyed(
                &path,
                keys,
                Some(expected(&sidecar)),
                &mut HashOnly,
                &mut report,
                &cancelled,
            )
            .map_err(Error::archive(context))?;
        }
        Ok(Verified {
            id: record.id.clone(),
            entries: sidecar.manifest.entries.len() as u64,
            deep,
            ciphertext_only,
        })
    })();
    record_verdict(ctx, record, result.as_ref().map(drop));
    result
}

/// Records a verification's verdict ("ok" or the error sentence) and counts failures.
/// The verdict stands even when the catalog cannot record it (a full disk): the
/// archive was read either way, and failing here would make verify-after-backup
/// throw away a good backup.
pub(crate) fn record_verdict(ctx: &Ctx, record: &BackupRecord, result: Result<(), &Error>) {
    let verdict = match result {
        Ok(()) => "ok".to_owned(),
        Err(Error::Cancelled) => return,
        Err(e) => {
            ctx.counters
                .count(|c| *c.verify_failures.entry(record.job.clone()).or_default() += 1);
            e.describe()
        }
    };
    if let Err(e) = ctx
        .catalog
        .set_verified(&record.id, Utc::now().timestamp(), &verdict)
    {
        tracing::warn!(id = record.id, "cannot record the verification result: {e}");
    }
}

/// Completes verify-after-backup for a new backup whose archive was already read back
/// and checked while it was written (`written`: that check's outcome, see
/// `BackupRun::write`): its sidecar is read from disk and checked against the catalog
/// — what a separate `verify` of it would add — and the verdict recorded.
pub fn confirm_written(ctx: &Ctx, record: &BackupRecord, written: Result<(), Error>) -> Result<(), Error> {
    let result = written.and_then(|()| load_sidecar(ctx, record).map(drop));
    record_verdict(ctx, record, result.as_ref().map(|_| ()));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::TestCtx;

    fn backed_up() -> (tempfile::TempDir, TestCtx, BackupRecord) {
        let (src, t) = TestCtx::app("verify-after-backup = false");
        let record = t.backup();
        (src, t, record)
    }

    #[test]
    fn shallow_and_deep_verification_pass_and_are_recorded() {
        let (_src, t, record) = backed_up();
        let ctx = t.ctx();
        let mut last = None;
        let v = verify(&ctx, &record, false, &mut |e| last = Some(e)).unwrap();
        assert!(!v.deep && v.entries == 1);
        let last = last.unwrap();
        assert_eq!(
            (last.phase, last.done, last.total),
            (Phase::Verify, record.size, record.size)
        );
        let v = verify(&ctx, &record, true, &mut |_| {}).unwrap();
        assert!(v.deep);
        assert_eq!(ctx.get(&record.id).unwrap().verify_result, "ok");
        assert_eq!(std::fs::read_dir(ctx.store.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_flipped_byte_fails_is_recorded_and_counted() {
        let (_src, t, record) = backed_up();
        let ctx = t.ctx();
        let path = ctx.store.paths("app", &record.id).archive;
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = verify(&ctx, &record, false, &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::DataLoss, "{err}");
        let stored = ctx.get(&record.id).unwrap().verify_result;
        assert!(
            stored.starts_with(&format!("backup {} failed verification", record.id)),
            "{stored}"
        );
        assert_eq!(ctx.counters.values().verify_failures.get("app"), Some(&1));
    }

    #[test]
    fn an_unreadable_sidecar_is_data_loss() {
        let (_src, t, record) = backed_up();
        let ctx = t.ctx();
        std::fs::write(ctx.store.paths("app", &record.id).sidecar, b"garbage").unwrap();
        let err = verify(&ctx, &record, false, &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::DataLoss, "{err}");
        assert!(err.to_string().contains("is unreadable"), "{err}");
    }
}
