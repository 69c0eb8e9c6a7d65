//! One backup: [`BackupRun`] with named steps, and the hooks and retention around it.
//!
//! [`take`] runs the steps: [`BackupRun::prepare`] picks a free id, creates the run's
//! staging directory and checks free space against the source's estimate;
//! [`BackupRun::write`] streams the snapshot and the media into
//! `<id>.tar.zst.partial` in the order the source asks for (media during a `VACUUM
//! INTO` copy, after a page stream); [`BackupRun::commit`] writes the sidecar, renames
//! the archive into place, catalogues it and, with `verify-after-backup`, verifies it.
//! Whatever fails, the run's staging files and partial archive are removed
//! ([`Cleanup`]) and earlier backups are untouched.
//!
//! A job with `[job.encryption]` writes `<id>.tar.zst.age`: the same stream, encrypted
//! to the job's recipients as it is written (the `.partial` is ciphertext from its
//! first byte), and its sidecar records the recipients' fingerprints. Its source
//! writes no plaintext copy to staging either (see [`crate::source::sqlite`]). Read
//! back while it is written, it is decrypted when the identity file holds a
//! recipient's key, and otherwise its ciphertext is hashed (what can be checked
//! without a key).

use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use coffer_common::ids;

use super::{Ctx, verify};
use crate::archive::{self, ArchiveWriter, Finished, Follow, Followed};
use crate::catalog::BackupRecord;
use crate::config::JobConfig;
use crate::error::Error;
use crate::fsutil::Cleanup;
use crate::fsutil::{Follower, Front};
use crate::hooks::{self, HookEvent};
use crate::manifest::{
    ArchiveKind, Encryption, FORMAT_VERSION, MAX_SKIPPED_LISTED, Manifest, Sidecar, SkippedEntry, SourceInfo,
    Totals,
};
use crate::run::{Event, Phase, Progress};
use crate::source::{self, MediaOrder, Source, SourceError, Step, media};
use crate::store::BackupPaths;

/// Bytes between two progress reports while archiving.
const REPORT_EVERY: u64 = 8 << 20;

/// Runs the job's `before-backup` hook (a failure means no backup).
pub fn before(ctx: &Ctx, job: &JobConfig) -> Result<(), Error> {
    hooks::run(job, HookEvent::BeforeBackup, "", "", ctx.cancel).map_err(|e| Error::Hook(e.to_string()))
}

/// After a recorded backup run: `after-backup` hooks, the offsite copies queued (the
/// copier makes them in the background) and local retention on success (neither can
/// fail the backup), `on-failure` hooks otherwise.
pub fn after(ctx: &Ctx, job: &JobConfig, result: &Result<BackupRecord, Error>) {
    match result {
        Ok(r) => {
            tracing::info!(job = job.name, id = r.id, size = r.size, "backup succeeded");
            hooks::run_logged(job, HookEvent::AfterBackup, &r.id, "", ctx.cancel);
            // Queued before retention runs, which keeps backups still to be copied.
            if let Err(e) = super::copy::enqueue(ctx, job, r) {
                tracing::error!(job = job.name, id = r.id, "cannot queue the offsite copies: {e}");
            }
            if let Err(e) = super::prune::prune(ctx, "retention", Some(&job.name), false) {
                tracing::error!(job = job.name, "retention failed: {e}");
            }
        }
        Err(e) => {
            tracing::warn!(job = job.name, "backup failed: {}", e.describe());
            hooks::run_logged(job, HookEvent::OnFailure, "", &e.describe(), ctx.cancel);
        }
    }
}

/// Takes one backup of `job`. `protected` pins it from the start (the sidecar and row
/// are written pinned), so a crash during its verification cannot leave an unpinned
/// safety backup that retention would remove.
pub fn take(
    ctx: &Ctx,
    job: &JobConfig,
    note: &str,
    protected: bool,
    progress: Progress<'_>,
) -> Result<BackupRecord, Error> {
    let mut run = BackupRun::prepare(ctx, job)?;
    let archived = run.write(progress)?;
    run.commit(archived, note, protected, progress)
}

/// The archive a run wrote, not yet in place.
pub struct Archived {
    manifest: Manifest,
    size: u64,
    sha256: String,
    /// The outcome of reading it back while it was written (verify-after-backup).
    written_check: Option<Result<(), Error>>,
}

/// The thread reading an archive back as it is written.
type Verifier = std::thread::JoinHandle<Result<Followed, crate::archive::ArchiveError>>;

