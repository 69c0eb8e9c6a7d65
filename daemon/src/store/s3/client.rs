//! [`S3Store`]: copy files into one bucket, verify them, read, list and delete them.
//!
//! Data flow of [`S3Store::put_file`], the operation everything else serves:
//!
//! ```text
//! file ──(blocking thread: read one part, sha256 it)──► part buffer ──► UploadPart ×concurrency
//!                                                    (≤ (concurrency+1) × part_size in memory)
//!   all parts sent, local sha256 == expected? ──► CompleteMultipartUpload
//!   any failure / cancel / drop ──► AbortMultipartUpload (no orphan parts)
//! GET (streamed) ──(blocking thread: sha256)──► compare with expected ──► HEAD: version, lock date
//! ```
//!
//! Files up to one part go in a single PUT. Object Lock headers, when configured, go on
//! the PUT or on CreateMultipartUpload only (S3 takes them there; UploadPart does not
//! want them), through a client built for that one upload whose signed default headers
//! carry the mode and the retain-until date. Everything else uses one shared client.
//!
//! All methods are `async` and need a tokio runtime (multi- or current-thread); file
//! reads, writes and hashing run on tokio's blocking threads, never on the reactor.

use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{HeaderMap, HeaderValue, Method};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential, Checksum};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::config::{LockMode, ObjectLock, S3Config};
use super::error::{ErrorContext, S3Error};
use super::raw::{IncompleteUpload, Raw, object_info, parse_uploads};

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    /// Full key in the bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag as the server sent it (quoted).
    pub etag: Option<String>,
    /// Last modification (upload completion) time.
    pub last_modified: DateTime<Utc>,
    /// Version id, in a versioned bucket.
    pub version: Option<String>,
    /// Object Lock retain-until date. Filled by [`S3Store::head`] and uploads; a LIST
    /// does not return it, so listed objects have `None` here.
    pub retain_until: Option<DateTime<Utc>>,
    /// Object Lock mode, when locked (HEAD only).
    pub lock_mode: Option<LockMode>,
    /// Legal hold on (HEAD only).
    pub legal_hold: bool,
}

impl ObjectInfo {
    /// True when a delete would be refused at `now` (retention or legal hold).
    pub fn is_locked_at(&self, now: DateTime<Utc>) -> bool {
        self.legal_hold || self.retain_until.is_some_and(|t| t > now)
    }
}

/// Result of a verified upload.
#[derive(Debug, Clone, PartialEq)]
pub struct PutOutcome {
    /// The key written.
    pub key: String,
    /// Bytes stored (checked against the file).
    pub size: u64,
    /// sha256 of the stored object as read back, lowercase hex (equals the expected one).
    pub sha256: String,
    /// ETag of the stored object.
    pub etag: Option<String>,
    /// Version id, in a versioned bucket.
    pub version: Option<String>,
    /// Object Lock retain-until date as reported by the store.
    pub retain_until: Option<DateTime<Utc>>,
    /// Number of multipart parts (0: single PUT).
    pub parts: usize,
}

/// Result of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOutcome {
    /// Bytes received.
    pub size: u64,
    /// sha256 of the bytes received, lowercase hex.
    pub sha256: String,
}

/// What a long transfer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sending the file.
    Upload,
    /// Reading the stored object back to check its sha256.
    Verify,
    /// Downloading.
    Download,
}

/// Progress of a long transfer: `done` of `total` bytes in `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

/// Objects under a prefix, and how many LIST requests (pages) it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub objects: Vec<ObjectInfo>,
    pub requests: u32,
}

/// What [`S3Store::delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The object (its current version) is gone.
    Removed,
    /// There was no such object.
    Absent,
}

/// A client for one S3 bucket and prefix. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: S3Config,
    ctx: ErrorContext,
    bucket_endpoint: String,
    client: Arc<AmazonS3>,
    raw: Raw,
}

