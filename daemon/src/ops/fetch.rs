//! Bringing a backup back from an offsite store into the local backup directory
//! (`cofferctl fetch`, and the first step of restoring a backup only a store holds).
//!
//! [`locate`] finds where a backup is: the catalog's locations first, then — for a
//! catalog that does not know it yet (a new machine) — one GET of its sidecar in each
//! candidate store. [`fetch`] then works like an upload that trusts nothing: the
//! sidecar is read from the store and checked (id, job); the archive streams into
//! `<id>.tar.zst.partial` in the job's directory while it is hashed, and its size and
//! sha256 must equal the sidecar's; it is fsynced and committed with the sidecar beside
//! it, catalogued, then verified entry by entry against the manifest like any backup.
//! Any failure removes what was written.

use chrono::Utc;
use coffer_common::ids::{self, IdRef};

use super::copy::backend;
use super::{Ctx, verify};
use crate::catalog::{BackupRecord, LocationState};
use crate::error::Error;
use crate::fsutil::Cleanup;
use crate::run::{Event, Phase, Progress};
use crate::store::s3;

/// A backup in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub id: String,
    pub job: String,
    pub store: String,
}

/// Where backup `id_text` (an id, or `JOB:latest`/`latest` among the catalogued
/// copies) is: in `store`, or in any configured store when `None`.
pub fn locate(ctx: &Ctx, id_text: &str, store: Option<&str>) -> Result<Remote, Error> {
    if let Some(name) = store
        && ctx.offsite.get(name).is_none()
    {
        return Err(Error::UnknownStore(name.to_owned()));
    }
    let stores: Vec<&str> = match store {
        Some(name) => vec![name],
        None => ctx.offsite.iter().map(|s| s.config.name.as_str()).collect(),
    };
    let copied = |id: &str, name: &str| -> Result<Option<Remote>, Error> {
        Ok(ctx
            .catalog
            .location(id, name)?
            .filter(|l| l.state == LocationState::Copied)
            .map(|l| Remote {
                id: l.backup_id,
                job: l.job,
                store: name.to_owned(),
            }))
    };
    let id = match IdRef::parse(id_text)? {
        IdRef::Id(id) => id,
        latest => {
            let job = match &latest {
                IdRef::LatestOf(job) => Some(job.as_str()),
                _ => None,
            };
            let newest = stores
                .iter()
                .filter_map(|name| {
                    let rows = ctx.catalog.locations_in(name, job).ok()?;
                    rows.into_iter().find(|l| l.state == LocationState::Copied)
                })
                .max_by(|a, b| {
                    a.created_at
                        .cmp(&b.created_at)
                        .then(ids::cmp_ids(&a.backup_id, &b.backup_id))
                });
            return newest
                .map(|l| Remote {
                    id: l.backup_id,
                    job: l.job,
                    store: l.store,
                })
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("no copy of '{id_text}' is known in the stores"))
                });
        }
    };
    for name in &stores {
        if let Some(found) = copied(&id, name)? {
            return Ok(found);
        }
    }
    // Not catalogued (yet): ask the stores for its sidecar, under the job its id names.
    let job = ids::split_backup_id(&id)
        .map(|(job, _)| job.to_owned())
        .ok_or_else(|| Error::NoSuchBackup(id.clone()))?;
    let mut last_error = None;
    for name in &stores {
        let probe = backend(ctx, name).and_then(|b| {
            let key = b.sidecar_key(&job, &id);
            Ok(b.objects_of(&job, &id)?.into_iter().find(|o| o.key == key))
        });
        match probe {
            Ok(Some(_)) => {
                return Ok(Remote {
                    id,
                    job,
                    store: (*name).to_owned(),
                });
            }
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
    }
    match (store, last_error) {
        (Some(_), Some(e)) => Err(e),
        (Some(name), None) => Err(Error::NotInStore {
            id,
            store: name.to_owned(),
        }),
        (None, _) => Err(Error::NoSuchBackup(id)),
    }
}