/// One backup in progress.
pub struct BackupRun<'a> {
    ctx: &'a Ctx<'a>,
    job: &'a JobConfig,
    source: Box<dyn Source>,
    id: String,
    created: DateTime<Utc>,
    clock: Instant,
    paths: BackupPaths,
    partial: PathBuf,
    staging: PathBuf,
    /// Removes what the run wrote unless it was committed.
    cleanup: Cleanup,
    /// Bytes added to the archive so far, and the expected total, for progress.
    done: u64,
    total: u64,
    reported: u64,
    /// Media entries that could not be archived (the first few named) and those
    /// left out by `exclude`.
    skipped: Vec<SkippedEntry>,
    skipped_count: u64,
    excluded: u64,
}

impl<'a> BackupRun<'a> {
    /// Step 1: a free id, the staging directory, and enough free space for what the
    /// source estimates.
    pub fn prepare(ctx: &'a Ctx<'a>, job: &'a JobConfig) -> Result<BackupRun<'a>, Error> {
        let created = Utc::now();
        let id = new_id(ctx, &job.name, created)?;
        let paths = ctx.store.paths_for(&job.name, &id, job.encryption.is_some());
        let mut cleanup = Cleanup::new();
        let staging = ctx.store.staging_dir().join(&id);
        cleanup.add(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(Error::io("cannot create the staging directory", &staging))?;
        std::fs::create_dir_all(&paths.dir)
            .map_err(Error::io("cannot create the backup directory", &paths.dir))?;
        let source = source::for_job(job);
        // Before the snapshot: room for the archive and for any copy in staging. The
        // media are checked once they are walked.
        let estimate = source.estimate();
        let mut needs = vec![(paths.dir.as_path(), estimate.archive)];
        if estimate.staging > 0 {
            needs.push((staging.as_path(), estimate.staging));
        }
        ctx.store.check_space(&job.name, job.min_free_space, &needs)?;
        let partial = crate::fsutil::partial_path(&paths.archive);
        Ok(BackupRun {
            ctx,
            job,
            source,
            id,
            created,
            clock: Instant::now(),
            paths,
            partial,
            staging,
            cleanup,
            done: 0,
            total: estimate.archive,
            reported: 0,
            skipped: Vec::new(),
            skipped_count: 0,
            excluded: 0,
        })
    }

    /// The backup's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn archive_context(&self) -> String {
        format!("cannot write the archive {}", self.paths.archive.display())
    }

    /// Counts `n` more archived bytes and reports every few MiB.
    fn tick(&mut self, n: u64, progress: Progress<'_>) {
        self.done += n;
        if self.done - self.reported >= REPORT_EVERY || self.done == self.total {
            self.reported = self.done;
            progress(Event::bytes(Phase::Archive, self.done, self.total.max(self.done)));
        }
    }

    /// Step 2: snapshot and media into the partial archive, in the source's order.
    pub fn write(&mut self, progress: Progress<'_>) -> Result<Archived, Error> {
        let (partial, file) = self.ctx.store.create_partial(&self.paths)?;
        self.cleanup.add(&partial);
        let (mut writer, verifier) = self.writer(&partial, file)?;

        progress(Event::new(
            Phase::Snapshot,
            format!("snapshot of {}", self.source.describe()),
        ));
        let db_clock = Instant::now();
        let mut snapshot = self.source.begin(&self.staging, self.ctx.cancel)?;
        let staging_needed = snapshot.staging_needed();
        if staging_needed > 0 {
            self.ctx.store.check_space(
                &self.job.name,
                self.job.min_free_space,
                &[(&self.staging, staging_needed)],
            )?;
        }
        snapshot.wait_point()?;
        let order = snapshot.media_order();
        let mut media_ms = 0;
        if order == MediaOrder::DuringSnapshot {
            media_ms = self.archive_media(&mut writer, &|| snapshot.in_progress(), progress)?;
        }
        let base = self.done;
        let context = self.archive_context();
        let info: SourceInfo = snapshot
            .archive(&mut writer, &mut |step| match step {
                Step::Copying { done, total } => progress(Event::bytes(Phase::Snapshot, done, total)),
                Step::Archived { done, total } => {
                    self.total = self.total.max(base + total);
                    let n = base + done - self.done;
                    self.tick(n, progress);
                }
            })
            .map_err(|e| match e {
                SourceError::Archive(e) => Error::archive(context)(e),
                e => Error::Source(e),
            })?;
        if order == MediaOrder::AfterDatabase {
            media_ms = self.archive_media(&mut writer, &|| false, progress)?;
        }
        if self.ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let db_ms = (db_clock.elapsed().as_millis() as u64).saturating_sub(media_ms);
        writer.count_left_out(self.skipped_count, self.excluded);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            kind: ArchiveKind::Backup,
            id: self.id.clone(),
            job: self.job.name.clone(),
            created_at: self.created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            coffer_version: coffer_common::VERSION.to_owned(),
            hostname: self.ctx.host.hostname.clone(),
            source: info,
            media_roots: self.job.media.iter().map(|p| p.display().to_string()).collect(),
            entries: Vec::new(),
            skipped: std::mem::take(&mut self.skipped),
            totals: Totals::default(),
            export: None,
        };
        let finished = writer
            .finish(manifest)
            .map_err(Error::archive(self.archive_context()))?;
        let (sha256, written_check) = match verifier {
            Some(v) => {
                let (sha256, check) = self.check_written(v, &finished, &partial)?;
                (sha256, Some(check))
            }
            None => {
                let unhashed = || Error::Internal("the archive writer did not hash the archive".into());
                (finished.sha256.clone().ok_or_else(unhashed)?, None)
            }
        };
        let (manifest, size) = (finished.manifest, finished.size);
        tracing::info!(
            job = self.job.name,
            id = self.id,
            db_ms,
            media_ms,
            bytes = self.done,
            "archive written"
        );
        self.partial = partial;
        Ok(Archived {
            manifest,
            size,
            sha256,
            written_check,
        })
    }