impl S3Store {
    /// Checks the settings and builds the clients. No network traffic.
    pub fn new(cfg: S3Config) -> Result<S3Store, S3Error> {
        let ctx = ErrorContext {
            store: cfg.name.clone(),
            bucket: cfg.bucket.clone(),
            endpoint: cfg.endpoint.trim_end_matches('/').to_string(),
            hint: cfg.credentials.source.clone(),
            region: cfg.region.clone(),
        };
        let bad = |detail: String| S3Error::Config {
            store: cfg.name.clone(),
            detail,
        };
        let bucket_endpoint = validate(&cfg).map_err(bad)?;
        // reqwest is built without a default TLS backend (it would pull aws-lc-sys, a large
        // C build); ring serves both request signing and TLS. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let options = client_options(&cfg, None);
        let client = build_client(&cfg, &bucket_endpoint, options.clone())
            .map_err(|_| bad("the S3 client cannot be built from these settings".into()))?;
        let raw = Raw::new(
            &options,
            aws_credential(&cfg),
            &cfg.region,
            &bucket_endpoint,
            cfg.tuning.retry,
        )
        .map_err(|_| bad("the HTTP client cannot be built from these settings".into()))?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                cfg,
                ctx,
                bucket_endpoint,
                client: Arc::new(client),
                raw,
            }),
        })
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// This host's key prefix (no trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.inner.cfg.prefix
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.cfg.bucket
    }

    /// The Object Lock applied to new objects, if any.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.inner.cfg.object_lock
    }

    /// Test access to the object_store client (bulk setup without read-back).
    #[cfg(test)]
    pub(crate) fn client(&self) -> &AmazonS3 {
        &self.inner.client
    }

    fn ctx(&self) -> &ErrorContext {
        &self.inner.ctx
    }

    fn path(&self, key: &str) -> Result<ObjPath, S3Error> {
        ObjPath::parse(key)
            .ok()
            .filter(|p| !key.is_empty() && p.as_ref() == key)
            .ok_or_else(|| S3Error::Config {
                store: self.inner.cfg.name.clone(),
                detail: format!("'{key}' is not a valid object key"),
            })
    }

    /// Cheap test of endpoint, credentials and bucket: one LIST of at most one key under
    /// the prefix; with Object Lock configured, also that the bucket has Object Lock on.
    pub async fn check(&self) -> Result<(), S3Error> {
        let prefix = super::layout::dir(self.prefix());
        let action = format!("list '{prefix}'");
        let opts = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        // A health check must answer in seconds, not after the minutes of retries a copy
        // is worth: its own client retries once.
        let mut quick = self.inner.cfg.clone();
        quick.tuning.retry.max_retries = quick.tuning.retry.max_retries.min(1);
        quick.tuning.retry.retry_timeout = quick
            .tuning
            .retry
            .retry_timeout
            .min(std::time::Duration::from_secs(10));
        let client = build_client(&quick, &self.inner.bucket_endpoint, client_options(&quick, None))
            .map_err(|_| S3Error::Config {
                store: self.name().into(),
                detail: "the S3 client cannot be built from these settings".into(),
            })?;
        client
            .list_paginated(Some(&prefix), opts)
            .await
            .map_err(|e| self.ctx().classify(&e, &action, None))?;
        if self.inner.cfg.object_lock.is_some() {
            let action = "read the bucket's Object Lock configuration";
            let r = self
                .inner
                .raw
                .send(Method::GET, "", &[("object-lock", "")])
                .await
                .map_err(|f| self.ctx().classify_failure(f, action, None))?;
            let enabled =
                String::from_utf8_lossy(&r.body).contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>");
            if r.status == 404 || (r.is_success() && !enabled) {
                return Err(S3Error::LockNotEnabled {
                    store: self.name().into(),
                    bucket: self.bucket().into(),
                });
            }
            if !r.is_success() {
                return Err(self.ctx().classify_failure(r.failure(), action, None));
            }
        }
        Ok(())
    }

    /// Uploads the file at `path` to `key` and proves the stored object equals it.
    ///
    /// The file must hash to `expected_sha256` (lowercase hex, from the sidecar): it is
    /// hashed while it is read and a mismatch aborts before the upload completes. Files of
    /// at most one part go in one PUT, larger ones in parts of [`super::Tuning::part_size_for`],
    /// `concurrency` at a time; peak memory is [`super::Tuning::peak_buffer`]. Each request
    /// is retried on transient errors; on any failure, on cancellation, or when this future
    /// is dropped, the multipart upload is aborted. Then the object is read back and its
    /// sha256 compared; a mismatching copy is deleted (when not locked) and reported.
    pub async fn put_file(
        &self,
        key: &str,
        path: &FsPath,
        expected_sha256: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<PutOutcome, S3Error> {
        let expected = parse_sha256(expected_sha256).ok_or_else(|| S3Error::Config {
            store: self.name().into(),
            detail: format!("the expected sha256 of '{key}' is not 64 hex digits"),
        })?;
        let opath = self.path(key)?;
        let action = format!("upload '{key}'");
        let owned = path.to_path_buf();
        let (file, size) = blocking(move || {
            let f = std::fs::File::open(&owned)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(|source| S3Error::LocalRead {
            path: path.to_path_buf(),
            source,
        })?;

        let (writer, lock) = self.writer_client()?;
        let part_size = self.inner.cfg.tuning.part_size_for(size);
        let parts = if size <= part_size {
            let (buf, _file, hasher) = read_part(path, file, size, Sha256::new()).await?;
            let local = hex(&hasher.finalize());
            if local != expected {
                return Err(S3Error::LocalMismatch {
                    path: path.to_path_buf(),
                    expected,
                    actual: local,
                });
            }
            let put = writer.put_opts(&opath, PutPayload::from(Bytes::from(buf)), PutOptions::default());
            self.cancellable(cancel, &action, put)
                .await?
                .map_err(|e| self.lock_hint(self.ctx().classify(&e, &action, Some(key))))?;
            progress(Progress {
                phase: Phase::Upload,
                done: size,
                total: size,
            });
            0
        } else {
            self.put_multipart(
                &writer, key, &opath, path, file, size, part_size, &expected, progress, cancel,
            )
            .await?
        };
        drop(writer);
        self.verify_upload(key, size, &expected, lock, parts, progress, cancel)
            .await
    }

    /// The multipart path of [`S3Store::put_file`]; returns the number of parts.
    #[allow(clippy::too_many_arguments)]
    async fn put_multipart(
        &self,
        writer: &AmazonS3,
        key: &str,
        opath: &ObjPath,
        path: &FsPath,
        file: std::fs::File,
        size: u64,
        part_size: u64,
        expected: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<usize, S3Error> {
        let action = format!("upload '{key}'");
        // Parts a killed earlier attempt at this key left behind are billed: drop them.
        if let Err(e) = self.abort_uploads(key, Utc::now(), true).await {
            tracing::warn!(store = self.name(), key, error = %e, "could not look for earlier unfinished uploads");
        }
        let create = writer.create_multipart(opath);
        let id = self
            .cancellable(cancel, &action, create)
            .await?
            .map_err(|e| self.lock_hint(self.ctx().classify(&e, &action, Some(key))))?;
        let mut guard = AbortGuard {
            armed: Some((self.inner.clone(), opath.clone(), id.clone())),
        };

        let sent = self
            .send_parts(key, opath, &id, path, file, size, part_size, progress, cancel)
            .await;
        let result = match sent {
            Ok((parts, local)) if local == expected => {
                let n = parts.len();
                // Not cancellable: one short request, and cutting it off could leave the
                // server done but us unsure, with an abort that can no longer work.
                match self.inner.client.complete_multipart(opath, &id, parts).await {
                    Ok(_) => Ok(n),
                    Err(e) => Err(self.ctx().classify(&e, &action, Some(key))),
                }
            }
            Ok((_, local)) => Err(S3Error::LocalMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                actual: local,
            }),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Awaited here (not left to the guard) so the caller knows the parts are gone
            // when it sees the error; a failed abort is left to the start-up sweep.
            if let Err(e) = self.inner.client.abort_multipart(opath, &id).await {
                let e = self
                    .ctx()
                    .classify(&e, &format!("abort the upload of '{key}'"), Some(key));
                tracing::warn!(store = self.name(), key, error = %e, "unfinished upload left behind; abort_incomplete_uploads will remove it");
            }
        }
        guard.armed = None;
        result
    }

    /// Reads and sends all parts, at most `concurrency` in flight; returns the part ids
    /// and the sha256 of the whole file as read.
    #[allow(clippy::too_many_arguments)]
    async fn send_parts(
        &self,
        key: &str,
        opath: &ObjPath,
        id: &str,
        path: &FsPath,
        file: std::fs::File,
        size: u64,
        part_size: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<(Vec<PartId>, String), S3Error> {
        let action = format!("upload '{key}'");
        let concurrency = self.inner.cfg.tuning.concurrency.max(1);
        let nparts = usize::try_from(size.div_ceil(part_size)).unwrap_or(usize::MAX);
        let client = &*self.inner.client;
        let id = id.to_string();
        let mut parts: Vec<Option<PartId>> = vec![None; nparts];
        let mut inflight = FuturesUnordered::new();
        let mut reader = Some((file, Sha256::new()));
        let mut done = 0u64;
        let mut idx = 0usize;
        while idx < nparts || !inflight.is_empty() {
            if idx < nparts && inflight.len() < concurrency {
                if cancel.is_cancelled() {
                    return Err(self.ctx().cancelled(&action));
                }
                let len = part_size.min(size - idx as u64 * part_size);
                let (file, hasher) = reader
                    .take()
                    .ok_or_else(|| self.ctx().bad_answer(&action, "internal: reader lost"))?;
                let (buf, file, hasher) = read_part(path, file, len, hasher).await?;
                reader = Some((file, hasher));
                let (opath, id) = (opath.clone(), id.clone());
                inflight.push(async move {
                    let r = client
                        .put_part(&opath, &id, idx, PutPayload::from(Bytes::from(buf)))
                        .await;
                    (idx, len, r)
                });
                idx += 1;
                continue;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.ctx().cancelled(&action)),
                Some((i, len, r)) = inflight.next() => {
                    let part = r.map_err(|e| self.ctx().classify(&e, &action, Some(key)))?;
                    parts[i] = Some(part);
                    done += len;
                    progress(Progress { phase: Phase::Upload, done, total: size });
                }
            }
        }
        let (_, hasher) = reader.ok_or_else(|| self.ctx().bad_answer(&action, "internal: reader lost"))?;
        let parts: Option<Vec<PartId>> = parts.into_iter().collect();
        let parts = parts.ok_or_else(|| self.ctx().bad_answer(&action, "internal: a part is missing"))?;
        Ok((parts, hex(&hasher.finalize())))
    }

    /// Reads `key` back, compares size and sha256, and HEADs it for version and lock.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn verify_upload(
        &self,
        key: &str,
        size: u64,
        expected: &str,
        lock: Option<DateTime<Utc>>,
        parts: usize,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<PutOutcome, S3Error> {
        let (_, got) = self
            .stream_to(key, std::io::sink(), Phase::Verify, progress, cancel)
            .await?;
        if got.size != size || got.sha256 != expected {
            let removed = matches!(self.delete(key).await, Ok(Deleted::Removed));
            return Err(S3Error::RemoteMismatch {
                store: self.name().into(),
                key: key.into(),
                expected: expected.into(),
                actual: got.sha256,
                size: got.size,
                removed,
            });
        }
        let info = self.head(key).await?.ok_or_else(|| S3Error::NotFound {
            store: self.name().into(),
            key: key.into(),
        })?;
        if lock.is_some() && info.retain_until.is_none() {
            return Err(S3Error::LockNotApplied {
                store: self.name().into(),
                bucket: self.bucket().into(),
                key: key.into(),
            });
        }
        Ok(PutOutcome {
            key: key.to_string(),
            size,
            sha256: got.sha256,
            etag: info.etag,
            version: info.version,
            retain_until: info.retain_until,
            parts,
        })
    }

    /// Writes a small object (a sidecar) in one PUT, reads it back and compares.
    pub async fn put_bytes(&self, key: &str, data: impl Into<Bytes>) -> Result<PutOutcome, S3Error> {
        let data: Bytes = data.into();
        let opath = self.path(key)?;
        let action = format!("upload '{key}'");
        let (writer, lock) = self.writer_client()?;
        writer
            .put_opts(&opath, PutPayload::from(data.clone()), PutOptions::default())
            .await
            .map_err(|e| self.lock_hint(self.ctx().classify(&e, &action, Some(key))))?;
        let expected = hex(&Sha256::digest(&data));
        let never = CancellationToken::new();
        self.verify_upload(key, data.len() as u64, &expected, lock, 0, &mut |_| {}, &never)
            .await
    }

    /// Streams `key` into `writer` (run on a blocking thread, so a plain `File` is
    /// fine), hashing as it goes; returns the writer (flushed, not synced) and what was
    /// received. The caller compares the sha256 with the sidecar's.
    pub async fn get_to_writer<W: Write + Send + 'static>(
        &self,
        key: &str,
        writer: W,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<(W, GetOutcome), S3Error> {
        self.stream_to(key, writer, Phase::Download, progress, cancel)
            .await
    }

    async fn stream_to<W: Write + Send + 'static>(
        &self,
        key: &str,
        writer: W,
        phase: Phase,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) -> Result<(W, GetOutcome), S3Error> {
        let opath = self.path(key)?;
        let action = format!("read '{key}'");
        let get = self.inner.client.get(&opath);
        let result = self
            .cancellable(cancel, &action, get)
            .await?
            .map_err(|e| self.ctx().classify(&e, &action, Some(key)))?;
        let total = result.meta.size;
        let mut stream = result.into_stream();
        // A few chunks of slack between the network and the disk/hasher thread.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let sink = tokio::task::spawn_blocking(move || -> std::io::Result<(W, String)> {
            let mut w = writer;
            let mut h = Sha256::new();
            while let Some(chunk) = rx.blocking_recv() {
                h.update(&chunk);
                w.write_all(&chunk)?;
            }
            w.flush()?;
            Ok((w, hex(&h.finalize())))
        });
        let mut done = 0u64;
        let mut reported = 0u64;
        let outcome: Result<(), S3Error> = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Err(self.ctx().cancelled(&action)),
                item = stream.next() => match item {
                    Some(Ok(chunk)) => {
                        done += chunk.len() as u64;
                        if tx.send(chunk).await.is_err() {
                            break Ok(()); // the writer failed; its error is reported below
                        }
                        if done - reported >= 1 << 20 || done == total {
                            reported = done;
                            progress(Progress { phase, done, total });
                        }
                    }
                    Some(Err(e)) => break Err(self.ctx().classify(&e, &action, Some(key))),
                    None => break Ok(()),
                }
            }
        };
        drop(tx);
        let written = sink.await.map_err(|_| {
            self.ctx()
                .bad_answer(&action, "internal: the writer thread failed")
        })?;
        outcome?;
        let (w, sha256) = written.map_err(|source| S3Error::LocalWrite {
            store: self.name().into(),
            key: key.into(),
            source,
        })?;
        Ok((w, GetOutcome { size: done, sha256 }))
    }

    /// Reads a small object whole; refuses objects above `limit` bytes.
    pub async fn get_bytes(&self, key: &str, limit: u64) -> Result<Vec<u8>, S3Error> {
        let opath = self.path(key)?;
        let action = format!("read '{key}'");
        let result = self
            .inner
            .client
            .get(&opath)
            .await
            .map_err(|e| self.ctx().classify(&e, &action, Some(key)))?;
        let too_large = |size| S3Error::TooLarge {
            store: self.name().into(),
            key: key.into(),
            size,
            limit,
        };
        if result.meta.size > limit {
            return Err(too_large(result.meta.size));
        }
        let mut out = Vec::with_capacity(usize::try_from(result.meta.size).unwrap_or(0));
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.ctx().classify(&e, &action, Some(key)))?;
            out.extend_from_slice(&chunk);
            if out.len() as u64 > limit {
                return Err(too_large(out.len() as u64));
            }
        }
        Ok(out)
    }

    /// Size, version and Object Lock state of `key`; `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        self.path(key)?;
        let action = format!("read '{key}'");
        let r = self
            .inner
            .raw
            .send(Method::HEAD, key, &[])
            .await
            .map_err(|f| self.ctx().classify_failure(f, &action, Some(key)))?;
        if r.status == 404 {
            return Ok(None);
        }
        if !r.is_success() {
            return Err(self.ctx().classify_failure(r.failure(), &action, Some(key)));
        }
        object_info(key, &r.headers)
            .map(Some)
            .map_err(|d| self.ctx().bad_answer(&action, d))
    }

    /// Deletes `key` for good, unless it is locked.
    ///
    /// HEADs first: an object under retention or legal hold is never sent a DELETE
    /// ([`S3Error::Locked`] says until when). In a versioned bucket (always the case with
    /// Object Lock) the current version is deleted by id, which frees its storage; a plain
    /// DELETE would only add a delete marker. Older versions of the same key (re-uploads)
    /// are left to a lifecycle rule (NoncurrentVersionExpiration).
    pub async fn delete(&self, key: &str) -> Result<Deleted, S3Error> {
        let Some(info) = self.head(key).await? else {
            return Ok(Deleted::Absent);
        };
        if info.is_locked_at(Utc::now()) {
            return Err(S3Error::Locked {
                store: self.name().into(),
                key: key.into(),
                until: if info.legal_hold { None } else { info.retain_until },
            });
        }
        let action = format!("delete '{key}'");
        match info.version.as_deref() {
            Some(v) => {
                let r = self
                    .inner
                    .raw
                    .send(Method::DELETE, key, &[("versionId", v)])
                    .await
                    .map_err(|f| self.ctx().classify_failure(f, &action, Some(key)))?;
                if !r.is_success() && r.status != 404 {
                    return Err(self.ctx().classify_failure(r.failure(), &action, Some(key)));
                }
            }
            None => {
                let opath = self.path(key)?;
                self.inner
                    .client
                    .delete(&opath)
                    .await
                    .map_err(|e| self.ctx().classify(&e, &action, Some(key)))?;
            }
        }
        Ok(Deleted::Removed)
    }

    /// Every object whose key starts with `prefix` (pass `"coffer/web1/app/"` with the
    /// slash), across all pages: one logical LIST, `requests` pages of up to 1000 keys.
    /// Listed objects carry no lock information ([`ObjectInfo::retain_until`] is `None`).
    pub async fn list(&self, prefix: &str) -> Result<Listing, S3Error> {
        let action = format!("list '{prefix}'");
        let mut objects = Vec::new();
        let mut requests = 0u32;
        let mut token = None;
        loop {
            let opts = PaginatedListOptions {
                max_keys: Some(self.inner.cfg.tuning.list_page_size),
                page_token: token.take(),
                ..Default::default()
            };
            let page = self
                .inner
                .client
                .list_paginated(Some(prefix), opts)
                .await
                .map_err(|e| self.ctx().classify(&e, &action, None))?;
            requests += 1;
            objects.extend(page.result.objects.into_iter().map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
                etag: m.e_tag,
                last_modified: m.last_modified,
                version: m.version,
                retain_until: None,
                lock_mode: None,
                legal_hold: false,
            }));
            match page.page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(Listing { objects, requests })
    }

    /// The names one level below `prefix` (pass it with its trailing `/`): with
    /// `"coffer/"` the hosts of the fleet, with `"coffer/web1/"` its jobs.
    pub async fn list_children(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let action = format!("list '{prefix}'");
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let opts = PaginatedListOptions {
                delimiter: Some("/".into()),
                max_keys: Some(self.inner.cfg.tuning.list_page_size),
                page_token: token.take(),
                ..Default::default()
            };
            let page = self
                .inner
                .client
                .list_paginated(Some(prefix), opts)
                .await
                .map_err(|e| self.ctx().classify(&e, &action, None))?;
            for p in page.result.common_prefixes {
                let p = p.to_string();
                let rest = p.strip_prefix(prefix).unwrap_or(&p).trim_end_matches('/');
                if !rest.is_empty() && !rest.contains('/') {
                    names.push(rest.to_string());
                }
            }
            match page.page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Multipart uploads under `prefix` that were started but neither completed nor
    /// aborted (S3 ListMultipartUploads, all pages).
    pub async fn list_incomplete_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>, S3Error> {
        let action = format!("list the unfinished uploads under '{prefix}'");
        let mut all = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = vec![("uploads", ""), ("prefix", prefix)];
            if let Some((k, u)) = &marker {
                query.push(("key-marker", k));
                if !u.is_empty() {
                    query.push(("upload-id-marker", u));
                }
            }
            let r = self
                .inner
                .raw
                .send(Method::GET, "", &query)
                .await
                .map_err(|f| self.ctx().classify_failure(f, &action, None))?;
            if !r.is_success() {
                return Err(self.ctx().classify_failure(r.failure(), &action, None));
            }
            let (uploads, next) = parse_uploads(&r.body).map_err(|d| self.ctx().bad_answer(&action, d))?;
            all.extend(uploads);
            match next {
                Some(m) if Some(&m) != marker.as_ref() => marker = Some(m),
                _ => break,
            }
        }
        Ok(all)
    }

    /// Aborts the unfinished multipart uploads under `prefix` started before
    /// `started_before` (at daemon start-up: `prefix` = this host's prefix, `now`), so no
    /// orphan parts stay billed after a crash or kill. Returns how many were aborted.
    /// Buckets should also carry an `AbortIncompleteMultipartUpload` lifecycle rule.
    pub async fn abort_incomplete_uploads(
        &self,
        prefix: &str,
        started_before: DateTime<Utc>,
    ) -> Result<usize, S3Error> {
        self.abort_uploads(prefix, started_before, false).await
    }

    /// Aborts unfinished uploads under `prefix` (or of exactly that key, when `exact`).
    async fn abort_uploads(
        &self,
        prefix: &str,
        started_before: DateTime<Utc>,
        exact: bool,
    ) -> Result<usize, S3Error> {
        let mut aborted = 0;
        for u in self.list_incomplete_uploads(prefix).await? {
            if u.initiated.is_some_and(|t| t >= started_before) || (exact && u.key != prefix) {
                continue;
            }
            let Ok(opath) = self.path(&u.key) else { continue };
            let action = format!("abort the unfinished upload of '{}'", u.key);
            match self.inner.client.abort_multipart(&opath, &u.upload_id).await {
                Ok(()) => aborted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.ctx().classify(&e, &action, Some(&u.key))),
            }
        }
        if aborted > 0 {
            tracing::info!(
                store = self.name(),
                prefix,
                aborted,
                "aborted unfinished multipart uploads"
            );
        }
        Ok(aborted)
    }

    /// The client for writing a new object, and the retain-until date it will set.
    /// With Object Lock, a client whose signed default headers carry the lock for this
    /// one object; it is only used for PutObject / CreateMultipartUpload.
    fn writer_client(&self) -> Result<(Arc<AmazonS3>, Option<DateTime<Utc>>), S3Error> {
        let cfg = &self.inner.cfg;
        let Some(lock) = cfg.object_lock else {
            return Ok((self.inner.client.clone(), None));
        };
        let until = retain_until(Utc::now(), lock.days);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-object-lock-mode",
            HeaderValue::from_static(lock.mode.as_header()),
        );
        let date = until.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let date =
            HeaderValue::from_str(&date).map_err(|_| self.ctx().bad_answer("sign an upload", "bad date"))?;
        headers.insert("x-amz-object-lock-retain-until-date", date);
        let client = build_client(
            cfg,
            &self.inner.bucket_endpoint,
            client_options(cfg, Some(headers)),
        )
        .map_err(|_| S3Error::Config {
            store: cfg.name.clone(),
            detail: "the S3 client cannot be built from these settings".into(),
        })?;
        Ok((Arc::new(client), Some(until)))
    }

    /// S3 (and SeaweedFS) answer a locked upload into a bucket without Object Lock with
    /// `400 InvalidRequest`; with a lock configured, that is what it almost always means.
    fn lock_hint(&self, e: S3Error) -> S3Error {
        match &e {
            S3Error::Request { detail, .. }
                if self.inner.cfg.object_lock.is_some() && detail == "HTTP 400 InvalidRequest" =>
            {
                S3Error::LockNotEnabled {
                    store: self.name().into(),
                    bucket: self.bucket().into(),
                }
            }
            _ => e,
        }
    }

    async fn cancellable<T>(
        &self,
        cancel: &CancellationToken,
        action: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, S3Error> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(self.ctx().cancelled(action)),
            r = fut => Ok(r),
        }
    }
}

