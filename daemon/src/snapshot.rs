//! Consistent copies of a live SQLite database, and checks of copies.
//!
//! [`vacuum_into`] opens the source through SQLite (never with a plain `open()`, which
//! would drop the app's POSIX locks on close if it shared our process), waits up to the
//! job's busy timeout for a read lock, records what the manifest says about the source,
//! and runs `VACUUM INTO` a file in staging. In WAL mode the app's writers keep going
//! for the whole copy; in rollback-journal mode they wait for it. The copy then has to
//! pass `PRAGMA quick_check` before anything archives it.
//!
//! All functions here block; callers run them off the async reactor.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio_util::sync::CancellationToken;

use crate::manifest::SourceInfo;

/// The method recorded in the manifest for `VACUUM INTO` snapshots.
pub const METHOD_VACUUM_INTO: &str = "vacuum-into";

/// Why a snapshot or check failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("database {path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not an SQLite database")]
    NotSqlite { path: PathBuf },
    #[error("database {path} is empty (0 pages); check the job's database path")]
    Empty { path: PathBuf },
    #[error("database {path} stayed locked by another connection for longer than the busy timeout ({})", humantime::format_duration(*timeout))]
    Locked { path: PathBuf, timeout: Duration },
    #[error("the snapshot of {path} was cancelled")]
    Cancelled { path: PathBuf },
    #[error("the copy {path} failed its integrity check: {message}")]
    Check { path: PathBuf, message: String },
    #[error("SQLite failed on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl SnapshotError {
    fn from_sqlite(path: &Path, timeout: Duration, source: rusqlite::Error) -> Self {
        let path = path.to_owned();
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => SnapshotError::NotSqlite { path },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                SnapshotError::Locked { path, timeout }
            }
            Some(ErrorCode::OperationInterrupted) => SnapshotError::Cancelled { path },
            _ => SnapshotError::Sqlite { path, source },
        }
    }
}

/// The version of the SQLite library compiled into this build.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// Opens an existing database for reading facts and snapshotting it.
fn open_source(path: &Path, busy_timeout: Duration) -> Result<Connection, SnapshotError> {
    match path.try_exists() {
        Ok(true) => {}
        _ => {
            return Err(SnapshotError::Missing {
                path: path.to_owned(),
            });
        }
    }
    // Read-write (never create): a WAL database needs its -shm to be writable even
    // for readers. Nothing here writes to the source.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| SnapshotError::from_sqlite(path, busy_timeout, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| SnapshotError::from_sqlite(path, busy_timeout, e))?;
    Ok(conn)
}

/// Reads the facts the manifest records about `conn`'s database, in one read
/// transaction so they describe one state.
fn source_info(conn: &Connection, path: &Path) -> rusqlite::Result<SourceInfo> {
    let pragma_i64 = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    conn.execute_batch("BEGIN")?;
    let info = (|| {
        Ok(SourceInfo {
            path: path.display().to_string(),
            page_size: pragma_i64("page_size")?.max(0) as u64,
            page_count: pragma_i64("page_count")?.max(0) as u64,
            user_version: pragma_i64("user_version")?,
            application_id: pragma_i64("application_id")?,
            journal_mode: conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
            snapshot_method: METHOD_VACUUM_INTO.to_owned(),
        })
    })();
    conn.execute_batch("COMMIT")?;
    info
}

/// Checks that `path` can be snapshotted: it exists and is a non-empty SQLite
/// database. Cheap; used for health and before a run.
pub fn probe(path: &Path, busy_timeout: Duration) -> Result<SourceInfo, SnapshotError> {
    let conn = open_source(path, busy_timeout)?;
    let info = source_info(&conn, path).map_err(|e| SnapshotError::from_sqlite(path, busy_timeout, e))?;
    if info.page_count == 0 {
        return Err(SnapshotError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(info)
}

/// Takes a consistent copy of `source` into `dest` (which must not exist) with
/// `VACUUM INTO`, then runs `PRAGMA quick_check` on the copy.
pub fn vacuum_into(
    source: &Path,
    dest: &Path,
    busy_timeout: Duration,
    cancel: &CancellationToken,
) -> Result<SourceInfo, SnapshotError> {
    let conn = open_source(source, busy_timeout)?;
    let err = |e| SnapshotError::from_sqlite(source, busy_timeout, e);
    let info = source_info(&conn, source).map_err(err)?;
    if info.page_count == 0 {
        return Err(SnapshotError::Empty {
            path: source.to_owned(),
        });
    }
    // Lets a shutdown interrupt a long copy; SQLite calls this every N VM steps.
    let token = cancel.clone();
    conn.progress_handler(10_000, Some(move || token.is_cancelled()));
    let dest_text = dest.to_str().ok_or_else(|| SnapshotError::Check {
        path: dest.to_owned(),
        message: "staging path is not valid UTF-8".into(),
    })?;
    conn.execute("VACUUM INTO ?1", [dest_text]).map_err(err)?;
    drop(conn);
    check(dest, false)?;
    Ok(info)
}

/// Runs `PRAGMA quick_check` (or, when `deep`, `integrity_check` and
/// `foreign_key_check`) on a copy that no one else uses.
pub fn check(path: &Path, deep: bool) -> Result<(), SnapshotError> {
    let fail = |message: String| SnapshotError::Check {
        path: path.to_owned(),
        message,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| SnapshotError::from_sqlite(path, Duration::ZERO, e))?;
    let sql_err = |e| SnapshotError::from_sqlite(path, Duration::ZERO, e);
    let pragma = if deep {
        "PRAGMA integrity_check"
    } else {
        "PRAGMA quick_check"
    };
    let mut stmt = conn.prepare(pragma).map_err(sql_err)?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(sql_err)?
        .collect::<Result<_, _>>()
        .map_err(sql_err)?;
    if rows.as_slice() != ["ok"] {
        return Err(fail(rows.into_iter().take(3).collect::<Vec<_>>().join("; ")));
    }
    if deep {
        let mut stmt = conn.prepare("PRAGMA foreign_key_check").map_err(sql_err)?;
        let violations: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        if let Some(table) = violations.first() {
            return Err(fail(format!(
                "{} foreign key violation(s), first in table {table}",
                violations.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_db(path: &Path, wal: bool) {
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

    #[test]
    fn snapshot_records_source_facts_and_copies_rows() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        make_db(&src, true);
        let dest = dir.path().join("copy.db");
        let info = vacuum_into(&src, &dest, Duration::from_secs(1), &CancellationToken::new()).unwrap();
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
        let err = vacuum_into(&missing, &dir.path().join("a"), t, &cancel).unwrap_err();
        assert!(matches!(err, SnapshotError::Missing { .. }), "{err}");
        assert!(!missing.exists(), "a missing database must not be created");

        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "this is not a database, just some text that is long enough",
        )
        .unwrap();
        let err = vacuum_into(&text, &dir.path().join("b"), t, &cancel).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is not an SQLite database", text.display())
        );

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, "").unwrap();
        let err = vacuum_into(&empty, &dir.path().join("c"), t, &cancel).unwrap_err();
        assert!(matches!(err, SnapshotError::Empty { .. }), "{err}");
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
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("busy timeout (200ms)"), "{err}");
    }

    #[test]
    fn check_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        make_db(&db, false);
        check(&db, true).unwrap();
        // Overwrite the second page (the table's b-tree) with garbage.
        let mut bytes = std::fs::read(&db).unwrap();
        for b in &mut bytes[4096..4200] {
            *b = 0xA5;
        }
        std::fs::write(&db, bytes).unwrap();
        assert!(check(&db, true).is_err());
    }
}