    /// The archive writer; with `verify-after-backup` it is followed by a verifier
    /// thread that reads the archive back from the file as it is written (see
    /// [`Self::check_written`]), so verification costs no pass of its own afterwards.
    fn writer(
        &self,
        partial: &std::path::Path,
        file: std::fs::File,
    ) -> Result<(ArchiveWriter, Option<Verifier>), Error> {
        let (level, workers, cancel) = (
            self.job.compression_level,
            self.ctx.host.workers,
            self.ctx.cancel.clone(),
        );
        let context = self.archive_context();
        let recipients = self.job.encryption.as_ref().map(|e| &e.recipients);
        if !self.job.verify_after_backup {
            let writer = ArchiveWriter::with(file, None, recipients, level, workers, cancel)
                .map_err(Error::archive(context))?;
            return Ok((writer, None));
        }
        let front = Front::default();
        let mut follower =
            Follower::open(partial, front.clone()).map_err(Error::io("cannot read back", partial))?;
        // An encrypted archive is decrypted as it is read back if the identity file
        // holds a key of its recipients; otherwise its ciphertext is hashed.
        let keys = self.job.encryption.as_ref().and_then(|e| {
            e.identities
                .clone()
                .filter(|ids| ids.can_decrypt_for(&e.fingerprints()))
        });
        let plain = self.job.encryption.is_none();
        let follow = Follow {
            front,
            hashes_file: plain || keys.is_some(),
        };
        let writer = ArchiveWriter::with(file, Some(follow), recipients, level, workers, cancel.clone())
            .map_err(Error::archive(context))?;
        let verifier = std::thread::Builder::new()
            .name("coffer-verify".into())
            .spawn(move || {
                let cancelled = || cancel.is_cancelled();
                match (plain, keys) {
                    (false, None) => archive::hash_followed(&mut follower, &cancelled),
                    (_, keys) => archive::read_followed(follower, keys.as_deref(), &cancelled),
                }
            })
            .map_err(Error::io("cannot start the verifier for", partial))?;
        Ok((writer, Some(verifier)))
    }

