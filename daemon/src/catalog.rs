//! The daemon's own SQLite database, `<state-dir>/catalog.db`: backups, runs and the
//! audit trail.
//!
//! The catalog is an index, not the source of truth: every archive has a sidecar
//! (`<id>.json`) beside it, and [`Catalog::reconcile`] makes the catalog agree with the
//! backup directory at start-up — sidecars with an archive but no row are added (so
//! deleting catalog.db loses nothing), rows whose archive is gone are dropped, deletions
//! that a crash interrupted are finished, and orphaned sidecars are removed.
//!
//! One connection behind a mutex; every method blocks, so async callers use
//! `spawn_blocking`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::manifest::{Manifest, Sidecar};

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog {path} cannot be opened")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the catalog failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the catalog holds an unreadable record for {id}: {message}")]
    Corrupt { id: String, message: String },
    #[error("cannot reconcile the catalog with {path}")]
    Scan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A catalogued backup.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    pub id: String,
    pub job: String,
    /// Unix seconds.
    pub created_at: i64,
    pub size: u64,
    pub sha256: String,
    pub protected: bool,
    pub note: String,
    pub verified_at: i64,
    pub verify_result: String,
    pub duration_ms: u64,
    /// The manifest without its entries (the sidecar has them all).
    pub summary: Manifest,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub status: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub error: String,
    pub backup_id: String,
    pub bytes: u64,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub error: String,
}

/// Counts over one job's backups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobStats {
    pub count: u64,
    pub bytes: u64,
    pub newest_at: i64,
}

/// What [`Catalog::reconcile`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: Vec<String>,
    pub dropped: Vec<String>,
    pub finished_deletes: Vec<String>,
    pub orphan_sidecars: Vec<PathBuf>,
    pub unknown_archives: Vec<PathBuf>,
}

const SCHEMA: &str = "
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
";

const BACKUP_COLUMNS: &str =
    "id, job, created_at, size, sha256, protected, note, verified_at, verify_result, duration_ms, summary";

/// Newest first; equal times by id descending in the order of
/// [`coffer_common::ids::cmp_ids`] (length, then bytes: `-10` after `-9`).
const NEWEST_FIRST: &str = "created_at DESC, length(id) DESC, id DESC";

/// The catalog database.
pub struct Catalog {
    conn: Mutex<Connection>,
    /// Ends of runs the database could not take (its disk was full): retried before
    /// every later catalog operation, and read in place of their rows meanwhile, so a
    /// run never stays `running` after it ended.
    unrecorded: Mutex<Vec<RunRecord>>,
}

const UPDATE_RUN: &str =
    "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, backup_id = ?5, bytes = ?6 WHERE id = ?1";

impl Catalog {
    /// Opens (creating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let open_err = |source| CatalogError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL keeps readers (list, status) from waiting on a run's writes. NORMAL
        // sync may lose the last commit on power loss; reconcile restores it from
        // the sidecars.
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Catalog {
            conn: Mutex::new(conn),
            unrecorded: Mutex::new(Vec::new()),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent.
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.unrecorded().retain(|r| {
            conn.execute(
                UPDATE_RUN,
                params![
                    r.id,
                    r.status,
                    r.finished_at,
                    r.error,
                    r.backup_id,
                    r.bytes as i64
                ],
            )
            .is_err()
        });
        conn
    }

    fn unrecorded(&self) -> MutexGuard<'_, Vec<RunRecord>> {
        self.unrecorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `found` (a row of `job`'s runs of `kind`), or a newer unrecorded run end that
    /// `wanted` accepts.
    fn with_unrecorded(
        &self,
        found: Option<RunRecord>,
        job: &str,
        kind: &str,
        wanted: impl Fn(&RunRecord) -> bool,
    ) -> Option<RunRecord> {
        let pending = self
            .unrecorded()
            .iter()
            .filter(|r| r.job == job && r.kind == kind && wanted(r))
            .max_by_key(|r| r.id)
            .cloned();
        match (found, pending) {
            (Some(f), Some(p)) if p.id < f.id => Some(f),
            (found, pending) => pending.or(found),
        }
    }

    /// Adds a backup from its sidecar.
    pub fn insert_backup(&self, sidecar: &Sidecar) -> Result<(), CatalogError> {
        let summary = summary_json(&sidecar.manifest);
        let created_at = created_at(&sidecar.manifest);
        self.conn().execute(
            "INSERT OR REPLACE INTO backups (id, job, created_at, size, sha256, protected, note, duration_ms, summary)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                sidecar.manifest.id,
                sidecar.job(),
                created_at,
                sidecar.size as i64,
                sidecar.sha256,
                sidecar.protected,
                sidecar.note,
                sidecar.duration_ms as i64,
                summary
            ],
        )?;
        Ok(())
    }

