//! [`S3Backend`]: one configured S3 store as the blocking daemon sees it.
//!
//! Every method blocks the calling thread until the request is done (see "Sync over
//! async" in the module above): call it from an op on a blocking thread, never from an
//! async task. Keys follow [`super::layout`]: this host's objects live under the store's
//! prefix with `{host}` expanded; the fleet view reads the part of the prefix template
//! before `{host}` and splits the keys by host.
//!
//! The [`Store`] implementation makes the bucket a store like the local backup
//! directory: `list` is one LIST of this host's prefix, `sidecar` one GET, `open_archive`
//! a streaming GET behind a `Read`, `remove` deletes the sidecar first (so the backup
//! stops counting as offsite at once) and then the archive.

use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::client::{Deleted, GetOutcome, ObjectInfo, Progress, PutOutcome, S3Store};
use super::config::S3Config;
use super::error::S3Error;
use super::layout::{self, RemoteBackup};
use super::raw::IncompleteUpload;
use crate::manifest::Sidecar;
use crate::manifest::redacted::{self, AnySidecar};
use crate::store::{Listed, Store, StoreError};

/// How long a request may still take once cofferd shuts down.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest sidecar read from a store (a manifest of a few hundred thousand entries).
pub const SIDECAR_LIMIT: u64 = 256 << 20;

/// One backup of the fleet view: the host whose prefix it is under, and the backup.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetBackup {
    pub host: String,
    pub backup: RemoteBackup,
}

/// A configured S3 store, blocking.
#[derive(Debug, Clone)]
pub struct S3Backend {
    client: S3Store,
    rt: Handle,
    /// Cancelled when cofferd shuts down: no request keeps it waiting.
    stop: CancellationToken,
    endpoint: String,
    template: String,
}

impl S3Backend {
    /// The store for `cfg` (whose prefix has `{host}` expanded already); `template` is
    /// the prefix as configured, with `{host}`, for the fleet view; requests end early
    /// when `stop` is cancelled. No network traffic.
    pub fn new(
        cfg: S3Config,
        template: &str,
        rt: Handle,
        stop: CancellationToken,
    ) -> Result<S3Backend, S3Error> {
        let endpoint = cfg.endpoint.trim_end_matches('/').to_owned();
        Ok(S3Backend {
            client: S3Store::new(cfg)?,
            rt,
            stop,
            endpoint,
            template: template.to_owned(),
        })
    }

    /// Runs a request future on the calling (blocking) thread. When cofferd shuts down
    /// meanwhile, the future gets a few seconds to end on its own (a transfer watching
    /// the same token aborts its multipart upload), then it is dropped: a store that
    /// does not answer never holds up a shutdown for its retries and timeouts.
    fn block<T>(&self, f: impl Future<Output = Result<T, S3Error>>) -> Result<T, S3Error> {
        self.rt.block_on(async {
            let mut f = std::pin::pin!(f);
            tokio::select! {
                r = &mut f => return r,
                () = self.stop.cancelled() => {}
            }
            tokio::time::timeout(STOP_GRACE, f).await.unwrap_or_else(|_| {
                Err(S3Error::Cancelled {
                    store: self.name().to_owned(),
                    action: "a request".to_owned(),
                })
            })
        })
    }

    pub fn name(&self) -> &str {
        self.client.name()
    }