/// Aborts a multipart upload if the upload future is dropped before it finished
/// (daemon shutdown aborting the copy task, a panic): spawned, because Drop cannot await.
struct AbortGuard {
    armed: Option<(Arc<Inner>, ObjPath, String)>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some((inner, path, id)) = self.armed.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if inner.client.abort_multipart(&path, &id).await.is_err() {
                    tracing::warn!(store = %inner.cfg.name, key = %path, "could not abort a dropped upload; the start-up sweep will");
                }
            });
        }
    }
}

/// `now + days`, whole seconds (S3 dates have no sub-second part that all servers take).
pub(crate) fn retain_until(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    let t = now + chrono::Duration::days(i64::from(days));
    DateTime::from_timestamp(t.timestamp() + 1, 0).unwrap_or(t)
}

/// Reads exactly `len` bytes from `file` and feeds them to `hasher`, on a blocking
/// thread (so neither the read nor the hashing stalls the reactor); gives both back.
async fn read_part(
    path: &FsPath,
    file: std::fs::File,
    len: u64,
    hasher: Sha256,
) -> Result<(Vec<u8>, std::fs::File, Sha256), S3Error> {
    let owned: PathBuf = path.to_path_buf();
    blocking(move || {
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let (mut file, mut hasher) = (file, hasher);
        (&mut file).take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read",
            ));
        }
        hasher.update(&buf);
        Ok((buf, file, hasher))
    })
    .await
    .map_err(|source| S3Error::LocalRead { path: owned, source })
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the blocking task failed")))
}