    /// Backups, newest first; all jobs when `job` is `None`. Rows being deleted are
    /// not listed.
    pub fn list_backups(&self, job: Option<&str>) -> Result<Vec<BackupRecord>, CatalogError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE deleting = 0 AND (?1 IS NULL OR job = ?1)
             ORDER BY {NEWEST_FIRST}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([job], backup_row)?;
        rows.map(|r| r?).collect()
    }

    /// One backup by id (not one being deleted).
    pub fn get_backup(&self, id: &str) -> Result<Option<BackupRecord>, CatalogError> {
        let conn = self.conn();
        let sql = format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = ?1 AND deleting = 0");
        conn.query_row(&sql, [id], backup_row).optional()?.transpose()
    }

    /// The newest backup, of one job or of any.
    pub fn latest(&self, job: Option<&str>) -> Result<Option<BackupRecord>, CatalogError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE deleting = 0 AND (?1 IS NULL OR job = ?1)
             ORDER BY {NEWEST_FIRST} LIMIT 1"
        );
        conn.query_row(&sql, [job], backup_row).optional()?.transpose()
    }

    /// Whether an id is taken (by a listed backup or one being deleted).
    pub fn id_exists(&self, id: &str) -> Result<bool, CatalogError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM backups WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Marks a backup as being deleted: from here on it is not listed, and a crash
    /// before [`Catalog::remove_backup`] is finished by the next reconcile.
    pub fn mark_deleting(&self, id: &str) -> Result<(), CatalogError> {
        self.conn()
            .execute("UPDATE backups SET deleting = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Drops a backup's row.
    pub fn remove_backup(&self, id: &str) -> Result<(), CatalogError> {
        self.conn().execute("DELETE FROM backups WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Pins or unpins a backup.
    pub fn set_protected(&self, id: &str, protected: bool) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE backups SET protected = ?2 WHERE id = ?1",
            params![id, protected],
        )?;
        Ok(())
    }

    /// Records a verification: when, and "ok" or the error sentence.
    pub fn set_verified(&self, id: &str, at: i64, result: &str) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE backups SET verified_at = ?2, verify_result = ?3 WHERE id = ?1",
            params![id, at, result],
        )?;
        Ok(())
    }

    /// Count, bytes and newest time of a job's backups.
    pub fn job_stats(&self, job: &str) -> Result<JobStats, CatalogError> {
        Ok(self.conn().query_row(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(max(created_at), 0)
             FROM backups WHERE job = ?1 AND deleting = 0",
            [job],
            |r| {
                Ok(JobStats {
                    count: r.get::<_, i64>(0)? as u64,
                    bytes: r.get::<_, i64>(1)? as u64,
                    newest_at: r.get(2)?,
                })
            },
        )?)
    }

    /// Records the start of a run; returns its id.
    pub fn start_run(&self, job: &str, kind: &str, started_at: i64) -> Result<i64, CatalogError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (job, kind, status, started_at) VALUES (?1, ?2, 'running', ?3)",
            params![job, kind, started_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records a run's end.
    pub fn finish_run(
        &self,
        run: i64,
        status: &str,
        finished_at: i64,
        error: &str,
        backup_id: &str,
        bytes: u64,
    ) -> Result<(), CatalogError> {
        let conn = self.conn();
        let updated = conn.execute(
            UPDATE_RUN,
            params![run, status, finished_at, error, backup_id, bytes as i64],
        );
        if let Err(e) = updated {
            // Kept to be written later (see `unrecorded`).
            if let Ok(mut record) = conn.query_row(
                "SELECT id, job, kind, status, started_at, finished_at, error, backup_id, bytes
                 FROM runs WHERE id = ?1",
                [run],
                run_row,
            ) {
                record.status = status.to_owned();
                record.finished_at = finished_at;
                record.error = error.to_owned();
                record.backup_id = backup_id.to_owned();
                record.bytes = bytes;
                self.unrecorded().push(record);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Records a run that never started (e.g. skipped because one was running).
    pub fn record_run(
        &self,
        job: &str,
        kind: &str,
        status: &str,
        at: i64,
        error: &str,
    ) -> Result<(), CatalogError> {
        let run = self.start_run(job, kind, at)?;
        self.finish_run(run, status, at, error, "", 0)
    }

    /// The newest run of `job` of `kind` (any status).
    pub fn last_run(&self, job: &str, kind: &str) -> Result<Option<RunRecord>, CatalogError> {
        let found = self
            .conn()
            .query_row(
                "SELECT id, job, kind, status, started_at, finished_at, error, backup_id, bytes
                 FROM runs WHERE job = ?1 AND kind = ?2 ORDER BY id DESC LIMIT 1",
                params![job, kind],
                run_row,
            )
            .optional()?;
        Ok(self.with_unrecorded(found, job, kind, |_| true))
    }

    /// The newest finished runs of `job`, newest first.
    pub fn runs(&self, job: &str, limit: u32) -> Result<Vec<RunRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, job, kind, status, started_at, finished_at, error, backup_id, bytes
             FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![job, limit], run_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest finished (succeeded or failed) backup run of `job`: what its health
    /// is judged by. Skipped and cancelled runs say nothing about the backups.
    pub fn last_finished_backup_run(&self, job: &str) -> Result<Option<RunRecord>, CatalogError> {
        let found = self
            .conn()
            .query_row(
                "SELECT id, job, kind, status, started_at, finished_at, error, backup_id, bytes
                 FROM runs WHERE job = ?1 AND kind = 'backup' AND status IN ('succeeded', 'failed')
                 ORDER BY id DESC LIMIT 1",
                [job],
                run_row,
            )
            .optional()?;
        Ok(self.with_unrecorded(found, job, "backup", |r| {
            matches!(r.status.as_str(), "succeeded" | "failed")
        }))
    }

    /// The newest successful backup run of `job`.
    pub fn last_successful_backup_run(&self, job: &str) -> Result<Option<RunRecord>, CatalogError> {
        let found = self
            .conn()
            .query_row(
                "SELECT id, job, kind, status, started_at, finished_at, error, backup_id, bytes
                 FROM runs WHERE job = ?1 AND kind = 'backup' AND status = 'succeeded'
                 ORDER BY id DESC LIMIT 1",
                [job],
                run_row,
            )
            .optional()?;
        Ok(self.with_unrecorded(found, job, "backup", |r| r.status == "succeeded"))
    }

    /// Number of runs per (job, kind, status), for metrics.
    pub fn run_counts(&self) -> Result<Vec<(String, String, String, u64)>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT job, kind, status, count(*) FROM runs WHERE status != 'running'
             GROUP BY job, kind, status ORDER BY job, kind, status",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks runs left `running` by a daemon that died as failed.
    pub fn fail_interrupted_runs(&self, at: i64) -> Result<usize, CatalogError> {
        Ok(self.conn().execute(
            "UPDATE runs SET status = 'failed', finished_at = ?1,
             error = 'cofferd stopped before the run finished' WHERE status = 'running'",
            [at],
        )?)
    }

    /// Appends an audit entry.
    pub fn audit(&self, entry: &AuditRecord) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO audit (at, actor, action, target, result, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.at,
                entry.actor,
                entry.action,
                entry.target,
                entry.result,
                entry.error
            ],
        )?;
        Ok(())
    }

    /// The newest audit entries, newest first.
    pub fn list_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, target, result, error FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                result: r.get(5)?,
                error: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes the catalog agree with `backup_dir` (see the module doc). Never deletes
    /// an archive.
    pub fn reconcile(&self, backup_dir: &Path) -> Result<Reconciled, CatalogError> {
        let mut report = Reconciled::default();
        let scan_err = |path: &Path| {
            let path = path.to_owned();
            move |source| CatalogError::Scan { path, source }
        };

        // 1. Finish deletions a crash interrupted.
        let deleting: Vec<(String, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id, job FROM backups WHERE deleting = 1")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (id, job) in deleting {
            let paths = BackupPaths::new(backup_dir, &job, &id);
            paths.remove_files().map_err(scan_err(&paths.archive))?;
            self.remove_backup(&id)?;
            report.finished_deletes.push(id);
        }

        // 2. Walk the backup dir: sidecars with archives must have rows.
        let known: HashSet<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id FROM backups")?;
            stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let mut on_disk = HashSet::new();
        let job_dirs = match std::fs::read_dir(backup_dir) {
            Ok(dirs) => dirs,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(scan_err(backup_dir)(e)),
        };
        for job_dir in job_dirs {
            let job_dir = job_dir.map_err(scan_err(backup_dir))?;
            let Some(job) = job_dir.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !coffer_common::ids::is_valid_job_name(&job) || !job_dir.path().is_dir() {
                continue;
            }
            for file in std::fs::read_dir(job_dir.path()).map_err(scan_err(&job_dir.path()))? {
                let file = file.map_err(scan_err(&job_dir.path()))?;
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                let (id, is_archive) = if let Some(id) = name.strip_suffix(".tar.zst") {
                    (id, true)
                } else if let Some(id) = name.strip_suffix(".json") {
                    (id, false)
                } else {
                    continue;
                };
                if !coffer_common::ids::is_valid_backup_id(id) {
                    continue;
                }
                let paths = BackupPaths::new(backup_dir, &job, id);
                if is_archive {
                    on_disk.insert(id.to_owned());
                    if !paths.sidecar.exists() && !known.contains(id) {
                        report.unknown_archives.push(paths.archive.clone());
                    }
                    continue;
                }
                if !paths.archive.exists() {
                    // Written before its archive by a run that then failed or died.
                    std::fs::remove_file(&paths.sidecar).map_err(scan_err(&paths.sidecar))?;
                    report.orphan_sidecars.push(paths.sidecar);
                    continue;
                }
                if known.contains(id) {
                    continue;
                }
                match read_sidecar(&paths.sidecar) {
                    Ok(sidecar) if sidecar.manifest.id == id && sidecar.job() == job => {
                        self.insert_backup(&sidecar)?;
                        report.added.push(id.to_owned());
                    }
                    Ok(_) => report.unknown_archives.push(paths.archive.clone()),
                    Err(e) => {
                        tracing::warn!(sidecar = %paths.sidecar.display(), "sidecar is unreadable, archive not catalogued: {e}");
                        report.unknown_archives.push(paths.archive.clone());
                    }
                }
            }
        }

        // 3. Rows whose archive is gone (deleted by hand) are dropped.
        for id in known.difference(&on_disk) {
            self.remove_backup(id)?;
            report.dropped.push(id.clone());
        }
        Ok(report)
    }
}

/// Where a backup's files live.
#[derive(Debug, Clone)]
pub struct BackupPaths {
    pub dir: PathBuf,
    pub archive: PathBuf,
    pub sidecar: PathBuf,
}

impl BackupPaths {
    pub fn new(backup_dir: &Path, job: &str, id: &str) -> BackupPaths {
        let dir = backup_dir.join(job);
        BackupPaths {
            archive: dir.join(format!("{id}.tar.zst")),
            sidecar: dir.join(format!("{id}.json")),
            dir,
        }
    }

    /// Removes the archive, then the sidecar (so a crash between leaves an orphan
    /// sidecar, which reconcile sweeps), then fsyncs the directory. Missing files are
    /// fine: this finishes interrupted deletions too.
    pub fn remove_files(&self) -> std::io::Result<()> {
        for path in [&self.archive, &self.sidecar] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        crate::fsutil::sync_dir(&self.dir)
    }
}

/// Reads and parses a sidecar file.
pub fn read_sidecar(path: &Path) -> Result<Sidecar, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let sidecar: Sidecar = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    sidecar.manifest.validate()?;
    Ok(sidecar)
}

fn summary_json(manifest: &Manifest) -> String {
    let summary = Manifest {
        entries: Vec::new(),
        ..manifest.clone()
    };
    serde_json::to_string(&summary).unwrap_or_default()
}

/// The manifest's creation time as Unix seconds (0 if unparsable).
pub fn created_at(manifest: &Manifest) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&manifest.created_at)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn backup_row(r: &Row<'_>) -> rusqlite::Result<Result<BackupRecord, CatalogError>> {
    let id: String = r.get(0)?;
    let summary: String = r.get(10)?;
    let summary = match serde_json::from_str(&summary) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Err(CatalogError::Corrupt {
                id,
                message: e.to_string(),
            }));
        }
    };
    Ok(Ok(BackupRecord {
        id,
        job: r.get(1)?,
        created_at: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        sha256: r.get(4)?,
        protected: r.get(5)?,
        note: r.get(6)?,
        verified_at: r.get(7)?,
        verify_result: r.get(8)?,
        duration_ms: r.get::<_, i64>(9)? as u64,
        summary,
    }))
}

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        job: r.get(1)?,
        kind: r.get(2)?,
        status: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        error: r.get(6)?,
        backup_id: r.get(7)?,
        bytes: r.get::<_, i64>(8)? as u64,
    })
}
