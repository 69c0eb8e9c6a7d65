//! Consistent copies of a live SQLite database.
//!
//! [`vacuum_into`] opens the source through SQLite (never with a plain `open()`, which
//! would drop the app's POSIX locks on close if it shared our process), waits up to the
//! job's busy timeout for a read lock, records what the manifest says about the source,
//! and runs `VACUUM INTO` a file in staging. In WAL mode the app's writers keep going
//! for the whole copy; in rollback-journal mode they wait for it. [`PageStream`] reads
//! the pages of one read transaction instead. Either copy has to pass
//! [`check`](super::check::check) (or [`PageStream::check`]) before it is archived.
//!
//! All functions here block; callers run them off the async reactor.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::check::run_check;
use crate::config::SnapshotMethod;
use crate::manifest::SqliteInfo;
use crate::source::SourceError;

/// SQLite VM instructions between progress-handler calls (cancellation checks).
const PROGRESS_OPS: i32 = 10_000;

/// The version of the SQLite library compiled into this build.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

thread_local! {
    /// The allowed wait and the shutdown token of the snapshot running on this thread.
    /// SQLite calls the busy handler on the thread that runs the statement, and a plain
    /// `busy_timeout` would keep waiting through a shutdown.
    static BUSY: RefCell<Option<BusyState>> = const { RefCell::new(None) };
}

struct BusyState {
    timeout: Duration,
    cancel: CancellationToken,
    started: Instant,
}

/// SQLite's busy handler: waits in short naps until the lock is free, the job's busy
/// timeout has passed, or shutdown began.
fn busy_wait(attempt: i32) -> bool {
    BUSY.with(|busy| {
        let mut busy = busy.borrow_mut();
        let Some(state) = busy.as_mut() else { return false };
        if attempt == 0 {
            state.started = Instant::now();
        }
        let elapsed = state.started.elapsed();
        if state.cancel.is_cancelled() || elapsed >= state.timeout {
            return false;
        }
        std::thread::sleep((state.timeout - elapsed).min(Duration::from_millis(20)));
        true
    })
}

/// Keeps [`busy_wait`]'s state for this thread while a snapshot connection is used.
struct BusyGuard;

impl BusyGuard {
    fn install(timeout: Duration, cancel: &CancellationToken) -> BusyGuard {
        BUSY.with(|busy| {
            *busy.borrow_mut() = Some(BusyState {
                timeout,
                cancel: cancel.clone(),
                started: Instant::now(),
            });
        });
        BusyGuard
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        BUSY.with(|busy| *busy.borrow_mut() = None);
    }
}

