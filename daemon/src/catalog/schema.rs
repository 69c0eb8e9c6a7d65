//! The catalog's schema and its migrations, numbered by SQLite's `user_version`.
//!
//! Migration N brings a catalog from version N-1 to N, in one transaction. A catalog
//! made before migrations existed has `user_version` 0 and the tables of migration 1
//! already (it uses `IF NOT EXISTS`), so it is upgraded in place. A catalog newer than
//! this build is refused: an older cofferd must not write into a schema it does not
//! know (the catalog can always be rebuilt from the backup directory).

use std::path::Path;

use rusqlite::Connection;

use super::CatalogError;

/// Each migration's SQL; index 0 is migration 1.
const MIGRATIONS: &[&str] = &[
    // 1: backups, runs, audit (the schema before stage 2).
    "
CREATE TABLE IF NOT EXISTS backups (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    protected INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT '',
    verified_at INTEGER NOT NULL DEFAULT 0,
    verify_result TEXT NOT NULL DEFAULT '',
    duration_ms INTEGER NOT NULL DEFAULT 0,
    deleting INTEGER NOT NULL DEFAULT 0,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS backups_by_job ON backups(job, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS backups_by_time ON backups(created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    backup_id TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs(job, kind, id DESC);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
",
    // 2: encrypted backups: the recipients' fingerprints as a JSON array ('' = plain).
    "ALTER TABLE backups ADD COLUMN recipients TEXT NOT NULL DEFAULT '';",
    // 3: where each backup is besides the local backup dir (offsite stores), and the
    // copy queue: rows in state 'pending' or 'failed' are copies still to do, by
    // `next_attempt_at`; they survive restarts. A row outlives its local backup (the
    // copy stays in the store when local retention removes the local files).
    "
CREATE TABLE locations (
    backup_id TEXT NOT NULL,
    job TEXT NOT NULL,
    store TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    protected INTEGER NOT NULL DEFAULT 0,
    encrypted INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    copied_at INTEGER NOT NULL DEFAULT 0,
    verified_at INTEGER NOT NULL DEFAULT 0,
    verify_result TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    etag TEXT NOT NULL DEFAULT '',
    retain_until INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (backup_id, store)
);
CREATE INDEX locations_by_store ON locations(store, job, created_at DESC);
CREATE INDEX locations_queue ON locations(state, next_attempt_at);
",
];

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the catalog at `path` (open on `conn`) to [`LATEST`].
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), CatalogError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > LATEST {
        return Err(CatalogError::Newer {
            path: path.to_owned(),
            version,
            known: LATEST,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(catalog = %path.display(), version = index + 1, "catalog schema upgraded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_from_before_migrations_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let mut conn = Connection::open(&path).unwrap();
        // What cofferd wrote before migrations: the tables, user_version 0, a row.
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute(
            "INSERT INTO audit (at, actor, action, target, result) VALUES (1, 'x', 'backup', 'app', 'ok')",
            [],
        )
        .unwrap();
        migrate(&mut conn, &path).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, LATEST);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "existing rows survive");
        migrate(&mut conn, &path).unwrap();
    }

    #[test]
    fn a_newer_catalog_is_refused_with_a_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", LATEST + 5).unwrap();
        let err = migrate(&mut conn, &path).unwrap_err().to_string();
        assert!(err.contains("newer cofferd"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
