//! What the stores hold and how far behind they are: `cofferctl stores`, `list --store`
//! (this host's backups, or with `--all-hosts` every host's under the bucket: the
//! fleet view), `verify --store`, the start-up sweep and reconciliation of each store,
//! and the lag that metrics and health report.
//!
//! Lag of a job in a store: 0 when its newest local backup is in the store; otherwise
//! how long ago the oldest local backup was taken that is newer than everything the
//! store has of the job — how long the store has been behind. Health warns when it
//! exceeds the job's offsite `stale-after`.

use std::collections::HashSet;

use chrono::Utc;
use coffer_common::ids;

use super::Ctx;
use super::copy::{backend, note};
use super::fetch::{self, Remote};
use super::verify::{self, Stage, Verified};
use crate::catalog::{FoundRemote, LocationRecord, LocationState, StoreReconciled};
use crate::config::StoreConfig;
use crate::error::Error;
use crate::manifest::redacted::AnySidecar;
use crate::run::{Event, Phase, Progress};
use crate::store::s3::{self, RemoteBackup};

/// One store in `cofferctl stores`.
#[derive(Debug, Clone)]
pub struct StoreReport {
    pub config: StoreConfig,
    /// `Err`: why the store cannot be reached or used, one sentence.
    pub reachable: Result<(), String>,
    /// Objects and bytes under this host's prefix.
    pub objects: u64,
    pub bytes: u64,
    /// The newest backup copied there (by creation time).
    pub newest: Option<LocationRecord>,
    /// The largest lag of the jobs that copy there (seconds).
    pub lag: i64,
    /// Copies queued, and of those failing.
    pub pending: u64,
    pub failing: u64,
    /// The newest failure's sentence among the queued copies.
    pub last_error: String,
}

/// A complete backup in a store listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBackup {
    pub host: String,
    pub job: String,
    pub id: String,
    /// From the id (Unix seconds).
    pub created_at: i64,
    /// The archive's size.
    pub size: u64,
    /// When the sidecar went up (Unix seconds).
    pub copied_at: i64,
    pub encrypted: bool,
    /// This host's backup, also in the local backup dir.
    pub local: bool,
}

/// What start-up did to a store.
#[derive(Debug, Default)]
pub struct Swept {
    pub aborted: usize,
    pub reconciled: StoreReconciled,
    /// Archives without a sidecar (an interrupted copy or deletion), left alone.
    pub incomplete: Vec<String>,
}

fn id_time(id: &str) -> i64 {
    ids::split_backup_id(id).map_or(0, |(_, t)| t.timestamp())
}

fn stored(host: &str, b: &RemoteBackup, local: bool) -> Option<StoredBackup> {
    let (archive, sidecar) = (b.archive.as_ref()?, b.sidecar.as_ref()?);
    Some(StoredBackup {
        host: host.to_owned(),
        job: b.job.clone(),
        id: b.id.clone(),
        created_at: id_time(&b.id),
        size: archive.size,
        copied_at: sidecar.last_modified.timestamp(),
        encrypted: b.encrypted,
        local,
    })
}

/// The complete backups in `store`: this host's (of `job`, or all), or every host's.
/// Archives without their sidecar (a copy in progress or interrupted) are not listed.
pub fn list_store(
    ctx: &Ctx,
    store: &str,
    job: Option<&str>,
    all_hosts: bool,
) -> Result<Vec<StoredBackup>, Error> {
    let backend = backend(ctx, store)?;
    let me = ctx.config.daemon.host_name.as_str();
    let listed: Result<Vec<(String, RemoteBackup)>, Error> = if all_hosts {
        backend
            .list_fleet(me)
            .map(|all| all.into_iter().map(|f| (f.host, f.backup)).collect())
            .map_err(Error::from_remote)
    } else {
        backend
            .list_backups(job)
            .map(|all| all.into_iter().map(|b| (me.to_owned(), b)).collect())
            .map_err(Error::from_remote)
    };
    note(ctx, store, &listed);
    let mut out = Vec::new();
    for (host, b) in &listed? {
        if job.is_some_and(|j| j != b.job) {
            continue;
        }
        let local = host == me && ctx.catalog.id_exists(&b.id)?;
        out.extend(stored(host, b, local));
    }
    out.sort_by(|a, b| {
        a.host
            .cmp(&b.host)
            .then(b.created_at.cmp(&a.created_at))
            .then(ids::cmp_ids(&b.id, &a.id))
    });
    Ok(out)
}