/// Opens an existing database for reading facts and snapshotting it. Lock waits end
/// after `busy_timeout` or when `cancel` fires; keep the guard while using `conn`.
fn open_source(
    path: &Path,
    busy_timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(Connection, BusyGuard), SourceError> {
    match path.try_exists() {
        Ok(true) => {}
        _ => {
            return Err(SourceError::Missing {
                path: path.to_owned(),
            });
        }
    }
    // Read-write (never create): a WAL database needs its -shm to be writable even
    // for readers. Nothing here writes to the source.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| SourceError::from_sqlite(path, busy_timeout, e))?;
    let guard = BusyGuard::install(busy_timeout, cancel);
    // Lets a shutdown interrupt a long statement; SQLite calls this every N VM steps.
    let token = cancel.clone();
    conn.progress_handler(PROGRESS_OPS, Some(move || token.is_cancelled()));
    conn.busy_handler(Some(busy_wait))
        .map_err(|e| SourceError::from_sqlite(path, busy_timeout, e))?;
    Ok((conn, guard))
}

/// Reads the facts the manifest records about `conn`'s database (call inside a read
/// transaction so they describe one state).
fn read_info(conn: &Connection, path: &Path, method: &str) -> rusqlite::Result<SqliteInfo> {
    let pragma_i64 = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    Ok(SqliteInfo {
        path: path.display().to_string(),
        sqlite_version: sqlite_version().to_owned(),
        page_size: pragma_i64("page_size")?.max(0) as u64,
        page_count: pragma_i64("page_count")?.max(0) as u64,
        user_version: pragma_i64("user_version")?,
        application_id: pragma_i64("application_id")?,
        journal_mode: conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
        snapshot_method: method.to_owned(),
    })
}

/// [`read_info`] in its own read transaction.
fn source_info(conn: &Connection, path: &Path) -> rusqlite::Result<SqliteInfo> {
    conn.execute_batch("BEGIN")?;
    let info = read_info(conn, path, SnapshotMethod::VacuumInto.as_str());
    conn.execute_batch("COMMIT")?;
    info
}

/// Refuses a database with no pages: a 0-byte file is a valid empty database to
/// SQLite, but for a backup job it almost always means a wrong path.
fn non_empty(info: &SqliteInfo, path: &Path) -> Result<(), SourceError> {
    if info.page_count == 0 {
        return Err(SourceError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Checks that `path` can be snapshotted: it exists and is a non-empty SQLite
/// database. Cheap; used for health and before a run.
pub fn probe(path: &Path, busy_timeout: Duration) -> Result<SqliteInfo, SourceError> {
    let (conn, _busy) = open_source(path, busy_timeout, &CancellationToken::new())?;
    let info = source_info(&conn, path).map_err(|e| SourceError::from_sqlite(path, busy_timeout, e))?;
    non_empty(&info, path)?;
    Ok(info)
}

/// Fires once a snapshot's read transaction has begun (or the snapshot ended), so
/// work that must come after the snapshot point can run while the copy goes on.
#[derive(Debug, Clone, Default)]
pub struct Started(Arc<(Mutex<bool>, Condvar)>);

impl Started {
    fn signal(&self) {
        let (flag, cond) = &*self.0;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cond.notify_all();
    }

    /// Blocks until [`Started::signal`].
    pub fn wait(&self) {
        let (flag, cond) = &*self.0;
        let mut started = flag.lock().unwrap_or_else(|p| p.into_inner());
        while !*started {
            started = cond.wait(started).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Signals [`Started`] when dropped, so a failed snapshot never leaves a waiter.
struct SignalOnDrop<'a>(&'a Started);

impl Drop for SignalOnDrop<'_> {
    fn drop(&mut self) {
        self.0.signal();
    }
}

/// Takes a consistent copy of `source` into `dest` (which must not exist) with
/// `VACUUM INTO`. The copy must then pass [`check`] before its archive is committed
/// (the engine checks it while compressing it, on another core). `started` fires when
/// the copy's read transaction has begun: SQLite's progress handler first runs
/// inside the copying statements, after `VACUUM INTO` opened that transaction (the
/// `ATTACH` before it is far shorter than the handler's interval).
pub fn vacuum_into(
    source: &Path,
    dest: &Path,
    busy_timeout: Duration,
    cancel: &CancellationToken,
    started: &Started,
) -> Result<SqliteInfo, SourceError> {
    let _signal = SignalOnDrop(started);
    let (conn, _busy) = open_source(source, busy_timeout, cancel)?;
    let (token, signal) = (cancel.clone(), started.clone());
    conn.progress_handler(
        PROGRESS_OPS,
        Some(move || {
            signal.signal();
            token.is_cancelled()
        }),
    );
    let err = |e| SourceError::from_sqlite(source, busy_timeout, e);
    // `VACUUM INTO` writes its copy with the main database's `synchronous` level. The
    // copy is scratch (the archive is what gets fsynced; a crash leaves it for the
    // start-up sweep), so it is not synced: no 1 GiB flush to disk mid-backup, and a
    // copy deleted within seconds mostly never reaches the disk at all. This only
    // affects this read-only connection, never the app's.
    conn.pragma_update(None, "synchronous", "OFF").map_err(err)?;
    let info = source_info(&conn, source).map_err(err)?;
    non_empty(&info, source)?;
    let dest_text = dest.to_str().ok_or_else(|| SourceError::Check {
        path: dest.to_owned(),
        message: "staging path is not valid UTF-8".into(),
    })?;
    conn.execute("VACUUM INTO ?1", [dest_text]).map_err(err)?;
    drop(conn);
    Ok(info)
}

/// A consistent snapshot streamed straight from the live database: one read
/// transaction is held while the pages are read through the `sqlite_dbpage` virtual
/// table (as sqlite3_rsync does), so no intermediate copy is written. The snapshot
/// must pass [`PageStream::check`] (in the same transaction) before a page is
/// streamed. In WAL mode writers keep going; in rollback-journal mode they wait until
/// [`PageStream::finish`], so the engine copies the pages to staging and checks the
/// copy instead, which ends the transaction sooner.
pub struct PageStream {
    conn: Connection,
    _busy: BusyGuard,
    path: PathBuf,
    pub info: SqliteInfo,
}

impl PageStream {
    /// Opens a read transaction on `source` and records its facts. Not checked yet:
    /// see [`PageStream::check`].
    pub fn open(
        source: &Path,
        busy_timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<PageStream, SourceError> {
        let (conn, busy) = open_source(source, busy_timeout, cancel)?;
        let err = |e| SourceError::from_sqlite(source, busy_timeout, e);
        // BEGIN is deferred: the first read takes the snapshot.
        conn.execute_batch("BEGIN").map_err(err)?;
        let info = read_info(&conn, source, SnapshotMethod::PageStream.as_str()).map_err(err)?;
        non_empty(&info, source)?;
        Ok(PageStream {
            conn,
            _busy: busy,
            path: source.to_owned(),
            info,
        })
    }

    /// `PRAGMA quick_check` of the snapshot, in its read transaction.
    pub fn check(&self) -> Result<(), SourceError> {
        run_check(&self.conn, &self.path, false)
    }

    /// Bytes the stream yields: page size × page count.
    pub fn size(&self) -> u64 {
        self.info.page_size * self.info.page_count
    }

    /// Calls `f` with a reader of all pages in order. One sequential scan of
    /// `sqlite_dbpage` (its only index is an equality on `pgno`, so range queries would
    /// rescan), read through a statement that lives for the call.
    pub fn with_reader<T>(&self, f: impl FnOnce(&mut dyn std::io::Read) -> T) -> Result<T, SourceError> {
        let sql = |e| SourceError::from_sqlite(&self.path, Duration::ZERO, e);
        let mut stmt = self
            .conn
            .prepare("SELECT pgno, data FROM sqlite_dbpage")
            .map_err(sql)?;
        let rows = stmt.query([]).map_err(sql)?;
        let mut reader = PageReader {
            stream: self,
            rows,
            next: 1,
            buf: Vec::new(),
            pos: 0,
        };
        Ok(f(&mut reader))
    }

    /// Ends the read transaction.
    pub fn finish(&self) -> Result<(), SourceError> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| SourceError::from_sqlite(&self.path, Duration::ZERO, e))
    }
}

/// `Read` over a [`PageStream`]'s pages; checks that they come in order and whole.
struct PageReader<'a> {
    stream: &'a PageStream,
    rows: rusqlite::Rows<'a>,
    next: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl PageReader<'_> {
    /// Loads the next page into the buffer; false after the last one.
    fn fetch(&mut self) -> std::io::Result<bool> {
        let path = &self.stream.path;
        let info = &self.stream.info;
        let sql = |e| std::io::Error::other(SourceError::from_sqlite(path, Duration::ZERO, e).to_string());
        if self.next > info.page_count {
            return Ok(false);
        }
        let Some(row) = self.rows.next().map_err(sql)? else {
            return Err(std::io::Error::other(format!(
                "page {} of {} is missing",
                self.next,
                path.display()
            )));
        };
        let pgno: i64 = row.get(0).map_err(sql)?;
        let data = row
            .get_ref(1)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| sql(e.into()))?;
        if pgno as u64 != self.next || data.len() as u64 != info.page_size {
            return Err(std::io::Error::other(format!(
                "page {} of {} could not be read",
                self.next,
                path.display()
            )));
        }
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.pos = 0;
        self.next += 1;
        Ok(true)
    }
}

impl std::io::Read for PageReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() && !self.fetch()? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sqlite::check::check;
    use crate::source::sqlite::test_db::make_db;

    #[test]
    fn snapshot_records_source_facts_and_copies_rows() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        make_db(&src, true);
        let dest = dir.path().join("copy.db");
        let info = vacuum_into(
            &src,
            &dest,
            Duration::from_secs(1),
            &CancellationToken::new(),
            &Started::default(),
        )
        .unwrap();
        assert_eq!(info.user_version, 7);
        assert_eq!(info.application_id, 42);
        assert_eq!(info.journal_mode, "wal");
        assert!(info.page_count > 0);
        let copy = Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn clear_errors_for_bad_sources() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let t = Duration::from_millis(100);
        let missing = dir.path().join("missing.db");
        let err = vacuum_into(&missing, &dir.path().join("a"), t, &cancel, &Started::default()).unwrap_err();
        assert!(matches!(err, SourceError::Missing { .. }), "{err}");
        assert!(!missing.exists(), "a missing database must not be created");

        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "this is not a database, just some text that is long enough",
        )
        .unwrap();
        let err = vacuum_into(&text, &dir.path().join("b"), t, &cancel, &Started::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is not an SQLite database", text.display())
        );

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, "").unwrap();
        let err = vacuum_into(&empty, &dir.path().join("c"), t, &cancel, &Started::default()).unwrap_err();
        assert!(matches!(err, SourceError::Empty { .. }), "{err}");
    }

    #[test]
    fn locked_database_fails_after_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        make_db(&src, false);
        let holder = Connection::open(&src).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = vacuum_into(
            &src,
            &dir.path().join("x"),
            Duration::from_millis(200),
            &CancellationToken::new(),
            &Started::default(),
        )
        .unwrap_err();
        assert!(matches!(err, SourceError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("busy timeout (200ms)"), "{err}");
    }

    #[test]
    fn page_stream_yields_a_consistent_copy_while_a_writer_commits() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        make_db(&src, true);
        let stream = PageStream::open(&src, Duration::from_secs(1), &CancellationToken::new()).unwrap();
        stream.check().unwrap();
        // A commit after the snapshot was taken must not show up in the stream.
        let writer = Connection::open(&src).unwrap();
        writer.execute("INSERT INTO t(v) VALUES ('late')", []).unwrap();
        let mut bytes = Vec::new();
        stream
            .with_reader(|r| r.read_to_end(&mut bytes))
            .unwrap()
            .unwrap();
        assert_eq!(bytes.len() as u64, stream.size());
        assert_eq!(stream.info.snapshot_method, SnapshotMethod::PageStream.as_str());
        stream.finish().unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::write(&copy, &bytes).unwrap();
        check(&copy, true).unwrap();
        let n: i64 = Connection::open(&copy)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }
}