/// Checks the settings; returns the bucket's base URL.
fn validate(cfg: &S3Config) -> Result<String, String> {
    if cfg.name.is_empty() {
        return Err("the store has no name".into());
    }
    let b = &cfg.bucket;
    if b.len() < 3
        || b.len() > 63
        || !b
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(format!("bucket '{b}' is not a valid bucket name"));
    }
    let url =
        url::Url::parse(&cfg.endpoint).map_err(|_| format!("endpoint '{}' is not a URL", cfg.endpoint))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "endpoint '{}' must start with http:// or https://",
            cfg.endpoint
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the endpoint must not contain credentials; use credentials-file".into());
    }
    if url.query().is_some() || url.fragment().is_some() || url.host_str().is_none() {
        return Err(format!(
            "endpoint '{}' must be scheme://host[:port][/path]",
            cfg.endpoint
        ));
    }
    let p = &cfg.prefix;
    if p.starts_with('/')
        || p.ends_with('/')
        || p.contains("//")
        || p.split('/').any(|s| s == ".." || s == ".")
    {
        return Err(format!(
            "prefix '{p}' must be relative, without empty, '.' or '..' segments"
        ));
    }
    if p.contains('{') {
        return Err(format!("prefix '{p}' still contains a placeholder"));
    }
    if cfg.region.is_empty() {
        return Err("the region is empty".into());
    }
    let t = &cfg.tuning;
    if t.part_size < (5 << 20) || t.part_size > (5 << 30) {
        return Err("the part size must be between 5 MiB and 5 GiB".into());
    }
    if t.concurrency == 0 || t.concurrency > 16 {
        return Err("the upload concurrency must be between 1 and 16".into());
    }
    if t.list_page_size == 0 || t.list_page_size > 1000 {
        return Err("the list page size must be between 1 and 1000".into());
    }
    if let Some(l) = cfg.object_lock
        && (l.days == 0 || l.days > 36_500)
    {
        return Err("object-lock-days must be between 1 and 36500 (0 disables it)".into());
    }
    let base = url.as_str().trim_end_matches('/').to_string();
    if cfg.path_style {
        return Ok(format!("{base}/{b}"));
    }
    // Virtual-hosted: the bucket becomes the first label of the host.
    let mut vh = url.clone();
    let host = format!("{b}.{}", url.host_str().unwrap_or_default());
    vh.set_host(Some(&host)).map_err(|_| {
        format!(
            "endpoint '{}' cannot take the bucket as a host name",
            cfg.endpoint
        )
    })?;
    Ok(vh.as_str().trim_end_matches('/').to_string())
}

