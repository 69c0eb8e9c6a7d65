//! Restoring a backup: into another directory (`--to DIR`, a drill that never touches
//! the live paths) or in place ([`in_place`], with safety backup, swap and journal).
//!
//! Extraction is one streaming pass of the verifying reader with the catalogued
//! sidecar as the expected manifest, so every entry is checked (path, type, size,
//! mode, hash) before or while it is written, and only ever into fresh staging
//! directories that we created ([`crate::archive::extract`]).
//!
//! An encrypted backup is decrypted as it streams, with the job's identities; without
//! a key the restore is refused before anything is created. What was extracted is
//! committed (moved into place, swapped in) only after the pass returned, which for an
//! encrypted archive includes age's check of its final chunk, so a truncated or
//! tampered ciphertext never reaches the target.
//!
//! `--to DIR` mirrors the archive layout under DIR (`DIR/db/<name>`,
//! `DIR/media/<n>/...`), staged in `DIR/.coffer-restore` and moved into place at the
//! end; DIR must be empty or missing. Like `tar -x`, it leaves flushing to the kernel
//! (nothing is deleted after it). The hash checks are the verification there; in
//! place, SQLite's `integrity_check` runs on the staged database too, before anything
//! live changes.
//!
//! - [`in_place`]: the in-place restore of an SQLite job.
//! - [`database`]: in-place, `--to-database` and drill restores of PostgreSQL and
//!   MariaDB jobs.
//! - [`swap`]: [`swap::Swap`], renames that can be rolled back.
//! - [`journal`]: the on-disk journal that lets start-up finish or undo a swap.

pub mod database;
pub mod in_place;
pub mod journal;
pub mod swap;

use std::path::{Path, PathBuf};

pub use journal::{recover, recover_job};

use super::{Ctx, verify};
use crate::archive::{self, Layout};
use crate::catalog::BackupRecord;
use crate::config::SourceConfig;
use crate::error::Error;
use crate::fsutil::{self, Cleanup};
use crate::manifest::Sidecar;
use crate::run::{Event, Phase, Progress};

/// Which parts of a backup to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    All,
    Db,
    Media,
}

impl Only {
    /// Parses the `--only` argument ("" means all).
    pub fn parse(text: &str) -> Result<Only, Error> {
        match text {
            "" | "all" => Ok(Only::All),
            "db" => Ok(Only::Db),
            "media" => Ok(Only::Media),
            other => Err(Error::InvalidArgument(format!(
                "--only must be db or media, not '{other}'"
            ))),
        }
    }

    pub fn db(self) -> bool {
        self != Only::Media
    }

    pub fn media(self) -> bool {
        self != Only::Db
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub id: String,
    pub safety_backup_id: Option<String>,
    pub database_path: Option<PathBuf>,
    pub media_paths: Vec<PathBuf>,
    /// Database-server jobs: the database restored into.
    pub database_name: Option<String>,
}

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Over the live data of the backup's job.
    InPlace,
    /// Into a new or empty directory (`--to DIR`).
    Dir(PathBuf),
    /// Into a new database on the job's server (`--to-database NAME`).
    Database(String),
}

impl Target {
    /// Whether the restore changes the job's live data (and so claims the job).
    pub fn is_in_place(&self) -> bool {
        *self == Target::InPlace
    }
}

/// Restores `record` to `target` (see the module doc).
pub fn restore(
    ctx: &Ctx,
    record: &BackupRecord,
    target: &Target,
    only: Only,
    force: bool,
    progress: Progress<'_>,
) -> Result<Restored, Error> {
    match target {
        Target::Dir(dir) => restore_to(ctx, record, dir, only, progress),
        Target::Database(name) => database::restore_to_database(ctx, record, name, progress),
        Target::InPlace => {
            let job = ctx.job(&record.job)?;
            match job.source {
                SourceConfig::Sqlite(_) => in_place::restore(ctx, record, job, only, force, progress),
                SourceConfig::Postgres(_) | SourceConfig::Mariadb(_) => {
                    database::restore_in_place(ctx, record, job, only, force, progress)
                }
            }
        }
    }
}

/// The file name of the database in a manifest (`db/<name>`).
pub(crate) fn db_name(sidecar: &Sidecar) -> String {
    sidecar
        .manifest
        .database_entry()
        .and_then(|e| e.path.strip_prefix("db/"))
        .unwrap_or("database.db")
        .to_owned()
}

/// Restores into `dir` (see the module doc).
fn restore_to(
    ctx: &Ctx,
    record: &BackupRecord,
    dir: &Path,
    only: Only,
    progress: Progress<'_>,
) -> Result<Restored, Error> {
    if !dir.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "--to needs an absolute path, not '{}'",
            dir.display()
        )));
    }
    // Before anything is created: an encrypted backup without a key is refused here.
    let sidecar = verify::load_sidecar(ctx, record)?;
    let keys = verify::keys(ctx, &record.job, &sidecar)?;
    let mut cleanup = Cleanup::new();
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{} is not empty; restore into a new or empty directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
            cleanup.add(dir);
        }
        // A file, or a path under one, or one too long: the caller's mistake, said
        // without echoing a path that may be megabytes long.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::InvalidArgument(format!(
                "{} is not a directory; restore into a new or empty directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => {
            return Err(Error::InvalidArgument("the --to path is too long".into()));
        }
        Err(e) => return Err(Error::io("cannot read", dir)(e)),
    }
    let stage = dir.join(".coffer-restore");
    std::fs::create_dir(&stage).map_err(Error::io("cannot create the staging directory", &stage))?;
    cleanup.add(&stage);
    let db_name = db_name(&sidecar);
    let roots = sidecar.manifest.media_roots.len();
    let layout = Layout {
        db: only.db().then(|| stage.join("db").join(&db_name)),
        media: (0..roots)
            .map(|n| only.media().then(|| stage.join("media").join(n.to_string())))
            .collect(),
    };
    // No SQLite check here: every byte was just checked against the manifest's
    // sha256, so the database is identical to the snapshot that passed quick_check
    // when it was taken (`verify --deep` runs SQLite's own checks on demand).
    let mut report = |done| progress(Event::bytes(Phase::Extract, done, sidecar.size));
    archive::extract::extract(
        &ctx.archive_path(record),
        keys,
        Some(verify::expected(&sidecar)),
        &layout,
        &mut report,
        &|| ctx.cancel.is_cancelled(),
    )
    .map_err(Error::archive(format!(
        "backup {} failed verification",
        record.id
    )))?;
    for part in ["db", "media"] {
        let staged = stage.join(part);
        if staged.exists() {
            std::fs::rename(&staged, dir.join(part)).map_err(Error::io("cannot move into place", &staged))?;
        }
    }
    fsutil::remove_any(&stage).map_err(Error::io("cannot remove", &stage))?;
    fsutil::sync_dir(dir).map_err(Error::io("cannot sync", dir))?;
    cleanup.keep(dir);
    Ok(Restored {
        id: record.id.clone(),
        safety_backup_id: None,
        database_name: None,
        database_path: only.db().then(|| dir.join("db").join(db_name)),
        media_paths: if only.media() {
            (0..roots)
                .map(|n| dir.join("media").join(n.to_string()))
                .collect()
        } else {
            Vec::new()
        },
    })
}