    pub fn bucket(&self) -> &str {
        self.client.bucket()
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// This host's key prefix (no trailing `/`).
    pub fn prefix(&self) -> &str {
        self.client.prefix()
    }

    /// Days of Object Lock on new objects (0: none).
    pub fn lock_days(&self) -> u32 {
        self.client.object_lock().map_or(0, |l| l.days)
    }

    /// Key of a backup's archive on this host.
    pub fn archive_key(&self, job: &str, id: &str, encrypted: bool) -> String {
        layout::archive_key(self.prefix(), job, id, encrypted)
    }

    /// Key of a backup's sidecar on this host.
    pub fn sidecar_key(&self, job: &str, id: &str) -> String {
        layout::sidecar_key(self.prefix(), job, id)
    }

    /// Endpoint, credentials and bucket work (one LIST of at most one key; with Object
    /// Lock, also the bucket's lock configuration). Answers within seconds.
    pub fn check(&self) -> Result<(), S3Error> {
        self.block(self.client.check())
    }

    /// Uploads a local archive and proves the stored copy (see [`S3Store::put_file`]).
    pub fn put_archive(
        &self,
        key: &str,
        path: &Path,
        sha256: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<PutOutcome, S3Error> {
        self.block(self.client.put_file(key, path, sha256, progress, cancel))
    }

    /// Writes a small object (a sidecar) and reads it back.
    pub fn put_small(&self, key: &str, data: Vec<u8>) -> Result<PutOutcome, S3Error> {
        self.block(self.client.put_bytes(key, Bytes::from(data)))
    }

    /// Streams `key` into `writer`, hashing it.
    pub fn get_to_writer<W: Write + Send + 'static>(
        &self,
        key: &str,
        writer: W,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<(W, GetOutcome), S3Error> {
        self.block(self.client.get_to_writer(key, writer, progress, cancel))
    }

    /// Reads a small object whole (at most `limit` bytes).
    pub fn get_small(&self, key: &str, limit: u64) -> Result<Vec<u8>, S3Error> {
        self.block(self.client.get_bytes(key, limit))
    }

    /// Size, ETag, version and lock of `key`; `None` when absent.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        self.block(self.client.head(key))
    }

    /// Deletes `key` unless it is locked ([`S3Error::Locked`]).
    pub fn delete(&self, key: &str) -> Result<Deleted, S3Error> {
        self.block(self.client.delete(key))
    }

    /// This host's backups in the store, from one LIST of its prefix (or of one job's).
    pub fn list_backups(&self, job: Option<&str>) -> Result<Vec<RemoteBackup>, S3Error> {
        let prefix = match job {
            Some(job) => layout::job_prefix(self.prefix(), job),
            None => layout::dir(self.prefix()),
        };
        let listing = self.block(self.client.list(&prefix))?;
        Ok(layout::group_backups(self.prefix(), &listing.objects))
    }

    /// The objects of one backup (its archive and sidecar, as far as they exist), from
    /// one LIST of `<prefix>/<job>/<id>.` — which, unlike a HEAD, gets an error body
    /// that tells bad credentials from missing permissions.
    pub fn objects_of(&self, job: &str, id: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let prefix = format!("{}{id}.", layout::job_prefix(self.prefix(), job));
        Ok(self.block(self.client.list(&prefix))?.objects)
    }

    /// Objects and bytes under this host's prefix, from one LIST.
    pub fn usage(&self) -> Result<(u64, u64), S3Error> {
        let listing = self.block(self.client.list(&layout::dir(self.prefix())))?;
        let bytes = listing.objects.iter().map(|o| o.size).sum();
        Ok((listing.objects.len() as u64, bytes))
    }

    /// Every host's backups under the bucket (the fleet view): one LIST of the part of
    /// the prefix template before `{host}`. Without `{host}` in the template there is no
    /// fleet: this host's backups, under its name.
    pub fn list_fleet(&self, host: &str) -> Result<Vec<FleetBackup>, S3Error> {
        let Some(root) = layout::fleet_root(&self.template) else {
            return Ok(self
                .list_backups(None)?
                .into_iter()
                .map(|backup| FleetBackup {
                    host: host.to_owned(),
                    backup,
                })
                .collect());
        };
        let listing = self.block(self.client.list(&root))?;
        let mut by_host: std::collections::BTreeMap<String, Vec<ObjectInfo>> = Default::default();
        for object in listing.objects {
            if let Some((host, rest)) = layout::split_fleet_key(&self.template, &object.key) {
                let (host, rest) = (host.to_owned(), rest.to_owned());
                by_host
                    .entry(host)
                    .or_default()
                    .push(ObjectInfo { key: rest, ..object });
            }
        }
        Ok(by_host
            .into_iter()
            .flat_map(|(host, objects)| {
                layout::group_backups("", &objects)
                    .into_iter()
                    .map(move |backup| FleetBackup {
                        host: host.clone(),
                        backup,
                    })
            })
            .collect())
    }

    /// Multipart uploads under this host's prefix that were neither completed nor aborted.
    pub fn incomplete_uploads(&self) -> Result<Vec<IncompleteUpload>, S3Error> {
        self.block(self.client.list_incomplete_uploads(&layout::dir(self.prefix())))
    }

    /// Aborts this host's unfinished multipart uploads started before `before` (at
    /// start-up: what a killed cofferd left behind). Returns how many.
    pub fn abort_incomplete_uploads(&self, before: DateTime<Utc>) -> Result<usize, S3Error> {
        self.block(
            self.client
                .abort_incomplete_uploads(&layout::dir(self.prefix()), before),
        )
    }

    /// Reads and parses a backup's sidecar from the store: the full one, or the
    /// redacted one an encrypted backup's copy carries.
    pub fn read_sidecar(&self, job: &str, id: &str) -> Result<AnySidecar, StoreError> {
        let key = self.sidecar_key(job, id);
        let bytes = self.get_small(&key, SIDECAR_LIMIT)?;
        redacted::parse_any(&bytes).map_err(|message| StoreError::Sidecar {
            id: id.to_owned(),
            location: format!("'{key}' in the store '{}'", self.name()),
            message,
        })
    }
}

impl Store for S3Backend {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn list(&self, job: Option<&str>) -> Result<Vec<Listed>, StoreError> {
        Ok(self
            .list_backups(job)?
            .into_iter()
            .filter(RemoteBackup::is_complete)
            .map(|b| Listed {
                size: b.archive.as_ref().map_or(0, |a| a.size),
                job: b.job,
                id: b.id,
            })
            .collect())
    }

