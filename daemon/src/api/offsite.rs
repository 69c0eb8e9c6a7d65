//! The offsite half of the API: the answers of `ListStores` and `ListStoreBackups`,
//! the stores' state in `GetStatus`, the `locations` of a backup in `list`/`show`, and
//! the result of a copy — domain values to proto messages, as [`super::convert`] does
//! for the rest.

use std::collections::HashMap;

use chrono::Utc;
use coffer_common::proto;

use crate::catalog::{LocationRecord, LocationState};
use crate::engine::Engine;
use crate::error::Error;
use crate::ops::copy::Copied;
use crate::ops::offsite::{StoreReport, StoredBackup};
use crate::ops::{self, Ctx};

/// A location on the wire.
pub fn location_message(l: &LocationRecord) -> proto::Location {
    proto::Location {
        store: l.store.clone(),
        state: l.state.as_str().to_owned(),
        copied_at: l.copied_at,
        verified_at: l.verified_at,
        verify_result: l.verify_result.clone(),
        size: l.size,
        etag: l.etag.clone(),
        retain_until: l.retain_until,
        error: l.error.clone(),
        attempts: l.attempts,
        next_attempt_at: l.next_attempt_at,
    }
}

/// Adds the backups' locations to their messages (one catalog read for all).
pub fn add_locations(ctx: &Ctx, backups: &mut [proto::Backup]) -> Result<(), Error> {
    let mut all: HashMap<String, Vec<LocationRecord>> = if backups.len() == 1 {
        let id = backups[0].id.clone();
        HashMap::from([(id.clone(), ctx.catalog.locations_of(&id)?)])
    } else {
        ctx.catalog.all_locations()?
    };
    for b in backups {
        if let Some(locations) = all.remove(&b.id) {
            b.locations = locations.iter().map(location_message).collect();
        }
    }
    Ok(())
}

/// `ListStores`: every store, reachable or not, with what this host has there.
pub fn stores(ctx: &Ctx) -> Result<proto::ListStoresResponse, Error> {
    let stores = ops::offsite::stores(ctx)?
        .into_iter()
        .map(|r: StoreReport| {
            let newest = r.newest.as_ref();
            proto::StoreInfo {
                name: r.config.name.clone(),
                endpoint: r.config.endpoint.clone(),
                bucket: r.config.bucket.clone(),
                prefix: r.config.prefix.clone(),
                region: r.config.region.clone(),
                object_lock_days: r.config.object_lock_days,
                reachable: r.reachable.is_ok(),
                error: r.reachable.err().unwrap_or_default(),
                objects: r.objects,
                bytes: r.bytes,
                newest_id: newest.map(|l| l.backup_id.clone()).unwrap_or_default(),
                newest_created_at: newest.map_or(0, |l| l.created_at),
                newest_copied_at: newest.map_or(0, |l| l.copied_at),
                lag_seconds: r.lag,
                pending: r.pending,
                failing: r.failing,
                last_error: r.last_error,
            }
        })
        .collect();
    Ok(proto::ListStoresResponse { stores })
}

/// `ListStoreBackups`.
pub fn store_backups(
    ctx: &Ctx,
    store: &str,
    job: Option<&str>,
    all_hosts: bool,
) -> Result<proto::ListStoreBackupsResponse, Error> {
    let backups = ops::offsite::list_store(ctx, store, job, all_hosts)?
        .into_iter()
        .map(|b: StoredBackup| proto::StoredBackup {
            host: b.host,
            job: b.job,
            id: b.id,
            created_at: b.created_at,
            size: b.size,
            copied_at: b.copied_at,
            encrypted: b.encrypted,
            local: b.local,
        })
        .collect();
    Ok(proto::ListStoreBackupsResponse { backups })
}

/// The stores' state for `GetStatus`, from what cofferd last saw (no request).
pub fn store_status(engine: &Engine) -> Result<Vec<proto::StoreStatus>, Error> {
    let cancel = tokio_util::sync::CancellationToken::new();
    engine.with_ctx(&cancel, |ctx| {
        let now = Utc::now().timestamp();
        let mut out = Vec::new();
        for slot in ctx.offsite.iter() {
            let name = slot.config.name.as_str();
            let health = slot.health();
            let (state, error) = match (slot.backend(), health.ok) {
                (Err(e), _) => ("unusable", e.to_string()),
                (Ok(_), None) => ("unknown", String::new()),
                (Ok(_), Some(true)) => ("ok", String::new()),
                (Ok(_), Some(false)) => ("failing", health.error.clone()),
            };
            let rows = ctx.catalog.locations_in(name, None)?;
            let queued = rows
                .iter()
                .filter(|l| matches!(l.state, LocationState::Pending | LocationState::Failed));
            let failing = rows.iter().filter(|l| l.state == LocationState::Failed).count();
            let mut lag = 0;
            for job in ctx
                .config
                .jobs
                .iter()
                .filter(|j| j.offsite_stores().iter().any(|s| s == name))
            {
                lag = lag.max(ops::offsite::lag(ctx, &job.name, name, now)?);
            }
            out.push(proto::StoreStatus {
                name: name.to_owned(),
                state: state.to_owned(),
                error,
                checked_at: health.at,
                pending: queued.count() as u64,
                failing: failing as u64,
                lag_seconds: lag,
            });
        }
        Ok(out)
    })
}

/// The offsite warnings of one job (for `JobStatus.warnings`).
pub fn warnings(engine: &Engine, job: &str) -> Result<Vec<String>, Error> {
    let cancel = tokio_util::sync::CancellationToken::new();
    engine.with_ctx(&cancel, |ctx| {
        ops::offsite::warnings(ctx, job, Utc::now().timestamp())
    })
}

/// A copy's result on the wire.
pub fn copy_result(c: Copied) -> proto::CopyResult {
    proto::CopyResult {
        id: c.id,
        store: c.store,
        size: c.size,
        already: c.already,
        retain_until: c.retain_until,
    }
}
