//! Copying a backup to an offsite store: the work of the copy queue and of
//! `cofferctl copy`.
//!
//! A committed backup is queued for each store of its job ([`enqueue`]; the queue is
//! the catalog's `locations` rows in state pending/failed, so it survives restarts).
//! The copier (cofferd's background task) takes due rows one at a time and runs [`copy`]:
//!
//! 1. the local sidecar is read and checked against the catalog;
//! 2. if the store already holds the archive at the right size (the daemon died after
//!    uploading it, or a copy is asked for again), it is read back and its sha256
//!    compared: a good one is not uploaded again (with Object Lock a second upload
//!    would leave a second locked version behind);
//! 3. otherwise the archive is uploaded (multipart, bounded memory, aborted on any
//!    failure), read back and compared with the sidecar's sha256;
//! 4. then the sidecar ([`remote_sidecar`]) goes up last, unless a complete copy had
//!    it already, and is read back too: a sidecar in the store always means a
//!    complete, verified archive;
//! 5. the location is recorded `copied` with the archive's size, ETag and lock date.
//!
//! A failure records the sentence and the time of the next attempt ([`failed`]:
//! `copy-retry` doubling per failure, at most an hour); a copy never touches the local
//! backup, and a local backup never waits for a copy.

use std::time::Duration;

use chrono::Utc;

use super::{Ctx, verify};
use crate::catalog::{BackupRecord, CopiedFacts, LocationRecord};
use crate::config::JobConfig;
use crate::error::Error;
use crate::manifest::Sidecar;
use crate::run::{Event, Phase, Progress};
use crate::store::StoreError;
use crate::store::s3::{self, S3Backend};

/// The longest wait between two attempts of a failing copy.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// What a finished copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub id: String,
    pub job: String,
    pub store: String,
    /// Archive bytes in the store.
    pub size: u64,
    /// The store held a complete copy already (read back and found good).
    pub already: bool,
    /// Object Lock: not deletable before this (Unix seconds; 0 = no lock).
    pub retain_until: i64,
}

/// Queues a copy of `record` to each store of `job` (nothing without `[job.offsite]`).
pub fn enqueue(ctx: &Ctx, job: &JobConfig, record: &BackupRecord) -> Result<(), Error> {
    for store in job.offsite_stores() {
        ctx.catalog.enqueue_copy(
            &record.id,
            &record.job,
            store,
            record.created_at,
            record.protected,
        )?;
    }
    Ok(())
}

/// How long after its `attempts`-th failure a copy is tried again: `first`, doubling
/// per failure, at most [`MAX_RETRY`].
pub fn retry_delay(first: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    first.saturating_mul(factor).min(MAX_RETRY)
}

/// The store's client, by name.
pub fn backend<'a>(ctx: &'a Ctx, store: &str) -> Result<&'a S3Backend, Error> {
    let slot = ctx
        .offsite
        .get(store)
        .ok_or_else(|| Error::UnknownStore(store.to_owned()))?;
    Ok(slot.backend()?)
}

/// Notes what a store request's outcome says about the store (for `status`): only
/// failures of the store itself count, not a refused argument.
pub fn note<T>(ctx: &Ctx, store: &str, result: &Result<T, Error>) {
    let Some(slot) = ctx.offsite.get(store) else {
        return;
    };
    match result {
        Ok(_) => slot.note(Ok(())),
        Err(e @ Error::Store(StoreError::Remote(_) | StoreError::Unusable(_))) => {
            slot.note(Err(&e.to_string()))
        }
        Err(_) => {}
    }
}

/// The sidecar as it goes into a store — the one place that decides what leaves the
/// machine beside the archive: a plain backup's full sidecar (its archive is readable
/// anyway), an encrypted backup's redacted one (id, job, host, times, sizes, hashes,
/// key fingerprints, pin: no names, paths or database facts).
pub fn remote_sidecar(sidecar: &Sidecar) -> Result<Vec<u8>, Error> {
    crate::manifest::redacted::for_offsite(sidecar).map_err(|e| {
        Error::Internal(format!(
            "cannot serialize the sidecar of {}: {e}",
            sidecar.manifest.id
        ))
    })
}