    fn sidecar(&self, job: &str, id: &str) -> Result<Sidecar, StoreError> {
        match self.read_sidecar(job, id)? {
            AnySidecar::Full(sidecar) => Ok(*sidecar),
            AnySidecar::Redacted(_) => Err(StoreError::Sidecar {
                id: id.to_owned(),
                location: format!("'{}' in the store '{}'", self.sidecar_key(job, id), self.name()),
                message:
                    "it is the redacted sidecar of an encrypted backup; its manifest is inside the archive"
                        .into(),
            }),
        }
    }

    fn open_archive(&self, job: &str, id: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let key = self.archive_key(job, id, false);
        // The HEAD turns a missing archive into an error here, not at the first read.
        if self.head(&key)?.is_none() {
            return Err(S3Error::NotFound {
                store: self.name().to_owned(),
                key,
            }
            .into());
        }
        Ok(Box::new(PipeReader::spawn(self.clone(), key)))
    }

    fn remove(&self, job: &str, id: &str) -> Result<(), StoreError> {
        self.delete(&self.sidecar_key(job, id))?;
        for encrypted in [false, true] {
            self.delete(&self.archive_key(job, id, encrypted))?;
        }
        Ok(())
    }
}

/// The reading end of a streaming GET: a task on the runtime writes the object's
/// chunks into a bounded channel (a few MiB in flight at most), `read` takes them out.
/// A failed download ends the stream with its error; dropping the reader stops it.
struct PipeReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

/// The writing end, handed to [`S3Store::get_to_writer`] (which writes on a blocking
/// thread, so a blocking send is fine).
struct PipeWriter(mpsc::SyncSender<std::io::Result<Vec<u8>>>);

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PipeReader {
    fn spawn(backend: S3Backend, key: String) -> PipeReader {
        let (tx, rx) = mpsc::sync_channel(8);
        let errors = tx.clone();
        backend.rt.clone().spawn(async move {
            let never = CancellationToken::new();
            let got = backend
                .client
                .get_to_writer(&key, PipeWriter(tx), &mut |_| {}, &never)
                .await;
            if let Err(e) = got {
                let _ = errors.send(Err(std::io::Error::other(e.to_string())));
            }
        });
        PipeReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