    /// What the verifier read back — every entry against the manifest it found, and
    /// the file's own size and sha256 — must be exactly what the writer wrote
    /// ([`Followed::check`]): the checks of `verify`, on the same bytes, with each
    /// entry's content compared with what the writer read by fingerprint (see
    /// [`crate::archive::hash`]). Returns the archive's sha256 for its sidecar and the
    /// check's outcome (a failed check is still catalogued with its verdict, then
    /// removed; see [`Self::commit`]).
    ///
    /// A verifier that decoded the file hashed it for the writer (`finished.sha256` is
    /// `None`): every byte it hashed was part of a zstd frame (or an age chunk) that
    /// decoded and checked, so its hash is the hash of an archive known to be good.
    fn check_written(
        &self,
        verifier: Verifier,
        finished: &Finished,
        partial: &std::path::Path,
    ) -> Result<(String, Result<(), Error>), Error> {
        let context = format!("backup {} failed verification", self.id);
        let read = verifier
            .join()
            .map_err(|_| Error::Internal("the verifier thread panicked".into()))?;
        let check = read
            .and_then(|followed| followed.check(finished))
            .map_err(Error::archive(context));
        match (check, finished.sha256.clone()) {
            (Ok(sha256), _) => Ok((sha256, Ok(()))),
            (Err(e), Some(sha256)) => Ok((sha256, Err(e))),
            // The failed backup is catalogued with its verdict like any other; if even
            // hashing its file fails, the verification's own error is the one to report.
            (Err(e), None) => match archive::hash_file(partial) {
                Ok((_, sha256)) => Ok((sha256, Err(e))),
                Err(_) => Err(e),
            },
        }
    }

    /// Walks the job's media directories and adds them to the archive; called only
    /// after the snapshot point (files the snapshot refers to exist by then). Returns
    /// the milliseconds it took.
    ///
    /// While `snapshot_busy` (a `VACUUM INTO` copy or a dump still being made beside
    /// the media), they are compressed with one thread fewer (with two, zstd runs on
    /// the thread that reads and hashes them, no workers beside it): the snapshot is
    /// what the database's part of the archive waits for, so it keeps a core of its
    /// own instead of a share of one among the compression threads (measured in
    /// README).
    fn archive_media(
        &mut self,
        writer: &mut ArchiveWriter,
        snapshot_busy: &dyn Fn() -> bool,
        progress: Progress<'_>,
    ) -> Result<u64, Error> {
        let clock = Instant::now();
        progress(Event::new(Phase::Media, "walking media directories"));
        let mut walked = Vec::with_capacity(self.job.media.len());
        for (index, root) in self.job.media.iter().enumerate() {
            let found = media::walk_media(index, root, &self.job.exclude).map_err(Error::archive(
                format!("cannot read media directory {}", root.display()),
            ))?;
            for s in &found.skipped {
                tracing::warn!(
                    job = self.job.name,
                    path = s.path,
                    "not backed up: it is a {}",
                    s.reason
                );
            }
            self.skipped_count += found.skipped.len() as u64;
            self.excluded += found.excluded;
            let room = MAX_SKIPPED_LISTED.saturating_sub(self.skipped.len());
            self.skipped
                .extend(found.skipped.into_iter().take(room).map(|s| SkippedEntry {
                    path: s.path,
                    reason: s.reason.to_owned(),
                }));
            walked.push(found.items);
        }
        let media_bytes: u64 = walked
            .iter()
            .flatten()
            .filter(|i| i.metadata.is_file())
            .map(|i| i.metadata.len())
            .sum();
        // An estimate, not a bound: content is counted uncompressed, tar headers and
        // the manifest (which compress to little) are not.
        self.ctx.store.check_space(
            &self.job.name,
            self.job.min_free_space,
            &[(&self.paths.dir, media_bytes)],
        )?;
        self.total += media_bytes;
        let context = self.archive_context();
        let workers = self.ctx.host.workers;
        for item in walked.iter().flatten() {
            if self.ctx.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let now = match snapshot_busy() {
                true => workers.saturating_sub(1).max(1),
                false => workers,
            };
            writer.set_workers(now).map_err(Error::archive(context.clone()))?;
            media::add_to_archive(writer, item, &mut |n| self.tick(n, progress))
                .map_err(Error::archive(context.clone()))?;
        }
        writer.set_workers(workers).map_err(Error::archive(context))?;
        Ok(clock.elapsed().as_millis() as u64)
    }