/// Maps the store client's progress onto a run's phases.
fn events(progress: Progress<'_>) -> impl FnMut(s3::Progress) + Send + '_ {
    move |p: s3::Progress| {
        let phase = match p.phase {
            s3::Phase::Upload => Phase::Copy,
            s3::Phase::Verify => Phase::Verify,
            s3::Phase::Download => Phase::Fetch,
        };
        progress(Event::bytes(phase, p.done, p.total));
    }
}

/// Copies `record` to `store` (see the module doc); the location is recorded.
pub fn copy(ctx: &Ctx, record: &BackupRecord, store: &str, progress: Progress<'_>) -> Result<Copied, Error> {
    let backend = backend(ctx, store)?;
    let sidecar = verify::load_sidecar(ctx, record)?;
    let encrypted = sidecar.is_encrypted();
    let archive = ctx.store.paths_for(&record.job, &record.id, encrypted).archive;
    let archive_key = backend.archive_key(&record.job, &record.id, encrypted);
    let sidecar_key = backend.sidecar_key(&record.job, &record.id);
    progress(Event::new(
        Phase::Copy,
        format!("copying {} to the store '{store}'", record.id),
    ));
    let copied_at = Utc::now().timestamp();
    let present = backend.objects_of(&record.job, &record.id)?;
    let listed = |key: &str| present.iter().find(|o| o.key == key);
    let found = match listed(&archive_key) {
        Some(archive) if archive.size == sidecar.size => {
            existing(ctx, backend, &archive_key, &sidecar, progress)?
        }
        _ => None,
    };
    let (archive_facts, already) = match found {
        Some(found) => (found, true),
        None => {
            let put = backend.put_archive(
                &archive_key,
                &archive,
                &sidecar.sha256,
                &mut events(progress),
                ctx.cancel,
            )?;
            (
                (
                    put.size,
                    put.etag.unwrap_or_default(),
                    put.retain_until,
                    copied_at,
                ),
                false,
            )
        }
    };
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    // Last: the sidecar (unless a complete copy had it already).
    let side_until = match listed(&sidecar_key) {
        Some(_) if already => backend.head(&sidecar_key)?.and_then(|h| h.retain_until),
        _ => {
            backend
                .put_small(&sidecar_key, remote_sidecar(&sidecar)?)?
                .retain_until
        }
    };
    let (size, etag, archive_until, copied_at) = archive_facts;
    let facts = CopiedFacts {
        copied_at,
        verified_at: Utc::now().timestamp(),
        size,
        etag,
        retain_until: archive_until.max(side_until).map_or(0, |t| t.timestamp()),
        encrypted,
    };
    ctx.catalog.set_copied(
        &record.id,
        &record.job,
        store,
        record.created_at,
        record.protected,
        &facts,
    )?;
    if !already {
        ctx.counters.count(|c| {
            *c.copied_bytes
                .entry((record.job.clone(), store.to_owned()))
                .or_default() += facts.size
        });
    }
    tracing::info!(
        id = record.id,
        store,
        size = facts.size,
        already,
        "backup copied offsite"
    );
    Ok(Copied {
        id: record.id.clone(),
        job: record.job.clone(),
        store: store.to_owned(),
        size: facts.size,
        already,
        retain_until: facts.retain_until,
    })
}

/// The archive the store holds already, read back and found equal to the local one:
/// its size, ETag, lock date and upload time. `None` when there is none, or it is not
/// good (it will be replaced).
type Found = (u64, String, Option<chrono::DateTime<Utc>>, i64);

fn existing(
    ctx: &Ctx,
    backend: &S3Backend,
    archive_key: &str,
    sidecar: &Sidecar,
    progress: Progress<'_>,
) -> Result<Option<Found>, Error> {
    let Some(archive) = backend.head(archive_key)? else {
        return Ok(None);
    };
    if archive.size != sidecar.size {
        return Ok(None);
    }
    progress(Event::new(
        Phase::Verify,
        "the store has this archive already; reading it back",
    ));
    let mut verify_events = |p: s3::Progress| progress(Event::bytes(Phase::Verify, p.done, p.total));
    let (_, got) = backend.get_to_writer(archive_key, std::io::sink(), &mut verify_events, ctx.cancel)?;
    if got.sha256 != sidecar.sha256 || got.size != sidecar.size {
        tracing::warn!(
            key = archive_key,
            "the copy in the store differs from the archive; uploading it again"
        );
        return Ok(None);
    }
    Ok(Some((
        archive.size,
        archive.etag.unwrap_or_default(),
        archive.retain_until,
        archive.last_modified.timestamp(),
    )))
}

/// Records a failed attempt of the queued copy `location`: the sentence, a counted
/// failure, and the next attempt after [`retry_delay`]. Returns that time.
pub fn failed(ctx: &Ctx, location: &LocationRecord, error: &Error) -> Result<i64, Error> {
    let first = ctx
        .config
        .store(&location.store)
        .map_or(Duration::from_secs(30), |s| s.copy_retry);
    let delay = retry_delay(first, location.attempts + 1);
    let at = Utc::now().timestamp() + delay.as_secs().max(1) as i64;
    ctx.catalog
        .set_copy_failed(&location.backup_id, &location.store, &error.describe(), at)?;
    ctx.counters.count(|c| {
        *c.copy_failures
            .entry((location.job.clone(), location.store.clone()))
            .or_default() += 1
    });
    tracing::warn!(
        id = location.backup_id,
        store = location.store,
        retry_in_seconds = delay.as_secs(),
        "copy failed: {}",
        error.describe()
    );
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        let first = Duration::from_secs(30);
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(first, n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(retry_delay(first, 0), first);
        assert_eq!(
            retry_delay(Duration::from_secs(1), u32::MAX),
            Duration::from_secs(3600)
        );
    }
}
