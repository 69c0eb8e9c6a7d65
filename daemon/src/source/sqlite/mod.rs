//! The SQLite source: `database = "/path/app.db"`.
//!
//! Two snapshot methods ([`SnapshotMethod`]):
//! - `vacuum-into` (default): `VACUUM INTO` a file in staging on its own thread; the
//!   media are archived on the other cores meanwhile, once the copy's read
//!   transaction has begun (the snapshot point); then the copy is archived while
//!   `quick_check` runs on it on another core (the archive is only committed if it
//!   passes).
//! - `page-stream`: the pages of one read transaction through `sqlite_dbpage`, checked
//!   in that transaction and streamed straight into the archive (WAL mode); in
//!   rollback-journal mode, where writers wait for the transaction, the pages are first
//!   copied to staging (much faster than compressing them) and the copy is checked.
//!   The media follow the database.
//!
//! An encrypted job ([`SqliteSource::encrypted`]) always streams pages, and its
//! rollback-journal copy in staging is ciphertext under a key that only this process
//! holds: no plaintext copy of the database reaches the disk.
//!
//! - [`snapshot`]: the copies themselves; [`check`]: SQLite's checks of a copy.

pub mod check;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

pub use check::check;
pub use snapshot::{PageStream, Started, probe, sqlite_version, vacuum_into};

use super::{Estimate, MediaOrder, Snapshot, Source, SourceError, Step};
use crate::archive::crypt::{CryptError, ScratchKey};
use crate::archive::{ArchiveError, ArchiveWriter};
use crate::config::{SnapshotMethod, SqliteConfig};
use crate::manifest::{SourceInfo, SqliteInfo};

/// How long start-up and status wait for a lock when probing a database.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// An SQLite job's database.
pub struct SqliteSource {
    config: SqliteConfig,
    /// The job is encrypted: nothing in plaintext may reach staging.
    encrypted: bool,
}

impl SqliteSource {
    pub fn new(config: SqliteConfig) -> SqliteSource {
        SqliteSource {
            config,
            encrypted: false,
        }
    }

    /// The source of an encrypted job: snapshots write no plaintext to staging. They
    /// stream pages (whatever `snapshot-method` says: `vacuum-into` can only write a
    /// plaintext file, and the config refuses it), and a rollback-journal database's
    /// page copy is encrypted with a key that never leaves memory.
    pub fn encrypted(config: SqliteConfig) -> SqliteSource {
        SqliteSource {
            config,
            encrypted: true,
        }
    }

    fn method(&self) -> SnapshotMethod {
        match self.encrypted {
            true => SnapshotMethod::PageStream,
            false => self.config.snapshot_method,
        }
    }

    /// The archive entry of the database: `db/<file name>` (UTF-8, checked at config
    /// load).
    fn entry(&self) -> String {
        format!("db/{}", self.file_name())
    }