/// Fetches `remote` into the local backup directory (see the module doc).
pub fn fetch(ctx: &Ctx, remote: &Remote, progress: Progress<'_>) -> Result<BackupRecord, Error> {
    let job = ctx.job(&remote.job)?;
    if ctx.catalog.id_exists(&remote.id)? {
        return Err(Error::AlreadyExists(remote.id.clone()));
    }
    let backend = backend(ctx, &remote.store)?;
    progress(Event::new(
        Phase::Fetch,
        format!("fetching {} from the store '{}'", remote.id, remote.store),
    ));
    let stored = backend.read_sidecar(&remote.job, &remote.id)?;
    if stored.id() != remote.id || stored.job() != remote.job {
        return Err(Error::RemoteDiffers {
            id: remote.id.clone(),
            store: remote.store.clone(),
            problem: format!(
                "has a sidecar for another backup ({} of job '{}')",
                stored.id(),
                stored.job()
            ),
        });
    }
    let (size, sha256) = stored.size_and_sha256();
    let (size, sha256) = (size, sha256.to_owned());
    let encrypted = stored.is_encrypted();
    let paths = ctx.store.paths_for(&remote.job, &remote.id, encrypted);
    std::fs::create_dir_all(&paths.dir)
        .map_err(Error::io("cannot create the backup directory", &paths.dir))?;
    ctx.store
        .check_space(&remote.job, job.min_free_space, &[(&paths.dir, size)])?;
    let mut cleanup = Cleanup::new();
    let (partial, file) = ctx.store.create_partial(&paths)?;
    cleanup.add(&partial);
    let key = backend.archive_key(&remote.job, &remote.id, encrypted);
    let mut events = |p: s3::Progress| progress(Event::bytes(Phase::Fetch, p.done, p.total));
    let writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let (writer, got) = backend.get_to_writer(&key, writer, &mut events, ctx.cancel)?;
    if got.size != size || got.sha256 != sha256 {
        return Err(Error::RemoteDiffers {
            id: remote.id.clone(),
            store: remote.store.clone(),
            problem: format!(
                "does not match its sidecar (sha256 {}, {} bytes; the sidecar says {}, {} bytes)",
                got.sha256, got.size, sha256, size
            ),
        });
    }
    let file = writer
        .into_inner()
        .map_err(|e| Error::io("cannot write the archive", &partial)(e.into_error()))?;
    file.sync_all()
        .map_err(Error::io("cannot write the archive", &partial))?;
    drop(file);
    // An encrypted backup's copy carries a redacted sidecar: its manifest comes out
    // of the archive (which needs the job's identity).
    let context = format!(
        "the copy of backup {} in the store '{}' failed verification",
        remote.id, remote.store
    );
    let sidecar = verify::complete_sidecar(ctx, &remote.job, stored, &partial, &context)?;
    ctx.store.write_sidecar(&paths, &sidecar)?;
    cleanup.add(&paths.sidecar);
    ctx.store.commit(&partial, &paths)?;
    cleanup.add(&paths.archive);
    ctx.catalog.insert_backup(&sidecar)?;
    let record = ctx.get(&remote.id)?;
    // Trust nothing: every entry against the manifest, as after a backup.
    if let Err(e) = verify::verify(ctx, &record, false, progress) {
        if let Err(drop) = ctx.catalog.remove_backup(&record.id) {
            tracing::error!(
                id = record.id,
                "cannot drop the row of the unverified fetch: {drop}"
            );
        }
        return Err(e);
    }
    cleanup.keep(&paths.archive);
    cleanup.keep(&paths.sidecar);
    let now = Utc::now().timestamp();
    if let Err(e) = ctx
        .catalog
        .set_location_verified(&remote.id, &remote.store, now, "ok")
    {
        tracing::warn!(
            id = remote.id,
            "cannot record the fetched copy's verification: {e}"
        );
    }
    tracing::info!(
        id = remote.id,
        store = remote.store,
        size = got.size,
        "backup fetched"
    );
    ctx.get(&remote.id)
}