fn aws_credential(cfg: &S3Config) -> AwsCredential {
    AwsCredential {
        key_id: cfg.credentials.access_key_id.clone(),
        secret_key: cfg.credentials.secret_access_key.expose().to_string(),
        token: cfg
            .credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_string()),
    }
}

fn client_options(cfg: &S3Config, headers: Option<HeaderMap>) -> ClientOptions {
    let t = &cfg.tuning;
    let mut o = ClientOptions::new()
        .with_allow_http(cfg.endpoint.starts_with("http://"))
        .with_timeout(t.request_timeout)
        .with_connect_timeout(t.connect_timeout);
    if let Some(h) = headers {
        o = o.with_default_headers(h);
    }
    o
}

fn build_client(
    cfg: &S3Config,
    bucket_endpoint: &str,
    options: ClientOptions,
) -> object_store::Result<AmazonS3> {
    let r = &cfg.tuning.retry;
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: r.initial_backoff,
            max_backoff: r.max_backoff,
            base: 2.0,
        },
        max_retries: r.max_retries,
        retry_timeout: r.retry_timeout,
    };
    let mut b = AmazonS3Builder::new()
        // The endpoint we pass already names the bucket (path or host), which is what
        // object_store expects in virtual-hosted mode; so one mode covers both styles.
        .with_endpoint(bucket_endpoint)
        .with_virtual_hosted_style_request(true)
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_access_key_id(&cfg.credentials.access_key_id)
        .with_secret_access_key(cfg.credentials.secret_access_key.expose())
        .with_retry(retry)
        .with_client_options(options)
        // Over TLS the payload hash in the signature adds nothing but a second sha256 pass
        // on the reactor; over plain HTTP it is the only integrity check per request.
        .with_unsigned_payload(cfg.endpoint.starts_with("https://"));
    if let Some(t) = &cfg.credentials.session_token {
        b = b.with_token(t.expose());
    }
    if cfg.object_lock.is_some() {
        // S3 refuses locked uploads without Content-MD5 or an x-amz-checksum-* header.
        b = b.with_checksum_algorithm(Checksum::SHA256);
    }
    b.build()
}