/// How far `store` is behind with `job` at `now` (see the module doc), in seconds.
pub fn lag(ctx: &Ctx, job: &str, store: &str, now: i64) -> Result<i64, Error> {
    let copied: HashSet<String> = ctx
        .catalog
        .locations_in(store, Some(job))?
        .into_iter()
        .filter(|l| l.state == LocationState::Copied)
        .map(|l| l.backup_id)
        .collect();
    let mut behind_since = None;
    for backup in ctx.catalog.list_backups(Some(job))? {
        if copied.contains(&backup.id) {
            break;
        }
        behind_since = Some(backup.created_at);
    }
    Ok(behind_since.map_or(0, |t| (now - t).max(0)))
}

/// The offsite warnings of `job` at `now`: each store that is behind by more than the
/// job's offsite `stale-after`, with the failure that keeps it behind, if any.
pub fn warnings(ctx: &Ctx, job: &str, now: i64) -> Result<Vec<String>, Error> {
    let Some(offsite) = ctx.config.job(job).and_then(|j| j.offsite.as_ref()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for store in &offsite.stores {
        let lag = lag(ctx, job, store, now)?;
        if lag <= offsite.stale_after.as_secs() as i64 {
            continue;
        }
        let failing = ctx
            .catalog
            .locations_in(store, Some(job))?
            .into_iter()
            .filter(|l| l.state == LocationState::Failed && !l.error.is_empty())
            .max_by_key(|l| l.created_at)
            .map(|l| format!(": {}", l.error))
            .unwrap_or_default();
        out.push(format!(
            "the newest backup is not in the store '{store}' after {} (stale-after {}){failing}",
            humantime::format_duration(std::time::Duration::from_secs(lag as u64)),
            humantime::format_duration(offsite.stale_after)
        ));
    }
    Ok(out)
}

/// Every configured store: reachable (one quick request), what this host has there
/// (one LIST), the newest copy, the lag and the queue.
pub fn stores(ctx: &Ctx) -> Result<Vec<StoreReport>, Error> {
    let now = Utc::now().timestamp();
    let mut out = Vec::new();
    for slot in ctx.offsite.iter() {
        let name = slot.config.name.as_str();
        let usage = slot
            .backend()
            .map_err(Error::from)
            .and_then(|b| b.check().and_then(|()| b.usage()).map_err(Error::from_remote));
        note(ctx, name, &usage);
        let rows = ctx.catalog.locations_in(name, None)?;
        let queued: Vec<&LocationRecord> = rows
            .iter()
            .filter(|l| matches!(l.state, LocationState::Pending | LocationState::Failed))
            .collect();
        let mut lag_max = 0;
        for job in ctx
            .config
            .jobs
            .iter()
            .filter(|j| j.offsite_stores().iter().any(|s| s == name))
        {
            lag_max = lag_max.max(lag(ctx, &job.name, name, now)?);
        }
        let (objects, bytes) = usage.as_ref().map_or((0, 0), |u| *u);
        out.push(StoreReport {
            config: slot.config.clone(),
            reachable: usage.map(|_| ()).map_err(|e| e.to_string()),
            objects,
            bytes,
            newest: rows.iter().find(|l| l.state == LocationState::Copied).cloned(),
            lag: lag_max,
            pending: queued.len() as u64,
            failing: queued.iter().filter(|l| l.state == LocationState::Failed).count() as u64,
            last_error: queued
                .iter()
                .filter(|l| !l.error.is_empty())
                .max_by_key(|l| l.next_attempt_at)
                .map(|l| l.error.clone())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// At start-up: aborts the multipart uploads a killed cofferd left under this host's
/// prefix, then makes the catalog's locations agree with one LIST of that prefix (a
/// rebuilt catalog finds its copies again; copies that vanished are made again while
/// the backup is local).
pub fn sweep(ctx: &Ctx, store: &str) -> Result<Swept, Error> {
    let backend = backend(ctx, store)?;
    let result = (|| {
        let aborted = backend.abort_incomplete_uploads(Utc::now())?;
        Ok::<_, s3::S3Error>((aborted, backend.list_backups(None)?))
    })()
    .map_err(Error::from_remote);
    note(ctx, store, &result);
    let (aborted, listed) = result?;
    let mut found = Vec::new();
    let mut incomplete = Vec::new();
    for b in &listed {
        match (&b.archive, &b.sidecar) {
            (Some(archive), Some(sidecar)) => found.push(FoundRemote {
                job: b.job.clone(),
                id: b.id.clone(),
                created_at: id_time(&b.id),
                size: archive.size,
                etag: archive.etag.clone().unwrap_or_default(),
                copied_at: sidecar.last_modified.timestamp(),
                encrypted: b.encrypted,
            }),
            (Some(archive), None) => incomplete.push(archive.key.clone()),
            _ => {}
        }
    }
    let requeue = |id: &str| {
        ctx.catalog.get_backup(id).ok().flatten().is_some_and(|b| {
            ctx.config
                .job(&b.job)
                .is_some_and(|j| j.offsite_stores().iter().any(|s| s == store))
        })
    };
    let reconciled = ctx.catalog.reconcile_store(store, &found, &requeue)?;
    Ok(Swept {
        aborted,
        reconciled,
        incomplete,
    })
}

/// `verify ID --store S [--deep]`: the copy in the store against what cofferd knows.
/// Shallow (HEAD and one small GET, no egress of the archive): the archive and sidecar
/// are there, the sidecar is this backup's and agrees with the local one, the archive
/// has the sidecar's size and still the ETag it had when it was copied (an object
/// changed behind cofferd's back has another). Deep also downloads the archive into
/// staging and checks it as `verify --deep` does: its sha256, every entry against the
/// manifest, SQLite's integrity and foreign-key checks. The verdict is recorded with
/// the location.
pub fn verify_remote(
    ctx: &Ctx,
    id_text: &str,
    store: &str,
    deep: bool,
    progress: Progress<'_>,
) -> Result<Verified, Error> {
    let remote = fetch::locate(ctx, id_text, Some(store))?;
    let result = check_remote(ctx, &remote, deep, progress);
    note(ctx, store, &result);
    let verdict = match &result {
        Ok(_) => "ok".to_owned(),
        Err(Error::Cancelled) => return result,
        Err(e) => {
            ctx.counters
                .count(|c| *c.verify_failures.entry(remote.job.clone()).or_default() += 1);
            e.describe()
        }
    };
    let now = Utc::now().timestamp();
    if let Err(e) = ctx
        .catalog
        .set_location_verified(&remote.id, store, now, &verdict)
    {
        tracing::warn!(
            id = remote.id,
            store,
            "cannot record the verification result: {e}"
        );
    }
    result
}

fn check_remote(ctx: &Ctx, remote: &Remote, deep: bool, progress: Progress<'_>) -> Result<Verified, Error> {
    let backend = backend(ctx, &remote.store)?;
    let differs = |problem: String| Error::RemoteDiffers {
        id: remote.id.clone(),
        store: remote.store.clone(),
        problem,
    };
    progress(Event::new(
        Phase::Verify,
        format!(
            "checking the copy of {} in the store '{}'",
            remote.id, remote.store
        ),
    ));
    let location = ctx.catalog.location(&remote.id, &remote.store)?;
    let encrypted = location.as_ref().is_some_and(|l| l.encrypted);
    let archive_key = backend.archive_key(&remote.job, &remote.id, encrypted);
    let stored = backend.read_sidecar(&remote.job, &remote.id)?;
    let (size, sha256) = stored.size_and_sha256();
    let (size, sha256) = (size, sha256.to_owned());
    let archive = backend
        .head(&archive_key)?
        .ok_or_else(|| differs("has lost its archive (only the sidecar is left)".into()))?;
    if stored.id() != remote.id {
        return Err(differs(format!(
            "has the sidecar of another backup ({})",
            stored.id()
        )));
    }
    if let Some(local) = ctx.catalog.get_backup(&remote.id)?
        && (local.sha256 != sha256 || local.size != size)
    {
        return Err(differs(
            "has a sidecar that differs from the local backup's (size or sha256)".into(),
        ));
    }
    if archive.size != size {
        return Err(differs(format!(
            "has an archive of {} bytes, but its sidecar says {} bytes",
            archive.size, size
        )));
    }
    let etag = archive.etag.unwrap_or_default();
    if let Some(l) = &location
        && !l.etag.is_empty()
        && l.etag != etag
    {
        return Err(differs(format!(
            "changed after it was copied (its ETag is {etag}, it was {})",
            l.etag
        )));
    }
    let encrypted = stored.is_encrypted();
    let mut entries = match &stored {
        AnySidecar::Full(full) => full.manifest.entries.len() as u64,
        AnySidecar::Redacted(_) => 0,
    };
    if deep {
        let stage = Stage::new(ctx, &format!("verify-{}-{}", remote.store, remote.id))?;
        ctx.store.check_space(&remote.job, 0, &[(&stage.dir, size)])?;
        let path = stage.dir.join("archive");
        let file = std::fs::File::create(&path).map_err(Error::io("cannot create", &path))?;
        let mut events = |p: s3::Progress| progress(Event::bytes(Phase::Fetch, p.done, p.total));
        let writer = std::io::BufWriter::with_capacity(1 << 20, file);
        backend.get_to_writer(&archive_key, writer, &mut events, ctx.cancel)?;
        let context = format!(
            "the copy of backup {} in the store '{}' failed verification",
            remote.id, remote.store
        );
        // A redacted sidecar's manifest comes out of the (decrypted) archive first.
        let full = verify::complete_sidecar(ctx, &remote.job, stored, &path, &context)?;
        entries = full.manifest.entries.len() as u64;
        verify::extract_checked(
            ctx,
            &path,
            verify::keys(ctx, &remote.job, &full)?,
            Some(verify::expected(&full)),
            &stage.database_only(),
            &context,
            Phase::Verify,
            full.size,
            progress,
        )?;
    }
    Ok(Verified {
        id: remote.id.clone(),
        entries,
        deep,
        ciphertext_only: encrypted && !deep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CopiedFacts;
    use crate::ops::testing::TestCtx;
    use crate::ops::{backup, copy};
    use crate::source::sqlite::test_db::make_db;

    const STORE: &str = "[[store]]\nname = \"s3\"\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"bbb\"\n";

    #[test]
    fn lag_is_how_long_the_store_has_been_behind_and_warns_past_stale_after() {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("app.db");
        make_db(&db, false);
        let extra = "verify-after-backup = false\n[job.retention]\nkeep-last = 1\n\
                     [job.offsite]\nstores = [\"s3\"]\nstale-after = \"1h\"\n";
        let t = TestCtx::with_stores(&db, &[], extra, STORE, None);
        let ctx = t.ctx();
        let job = ctx.job("app").unwrap();
        let mut taken = Vec::new();
        for _ in 0..3 {
            // (take, not the engine's run: no retention in between)
            let record = backup::take(&ctx, job, "", false, &mut |_| {}).unwrap();
            copy::enqueue(&ctx, job, &record).unwrap();
            taken.push(record);
        }
        let oldest = taken[0].created_at;
        // Nothing copied yet: behind since the oldest backup.
        assert_eq!(lag(&ctx, "app", "s3", oldest + 100).unwrap(), 100);
        let copied = |r: &crate::catalog::BackupRecord| {
            let facts = CopiedFacts {
                copied_at: r.created_at,
                ..Default::default()
            };
            ctx.catalog
                .set_copied(&r.id, "app", "s3", r.created_at, false, &facts)
                .unwrap();
        };
        // The first copied: behind since the second (same second here, so 100 again).
        copied(&taken[0]);
        assert_eq!(lag(&ctx, "app", "s3", taken[1].created_at + 100).unwrap(), 100);
        assert!(
            warnings(&ctx, "app", taken[1].created_at + 100)
                .unwrap()
                .is_empty()
        );
        ctx.catalog
            .set_copy_failed(&taken[2].id, "s3", "cannot reach the store 's3'", 0)
            .unwrap();
        let w = warnings(&ctx, "app", taken[1].created_at + 7200).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("the newest backup is not in the store 's3' after 2h"),
            "{w:?}"
        );
        assert!(w[0].ends_with(": cannot reach the store 's3'"), "{w:?}");
        // The newest copied: up to date, whatever came before.
        copied(&taken[2]);
        assert_eq!(lag(&ctx, "app", "s3", taken[2].created_at + 9999).unwrap(), 0);
        assert!(
            warnings(&ctx, "app", taken[2].created_at + 9999)
                .unwrap()
                .is_empty()
        );
        // Local retention (keep-last 1) keeps what is still to be copied.
        let pruned = crate::ops::prune::prune(&ctx, "test", Some("app"), true).unwrap();
        let verdict = |r: &crate::catalog::BackupRecord| {
            let p = pruned.iter().find(|p| p.decision.id == r.id).unwrap();
            (p.decision.keep, p.decision.reasons.clone())
        };
        assert_eq!(verdict(&taken[0]), (false, vec![]));
        assert_eq!(verdict(&taken[1]), (true, vec!["not yet offsite".to_owned()]));
        assert!(verdict(&taken[2]).0);
    }

    #[test]
    fn a_store_without_credentials_is_unusable_with_a_sentence() {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("app.db");
        make_db(&db, false);
        let store = format!("{STORE}credentials-file = \"/nonexistent/creds\"\n");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let t = TestCtx::with_stores(&db, &[], "", &store, Some(rt.handle().clone()));
        let ctx = t.ctx();
        let e = list_store(&ctx, "s3", None, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read the credentials file /nonexistent/creds"
        );
        assert_eq!(e.kind(), crate::error::ErrorKind::Precondition);
        let e = list_store(&ctx, "nope", None, false).unwrap_err();
        assert_eq!(e.to_string(), "there is no store named 'nope'");
    }
}