    fn file_name(&self) -> String {
        self.config
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Size of the database and its WAL: what `VACUUM INTO` may copy at most.
fn database_size(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_owned(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

impl Source for SqliteSource {
    fn describe(&self) -> String {
        self.config.path.display().to_string()
    }

    fn probe(&self) -> Result<(), SourceError> {
        probe(&self.config.path, PROBE_TIMEOUT).map(drop)
    }

    fn problem(&self) -> Option<String> {
        match self.config.path.try_exists() {
            Ok(true) => None,
            _ => Some(format!("database {} does not exist", self.config.path.display())),
        }
    }

    fn estimate(&self) -> Estimate {
        let size = database_size(&self.config.path);
        match self.method() {
            SnapshotMethod::VacuumInto => Estimate {
                staging: size,
                archive: size,
            },
            SnapshotMethod::PageStream => Estimate {
                staging: 0,
                archive: size,
            },
        }
    }

    fn begin(&self, staging: &Path, cancel: &CancellationToken) -> Result<Box<dyn Snapshot>, SourceError> {
        let copy = staging.join(self.file_name());
        match self.method() {
            SnapshotMethod::VacuumInto => {
                let started = Started::default();
                let thread = {
                    let (source, dest) = (self.config.path.clone(), copy.clone());
                    let (timeout, cancel, started) =
                        (self.config.busy_timeout, cancel.clone(), started.clone());
                    std::thread::Builder::new()
                        .name("coffer-vacuum".into())
                        .spawn(move || vacuum_into(&source, &dest, timeout, &cancel, &started))
                        .map_err(SourceError::io(
                            "cannot start the snapshot thread for",
                            &self.config.path,
                        ))?
                };
                Ok(Box::new(VacuumSnapshot {
                    entry: self.entry(),
                    expected: database_size(&self.config.path),
                    copy,
                    cancel: cancel.clone(),
                    started,
                    thread: Some(thread),
                    done: None,
                }))
            }
            SnapshotMethod::PageStream => {
                let stream = PageStream::open(&self.config.path, self.config.busy_timeout, cancel)?;
                Ok(Box::new(PageSnapshot {
                    entry: self.entry(),
                    live: self.config.path.clone(),
                    copy,
                    stream,
                    scratch: self.encrypted.then(ScratchKey::new),
                }))
            }
        }
    }
}

/// A `VACUUM INTO` copy being made on its own thread.
struct VacuumSnapshot {
    entry: String,
    /// What the copy will be at most (database + WAL), for progress.
    expected: u64,
    copy: PathBuf,
    cancel: CancellationToken,
    started: Started,
    thread: Option<JoinHandle<Result<SqliteInfo, SourceError>>>,
    /// The copy's outcome once joined.
    done: Option<SqliteInfo>,
}

impl VacuumSnapshot {
    fn join(&mut self) -> Result<SqliteInfo, SourceError> {
        if let Some(info) = &self.done {
            return Ok(info.clone());
        }
        let thread = self.thread.take().ok_or_else(|| SourceError::Read {
            path: self.copy.clone(),
            message: "the snapshot thread is gone".into(),
        })?;
        let info = thread.join().map_err(|_| SourceError::Read {
            path: self.copy.clone(),
            message: "the snapshot thread panicked".into(),
        })??;
        self.done = Some(info.clone());
        Ok(info)
    }
}

impl Snapshot for VacuumSnapshot {
    fn media_order(&self) -> MediaOrder {
        MediaOrder::DuringSnapshot
    }

    fn in_progress(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn wait_point(&mut self) -> Result<(), SourceError> {
        self.started.wait();
        // Finished already: it failed before copying (missing, locked, not a
        // database), or the database was tiny. Either way, say so before the media.
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            self.join()?;
        }
        Ok(())
    }

    fn archive(
        mut self: Box<Self>,
        writer: &mut ArchiveWriter,
        progress: &mut dyn FnMut(Step),
    ) -> Result<SourceInfo, SourceError> {
        // While SQLite copies, the copy's size is the progress (a few times a second;
        // the end of the copy is noticed within milliseconds).
        let mut reported: Option<std::time::Instant> = None;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if reported.is_none_or(|at| at.elapsed() >= std::time::Duration::from_millis(250)) {
                let done = std::fs::metadata(&self.copy).map_or(0, |m| m.len());
                progress(Step::Copying {
                    done,
                    total: self.expected.max(done),
                });
                reported = Some(std::time::Instant::now());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let info = self.join()?;
        if self.cancel.is_cancelled() {
            return Err(SourceError::Cancelled {
                path: self.copy.clone(),
            });
        }
        let meta =
            std::fs::metadata(&self.copy).map_err(SourceError::io("cannot read the snapshot", &self.copy))?;
        let total = meta.len();
        let mut done = 0;
        // `quick_check` of the copy runs while the copy is compressed, instead of
        // idling a core between the two; the archive is only committed after it passed.
        std::thread::scope(|scope| -> Result<(), SourceError> {
            let checked = scope.spawn(|| check(&self.copy, false));
            let added = writer.add_file(self.entry.as_bytes(), &self.copy, &meta, &mut |n| {
                done += n;
                progress(Step::Archived { done, total });
            });
            checked.join().map_err(|_| SourceError::Read {
                path: self.copy.clone(),
                message: "the snapshot check panicked".into(),
            })??;
            added.map_err(SourceError::Archive)
        })?;
        Ok(SourceInfo::Sqlite(info))
    }
}

/// Pages streamed from one read transaction on the live database.
struct PageSnapshot {
    entry: String,
    live: PathBuf,
    /// Where a rollback-journal database's pages are copied first.
    copy: PathBuf,
    stream: PageStream,
    /// For an encrypted job: the key the staging copy is encrypted with.
    scratch: Option<ScratchKey>,
}

impl PageSnapshot {
    /// A page that could not be read is a snapshot failure, not an archive one.
    fn page_error(&self, e: std::io::Error) -> SourceError {
        SourceError::Read {
            path: self.live.clone(),
            message: e.to_string(),
        }
    }

    fn scratch_error(&self, e: CryptError) -> SourceError {
        match e {
            CryptError::Write(source) => SourceError::io("cannot write the snapshot", &self.copy)(source),
            CryptError::Read(source) => SourceError::io("cannot read the snapshot", &self.copy)(source),
            e => SourceError::Read {
                path: self.copy.clone(),
                message: e.to_string(),
            },
        }
    }

    /// Rollback journal: writers wait as long as the read transaction lasts. A plain
    /// copy to staging ends it many times sooner than compressing and hashing would,
    /// and the check runs on the copy after the transaction.
    fn plain_copy(&self) -> Result<(), SourceError> {
        let file = std::fs::File::create_new(&self.copy)
            .map_err(SourceError::io("cannot create the snapshot", &self.copy))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        self.stream
            .with_reader(|reader| std::io::copy(reader, &mut out))?
            .and_then(|_| std::io::Write::flush(&mut out))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::Other => self.page_error(e),
                _ => SourceError::io("cannot write the snapshot", &self.copy)(e),
            })?;
        drop(out);
        self.stream.finish()?;
        check(&self.copy, false)
    }

    /// Rollback journal, encrypted job: the copy to staging is encrypted to a key that
    /// exists only in memory ([`ScratchKey`]), so no plaintext reaches the disk. SQLite
    /// cannot check a copy it cannot read, so `quick_check` runs in the transaction
    /// first: writers wait for the check and the copy (see the README).
    fn encrypted_copy(&self, scratch: &ScratchKey) -> Result<(), SourceError> {
        self.stream.check()?;
        let mut out = scratch.create(&self.copy).map_err(|e| self.scratch_error(e))?;
        self.stream
            .with_reader(|reader| std::io::copy(reader, &mut out))?
            .map_err(|e| match crate::archive::crypt::crypt_error(&e) {
                None if e.kind() == std::io::ErrorKind::Other => self.page_error(e),
                _ => SourceError::io("cannot write the snapshot", &self.copy)(e),
            })?;
        out.finish()
            .and_then(|mut file| std::io::Write::flush(&mut file))
            .map_err(SourceError::io("cannot write the snapshot", &self.copy))?;
        self.stream.finish()
    }
}

impl Snapshot for PageSnapshot {
    fn media_order(&self) -> MediaOrder {
        MediaOrder::AfterDatabase
    }

    fn wait_point(&mut self) -> Result<(), SourceError> {
        // The read transaction is open: the point is fixed.
        Ok(())
    }

    fn archive(
        self: Box<Self>,
        writer: &mut ArchiveWriter,
        progress: &mut dyn FnMut(Step),
    ) -> Result<SourceInfo, SourceError> {
        // Mode, owner and mtime of the live file (a stat, not an open).
        let meta =
            std::fs::metadata(&self.live).map_err(SourceError::io("cannot stat the database", &self.live))?;
        let (size, info) = (self.stream.size(), self.stream.info.clone());
        let mut done = 0;
        let mut tick = |n: u64| {
            done += n;
            progress(Step::Archived { done, total: size });
        };
        if info.journal_mode == "wal" {
            // Writers do not wait for readers: check and stream in the transaction.
            let stream = &self.stream;
            stream.check()?;
            stream
                .with_reader(|reader| {
                    writer.add_stream(self.entry.as_bytes(), reader, size, &meta, &mut tick)
                })?
                .map_err(|e| match e {
                    ArchiveError::Write(e) if e.kind() == std::io::ErrorKind::Other => self.page_error(e),
                    e => SourceError::Archive(e),
                })?;
            self.stream.finish()?;
        } else if let Some(scratch) = &self.scratch {
            self.encrypted_copy(scratch)?;
            let mut reader = scratch.open(&self.copy).map_err(|e| self.scratch_error(e))?;
            writer
                .add_stream(self.entry.as_bytes(), &mut reader, size, &meta, &mut tick)
                .map_err(SourceError::Archive)?;
            reader.finish().map_err(|e| self.scratch_error(e))?;
        } else {
            self.plain_copy()?;
            let mut file = std::fs::File::open(&self.copy)
                .map_err(SourceError::io("cannot read the snapshot", &self.copy))?;
            writer
                .add_stream(self.entry.as_bytes(), &mut file, size, &meta, &mut tick)
                .map_err(SourceError::Archive)?;
        }
        Ok(SourceInfo::Sqlite(info))
    }

    fn staging_needed(&self) -> u64 {
        if self.stream.info.journal_mode == "wal" {
            0
        } else {
            self.stream.size()
        }
    }
}

#[cfg(test)]
pub(crate) mod test_db {
    use std::path::Path;

    use rusqlite::Connection;

    /// A small database: table `t` with three rows, user_version 7, application_id 42.
    pub fn make_db(path: &Path, wal: bool) {
        let conn = Connection::open(path).unwrap();
        if wal {
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 7; PRAGMA application_id = 42;
             CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t(v) VALUES ('a'), ('b'), ('c');",
        )
        .unwrap();
    }
}
