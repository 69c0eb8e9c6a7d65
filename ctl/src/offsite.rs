//! The offsite commands and how their answers print: `stores`, `copy ID --store S`,
//! `list [JOB] --store S [--all-hosts]` (the fleet view), `fetch ID --store S`,
//! `verify ID --store S [--deep]`; and the offsite parts of `list`, `show`, `status`
//! (backup locations, store states, warnings). Tables for people, one JSON document
//! with `--json`; store credentials never reach cofferctl at all.

use coffer_common::format::{bytes, timestamp, whole_seconds};
use coffer_common::proto::{self, backup_event::Event};
use serde::Serialize;
use serde_json::{Value, json};

use crate::output::{print_json, table};
use crate::{Client, Result, follow};

/// RFC 3339 for a Unix time, None (null) for 0.
fn time_opt(unix: i64) -> Option<String> {
    (unix != 0).then(|| timestamp(unix))
}

/// A lag for people: `-` when the store is up to date.
fn lag_text(seconds: i64) -> String {
    if seconds <= 0 {
        "-".into()
    } else {
        whole_seconds(seconds as u64)
    }
}

/// A location of a backup, as `--json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LocationJson<'a> {
    store: &'a str,
    state: &'a str,
    copied_at: Option<String>,
    verified_at: Option<String>,
    verify_result: Option<&'a str>,
    size: u64,
    etag: &'a str,
    retain_until: Option<String>,
    error: Option<&'a str>,
    attempts: u32,
    next_attempt_at: Option<String>,
}

/// The `locations` of a backup for `--json`.
pub fn locations_json(locations: &[proto::Location]) -> Vec<LocationJson<'_>> {
    locations
        .iter()
        .map(|l| LocationJson {
            store: &l.store,
            state: &l.state,
            copied_at: time_opt(l.copied_at),
            verified_at: time_opt(l.verified_at),
            verify_result: (!l.verify_result.is_empty()).then_some(l.verify_result.as_str()),
            size: l.size,
            etag: &l.etag,
            retain_until: time_opt(l.retain_until),
            error: (!l.error.is_empty()).then_some(l.error.as_str()),
            attempts: l.attempts,
            next_attempt_at: time_opt(l.next_attempt_at),
        })
        .collect()
}

/// The OFFSITE cell of `list`: each store, with its state unless copied
/// (`offsite`, `offsite:pending`, `b2:failed`), or `-`.
pub fn locations_cell(locations: &[proto::Location]) -> String {
    if locations.is_empty() {
        return "-".into();
    }
    locations
        .iter()
        .map(|l| match l.state.as_str() {
            "copied" => l.store.clone(),
            state => format!("{}:{state}", l.store),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The `offsite` lines of `show`.
pub fn locations_lines(locations: &[proto::Location]) -> Vec<(String, String)> {
    locations
        .iter()
        .map(|l| {
            let mut text = match l.state.as_str() {
                "copied" => format!("copied {} ({})", timestamp(l.copied_at), bytes(l.size)),
                "failed" => format!(
                    "FAILED {} time(s), next attempt {}: {}",
                    l.attempts,
                    timestamp(l.next_attempt_at),
                    l.error
                ),
                other => other.to_owned(),
            };
            match l.verify_result.as_str() {
                "" => {}
                "ok" => text.push_str(&format!(", verified {}", timestamp(l.verified_at))),
                err => text.push_str(&format!(
                    ", verification FAILED {}: {err}",
                    timestamp(l.verified_at)
                )),
            }
            if l.retain_until > 0 {
                text.push_str(&format!(", locked until {}", timestamp(l.retain_until)));
            }
            (format!("in {}", l.store), text)
        })
        .collect()
}

/// `stores`.
pub async fn stores(c: &mut Client, json: bool) -> Result<()> {
    let stores = c
        .list_stores(proto::ListStoresRequest {})
        .await?
        .into_inner()
        .stores;
    if json {
        let list: Vec<Value> = stores
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "endpoint": s.endpoint,
                    "bucket": s.bucket,
                    "prefix": s.prefix,
                    "region": s.region,
                    "object-lock-days": s.object_lock_days,
                    "reachable": s.reachable,
                    "error": (!s.error.is_empty()).then_some(&s.error),
                    "objects": s.objects,
                    "bytes": s.bytes,
                    "newest": (!s.newest_id.is_empty()).then(|| json!({
                        "id": s.newest_id,
                        "created-at": time_opt(s.newest_created_at),
                        "copied-at": time_opt(s.newest_copied_at),
                    })),
                    "lag-seconds": s.lag_seconds,
                    "pending": s.pending,
                    "failing": s.failing,
                    "last-error": (!s.last_error.is_empty()).then_some(&s.last_error),
                })
            })
            .collect();
        print_json(&list);
        return Ok(());
    }
    if stores.is_empty() {
        outln!("no stores configured");
        return Ok(());
    }
    let mut rows = vec![
        [
            "STORE",
            "WHERE",
            "REACHABLE",
            "OBJECTS",
            "NEWEST COPY",
            "LAG",
            "QUEUED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in &stores {
        rows.push(vec![
            s.name.clone(),
            format!("{}/{}/{}", s.endpoint, s.bucket, s.prefix),
            if s.reachable { "yes".into() } else { "NO".into() },
            format!("{} ({})", s.objects, bytes(s.bytes)),
            if s.newest_id.is_empty() {
                "-".into()
            } else {
                format!("{} at {}", s.newest_id, timestamp(s.newest_copied_at))
            },
            lag_text(s.lag_seconds),
            match s.failing {
                0 => s.pending.to_string(),
                n => format!("{} ({n} failing)", s.pending),
            },
        ]);
    }
    table(&rows);
    for s in stores
        .iter()
        .filter(|s| !s.error.is_empty() || !s.last_error.is_empty())
    {
        let why = if s.error.is_empty() {
            &s.last_error
        } else {
            &s.error
        };
        outln!("{}: {why}", s.name);
    }
    Ok(())
}