fn parse_sha256(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    (s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())).then_some(s)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod unit_tests {
    use super::super::config::{Credentials, Secret};
    use super::*;

    fn cfg(endpoint: &str) -> S3Config {
        let creds = Credentials {
            access_key_id: "AK".into(),
            secret_access_key: Secret::new("SK"),
            session_token: None,
            source: "test".into(),
        };
        S3Config::new("offsite", endpoint, "backups", "coffer/h1", creds)
    }

    #[test]
    fn bucket_endpoints() {
        assert_eq!(
            validate(&cfg("http://127.0.0.1:8333")).unwrap(),
            "http://127.0.0.1:8333/backups"
        );
        assert_eq!(
            validate(&cfg("https://s3.eu-central-1.amazonaws.com")).unwrap(),
            "https://backups.s3.eu-central-1.amazonaws.com"
        );
        let mut c = cfg("https://minio.example.org:9000/");
        c.path_style = true;
        assert_eq!(validate(&c).unwrap(), "https://minio.example.org:9000/backups");
    }

    #[test]
    fn settings_are_checked() {
        let e = |c: S3Config| validate(&c).unwrap_err();
        assert!(e(cfg("ftp://x")).contains("http://"));
        assert!(e(cfg("http://user:pw@host")).contains("must not contain credentials"));
        let mut c = cfg("http://127.0.0.1:1");
        c.prefix = "/abs".into();
        assert!(e(c).contains("prefix"));
        let mut c = cfg("http://127.0.0.1:1");
        c.bucket = "Bad_Bucket".into();
        assert!(e(c).contains("not a valid bucket name"));
        let mut c = cfg("http://127.0.0.1:1");
        c.object_lock = Some(ObjectLock {
            days: 0,
            mode: LockMode::Governance,
        });
        assert!(e(c).contains("object-lock-days"));
    }

    #[test]
    fn sha256_and_dates() {
        assert!(parse_sha256(&"A".repeat(64)).is_some());
        assert!(parse_sha256("abc").is_none());
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retain_until(now, 30).to_rfc3339(), "2026-01-31T00:00:01+00:00");
    }
}