    /// Step 3: sidecar, rename into place, catalogue, and (if configured) verify.
    pub fn commit(
        mut self,
        archived: Archived,
        note: &str,
        protected: bool,
        progress: Progress<'_>,
    ) -> Result<BackupRecord, Error> {
        let ctx = self.ctx;
        // The sidecar goes first: a crash before the archive's rename leaves an orphan
        // sidecar (swept by reconcile), never an archive the catalog cannot rebuild.
        let sidecar = Sidecar {
            manifest: archived.manifest,
            size: archived.size,
            sha256: archived.sha256,
            note: note.to_owned(),
            protected,
            duration_ms: self.clock.elapsed().as_millis() as u64,
            filed_under: None,
            encryption: self
                .job
                .encryption
                .as_ref()
                .map(|e| Encryption::age(e.fingerprints())),
        };
        ctx.store.write_sidecar(&self.paths, &sidecar)?;
        self.cleanup.add(&self.paths.sidecar);
        ctx.store.commit(&self.partial, &self.paths)?;
        self.cleanup.add(&self.paths.archive);
        ctx.catalog.insert_backup(&sidecar)?;

        if self.job.verify_after_backup {
            let record = ctx.get(&self.id)?;
            let verified = match archived.written_check {
                Some(written) => {
                    progress(Event::new(
                        Phase::Verify,
                        "read back and checked while it was written",
                    ));
                    verify::confirm_written(ctx, &record, written)
                }
                None => {
                    progress(Event::new(Phase::Verify, "verifying the new archive"));
                    verify::verify(ctx, &record, false, progress).map(drop)
                }
            };
            if let Err(e) = verified {
                // The files go (Cleanup); a row that cannot be dropped now (full disk)
                // is dropped by reconcile at the next start, its archive being gone.
                if let Err(drop) = ctx.catalog.remove_backup(&self.id) {
                    tracing::error!(
                        id = self.id,
                        "cannot drop the row of the unverified backup: {drop}"
                    );
                }
                return Err(e);
            }
        }
        self.cleanup.keep(&self.paths.archive);
        self.cleanup.keep(&self.paths.sidecar);
        ctx.get(&self.id)
    }
}