/// `copy ID --store S`.
pub async fn copy(c: &mut Client, id: String, store: String, json: bool) -> Result<()> {
    let stream = c
        .copy_backup(proto::CopyBackupRequest {
            id: id.clone(),
            store: store.clone(),
        })
        .await?
        .into_inner();
    let copied = follow(stream, &format!("copying {id} to {store}"), |e| match e {
        Event::Copy(c) => Some(c),
        _ => None,
    })
    .await?;
    if json {
        print_json(&json!({
            "id": copied.id,
            "store": copied.store,
            "size": copied.size,
            "already": copied.already,
            "retain-until": time_opt(copied.retain_until),
        }));
    } else {
        let how = if copied.already {
            "was in the store already, read back and verified"
        } else {
            "copied and read back"
        };
        outln!(
            "backup {} {how}: {} in {}",
            copied.id,
            bytes(copied.size),
            copied.store
        );
    }
    Ok(())
}

/// `list [JOB] --store S [--all-hosts]`.
pub async fn list(
    c: &mut Client,
    job: Option<String>,
    store: String,
    all_hosts: bool,
    json: bool,
) -> Result<()> {
    let backups = c
        .list_store_backups(proto::ListStoreBackupsRequest {
            store,
            job: job.unwrap_or_default(),
            all_hosts,
        })
        .await?
        .into_inner()
        .backups;
    if json {
        let list: Vec<Value> = backups
            .iter()
            .map(|b| {
                json!({
                    "host": b.host,
                    "job": b.job,
                    "id": b.id,
                    "created-at": time_opt(b.created_at),
                    "size": b.size,
                    "copied-at": time_opt(b.copied_at),
                    "encrypted": b.encrypted,
                    "local": b.local,
                })
            })
            .collect();
        print_json(&list);
        return Ok(());
    }
    if backups.is_empty() {
        outln!("no backups in the store");
        return Ok(());
    }
    let mut rows = vec![
        ["HOST", "JOB", "ID", "CREATED", "SIZE", "COPIED", "LOCAL"]
            .map(String::from)
            .to_vec(),
    ];
    for b in &backups {
        rows.push(vec![
            b.host.clone(),
            b.job.clone(),
            b.id.clone(),
            timestamp(b.created_at),
            bytes(b.size),
            timestamp(b.copied_at),
            if b.local { "yes".into() } else { "-".into() },
        ]);
    }
    table(&rows);
    Ok(())
}

/// `fetch ID --store S`.
pub async fn fetch(c: &mut Client, id: String, store: String, json: bool) -> Result<()> {
    let stream = c
        .fetch_backup(proto::FetchBackupRequest {
            id: id.clone(),
            store: store.clone(),
        })
        .await?
        .into_inner();
    let backup = follow(stream, &format!("fetching {id} from {store}"), |e| match e {
        Event::Backup(b) => Some(b),
        _ => None,
    })
    .await?;
    if json {
        print_json(&crate::output::backup_json(&backup));
    } else {
        outln!(
            "backup {} fetched from {store} into {} ({}), verified",
            backup.id,
            backup.path,
            bytes(backup.size)
        );
    }
    Ok(())
}

/// The stores part of `status` (text).
pub fn status_stores(stores: &[proto::StoreStatus]) {
    if stores.is_empty() {
        return;
    }
    let mut rows = vec![
        ["STORE", "STATE", "QUEUED", "LAG", "LAST CONTACT"]
            .map(String::from)
            .to_vec(),
    ];
    for s in stores {
        let state = if s.error.is_empty() {
            s.state.clone()
        } else {
            format!("{}: {}", s.state, s.error)
        };
        rows.push(vec![
            s.name.clone(),
            state,
            match s.failing {
                0 => s.pending.to_string(),
                n => format!("{} ({n} failing)", s.pending),
            },
            lag_text(s.lag_seconds),
            timestamp(s.checked_at),
        ]);
    }
    table(&rows);
}

/// The stores part of `status --json`.
pub fn status_stores_json(stores: &[proto::StoreStatus]) -> Vec<Value> {
    stores
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "state": s.state,
                "error": (!s.error.is_empty()).then_some(&s.error),
                "checked-at": time_opt(s.checked_at),
                "pending": s.pending,
                "failing": s.failing,
                "lag-seconds": s.lag_seconds,
            })
        })
        .collect()
}