/// A free id for a backup of `job` starting at `at`: not catalogued and without files.
fn new_id(ctx: &Ctx, job: &str, at: DateTime<Utc>) -> Result<String, Error> {
    for attempt in 1..1000 {
        let id = ids::backup_id(job, at, attempt);
        if !ctx.catalog.id_exists(&id)? && !ctx.store.has_files(job, &id) {
            return Ok(id);
        }
    }
    Err(Error::Internal(format!("no free backup id for job '{job}'")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::TestCtx;
    use crate::source::sqlite::test_db::make_db;

    fn app(dir: &std::path::Path, wal: bool) -> (PathBuf, PathBuf) {
        let db = dir.join("app.db");
        make_db(&db, wal);
        let media = dir.join("media");
        std::fs::create_dir_all(media.join("a")).unwrap();
        std::fs::write(media.join("a/file.txt"), b"hello").unwrap();
        (db, media)
    }

    #[test]
    fn both_methods_write_a_verified_catalogued_backup_and_leave_nothing_else() {
        for (method, wal) in [
            ("vacuum-into", true),
            ("page-stream", true),
            ("page-stream", false),
        ] {
            let src = tempfile::tempdir().unwrap();
            let (db, media) = app(src.path(), wal);
            let t = TestCtx::new(&db, &[media], &format!("snapshot-method = \"{method}\""));
            let ctx = t.ctx();
            let job = ctx.job("app").unwrap();
            let mut events = Vec::new();
            let record = take(&ctx, job, "note", false, &mut |e: Event| events.push(e)).unwrap();
            let phases: Vec<Phase> = events.iter().map(|e| e.phase).collect();
            // The archive phase counts real bytes up to its total.
            let last = events.iter().rfind(|e| e.phase == Phase::Archive).unwrap();
            assert!(last.total > 0 && last.done == last.total, "{method}: {last:?}");
            assert_eq!(record.note, "note");
            assert!(record.verified_at > 0, "{method}: verify-after-backup recorded");
            assert_eq!(record.summary.totals.files, 2, "{method}: db + one media file");
            assert_eq!(
                record.summary.sqlite().unwrap().snapshot_method,
                method,
                "{method}"
            );
            assert!(phases.contains(&Phase::Snapshot) && phases.contains(&Phase::Media));
            let paths = ctx.store.paths("app", &record.id);
            assert!(paths.archive.exists() && paths.sidecar.exists());
            let staging: Vec<_> = std::fs::read_dir(ctx.store.staging_dir()).unwrap().collect();
            assert!(staging.is_empty(), "{method}: staging is clean");
            assert!(!crate::fsutil::partial_path(&paths.archive).exists());
        }
    }

    #[test]
    fn a_failed_snapshot_leaves_no_archive_no_sidecar_no_row() {
        let src = tempfile::tempdir().unwrap();
        let (db, media) = app(src.path(), true);
        let t = TestCtx::new(&db, &[media], "");
        std::fs::remove_file(&db).unwrap();
        let ctx = t.ctx();
        let job = ctx.job("app").unwrap();
        let err = take(&ctx, job, "", false, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Source(SourceError::Missing { .. })), "{err}");
        assert!(ctx.store.scan().unwrap().is_empty());
        assert!(ctx.catalog.list_backups(None).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(ctx.store.staging_dir()).unwrap().count(), 0);
    }

    /// An age key pair made by the age crate: (identity file, recipient).
    fn age_key(dir: &std::path::Path) -> (PathBuf, String) {
        use age::secrecy::ExposeSecret;
        use std::os::unix::fs::PermissionsExt;
        let identity = age::x25519::Identity::generate();
        let path = dir.join("identity.txt");
        std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, identity.to_public().to_string())
    }

    #[test]
    fn an_encrypted_job_writes_only_ciphertext_and_verifies_with_or_without_a_key() {
        for wal in [true, false] {
            let src = tempfile::tempdir().unwrap();
            let (db, media) = app(src.path(), wal);
            // Incompressible content: it would show verbatim in a plain archive.
            let marker: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            std::fs::write(media.join("a/marker.bin"), &marker).unwrap();
            let (identity, recipient) = age_key(src.path());
            let keyed = format!(
                "[job.encryption]\nrecipients = [{recipient:?}]\nidentity-file = {:?}\n",
                identity.display().to_string()
            );
            let t = TestCtx::new(&db, std::slice::from_ref(&media), &keyed);
            let ctx = t.ctx();
            let record = take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap();
            assert_eq!(record.recipients, vec![recipient.clone()]);
            assert!(record.verified_at > 0, "verify-after-backup decrypted it");
            let paths = ctx.store.paths("app", &record.id);
            assert!(
                paths.archive.to_string_lossy().ends_with(".tar.zst.age"),
                "{paths:?}"
            );
            assert_eq!(ctx.archive_path(&record), paths.archive);
            let bytes = std::fs::read(&paths.archive).unwrap();
            assert!(crate::archive::crypt::is_age_file(&bytes));
            assert!(
                !bytes.windows(64).any(|w| w == &marker[1000..1064]),
                "wal={wal}: plaintext in the archive"
            );
            assert_eq!(record.summary.sqlite().unwrap().snapshot_method, "page-stream");
            let sidecar = ctx.store.read_sidecar("app", &record.id).unwrap();
            assert_eq!(sidecar.recipients(), std::slice::from_ref(&recipient));
            assert_eq!(std::fs::read_dir(ctx.store.staging_dir()).unwrap().count(), 0);

            // Without the identity file: shallow verification checks the ciphertext
            // only; deep is refused, nothing recorded against the backup.
            let no_key = TestCtx::with_dirs(
                &t,
                &db,
                &format!("[job.encryption]\nrecipients = [{recipient:?}]\n"),
            );
            let v = verify::verify(&no_key.ctx(), &record, false, &mut |_| {}).unwrap();
            assert!(v.ciphertext_only);
            let err = verify::verify(&no_key.ctx(), &record, true, &mut |_| {}).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Precondition, "{err}");
            assert!(
                err.to_string().contains("set identity-file in [job.encryption]"),
                "{err}"
            );
            assert_eq!(no_key.ctx().get(&record.id).unwrap().verify_result, "ok");
            // A backup without the identity file: read back as it is written, its
            // ciphertext hashed.
            let keyless = {
                let ctx = no_key.ctx();
                take(&ctx, ctx.job("app").unwrap(), "", false, &mut |_| {}).unwrap()
            };
            assert!(
                keyless.verified_at > 0 && keyless.verify_result == "ok",
                "{keyless:?}"
            );
            assert!(keyless.is_encrypted());
            // With it: every entry, and deep.
            let v = verify::verify(&ctx, &record, true, &mut |_| {}).unwrap();
            assert!(!v.ciphertext_only && v.entries == 5, "{v:?}");
        }
    }

    #[test]
    fn a_cancelled_backup_is_cancelled_and_leaves_nothing() {
        let src = tempfile::tempdir().unwrap();
        let (db, media) = app(src.path(), true);
        let t = TestCtx::new(&db, &[media], "");
        t.cancel.cancel();
        let ctx = t.ctx();
        let job = ctx.job("app").unwrap();
        let err = take(&ctx, job, "", false, &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Cancelled, "{err}");
        assert!(ctx.store.scan().unwrap().is_empty());
    }
}
